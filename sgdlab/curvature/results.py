"""Small result records returned by the curvature algorithms (all times in seconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class EigResult:
    """k eigenpairs of a symmetric operator A.

    values:     (k,) float64, ordered by ``which`` ("LA": largest first, "SA": smallest
                first, "LM": largest magnitude first).
    vectors:    (k, P) orthonormal eigenvectors in the operator's dtype/device, or None.
    residuals:  (k,) true relative residuals ‖A v − λ v‖ / max(|λ|, 1e-4 ‖A‖) of the
                returned pairs (‖A‖ estimated during the run; the floor lets a zero converge).
    converged:  (k,) bool: residual ≤ tol, so an eigenvalue of A lies within
                tol · max(|λ|, 1e-4 ‖A‖) of λ (jointly for the k orthonormal pairs), and the
                value is certified to be the i-th wanted one counting multiplicity as far
                as the search could see (every copy is seen when the wanted eigenvalues'
                multiplicity is ≤ the block size, or the Krylov spaces filled up; with one
                vector, a repeated eigenvalue may be returned once: see
                :func:`sgdlab.curvature.lanczos`). Power iteration deflates with a fresh
                start per pair, which finds copies at any block size.
    products:   matrix-vector products used; seconds: wall time (operator setup included
                when the result comes from a model-level function).
    """

    values: Tensor
    vectors: Tensor | None
    residuals: Tensor
    converged: Tensor
    products: int
    seconds: float
    which: str = "LA"
    method: str = "lanczos"
    tol: float = 0.0
    iterations: int = 0

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def __repr__(self) -> str:
        vals = ", ".join(f"{v:.6g}" for v in self.values.tolist())
        return (
            f"EigResult(values=[{vals}], max_residual={self.residuals.max().item():.2e}, "
            f"converged={int(self.converged.sum())}/{len(self.values)}, "
            f"products={self.products}, seconds={self.seconds:.3f})"
        )


@dataclass
class TraceResult:
    """Tr(A) ≈ estimate ± stderr.

    ``samples`` are the Hutchinson terms zᵀ B z (B = A, or the deflated residual of
    Hutch++), ``exact_part`` the deterministic part (Hutch++: Tr(Qᵀ A Q)), so
    estimate = exact_part + mean(samples) and stderr = std(samples) / sqrt(len(samples)).
    ``converged`` is True when stderr ≤ rtol · |estimate| was reached within the budget.
    Hutch++'s stderr includes the rounding floor of its exact part; ``method="exact"``
    (Hutch++ with a budget of at least P products) is Σ_i e_iᵀ A e_i, its stderr the
    rounding floor alone.
    """

    estimate: float
    stderr: float
    products: int
    seconds: float
    method: str
    samples: Tensor = field(repr=False)
    exact_part: float = 0.0
    sketch_size: int = 0
    converged: bool = False

    @property
    def relative_stderr(self) -> float:
        return self.stderr / abs(self.estimate) if self.estimate else math.inf


@dataclass
class DensityResult:
    """Spectral density by stochastic Lanczos quadrature (SLQ).

    nodes, weights: (n_v, m) Gauss quadrature nodes θ and weights τ (each row sums to 1;
    padding entries have weight 0) of the n_v random starting vectors. The density on
    ``grid`` is φ(t) = (1/n_v) Σ_v Σ_j τ_vj N(t; θ_vj, sigma²); it integrates to 1 and
    estimates (1/P) Σ_i N(t; λ_i, sigma²).
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float
    products: int
    seconds: float

    def mass(self, lo: float, hi: float) -> float:
        """Estimated fraction of eigenvalues in [lo, hi] (Gaussian-broadened, exact integral)."""
        s = self.sigma * math.sqrt(2.0)
        cdf = lambda t: 0.5 * (1 + torch.erf((t - self.nodes) / s))  # noqa: E731
        return float((self.weights * (cdf(hi) - cdf(lo))).sum() / self.nodes.shape[0])
