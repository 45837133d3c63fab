"""Shared plumbing for the optimization problems of the layer (curves, connectors,
subspaces): minibatch order, quadrature nodes and a differentiable forward pass at a point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from sgdlab.landscape.errors import LandscapeError
from sgdlab.landscape.layout import Data, Layout, LossFn, ParamSpec, fixed_subset


def batch_indices(n: int, batch_size: int | None, steps: int, seed: int) -> Iterator[Tensor | None]:
    """Example indices of each step: epochs of ``torch.randperm(n)`` drawn from
    ``torch.Generator().manual_seed(seed)``, cut into batches of ``batch_size`` (the last
    partial batch of an epoch dropped); None (the full batch) when ``batch_size`` is None
    or ≥ n."""
    if batch_size is not None and int(batch_size) < 1:
        raise LandscapeError(f"batch_size: must be >= 1 or None, got {batch_size}")
    if batch_size is None or int(batch_size) >= n:
        for _ in range(steps):
            yield None
        return
    gen = torch.Generator().manual_seed(int(seed))
    per_epoch = n // int(batch_size)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            if done == steps:
                return
            yield perm[b * batch_size : (b + 1) * batch_size]
            done += 1


def gauss_legendre(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of q-point Gauss–Legendre quadrature on [0, 1] (exact for
    polynomials of degree ≤ 2q − 1; weights sum to 1)."""
    if int(q) < 1:
        raise LandscapeError(f"quadrature nodes: must be >= 1, got {q}")
    x, w = np.polynomial.legendre.leggauss(int(q))
    return (x + 1) / 2, w / 2


@contextlib.contextmanager
def forward_mode(model: nn.Module, bn: str) -> Iterator[None]:
    """Eval mode; with ``bn="recompute"`` BatchNorm layers normalize with batch statistics
    (train mode, running statistics not tracked). Every flag restored afterwards."""
    saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
    try:
        model.eval()
        if bn == "recompute":
            for m in model.modules():
                if isinstance(m, _BatchNorm):
                    m.train()
                    m.track_running_stats = False
        yield
    finally:
        for m, flag, track in saved:
            m.training = flag
            if isinstance(m, _BatchNorm):
                m.track_running_stats = track


class PointLoss:
    """The mean loss of a batch at a flat point θ (differentiable in θ), without touching
    the model: ``functional_call`` with the other parameters and buffers frozen."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Data, *,
                 params: ParamSpec = None, dtype: torch.dtype | None = None,
                 bn: str = "eval"):
        if bn not in ("eval", "recompute"):
            raise LandscapeError(f"bn: must be 'eval' or 'recompute', got {bn!r}")
        self.model, self.loss_fn, self.bn = model, loss_fn, bn
        self.layout = Layout.of(model, params)
        named = dict(model.named_parameters())
        first = named[self.layout.names[0]]
        self.device, self.dtype = first.device, dtype or first.dtype
        chosen = set(self.layout.names)
        self.frozen: dict[str, Any] = {n: self._cast(p.detach()) for n, p in named.items()
                                       if n not in chosen}
        self.frozen.update({n: self._cast(b.detach()).clone() for n, b in model.named_buffers()})
        x, y = fixed_subset(data, None)
        self.x, self.y = self._cast(x), self._cast(y)
        self.n = len(self.y)

    def _cast(self, t: Tensor) -> Tensor:
        return t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device)

    def vector(self, point, what: str) -> Tensor:
        return self.layout.vector(point, what, dtype=self.dtype, device=self.device)

    def __call__(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        x, y = (self.x, self.y) if idx is None else (self.x[idx.to(self.x.device)],
                                                     self.y[idx.to(self.y.device)])
        mapping = dict(self.frozen)
        mapping.update(self.layout.tensors(theta))
        with forward_mode(self.model, self.bn):
            out = functional_call(self.model, mapping, (x,))
        return self.loss_fn(out, y)
