"""Spectral density by stochastic Lanczos quadrature (SLQ; Lin, Saad & Yang 2016;
Ghorbani, Krishnan & Xiao 2019).

For a unit random vector v, m Lanczos steps give the tridiagonal T_m = S Θ Sᵀ, and the
Gauss quadrature with nodes θ_j and weights τ_j = S_{1j}² satisfies

    vᵀ g(A) v ≈ Σ_j τ_j g(θ_j),      exactly for polynomials g of degree < 2m.

With v uniform-like (normalized Rademacher), E[vᵀ g(A) v] = (1/P) Tr g(A), so averaging
over n_v vectors and taking g = N(· − t; σ²) estimates the broadened spectral density
φ(t) = (1/P) Σ_i N(t; λ_i, σ²). The n_v Lanczos runs are independent and advance
together, one block product of n_v vectors per step, with full reorthogonalization.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from sgdlab.curvature._random import make_generator, rademacher
from sgdlab.curvature.lanczos import symmetric_eigh
from sgdlab.curvature.linop import LinearOperator
from sgdlab.curvature.model_function import default_memory_budget
from sgdlab.curvature.results import DensityResult


def lanczos_tridiagonal(
    op: LinearOperator, start: Tensor, steps: int, reorth: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run n_v independent Lanczos recurrences from the rows of ``start`` (n_v, P).

    Returns alpha (n_v, m), beta (n_v, m − 1) and lengths (n_v,): run i stopped after
    lengths[i] steps when it found an invariant subspace (β ≈ 0).
    """
    nv, dim = start.shape
    m = min(steps, dim)
    v = start / start.norm(dim=1, keepdim=True)
    basis = start.new_empty(nv, m, dim) if reorth else None
    alpha, beta = np.zeros((nv, m)), np.zeros((nv, max(m - 1, 0)))
    lengths = np.full(nv, m)
    active = torch.ones(nv, dtype=torch.bool, device=start.device)
    v_prev = torch.zeros_like(v)
    b_prev = torch.zeros(nv, dtype=start.dtype, device=start.device)
    scale = 0.0
    for j in range(m):
        if basis is not None:
            basis[:, j] = v
        w = torch.zeros_like(v)
        idx = active.nonzero().squeeze(1)
        w[idx] = op.matmat(v[idx])
        a = (w * v).sum(1)
        w = w - a[:, None] * v - b_prev[:, None] * v_prev
        if basis is not None:
            for _ in range(2):
                w = w - torch.einsum(
                    "nj,njp->np",
                    torch.einsum("njp,np->nj", basis[:, : j + 1], w),
                    basis[:, : j + 1],
                )
        b = w.norm(dim=1)
        a_np, b_np = a.double().cpu().numpy(), b.double().cpu().numpy()
        alpha[:, j] = a_np
        scale = max(scale, float(np.abs(a_np).max()), float(b_np.max()))
        if j == m - 1:
            break
        beta[:, j] = b_np
        stop = active.cpu().numpy() & (
            b_np <= 1e3 * torch.finfo(start.dtype).eps * max(scale, 1e-300)
        )
        for i in np.nonzero(stop)[0]:
            lengths[i] = j + 1
        active &= ~torch.as_tensor(stop, device=start.device)
        v_prev, v = (
            v,
            torch.where(active[:, None], w / b.clamp_min(1e-300)[:, None], torch.zeros_like(w)),
        )
        b_prev = torch.where(active, b, torch.zeros_like(b))
        if not bool(active.any()):
            break
    return alpha, beta, lengths


def gauss_quadrature(
    alpha: np.ndarray, beta: np.ndarray, lengths: np.ndarray
) -> tuple[Tensor, Tensor]:
    """Nodes θ and weights τ = (first eigenvector components)² of each run's T.

    Runs shorter than m are padded with weight-0 nodes.
    """
    nv, m = alpha.shape
    nodes, weights = np.zeros((nv, m)), np.zeros((nv, m))
    for i in range(nv):
        n = int(lengths[i])
        T = np.diag(alpha[i, :n]) + np.diag(beta[i, : n - 1], 1) + np.diag(beta[i, : n - 1], -1)
        theta, S = symmetric_eigh(T)
        nodes[i, :n], weights[i, :n] = theta, S[0] ** 2
        nodes[i, n:] = theta[0]
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def broadened_density(nodes: Tensor, weights: Tensor, grid: Tensor, sigma: float) -> Tensor:
    """φ(t) = (1/n_v) Σ τ N(t; θ, σ²) on ``grid`` (float64)."""
    z = (grid[:, None, None] - nodes[None]) / sigma
    return (weights[None] * torch.exp(-0.5 * z**2)).sum((1, 2)) / (
        nodes.shape[0] * sigma * math.sqrt(2 * math.pi)
    )


def slq(
    op: LinearOperator,
    *,
    num_steps: int = 64,
    num_vectors: int = 4,
    sigma: float | None = None,
    grid: Tensor | None = None,
    num_points: int = 1024,
    reorth: bool | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> DensityResult:
    """Spectral density of A by SLQ (module docstring).

    Args:
        num_steps: Lanczos steps m per vector (products: num_vectors · m).
        num_vectors: n_v random starting vectors (normalized Rademacher).
        sigma: Gaussian broadening (default 1% of the node range).
        grid: evaluation points (default ``num_points`` points covering the nodes ± 5σ).
        reorth: full reorthogonalization (default: when the n_v · m basis fits memory).
    """
    if num_steps < 1 or num_vectors < 1:
        raise ValueError(f"num_steps and num_vectors must be >= 1, got {num_steps}, {num_vectors}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    t0 = time.perf_counter()
    gen = make_generator(generator, seed, op.device)
    m = min(num_steps, op.dim)
    if reorth is None:
        itemsize = torch.finfo(op.dtype).bits // 8
        reorth = num_vectors * m * op.dim * itemsize <= default_memory_budget(op.device) // 4
    start = rademacher((num_vectors, op.dim), gen, op.dtype, op.device)
    before = op.products
    alpha, beta, lengths = lanczos_tridiagonal(op, start, m, reorth)
    nodes, weights = gauss_quadrature(alpha, beta, lengths)
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 0.01 * max(abs(hi), 1.0)
    if grid is None:
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points, dtype=torch.float64)
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    density = broadened_density(nodes, weights, grid, sigma)
    return DensityResult(
        grid=grid,
        density=density,
        nodes=nodes,
        weights=weights,
        sigma=float(sigma),
        products=op.products - before,
        seconds=time.perf_counter() - t0,
    )
