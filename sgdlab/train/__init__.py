"""Training: the SGD loop, checkpoints, resume, divergence, and the validation of a config.

The package is callable as :func:`train` itself, so ``sgdlab.train(cfg, store)`` works
whether or not the package has been imported."""

import sys
import types

from sgdlab.evaluation import evaluate, loss_and_accuracy
from sgdlab.losses import make_loss, per_example_loss
from sgdlab.train.loop import Trainer, resume, train
from sgdlab.train.validate import validate

__all__ = ["Trainer", "train", "resume", "validate", "evaluate", "loss_and_accuracy",
           "make_loss", "per_example_loss"]


class _TrainModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _TrainModule
