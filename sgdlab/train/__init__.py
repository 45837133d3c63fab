"""Training: the SGD loop, checkpoints, resume, divergence, and the validation of a config.

The package is callable as :func:`train` itself, so ``sgdlab.train(cfg, store)`` works
whether or not the package has been imported."""

import sys
import types

from sgdlab.lazy import lazy_names

_EXPORTS = {
    "Trainer": ".loop", "train": ".loop",
    "resume": ".loop", "validate": ".validate",
    "evaluate": "sgdlab.evaluation", "loss_and_accuracy": "sgdlab.evaluation",
    "make_loss": "sgdlab.losses", "per_example_loss": "sgdlab.losses",
}
__all__ = list(_EXPORTS)
# names load their module (and torch) on first use: `sgdlab.train.environment` alone,
# which `sgdlab show` reads, imports no torch
__getattr__ = lazy_names(__name__, _EXPORTS)


class _TrainModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return __getattr__("train")(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainModule
