"""Optimizers and schedules: SGD (heavy-ball, Nesterov, weight decay) and Nudged SGD."""

from __future__ import annotations

import torch
from torch import nn

from sgdlab.config import OptimConfig


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` for ``sgd``; :class:`~sgdlab.optim.nsgd.NSGD` for ``nsgd``."""
    kwargs = dict(lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                  weight_decay=cfg.weight_decay)
    if cfg.name == "nsgd":
        from sgdlab.optim.nsgd import NSGD

        return NSGD(model.parameters(), gamma=cfg.nsgd_gamma, k=cfg.nsgd_k, every=cfg.nsgd_every,
                    subset=cfg.nsgd_subset, **kwargs)
    return torch.optim.SGD(model.parameters(), foreach=False, **kwargs)


__all__ = ["build_optimizer"]
