"""Losses as functions ``loss(outputs, targets) -> mean over examples``.

cross_entropy: ``-log softmax(f)_y``. mse: ``0.5 * ||f - onehot(y)||^2`` per example (or
``0.5 * ||f - y||^2`` for real-valued targets), averaged over examples: the convention of
Cohen et al. (2021) for edge-of-stability experiments.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_example_loss(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss of each example, shape ``(N,)``."""
    if name == "cross_entropy":
        return F.cross_entropy(outputs, targets, reduction="none")
    if name == "mse":
        if not targets.is_floating_point():  # one-hot, written so that it works under vmap
            classes = torch.arange(outputs.shape[-1], device=outputs.device)
            targets = (targets.unsqueeze(-1) == classes).to(outputs.dtype)
        return 0.5 * (outputs - targets).pow(2).sum(dim=-1)
    raise ValueError(f"unknown loss {name!r}")


def make_loss(name: str) -> LossFn:
    """Mean-over-examples loss function for ``train.loss``."""
    if name not in ("cross_entropy", "mse"):
        raise ValueError(f"unknown loss {name!r}")

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_example_loss(name, outputs, targets).mean()

    loss_fn.__name__ = name
    return loss_fn


def accuracy_counts(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of correct argmax predictions (0 for real-valued targets)."""
    if targets.is_floating_point():
        return torch.zeros((), device=outputs.device)
    return (outputs.argmax(dim=-1) == targets).sum()
