"""One-call curvature of a model, as PyHessian users expect: build the operator, run the
algorithm, time both.

    res = hessian_eigs(model, loss_fn, (x, y), k=5, tol=1e-4)
    tr = hessian_trace(model, loss_fn, batches, rtol=1e-2, chunk_size=256)
    dens = covariance_density(model, loss_fn, (x, y), options=CurvatureOptions(train=True))

Each takes ``(model, loss_fn, data)``, where ``loss_fn(model(x), y)`` is the mean loss of a
batch (or its sum: ``reduction="sum"``, read from ``loss_fn.reduction`` where it exists)
and ``data`` one ``(x, y)`` pair, an iterable of pairs (weighted by their sizes) or a
dataset of examples; batches of other structures take ``forward=`` and ``loss=`` (then
``loss_fn`` is None). Then keywords of two kinds, told apart by name:

- operator options: the fields of :class:`~sgdlab.curvature.CurvatureOptions` (params,
  train, backend, chunk_size, dtype, memory_budget, batched, seed, reduction, forward,
  loss), or ``options=``;
- algorithm keywords, passed to :func:`~sgdlab.curvature.eigs` (which, tol,
  max_products, init, method, block_size, max_basis, generator, return_vectors),
  :func:`~sgdlab.curvature.trace` (rtol, max_products, method, sketch_size, min_samples,
  block_size, generator) or :func:`~sgdlab.curvature.density` (num_steps, num_vectors,
  sigma, grid, num_points, generator).

``seed`` seeds both the algorithm's random stream and, in train mode, the forward pass.
``matrix`` names any registered operator (:data:`~sgdlab.curvature.OPERATORS`).
``seconds`` in the results includes building the operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sgdlab.curvature.algorithms import density, eigs, trace
from sgdlab.curvature.linop import full_precision
from sgdlab.curvature.model_function import Data, LossFn
from sgdlab.curvature.options import CurvatureOptions, split_options
from sgdlab.curvature.registry import curvature_operator
from sgdlab.curvature.results import DensityResult, EigResult, TraceResult


def _model_level(algorithm: Callable, matrix: str, model: nn.Module, loss_fn: LossFn,
                 data: Data, options: CurvatureOptions | None, kwargs: dict[str, Any],
                 **fixed: Any) -> Any:
    fields, algo = split_options(kwargs)
    if "seed" in fields:  # one seed for the algorithm and the forward pass (train mode)
        seed = fields.pop("seed")
        algo["seed"] = seed
        if seed is not None:
            fields["seed"] = seed
    t0 = time.perf_counter()
    device = next(model.parameters(), torch.empty(0)).device
    with full_precision(device):  # building the operator too
        op = curvature_operator(model, loss_fn, data, matrix, options, **fields)
        res = algorithm(op, **fixed, **algo)
    if op.device.type == "cuda":
        torch.cuda.synchronize(op.device)
    res.seconds = time.perf_counter() - t0
    return res


def hessian_eigs(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 5, *,
                 matrix: str = "hessian", options: CurvatureOptions | None = None,
                 **kwargs: Any) -> EigResult:
    """Top-k eigenpairs of the Hessian (or ``matrix``) of the mean loss.

    Lanczos stops when every pair has ‖H v − λ v‖ / |λ| ≤ ``tol`` (default 1e-4); ``init``
    (a previous EigResult or (m, P) tensor) warm-starts from that subspace;
    ``method="power"`` runs deflated power iteration (``which="LM"`` only).
    """
    return _model_level(eigs, matrix, model, loss_fn, data, options, kwargs, k=k)


def hessian_trace(model: nn.Module, loss_fn: LossFn, data: Data, *, matrix: str = "hessian",
                  options: CurvatureOptions | None = None, **kwargs: Any) -> TraceResult:
    """Tr H (or ``matrix``) ± standard error by Hutch++ (default) or Hutchinson; stops when
    stderr ≤ ``rtol`` · |estimate| (default 1e-2) or after ``max_products`` (1000)."""
    return _model_level(trace, matrix, model, loss_fn, data, options, kwargs)


def hessian_density(model: nn.Module, loss_fn: LossFn, data: Data, *, matrix: str = "hessian",
                    options: CurvatureOptions | None = None, **kwargs: Any) -> DensityResult:
    """Eigenvalue density of the Hessian (or ``matrix``) by stochastic Lanczos quadrature."""
    return _model_level(density, matrix, model, loss_fn, data, options, kwargs)


def covariance_eigs(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 5, *,
                    options: CurvatureOptions | None = None, **kwargs: Any) -> EigResult:
    """Top-k eigenpairs of the gradient covariance K = (1/N) Σ (g_i − ḡ)(g_i − ḡ)ᵀ."""
    return _model_level(eigs, "covariance", model, loss_fn, data, options, kwargs, k=k)


def covariance_trace(model: nn.Module, loss_fn: LossFn, data: Data, *,
                     options: CurvatureOptions | None = None, **kwargs: Any) -> TraceResult:
    """Tr K ± standard error: exact in eval mode (Tr K = (1/N) Σ ‖g_i‖² − ‖ḡ‖² from
    per-example gradients, stderr 0), Hutch++ in train mode (``method`` forces one)."""
    return _model_level(trace, "covariance", model, loss_fn, data, options, kwargs)


def covariance_density(model: nn.Module, loss_fn: LossFn, data: Data, *,
                       options: CurvatureOptions | None = None, **kwargs: Any) -> DensityResult:
    """Eigenvalue density of K by stochastic Lanczos quadrature."""
    return _model_level(density, "covariance", model, loss_fn, data, options, kwargs)
