"""Model-level functions for the gradient covariance K = (1/N) Σ (g_i − ḡ)(g_i − ḡ)ᵀ
(:class:`~sgdlab.curvature.covariance.CovarianceOperator`): top-k eigenpairs, trace and
spectral density. Arguments and operator options as in :mod:`sgdlab.curvature.api`, with
``route`` in place of ``backend`` (how per-example gradients are formed).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from sgdlab.curvature.api import (
    TRACE_METHODS,
    _density,
    _eigs,
    _op_args,
    _sync,
    _trace,
    curvature_operator,
)
from sgdlab.curvature.model_function import Data, LossFn, ParamSpec
from sgdlab.curvature.results import DensityResult, EigResult, TraceResult


def covariance_eigs(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    k: int = 5,
    *,
    which: str = "LA",
    tol: float = 1e-4,
    max_products: int | None = None,
    init: object = None,
    method: str = "lanczos",
    route: str = "auto",
    params: ParamSpec = None,
    train: bool = False,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    batched: bool | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    return_vectors: bool = True,
    block_size: int = 1,
    max_basis: int | None = None,
) -> EigResult:
    """Top-k eigenpairs of the gradient covariance K = (1/N) Σ (g_i − ḡ)(g_i − ḡ)ᵀ."""
    args = _op_args(
        model,
        loss_fn,
        data,
        "covariance",
        params,
        train,
        chunk_size,
        dtype,
        memory_budget,
        batched,
        route=route,
    )
    return _eigs(
        args,
        k,
        which,
        tol,
        max_products,
        init,
        method,
        generator,
        seed,
        return_vectors,
        block_size,
        max_basis,
    )


def covariance_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    rtol: float = 1e-2,
    max_products: int = 1000,
    method: str = "auto",
    sketch_size: int | None = None,
    route: str = "auto",
    params: ParamSpec = None,
    train: bool = False,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    batched: bool | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    block_size: int = 1,
) -> TraceResult:
    """Tr K ± standard error.

    ``method="auto"`` computes Tr K = (1/N) Σ ‖g_i‖² − ‖ḡ‖² exactly from per-example
    gradients (one vmap pass, stderr 0) in eval mode, and uses Hutch++ in train mode;
    ``"hutch++"`` / ``"hutchinson"`` force the stochastic estimators.
    """
    if method not in ("auto", "exact", *TRACE_METHODS):
        raise ValueError(
            f"method must be 'auto', 'exact', 'hutch++' or 'hutchinson', got {method!r}"
        )
    args = _op_args(
        model,
        loss_fn,
        data,
        "covariance",
        params,
        train,
        chunk_size,
        dtype,
        memory_budget,
        batched,
        route=route,
    )
    if method in ("auto", "exact"):
        if train and method == "exact":
            raise ValueError(
                "method='exact' needs per-example gradients, which are not defined in train mode"
            )
        if not train:
            t0 = time.perf_counter()
            op = curvature_operator(**args)
            value = op.exact_trace()  # type: ignore[attr-defined]
            _sync(op.device)
            return TraceResult(
                estimate=float(value),
                stderr=0.0,
                products=0,
                seconds=time.perf_counter() - t0,
                method="exact",
                samples=torch.zeros(0, dtype=torch.float64),
                exact_part=float(value),
                converged=True,
            )
        method = "hutch++"
    return _trace(args, rtol, max_products, method, sketch_size, generator, seed, block_size)


def covariance_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    num_steps: int = 64,
    num_vectors: int = 4,
    sigma: float | None = None,
    grid: Tensor | None = None,
    num_points: int = 1024,
    route: str = "auto",
    params: ParamSpec = None,
    train: bool = False,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    batched: bool | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> DensityResult:
    """Eigenvalue density of K by stochastic Lanczos quadrature."""
    args = _op_args(
        model,
        loss_fn,
        data,
        "covariance",
        params,
        train,
        chunk_size,
        dtype,
        memory_budget,
        batched,
        route=route,
    )
    return _density(args, num_steps, num_vectors, sigma, grid, num_points, generator, seed)
