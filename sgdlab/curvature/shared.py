"""One eigendecomposition shared by many consumers at a point (probes and Nudged SGD).

At each step several consumers may want the top-k Hessian eigenpairs on the same fixed
data subset, with different k and tolerances. They first :meth:`SharedEigs.plan` their
requests; the first :meth:`SharedEigs.top` call then computes one decomposition with the
largest k and the tightest tolerance planned for that subset, and every later request it
satisfies (k no larger, tol no tighter) reuses it. :meth:`SharedEigs.clear` forgets
everything (the parameters moved).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from sgdlab.curvature.api import hessian_eigs
from sgdlab.curvature.results import EigResult

Request = tuple[int, int, float]  # (k, n, tol): top-k pairs on the n-example subset, to tol


class SharedEigs:
    """Top-k Hessian eigenpairs of ``loss_fn`` on ``subset(n)`` (a fixed (x, y) batch of n
    examples), planned and computed at most once per :meth:`clear`."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 subset: Callable[[int], tuple[Tensor, Tensor]]) -> None:
        self.model, self.loss_fn, self.subset = model, loss_fn, subset
        self._plan: dict[int, tuple[int, float]] = {}
        self._done: dict[int, EigResult] = {}

    def clear(self) -> None:
        self._plan.clear()
        self._done.clear()

    def plan(self, requests: Iterable[Request | None]) -> None:
        """Widen the plan with ``(k, n, tol)`` requests (None entries ignored): per subset
        size n, the largest k and the smallest tol asked for."""
        for req in requests:
            if req is None:
                continue
            k, n, tol = req
            pk, ptol = self._plan.get(n, (k, tol))
            self._plan[n] = (max(k, pk), min(tol, ptol))

    def top(self, k: int, n: int, tol: float = 1e-3, init: Any = None,
            generator: torch.Generator | None = None) -> EigResult:
        """The top-``k`` eigenpairs on ``subset(n)`` to ``tol``, with the planned k and tol
        if larger/tighter; ``init`` warm-starts from the caller's previous result."""
        done = self._done.get(n)
        if done is not None and len(done.values) >= k and done.tol <= tol:
            return done
        self.plan([(k, n, tol)])
        k, tol = self._plan[n]
        result = hessian_eigs(self.model, self.loss_fn, self.subset(n), k=k, tol=tol,
                              init=init, generator=generator)
        self._done[n] = result
        return result
