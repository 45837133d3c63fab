"""Controlled landscapes: potentials V: R^d -> R with known minima and saddles.

Every potential maps a batch of points ``x`` of shape ``(..., d)`` to ``value(x)`` of shape
``(...)`` and ``grad(x)`` of shape ``(..., d)``; the built-in ones have closed-form
gradients (the inner loop of thousands of chains calls ``grad`` once per step), a user's
callable gets its gradient from ``torch.func``. ``hessian(point)`` is the dense ``(d, d)``
Hessian at one point (``torch.func.hessian`` of ``value``, float64).

Built-ins (``minima`` and ``saddles`` known in closed form or from polynomial roots):

- :class:`DoubleWell`: V(x) = h ((x/a)^2 - 1)^2, minima ±a with V'' = 8h/a^2, saddle 0 with
  V'' = -4h/a^2, barrier h; parametrized by the barrier and the curvature at the minima
  (``a = sqrt(8h/k)``), so minima of chosen curvature share one barrier.
- :class:`Polynomial1D`: any polynomial with positive even leading term; critical points
  are the real roots of V' (``numpy.roots``), typed by the sign of V''.
  :func:`tilted_double_well` subtracts ``tilt * h * x / a``: asymmetric wells.
- :class:`SaddleSurface`: in coordinates (u, v) rotated by ``angle`` from (x, y),
  V = h ((u/a)^2 - 1)^2 + (k/2) (1 + c (u/a)^2) v^2: minima (±a, 0) with Hessian
  diag(8h/a^2, k(1 + c)), saddle (0, 0) with diag(-4h/a^2, k); ``c`` couples the
  transverse curvature to the escape coordinate, so the Eyring–Kramers prefactor is not
  that of the 1-D well.
- :class:`Quadratic`: V = 1/2 (x - m)^T A (x - m): the Ornstein–Uhlenbeck landscape.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


class Potential:
    """Base class: subclasses set ``dim`` and implement ``value`` (and, for speed, ``grad``)."""

    dim: int = 1

    def value(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, x: Tensor) -> Tensor:
        """Gradient by autograd of ``value`` (built-ins override it with a closed form)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.value(xg).sum(), xg)
        return g

    def hessian(self, point) -> Tensor:
        """Dense Hessian ``(d, d)`` at one point, float64."""
        p = torch.as_tensor(point, dtype=torch.float64).reshape(self.dim)
        return torch.func.hessian(lambda z: self.value(z))(p).reshape(self.dim, self.dim)

    @property
    def minima(self) -> list[Tensor]:
        """Known local minima (float64 points of shape ``(d,)``); empty if unknown."""
        return []

    @property
    def saddles(self) -> list[Tensor]:
        """Known index-1 saddles (in 1-D: local maxima)."""
        return []

    def __call__(self, x: Tensor) -> Tensor:
        return self.value(x)


class CallablePotential(Potential):
    """A user's differentiable ``fn(x: (d,)) -> scalar``; batched with ``torch.func.vmap``,
    its gradient from ``torch.func.grad``. ``minima``/``saddles`` may be given (or found
    with :func:`critical_point`)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], dim: int,
                 minima=(), saddles=()):
        self.fn, self.dim = fn, int(dim)
        self._grad = torch.func.grad(fn)
        self._minima = [torch.as_tensor(m, dtype=torch.float64).reshape(dim) for m in minima]
        self._saddles = [torch.as_tensor(s, dtype=torch.float64).reshape(dim) for s in saddles]

    def _batched(self, f, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.dim)
        out = torch.func.vmap(f)(flat)
        return out.reshape(*x.shape[:-1], *out.shape[1:])

    def value(self, x: Tensor) -> Tensor:
        return self._batched(self.fn, x) if x.dim() > 1 else self.fn(x)

    def grad(self, x: Tensor) -> Tensor:
        return self._batched(self._grad, x) if x.dim() > 1 else self._grad(x)

    def hessian(self, point) -> Tensor:
        p = torch.as_tensor(point, dtype=torch.float64).reshape(self.dim)
        return torch.func.hessian(self.fn)(p).reshape(self.dim, self.dim)

    @property
    def minima(self) -> list[Tensor]:
        return list(self._minima)

    @property
    def saddles(self) -> list[Tensor]:
        return list(self._saddles)


class Polynomial1D(Potential):
    """V(x) = sum_i c_i x^i (``coeffs`` lowest degree first), Horner-evaluated."""

    dim = 1

    def __init__(self, coeffs):
        c = [float(v) for v in coeffs]
        while len(c) > 1 and c[-1] == 0:
            c.pop()
        if len(c) < 3 or (len(c) - 1) % 2 or c[-1] <= 0:
            raise ValueError("Polynomial1D: needs an even degree >= 2 and a positive leading "
                             f"coefficient (confining), got coefficients {coeffs}")
        self.coeffs = c
        self.dcoeffs = [i * c[i] for i in range(1, len(c))]

    @staticmethod
    def _horner(coeffs: list[float], x: Tensor) -> Tensor:
        out = torch.full_like(x, coeffs[-1])
        for a in reversed(coeffs[:-1]):
            out = out * x + a
        return out

    def value(self, x: Tensor) -> Tensor:
        return self._horner(self.coeffs, x[..., 0])

    def grad(self, x: Tensor) -> Tensor:
        return self._horner(self.dcoeffs, x)

    def hessian(self, point) -> Tensor:
        x = float(torch.as_tensor(point, dtype=torch.float64).reshape(-1)[0])
        return torch.tensor([[self.second_derivative(x)]], dtype=torch.float64)

    def second_derivative(self, x: float) -> float:
        return float(np.polyval(np.polyder(np.array(self.coeffs[::-1]), 2), x))

    def _critical(self) -> list[tuple[float, float]]:
        roots = np.roots(np.array(self.dcoeffs[::-1]))
        real = sorted(float(r.real) for r in roots if abs(r.imag) < 1e-9 * max(1, abs(r)))
        return [(r, self.second_derivative(r)) for r in real]

    @property
    def minima(self) -> list[Tensor]:
        return [torch.tensor([r], dtype=torch.float64) for r, d2 in self._critical() if d2 > 0]

    @property
    def saddles(self) -> list[Tensor]:
        return [torch.tensor([r], dtype=torch.float64) for r, d2 in self._critical() if d2 < 0]


class DoubleWell(Polynomial1D):
    """V(x) = h ((x/a)^2 - 1)^2 with ``barrier`` h and ``curvature`` k = V''(±a) = 8h/a^2."""

    def __init__(self, barrier: float = 1.0, curvature: float = 8.0):
        if barrier <= 0 or curvature <= 0:
            raise ValueError("DoubleWell: barrier and curvature must be > 0")
        self.barrier, self.curvature = float(barrier), float(curvature)
        self.width = math.sqrt(8 * self.barrier / self.curvature)
        h, a2 = self.barrier, self.width**2
        super().__init__([h, 0.0, -2 * h / a2, 0.0, h / a2**2])
        self._c = 4 * h / a2**2  # V'(x) = (4h/a^4) x (x^2 - a^2)

    def grad(self, x: Tensor) -> Tensor:
        return self._c * x * (x * x - self.width**2)

    @property
    def minima(self) -> list[Tensor]:
        return [torch.tensor([-self.width], dtype=torch.float64),
                torch.tensor([self.width], dtype=torch.float64)]

    @property
    def saddles(self) -> list[Tensor]:
        return [torch.zeros(1, dtype=torch.float64)]


def tilted_double_well(barrier: float = 1.0, curvature: float = 8.0,
                       tilt: float = 0.2) -> Polynomial1D:
    """The :class:`DoubleWell` minus ``tilt * h * x / a``: the right well lower for tilt > 0
    (two minima while |tilt| < 8/(3 sqrt 3) ≈ 1.54)."""
    w = DoubleWell(barrier, curvature)
    c = list(w.coeffs)
    c[1] -= tilt * w.barrier / w.width
    pot = Polynomial1D(c)
    if len(pot.minima) != 2:
        raise ValueError(f"tilted_double_well: tilt {tilt} leaves {len(pot.minima)} minimum")
    return pot


class SaddleSurface(Potential):
    """Two minima joined through one saddle in 2-D (see the module docstring)."""

    dim = 2

    def __init__(self, barrier: float = 1.0, curvature: float = 8.0,
                 transverse: float = 2.0, coupling: float = 0.0, angle: float = 0.0):
        if barrier <= 0 or curvature <= 0 or transverse <= 0 or 1 + coupling <= 0:
            raise ValueError("SaddleSurface: barrier, curvature, transverse and 1 + coupling "
                             "must be > 0")
        self.barrier, self.curvature = float(barrier), float(curvature)
        self.transverse, self.coupling, self.angle = float(transverse), float(coupling), angle
        self.width = math.sqrt(8 * self.barrier / self.curvature)
        c, s = math.cos(angle), math.sin(angle)
        self.rotation = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)  # (u,v) = R (x,y)
        self._cs = (c, s)
        self.escape_direction = self.rotation[0].clone()  # u axis in (x, y)

    def _uv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c, s = self._cs
        return c * x[..., 0] + s * x[..., 1], c * x[..., 1] - s * x[..., 0]

    def value(self, x: Tensor) -> Tensor:
        u, v = self._uv(x)
        q = (u / self.width) ** 2
        return (self.barrier * (q - 1) ** 2
                + 0.5 * self.transverse * (1 + self.coupling * q) * v * v)

    def grad(self, x: Tensor) -> Tensor:
        u, v = self._uv(x)
        a2 = self.width**2
        q = u * u / a2
        du = u * ((4 * self.barrier / a2) * (q - 1)
                  + (self.transverse * self.coupling / a2) * v * v)
        dv = v * (self.transverse * (1 + self.coupling * q))
        c, s = self._cs  # grad_x = R^T grad_(u,v)
        return torch.stack([c * du - s * dv, s * du + c * dv], dim=-1)

    def hessian(self, point) -> Tensor:
        """Closed form: in (u, v), [[V_uu, V_uv], [V_uv, V_vv]], rotated back."""
        p = torch.as_tensor(point, dtype=torch.float64).reshape(2)
        u, v = self._uv(p)
        a2, k, c = self.width**2, self.transverse, self.coupling
        huu = (4 * self.barrier / a2) * (3 * u * u / a2 - 1) + k * c * v * v / a2
        huv = 2 * k * c * u * v / a2
        hvv = k * (1 + c * u * u / a2)
        h = torch.stack([torch.stack([huu, huv]), torch.stack([huv, hvv])])
        return self.rotation.T @ h @ self.rotation

    def _point(self, u: float) -> Tensor:
        return self.rotation.T @ torch.tensor([u, 0.0], dtype=torch.float64)

    @property
    def minima(self) -> list[Tensor]:
        return [self._point(-self.width), self._point(self.width)]

    @property
    def saddles(self) -> list[Tensor]:
        return [self._point(0.0)]


class Quadratic(Potential):
    """V(x) = 1/2 (x - m)^T A (x - m), ``A`` symmetric positive definite."""

    def __init__(self, hessian, center=None):
        a = torch.as_tensor(hessian, dtype=torch.float64)
        a = a.reshape(1, 1) if a.dim() == 0 else a
        if a.dim() == 1:
            a = torch.diag(a)
        if not torch.allclose(a, a.T) or torch.linalg.eigvalsh(a).min() <= 0:
            raise ValueError("Quadratic: the Hessian must be symmetric positive definite")
        self.A, self.dim = a, a.shape[0]
        self.center = (torch.zeros(self.dim, dtype=torch.float64) if center is None
                       else torch.as_tensor(center, dtype=torch.float64).reshape(self.dim))

    def value(self, x: Tensor) -> Tensor:
        z = x - self.center.to(x.dtype)
        return 0.5 * ((z @ self.A.to(x.dtype)) * z).sum(-1)

    def grad(self, x: Tensor) -> Tensor:
        return (x - self.center.to(x.dtype)) @ self.A.to(x.dtype)

    def hessian(self, point=None) -> Tensor:
        return self.A.clone()

    @property
    def minima(self) -> list[Tensor]:
        return [self.center.clone()]


def critical_point(potential: Potential, guess, tol: float = 1e-12,
                   max_iter: int = 100) -> tuple[Tensor, int]:
    """Newton's method on grad V = 0 from ``guess`` (float64); returns the point and its
    index (the number of negative Hessian eigenvalues: 0 a minimum, 1 a saddle)."""
    x = torch.as_tensor(guess, dtype=torch.float64).reshape(potential.dim).clone()
    for _ in range(max_iter):
        g = potential.grad(x.unsqueeze(0))[0]
        if float(g.norm()) < tol:
            break
        x = x - torch.linalg.solve(potential.hessian(x), g)
    else:
        raise ValueError(f"critical_point: Newton did not converge from {guess}")
    index = int((torch.linalg.eigvalsh(potential.hessian(x)) < 0).sum())
    return x, index
