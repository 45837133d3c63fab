"""Training: the SGD loop, checkpoints, resume, divergence, and the validation of a config.

The package is callable as :func:`train` itself, so ``sgdlab.train(cfg, store)`` works
whether or not the package has been imported."""

import sys
import types
from importlib import import_module

_EXPORTS = {
    "Trainer": "sgdlab.train.loop", "train": "sgdlab.train.loop",
    "resume": "sgdlab.train.loop", "validate": "sgdlab.train.validate",
    "evaluate": "sgdlab.evaluation", "loss_and_accuracy": "sgdlab.evaluation",
    "make_loss": "sgdlab.losses", "per_example_loss": "sgdlab.losses",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Names load their module (and torch) on first use: ``sgdlab.train.environment``
    alone, which ``sgdlab show`` reads, imports no torch."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sgdlab.train' has no attribute {name!r}")


class _TrainModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return __getattr__("train")(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainModule
