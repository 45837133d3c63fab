"""Losses as functions ``loss(outputs, targets) -> mean over examples``.

cross_entropy: ``-log softmax(f)_y``. mse: ``0.5 * ||f - onehot(y)||^2`` per example (or
``0.5 * ||f - y||^2`` for real-valued targets), averaged over examples: the convention of
Cohen et al. (2021) for edge-of-stability experiments.

A loss of one's own: ``train.loss = "package.module:function"``, called as
``function(outputs, targets)`` with the model's outputs ``(N, ...)`` and a batch of targets
``(N, ...)``; it returns the loss of each example, shape ``(N,)`` (sgdlab takes the mean for
training and the sums for evaluation, so evaluation in chunks is exact). It must be written
with differentiable torch operations (twice: the Hessian probes differentiate it twice)
and may run under ``torch.func.vmap`` (per-example curvature), so no ``.item()`` or data-
dependent Python branches. The trainer checks the shape on two examples before the run is
created.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sgdlab.config import LOSSES
from sgdlab.errors import ConfigError, first_line
from sgdlab.imports import is_import_path, resolve

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_loss(name: str) -> Callable | None:
    """The user's per-example loss function for an import path (None for a built-in name);
    ConfigError naming ``train.loss`` otherwise."""
    if is_import_path(name):
        return _user_loss(name)  # resolved once per process, as training will use it
    if name not in LOSSES:
        raise ConfigError(f"train.loss: {name!r} is not one of {', '.join(LOSSES)}, "
                          "package.module:function")
    return None


@functools.cache
def _user_loss(name: str) -> Callable:
    return resolve("train.loss", name)


def check_outputs(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """ConfigError naming ``train.loss`` unless the loss of ``(outputs, targets)`` is one
    finite number per example."""
    try:
        losses = per_example_loss(name, outputs, targets)
    except ConfigError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise ConfigError(f"train.loss: {name!r} raised {type(exc).__name__} on outputs of "
                          f"shape {tuple(outputs.shape)}: {first}") from None
    if not isinstance(losses, torch.Tensor) or losses.shape != (len(outputs),):
        got = (f"shape {tuple(losses.shape)}" if isinstance(losses, torch.Tensor)
               else f"a {type(losses).__name__}")
        raise ConfigError(f"train.loss: {name!r} returned {got} for {len(outputs)} examples; "
                          f"expected a tensor of shape ({len(outputs)},), one loss per example")
    if not losses.is_floating_point():
        raise ConfigError(f"train.loss: {name!r} returned dtype {losses.dtype}, expected floats")


def per_example_loss(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss of each example, shape ``(N,)``."""
    if name == "cross_entropy":
        return F.cross_entropy(outputs, targets, reduction="none")
    if name == "mse":
        if not targets.is_floating_point():  # one-hot, written so that it works under vmap
            classes = torch.arange(outputs.shape[-1], device=outputs.device)
            targets = (targets.unsqueeze(-1) == classes).to(outputs.dtype)
        return 0.5 * (outputs - targets).pow(2).sum(dim=-1)
    if is_import_path(name):
        return _user_loss(name)(outputs, targets)
    raise ValueError(f"unknown loss {name!r}")


def make_loss(name: str) -> LossFn:
    """Mean-over-examples loss function for ``train.loss``."""
    if name not in LOSSES and not is_import_path(name):
        raise ValueError(f"unknown loss {name!r}")
    if is_import_path(name):
        user = _user_loss(name)

        def user_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return user(outputs, targets).mean()

        user_loss.__name__ = name.rpartition(":")[2]
        return user_loss

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_example_loss(name, outputs, targets).mean()

    loss_fn.__name__ = name
    return loss_fn


def accuracy_counts(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of correct argmax predictions (0 for real-valued targets)."""
    if targets.is_floating_point():
        return torch.zeros((), device=outputs.device)
    return (outputs.argmax(dim=-1) == targets).sum()
