"""Power iteration with deflation (a baseline to compare Lanczos against).

For the i-th pair, iterate on the deflated operator B = (I − UUᵀ) A (I − UUᵀ), U the
pairs found so far:  v ← B v / ‖B v‖,  λ = vᵀ A v.  It converges to the eigenvalue of
largest magnitude of B at the rate |λ_{i+1} / λ_i| per product. Stopping uses the true
relative residual of the deflated operator, ‖B v − λ v‖ / |λ|, from the same product.
At the end a Rayleigh–Ritz step on span(U) with the stored products A U (no extra
product) rotates the pairs, and the reported residuals are the true ‖A v − λ v‖ / |λ|.
"""

from __future__ import annotations

import time

import torch

from sgdlab.curvature._random import make_generator, randn
from sgdlab.curvature.lanczos import init_block
from sgdlab.curvature.linop import LinearOperator
from sgdlab.curvature.results import EigResult


def power_iteration(
    op: LinearOperator,
    k: int = 1,
    *,
    tol: float = 1e-4,
    max_products: int | None = None,
    init: object = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    return_vectors: bool = True,
) -> EigResult:
    """Top-k eigenpairs by largest magnitude ("LM") with projection deflation.

    ``max_products`` (default 1000 k) is the total budget; each pair gets an equal share
    of what the previous ones left. ``init`` (EigResult or (m, P)) gives starting vectors.
    """
    t0 = time.perf_counter()
    dim, dt, dev = op.dim, op.dtype, op.device
    if not 1 <= int(k) <= dim:
        raise ValueError(f"k must be between 1 and the dimension {dim}, got {k}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    k = int(k)
    budget = 1000 * k if max_products is None else int(max_products)
    if budget < k:
        raise ValueError(f"max_products must be >= k = {k}, got {budget}")
    gen = make_generator(generator, seed, dev)
    starts = init_block(init, dim).to(device=dev, dtype=dt) if init is not None else None
    U = torch.zeros(0, dim, dtype=dt, device=dev)
    AU = torch.zeros(0, dim, dtype=dt, device=dev)
    used, steps = 0, 0
    for i in range(k):
        v = starts[i] if starts is not None and i < len(starts) else randn((dim,), gen, dt, dev)
        v = v - U.T @ (U @ v)
        v = v / v.norm()
        av = v
        for _ in range(max((budget - used) // (k - i), 1)):
            av = op.matvec(v)
            used += 1
            steps += 1
            bv = av - U.T @ (U @ av)  # B v, B = (I − UUᵀ) A (I − UUᵀ), v ⊥ U
            lam = float(v @ bv)
            if float((bv - lam * v).norm()) <= tol * max(abs(lam), 1e-300):
                break
            v = bv / bv.norm()
        U, AU = torch.cat([U, v[None]]), torch.cat([AU, av[None]])
    # Rayleigh–Ritz on span(U) with the stored products (no extra product): removes the
    # cross-talk that deflation by inexact vectors leaves between the pairs
    theta, S = torch.linalg.eigh((U @ AU.T + AU @ U.T).double().cpu() / 2)
    order = torch.argsort(theta.abs(), descending=True)
    theta, S = theta[order], S[:, order].to(device=dev, dtype=dt)
    U, AU = S.T @ U, S.T @ AU
    res_t = (AU - theta.to(dev, dt)[:, None] * U).norm(
        dim=1
    ).double().cpu() / theta.abs().clamp_min(1e-300)
    return EigResult(
        values=theta,
        vectors=U if return_vectors else None,
        residuals=res_t,
        converged=res_t <= tol,
        products=used,
        seconds=time.perf_counter() - t0,
        which="LM",
        method="power",
        tol=float(tol),
        iterations=steps,
    )
