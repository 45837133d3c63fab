"""The three questions asked of any curvature operator, one function each:

    eigs(op, k)   top-k eigenpairs: Lanczos (default) or deflated power iteration;
    trace(op)     Tr A ± standard error: exact where the operator can (``op.exact_trace()``),
                  else Hutch++ (default) or Hutchinson;
    density(op)   the spectral density by stochastic Lanczos quadrature.

They accept any :class:`~sgdlab.curvature.linop.LinearOperator` (a network's Hessian,
GGN, gradient covariance, Fisher, a dense matrix, one's own), run with autocast off (and
TF32 off on CUDA), and pass the remaining keywords to the algorithm
(:func:`~sgdlab.curvature.lanczos.lanczos`,
:func:`~sgdlab.curvature.power.power_iteration`, :func:`~sgdlab.curvature.trace.hutchpp`,
:func:`~sgdlab.curvature.trace.hutchinson`, :func:`~sgdlab.curvature.density.slq`).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from sgdlab.curvature.density import slq
from sgdlab.curvature.lanczos import lanczos
from sgdlab.curvature.linop import LinearOperator, full_precision
from sgdlab.curvature.power import power_iteration
from sgdlab.curvature.results import DensityResult, EigResult, TraceResult
from sgdlab.curvature.trace import hutchinson, hutchpp

EIG_METHODS = {"lanczos": lanczos, "power": power_iteration}
TRACE_METHODS = {"hutch++": hutchpp, "hutchinson": hutchinson}


def eigs(op: LinearOperator, k: int = 1, *, method: str = "lanczos", which: str = "LA",
         **kwargs: Any) -> EigResult:
    """Top-``k`` eigenpairs (``which`` = "LA", "SA" or "LM"; power iteration: "LM" only)."""
    if method not in EIG_METHODS:
        raise ValueError(f"method must be one of {tuple(EIG_METHODS)}, got {method!r}")
    with full_precision(op.device):
        if method == "power":
            if which != "LM":
                raise ValueError(
                    "method='power' finds largest-magnitude eigenvalues: use which='LM'")
            return power_iteration(op, k, **kwargs)
        return lanczos(op, k, which=which, **kwargs)


def trace(op: LinearOperator, *, method: str = "auto", **kwargs: Any) -> TraceResult:
    """Tr A: ``"auto"`` is exact when ``op.exact_trace()`` gives a value (the covariance
    and Fisher in eval mode: stderr 0, no products), else Hutch++; ``"exact"`` demands the
    exact route; ``"hutch++"`` / ``"hutchinson"`` force an estimator."""
    if method not in ("auto", "exact", *TRACE_METHODS):
        raise ValueError(f"method must be one of {('auto', 'exact', *TRACE_METHODS)}, "
                         f"got {method!r}")
    if method in ("auto", "exact"):
        t0 = time.perf_counter()
        exact = getattr(op, "exact_trace", lambda: None)()
        if exact is not None:
            return TraceResult(estimate=float(exact), stderr=0.0, products=0,
                               seconds=time.perf_counter() - t0, method="exact",
                               samples=torch.zeros(0, dtype=torch.float64),
                               exact_part=float(exact), converged=True)
        if method == "exact":
            raise ValueError(f"method='exact': {type(op).__name__} has no exact trace here "
                             "(per-example gradients are not defined in train mode)")
        method = "hutch++"
    with full_precision(op.device):
        return TRACE_METHODS[method](op, **kwargs)


def density(op: LinearOperator, **kwargs: Any) -> DensityResult:
    """Spectral density by SLQ (:func:`~sgdlab.curvature.density.slq`)."""
    with full_precision(op.device):
        return slq(op, **kwargs)
