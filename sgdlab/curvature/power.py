"""Power iteration with deflation (a baseline to compare Lanczos against).

For the i-th pair, iterate on the deflated operator B = (I − UUᵀ) A (I − UUᵀ), U the
pairs found so far:  v ← B v / ‖B v‖,  λ = vᵀ A v.  It converges to the eigenvalue of
largest magnitude of B at the rate |λ_{i+1} / λ_i| per product. Stopping uses the true
relative residual of the deflated operator, ‖B v − λ v‖ / |λ|, from the same product.
At the end a Rayleigh–Ritz step on span(U) with the stored products A U (no extra
product) rotates the pairs, and the reported residuals are the true ‖A v − λ v‖ / |λ|
(with |λ| floored at 1e-4 ‖A‖ as in :func:`sgdlab.curvature.lanczos`, so that an exact
zero can converge).

Repeated eigenvalues: each pair starts from its own random vector orthogonal to the pairs
found, so a second copy of an eigenvalue is the dominant one of the deflated operator and
is found like any other (no block size is needed); ``converged`` certifies the residual,
and the values are the wanted ones counting multiplicity when each pair's start has a
component along the wanted direction (almost surely for a random start). A dominant pair
±λ (equal magnitudes) does not converge pair by pair, but the final Rayleigh–Ritz step
resolves it once both directions are in span(U).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from sgdlab.curvature._random import make_generator, randn
from sgdlab.curvature.lanczos import init_block, residual_scale, with_random_part
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
    of what the previous ones left. ``init`` (EigResult or (m, P)) gives starting vectors
    (each with a 10% random part, so that a start lacking the wanted direction, e.g. two
    equal vectors, still finds it). Each pair iterates until its deflated residual is
    tol / 2; ``converged`` is the final true residual ≤ tol (module docstring).
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
    norm = 0.0  # estimate of ‖A‖: the largest ‖A v‖ seen
    for i in range(k):
        if starts is not None and i < len(starts):  # a warm start, plus a 10% random part
            v = with_random_part(starts[i], gen)
        else:
            v = randn((dim,), gen, dt, dev)
        v = _deflated_unit(v, U, gen)
        share = max((budget - used) // (k - i), 1)
        for it in range(share):
            av = op.matvec(v)
            used += 1
            steps += 1
            norm = max(norm, float(av.norm()))
            bv = av - U.T @ (U @ av)  # B v, B = (I − UUᵀ) A (I − UUᵀ), v ⊥ U
            lam = float(v @ bv)
            # half the tolerance: the final residuals add the deflation's cross-talk
            done = float((bv - lam * v).norm()) <= 0.5 * tol * float(residual_scale(lam, norm))
            if done or it == share - 1:
                break  # (v, av) stay a vector and its product
            v = _deflated_unit(bv, U, gen)
        U, AU = torch.cat([U, v[None]]), torch.cat([AU, av[None]])
    # Rayleigh–Ritz on span(U) with the stored products (no extra product): removes the
    # cross-talk that deflation by inexact vectors leaves between the pairs
    theta, S = torch.linalg.eigh((U @ AU.T + AU @ U.T).double().cpu() / 2)
    order = torch.argsort(theta.abs(), descending=True)
    theta, S = theta[order], S[:, order].to(device=dev, dtype=dt)
    U, AU = S.T @ U, S.T @ AU
    res_t = (AU - theta.to(dev, dt)[:, None] * U).norm(dim=1).double().cpu() / torch.as_tensor(
        residual_scale(theta.numpy(), norm)
    )
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


def _deflated_unit(v: Tensor, U: Tensor, gen: torch.Generator) -> Tensor:
    """v orthogonalized against the rows of U and normalized; a random direction instead
    when nothing of v is left (a start vector in span(U), or B v = 0 on a null space)."""
    for _ in range(3):
        w = v - U.T @ (U @ v)
        w = w - U.T @ (U @ w)
        if float(w.norm()) > 1e-8 * max(float(v.norm()), 1e-300):
            return w / w.norm()
        v = randn(v.shape, gen, v.dtype, v.device)
    return w / w.norm()
