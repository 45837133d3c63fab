"""Model-level curvature functions: build an operator, run an algorithm, time it.

Every function takes ``(model, loss_fn, data)`` where ``loss_fn(model(x), y)`` is the MEAN
loss of a batch and ``data`` is one ``(x, y)`` pair or an iterable of pairs (weighted by
their sizes), and these operator options:

    params       None (all trainable parameters), a list of parameters or names, or a
                 predicate on names (per-layer curvature);
    train        False: eval mode (default); True: train mode (batch statistics; dropout
                 masks fixed by ``seed``). The model's flags, buffers and ``.grad`` are
                 never changed;
    chunk_size   examples per forward pass (default: chosen from the memory budget);
    dtype        working dtype (default: the parameters'; float64 for references);
    memory_budget  bytes for graphs and bases (default: half the free memory);
    batched      multiply blocks of vectors in one vmapped pass (default: on CUDA);
    generator / seed  the random stream (default seed 0; the global RNG is never used).

``seconds`` in the results includes building the operator.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from sgdlab.curvature.covariance import CovarianceOperator
from sgdlab.curvature.density import slq
from sgdlab.curvature.ggn import GGNOperator
from sgdlab.curvature.hessian import HessianOperator
from sgdlab.curvature.lanczos import lanczos
from sgdlab.curvature.linop import LinearOperator
from sgdlab.curvature.model_function import Data, LossFn, ParamSpec
from sgdlab.curvature.power import power_iteration
from sgdlab.curvature.results import DensityResult, EigResult, TraceResult
from sgdlab.curvature.trace import hutchinson, hutchpp

MATRICES = ("hessian", "ggn")
EIG_METHODS = ("lanczos", "power")
TRACE_METHODS = ("hutch++", "hutchinson")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def curvature_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    matrix: str = "hessian",
    params: ParamSpec = None,
    train: bool = False,
    backend: str = "auto",
    route: str = "auto",
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    batched: bool | None = None,
    seed: int = 0,
) -> LinearOperator:
    """The operator for ``matrix`` = "hessian" (``backend``), "ggn" or "covariance" (``route``)."""
    common: dict[str, Any] = dict(
        params=params,
        train=train,
        chunk_size=chunk_size,
        dtype=dtype,
        memory_budget=memory_budget,
        batched=batched,
        seed=seed,
    )
    if matrix == "hessian":
        return HessianOperator(model, loss_fn, data, backend=backend, **common)
    if matrix == "ggn":
        return GGNOperator(model, loss_fn, data, **common)
    if matrix == "covariance":
        return CovarianceOperator(model, loss_fn, data, route=route, **common)
    raise ValueError(f"matrix must be one of {(*MATRICES, 'covariance')}, got {matrix!r}")


def _eigs(
    op_args: dict,
    k: int,
    which: str,
    tol: float,
    max_products: int | None,
    init: object,
    method: str,
    generator: torch.Generator | None,
    seed: int | None,
    return_vectors: bool,
    block_size: int,
    max_basis: int | None,
) -> EigResult:
    if method not in EIG_METHODS:
        raise ValueError(f"method must be one of {EIG_METHODS}, got {method!r}")
    if method == "power" and which != "LM":
        raise ValueError("method='power' finds largest-magnitude eigenvalues: use which='LM'")
    t0 = time.perf_counter()
    op = curvature_operator(**op_args, seed=0 if seed is None else seed)
    if method == "lanczos":
        res = lanczos(
            op,
            k,
            which=which,
            tol=tol,
            max_products=max_products,
            init=init,
            block_size=block_size,
            max_basis=max_basis,
            generator=generator,
            seed=seed,
            return_vectors=return_vectors,
        )
    else:
        res = power_iteration(
            op,
            k,
            tol=tol,
            max_products=max_products,
            init=init,
            generator=generator,
            seed=seed,
            return_vectors=return_vectors,
        )
    _sync(op.device)
    res.seconds = time.perf_counter() - t0
    return res


def _trace(
    op_args: dict,
    rtol: float,
    max_products: int,
    method: str,
    sketch_size: int | None,
    generator: torch.Generator | None,
    seed: int | None,
    block_size: int,
) -> TraceResult:
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {TRACE_METHODS}, got {method!r}")
    t0 = time.perf_counter()
    op = curvature_operator(**op_args, seed=0 if seed is None else seed)
    if method == "hutch++":
        res = hutchpp(
            op,
            rtol=rtol,
            max_products=max_products,
            sketch_size=sketch_size,
            block_size=block_size,
            generator=generator,
            seed=seed,
        )
    else:
        res = hutchinson(
            op,
            rtol=rtol,
            max_products=max_products,
            block_size=block_size,
            generator=generator,
            seed=seed,
        )
    _sync(op.device)
    res.seconds = time.perf_counter() - t0
    return res


def _density(
    op_args: dict,
    num_steps: int,
    num_vectors: int,
    sigma: float | None,
    grid: Tensor | None,
    num_points: int,
    generator: torch.Generator | None,
    seed: int | None,
) -> DensityResult:
    t0 = time.perf_counter()
    op = curvature_operator(**op_args, seed=0 if seed is None else seed)
    res = slq(
        op,
        num_steps=num_steps,
        num_vectors=num_vectors,
        sigma=sigma,
        grid=grid,
        num_points=num_points,
        generator=generator,
        seed=seed,
    )
    _sync(op.device)
    res.seconds = time.perf_counter() - t0
    return res


def _op_args(
    model,
    loss_fn,
    data,
    matrix,
    params,
    train,
    chunk_size,
    dtype,
    memory_budget,
    batched,
    backend="auto",
    route="auto",
) -> dict:
    return dict(
        model=model,
        loss_fn=loss_fn,
        data=data,
        matrix=matrix,
        params=params,
        train=train,
        backend=backend,
        route=route,
        chunk_size=chunk_size,
        dtype=dtype,
        memory_budget=memory_budget,
        batched=batched,
    )


def _check_matrix(matrix: str) -> None:
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")


def hessian_eigs(
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
    matrix: str = "hessian",
    backend: str = "auto",
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
    """Top-k eigenpairs of the Hessian (or GGN, ``matrix="ggn"``) of the mean loss.

    Lanczos stops when every pair has ‖H v − λ v‖ / |λ| ≤ ``tol``; ``init`` (a previous
    EigResult or (m, P) tensor) warm-starts from that subspace. ``method="power"`` runs
    deflated power iteration (``which="LM"`` only). See :func:`sgdlab.curvature.lanczos`.
    """
    _check_matrix(matrix)
    args = _op_args(
        model,
        loss_fn,
        data,
        matrix,
        params,
        train,
        chunk_size,
        dtype,
        memory_budget,
        batched,
        backend,
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


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    rtol: float = 1e-2,
    max_products: int = 1000,
    method: str = "hutch++",
    sketch_size: int | None = None,
    matrix: str = "hessian",
    backend: str = "auto",
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
    """Tr H (or Tr GGN) ± standard error by Hutch++ (default) or Hutchinson.

    Stops when stderr ≤ ``rtol`` · |estimate| or after ``max_products`` products.
    """
    _check_matrix(matrix)
    args = _op_args(
        model,
        loss_fn,
        data,
        matrix,
        params,
        train,
        chunk_size,
        dtype,
        memory_budget,
        batched,
        backend,
    )
    return _trace(args, rtol, max_products, method, sketch_size, generator, seed, block_size)


def hessian_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    num_steps: int = 64,
    num_vectors: int = 4,
    sigma: float | None = None,
    grid: Tensor | None = None,
    num_points: int = 1024,
    matrix: str = "hessian",
    backend: str = "auto",
    params: ParamSpec = None,
    train: bool = False,
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    batched: bool | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> DensityResult:
    """Eigenvalue density of the Hessian (or GGN) by stochastic Lanczos quadrature."""
    _check_matrix(matrix)
    args = _op_args(
        model,
        loss_fn,
        data,
        matrix,
        params,
        train,
        chunk_size,
        dtype,
        memory_budget,
        batched,
        backend,
    )
    return _density(args, num_steps, num_vectors, sigma, grid, num_points, generator, seed)

