"""Training: the SGD loop, evaluation, losses, checkpoints and resume."""

from sgdlab.train.evaluate import evaluate, loss_and_accuracy
from sgdlab.train.loop import Trainer, resume, train
from sgdlab.train.losses import make_loss, per_example_loss

__all__ = ["Trainer", "train", "resume", "evaluate", "loss_and_accuracy", "make_loss",
           "per_example_loss"]
