"""A finite-sum problem on a controlled landscape, with a designed gradient-noise covariance.

Example i of n has loss V_i(x) = V(x) + a_i . x with sum_i a_i = 0, so the full loss is V and
the per-example gradient is grad V(x) + a_i: the noise is additive, and its per-example
covariance C = (1/n) sum_i a_i a_i^T is chosen by the user. A minibatch of S examples drawn
uniformly with replacement has gradient grad V(x) + (1/S) sum_{i in B} a_i, whose noise has
mean 0 and covariance exactly C/S (:meth:`FiniteSum.minibatch_covariance`).

:func:`designed_offsets` builds offsets whose empirical covariance is C to rounding:
antithetic pairs (a, -a) (so the empirical mean is 0 and every odd moment vanishes) of
Gaussian draws whitened by their own empirical covariance, or, with ``kind="two-point"``,
the 2^d sign vectors (±1, ..., ±1) mapped by C^{1/2} (n a multiple of 2^d).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from sgdlab.dynamics.potentials import Potential


def matrix_sqrt(cov) -> Tensor:
    """Symmetric square root of a positive semi-definite matrix (float64)."""
    c = torch.as_tensor(cov, dtype=torch.float64)
    c = c.reshape(1, 1) if c.dim() == 0 else (torch.diag(c) if c.dim() == 1 else c)
    w, q = torch.linalg.eigh(0.5 * (c + c.T))
    if float(w.min()) < -1e-12 * max(1.0, float(w.abs().max())):
        raise ValueError("covariance: must be positive semi-definite")
    return (q * w.clamp_min(0).sqrt()) @ q.T


def as_covariance(cov, dim: int) -> Tensor:
    """A scalar (isotropic), a vector (diagonal) or a (d, d) matrix as a (d, d) matrix."""
    c = torch.as_tensor(cov, dtype=torch.float64)
    if c.dim() == 0:
        return c * torch.eye(dim, dtype=torch.float64)
    if c.dim() == 1:
        return torch.diag(c)
    if c.shape != (dim, dim):
        raise ValueError(f"covariance: expected shape ({dim}, {dim}), got {tuple(c.shape)}")
    return 0.5 * (c + c.T)


def designed_offsets(cov, n: int, seed: int = 0, kind: str = "gaussian") -> Tensor:
    """``n`` offsets (n, d) with (1/n) sum a_i = 0 and (1/n) sum a_i a_i^T = cov."""
    c = torch.as_tensor(cov, dtype=torch.float64)
    dim = 1 if c.dim() == 0 else c.shape[0]
    root = matrix_sqrt(as_covariance(c, dim))
    if kind == "two-point":
        if n % 2**dim:
            raise ValueError(f"designed_offsets: two-point needs n a multiple of {2**dim}")
        signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=dim)),
                             dtype=torch.float64)
        z = signs.repeat(n // 2**dim, 1)
    elif kind == "gaussian":
        if n % 2 or n < 2 * dim:
            raise ValueError(f"designed_offsets: needs an even n >= 2d, got {n}")
        g = torch.Generator().manual_seed(seed)
        half = torch.randn(n // 2, dim, generator=g, dtype=torch.float64)
        z = torch.cat([half, -half])  # antithetic: mean exactly 0
        emp = z.T @ z / n
        z = z @ torch.linalg.inv(torch.linalg.cholesky(emp)).T  # empirical covariance = I
    else:
        raise ValueError(f"designed_offsets: kind must be 'gaussian' or 'two-point', got {kind!r}")
    return z @ root


class FiniteSum:
    """Examples V_i(x) = V(x) + a_i . x over a :class:`Potential` (see the module docstring)."""

    def __init__(self, potential: Potential, offsets: Tensor):
        a = torch.as_tensor(offsets, dtype=torch.float64)
        a = a.reshape(-1, 1) if a.dim() == 1 else a
        if a.shape[1] != potential.dim:
            raise ValueError(f"FiniteSum: offsets have dimension {a.shape[1]}, the potential "
                             f"{potential.dim}")
        mean = a.mean(0)
        if float(mean.abs().max()) > 1e-9 * (1 + float(a.abs().max())):
            raise ValueError("FiniteSum: the offsets must sum to zero (the full loss is V)")
        self.potential, self.offsets = potential, a - mean
        self.n, self.dim = a.shape

    @classmethod
    def designed(cls, potential: Potential, cov, n: int = 1000, seed: int = 0,
                 kind: str = "gaussian") -> FiniteSum:
        return cls(potential, designed_offsets(cov, n, seed, kind))

    @property
    def covariance(self) -> Tensor:
        """Per-example gradient covariance C = (1/n) sum_i a_i a_i^T."""
        return self.offsets.T @ self.offsets / self.n

    def minibatch_covariance(self, batch_size: int) -> Tensor:
        """Covariance of the minibatch gradient noise, C / S (sampling with replacement)."""
        return self.covariance / batch_size

    def example_gradients(self, x: Tensor) -> Tensor:
        """All per-example gradients at the points ``x`` (..., d): shape (..., n, d)."""
        g = self.potential.grad(x)
        return g.unsqueeze(-2) + self.offsets.to(x.dtype)

    def minibatch_gradient(self, x: Tensor, index: Tensor) -> Tensor:
        """Gradient of the minibatch ``index`` (..., S) at ``x`` (..., d)."""
        return self.potential.grad(x) + self.offsets.to(x.dtype)[index].mean(-2)
