"""Theory beside measurement: Eyring–Kramers, exact 1-D mean first-passage times, the exact
mean passage time of a discrete Gaussian chain, Ornstein–Uhlenbeck closed forms, Arrhenius.

Conventions: the SDE is dx = -grad V(x) dt + sqrt(2D) dW with a constant diffusion matrix D
(for SGD, D = eta Sigma / 2 with Sigma the minibatch gradient covariance; a scalar D = T is
the temperature, the stationary density is exp(-V/T)).

- :func:`eyring_kramers`: mean transition time from a minimum m over an index-1 saddle s,
  tau = 2 pi / |lambda_-(H_s)| * sqrt(|det H_s| / det H_m) * exp((V(s) - V(m)) / T)
  (Eyring 1935, Kramers 1940; proved by Bovier, Gayrard, Klein 2004), with relative
  corrections O(T / dV). For anisotropic D the dynamics is not reversible and the formula
  is replaced by its projection on the escape direction e (the unstable eigenvector of
  H_s), T_e = e^T D e (the approximation of Xie, Sato, Sugiyama, ICLR 2021); ``exact``
  says which.
- :func:`mfpt_1d`: in 1-D, the exact mean first-passage time from a to b > a with a
  reflecting boundary far to the left,
  tau(a -> b) = (1/T) int_a^b dy e^{V(y)/T} int_{-inf}^y dz e^{-V(z)/T}
  (Gardiner, Handbook of Stochastic Methods, §5.2.7), by quadrature.
- :func:`discrete_mfpt_1d`: the exact expected number of steps for the chain
  x' = x - h V'(x) + s xi, xi ~ N(0, 1), to land in [b, inf): the solution m of
  m(x) = 1 + int_{-inf}^b phi_s(y - x + h V'(x)) m(y) dy, by Nyström's method on a grid
  fine against s. It is the Euler–Maruyama chain of the SDE (s = sqrt(2 T h)), with its
  discretisation and discrete-monitoring biases included, and gradient descent with
  Gaussian noise at a finite step (s = h sigma).
- :func:`mfpt_grid_2d`: in 2-D with isotropic noise, the mean first-passage time to a
  half-plane from the backward equation T Laplacian(m) - grad V . grad m = -1 on a grid.
- OU: stationary covariance Sigma of dx = -A x dt + sqrt(2D) dW solves A Sigma + Sigma A = 2D,
  the autocovariance is Sigma e^{-A^T tau}; a linear chain x' = F x + Q^{1/2} xi (Euler–
  Maruyama: F = I - hA, Q = 2Dh) has Sigma = F Sigma F^T + Q and lag-L autocovariance
  Sigma (F^T)^L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sgdlab.dynamics.potentials import Potential


@dataclass
class KramersPrediction:
    tau: float  # mean transition time
    barrier: float  # V(s) - V(m)
    temperature: float  # T (or T_e along the escape direction)
    prefactor: float  # 2 pi / |lambda_-| sqrt(|det H_s| / det H_m)
    exact: bool  # False: anisotropic D, projected on the escape direction

    @property
    def exponent(self) -> float:
        return self.barrier / self.temperature


def eyring_kramers(potential: Potential, minimum, saddle, diffusion) -> KramersPrediction:
    """The Eyring–Kramers mean transition time (see the module docstring)."""
    m = torch.as_tensor(minimum, dtype=torch.float64).reshape(potential.dim)
    s = torch.as_tensor(saddle, dtype=torch.float64).reshape(potential.dim)
    hm, hs = potential.hessian(m), potential.hessian(s)
    wm = torch.linalg.eigvalsh(hm)
    ws, vs = torch.linalg.eigh(hs)
    if float(wm.min()) <= 0:
        raise ValueError("eyring_kramers: the Hessian at the minimum is not positive definite")
    if int((ws < 0).sum()) != 1:
        raise ValueError("eyring_kramers: the saddle must have exactly one negative eigenvalue")
    d = torch.as_tensor(diffusion, dtype=torch.float64)
    if d.dim() == 0 or d.numel() == 1:
        temp, exact = float(d.reshape(-1)[0]), True
    else:
        d = torch.diag(d) if d.dim() == 1 else d
        e = vs[:, 0]
        temp = float(e @ d @ e)
        exact = bool(torch.allclose(d, d[0, 0] * torch.eye(potential.dim, dtype=torch.float64),
                                    rtol=1e-12, atol=0))
    if temp <= 0:
        raise ValueError("eyring_kramers: the temperature must be > 0")
    barrier = float(potential.value(s) - potential.value(m))
    pref = 2 * math.pi / abs(float(ws[0])) * math.sqrt(abs(float(torch.prod(ws)))
                                                       / float(torch.prod(wm)))
    return KramersPrediction(pref * math.exp(barrier / temp), barrier, temp, pref, exact)


def _values(potential: Potential, x: np.ndarray) -> np.ndarray:
    return potential.value(torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)).numpy()


def _grads(potential: Potential, x: np.ndarray) -> np.ndarray:
    return potential.grad(torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1)).numpy()[:, 0]


def reflecting_boundary(potential: Potential, start: float, temperature: float,
                        height: float = 40.0) -> float:
    """A point left of ``start`` where V exceeds its minimum on the way by ``height`` T."""
    x0 = float(start)
    step, lowest = 0.05 * max(1.0, abs(x0)), float(_values(potential, np.array([x0]))[0])
    x = x0
    for _ in range(200):
        x -= step
        v = float(_values(potential, np.array([x]))[0])
        lowest = min(lowest, v)
        if v - lowest > height * temperature:
            return x
        step *= 1.2
    raise ValueError("reflecting_boundary: the potential does not confine to the left")


def mfpt_1d(potential: Potential, start: float, target: float, temperature: float,
            lower: float | None = None, n: int = 2**20) -> float:
    """Exact mean first-passage time of dx = -V' dt + sqrt(2T) dW from ``start`` to
    ``target`` > start (reflecting at ``lower``, by default where V is 40 T above its
    minimum), by trapezoidal quadrature on ``n`` points (relative error ~1e-9)."""
    from scipy.integrate import cumulative_trapezoid, trapezoid

    if potential.dim != 1 or target <= start:
        raise ValueError("mfpt_1d: a 1-D potential and target > start")
    t = float(temperature)
    lo = reflecting_boundary(potential, start, t) if lower is None else float(lower)
    y = np.linspace(lo, target, n)
    v = _values(potential, y)
    v0 = v.min()
    inner = cumulative_trapezoid(np.exp(-(v - v0) / t), y, initial=0.0)
    outer = np.exp((v - v0) / t) * inner
    sel = y >= start
    ys, fs = y[sel], outer[sel]
    # the piece from start to the first grid point at or after it
    first = np.interp(start, y, outer)
    return float((trapezoid(fs, ys) + 0.5 * (first + fs[0]) * (ys[0] - start)) / t)


def discrete_mfpt_1d(potential: Potential, step: float, noise_std: float, start: float,
                     target: float, lower: float | None = None, points_per_std: float = 8.0,
                     max_points: int = 200_000) -> float:
    """Exact mean number of steps for x' = x - step V'(x) + noise_std xi to reach
    [target, inf) from ``start``, by Nyström's method (trapezoid weights on a grid of
    spacing noise_std / points_per_std from ``lower`` to ``target``; a banded sparse
    system). Multiply by ``step`` for the time."""
    from scipy.sparse import csr_matrix, identity
    from scipy.sparse.linalg import spsolve

    s, h = float(noise_std), float(step)
    if potential.dim != 1 or target <= start or s <= 0 or h <= 0:
        raise ValueError("discrete_mfpt_1d: a 1-D potential, target > start, step and noise > 0")
    lo = reflecting_boundary(potential, start, s * s / (2 * h)) if lower is None else lower
    n = int(math.ceil((target - lo) / (s / points_per_std))) + 1
    if n > max_points:
        raise ValueError(f"discrete_mfpt_1d: the grid needs {n} points (> {max_points}); "
                         "lower points_per_std or raise max_points")
    y = np.linspace(lo, target, n)
    dy = y[1] - y[0]
    w = np.full(n, dy)
    w[0] = w[-1] = dy / 2

    def row_block(mu: np.ndarray):
        """(rows, cols, values) of w_j phi_s(y_j - mu_i) within 9 s of mu_i."""
        half = int(math.ceil(9 * s / dy))
        centre = np.round((mu - lo) / dy).astype(np.int64)
        offs = np.arange(-half, half + 1)
        cols = centre[:, None] + offs[None, :]
        ok = (cols >= 0) & (cols < n)
        rows = np.broadcast_to(np.arange(len(mu))[:, None], cols.shape)[ok]
        cols = cols[ok]
        z = (y[cols] - mu[rows]) / s
        vals = w[cols] * np.exp(-0.5 * z * z) / (s * math.sqrt(2 * math.pi))
        return rows, cols, vals

    mu = y - h * _grads(potential, y)
    r, c, v = row_block(mu)
    k = csr_matrix((v, (r, c)), shape=(n, n))
    m = spsolve((identity(n, format="csr") - k).tocsc(), np.ones(n))
    mu0 = np.array([start - h * _grads(potential, np.array([start]))[0]])
    r0, c0, v0 = row_block(mu0)
    return float(1.0 + np.sum(v0 * m[c0]))


def mfpt_grid_2d(potential: Potential, start, target: float, temperature: float,
                 bounds: tuple[float, float, float], h: float | None = None,
                 extrapolate: bool = True) -> float:
    """Mean first-passage time of the 2-D SDE dx = -grad V dt + sqrt(2T) dW (isotropic) from
    ``start`` to the half-plane {x_1 >= target}, from the backward equation
    T Laplacian(m) - grad V . grad m = -1 (m = 0 on x_1 = target, reflecting elsewhere), by
    second-order finite differences on the grid x_1 in [bounds[0], target], x_2 in
    [bounds[1], bounds[2]] of spacing ``h`` (a sparse direct solve), interpolated
    bilinearly at ``start``; by default h = sqrt(T / lambda_max(H(start))) / 8, an eighth of
    the width of the well at the start. Place the outer bounds where V is many T above its
    minimum.
    ``extrapolate``: Richardson's (4 m_h - m_2h)/3 from spacings h and 2h (the error is
    O(h^2); on a separable surface it then matches the 1-D integral to ~1e-4)."""
    if h is None:
        lam = float(torch.linalg.eigvalsh(potential.hessian(start)).abs().max())
        h = math.sqrt(float(temperature) / lam) / 8
    if extrapolate:
        fine = mfpt_grid_2d(potential, start, target, temperature, bounds, h, False)
        coarse = mfpt_grid_2d(potential, start, target, temperature, bounds, 2 * h, False)
        return (4 * fine - coarse) / 3
    from scipy.interpolate import RegularGridInterpolator
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    if potential.dim != 2:
        raise ValueError("mfpt_grid_2d: a 2-D potential")
    x0, y0, y1 = (float(b) for b in bounds)
    nx = int(round((target - x0) / h))
    ny = int(round((y1 - y0) / h))
    xs = target - h * np.arange(nx, -1, -1)  # xs[-1] = target exactly
    ys = np.linspace(y0, y1, ny + 1)
    gx, gy = np.meshgrid(xs[:-1], ys, indexing="ij")  # unknowns: every column but the target
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], -1), dtype=torch.float64)
    grad = potential.grad(pts).numpy()
    t = float(temperature)
    n1, n2 = gx.shape
    index = np.arange(n1 * n2).reshape(n1, n2)
    rows, cols, vals = [], [], []
    ii, jj = np.meshgrid(np.arange(n1), np.arange(n2), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    me = index[ii, jj]
    rows.append(me)
    cols.append(me)
    vals.append(np.full(len(me), -4 * t / h**2))
    for di, dj, g in ((1, 0, grad[:, 0]), (-1, 0, -grad[:, 0]), (0, 1, grad[:, 1]),
                      (0, -1, -grad[:, 1])):
        w = t / h**2 - g / (2 * h)  # neighbour weight: diffusion and central drift
        ni, nj = ii + di, jj + dj
        ni = np.where(ni < 0, 1, ni)  # reflecting: the ghost point mirrors the inside one
        nj = np.where(nj < 0, 1, np.where(nj >= n2, n2 - 2, nj))
        inside = ni < n1  # ni == n1 is the absorbing column: m = 0 there
        rows.append(me[inside])
        cols.append(index[ni[inside], nj[inside]])
        vals.append(w[inside])
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(n1 * n2, n1 * n2)).tocsc()
    m = spsolve(a, -np.ones(n1 * n2)).reshape(n1, n2)
    full = np.vstack([m, np.zeros((1, n2))])
    p = np.asarray(torch.as_tensor(start, dtype=torch.float64)).reshape(1, 2)
    return float(RegularGridInterpolator((xs, ys), full)(p)[0])


# -- Ornstein–Uhlenbeck ------------------------------------------------------------------------
def _matrix(a, dim: int | None = None) -> np.ndarray:
    a = np.asarray(torch.as_tensor(a, dtype=torch.float64))
    if a.ndim == 0:
        return a.reshape(1, 1) if dim is None else a * np.eye(dim)
    return np.diag(a) if a.ndim == 1 else a


def ou_stationary_covariance(hessian, diffusion) -> np.ndarray:
    """Sigma with A Sigma + Sigma A^T = 2D."""
    from scipy.linalg import solve_continuous_lyapunov

    a = _matrix(hessian)
    return solve_continuous_lyapunov(a, 2 * _matrix(diffusion, a.shape[0]))


def ou_autocovariance(hessian, diffusion, lag: float) -> np.ndarray:
    """E[x_t x_{t+lag}^T] at stationarity: Sigma exp(-A^T lag)."""
    from scipy.linalg import expm

    a = _matrix(hessian)
    return ou_stationary_covariance(a, diffusion) @ expm(-a.T * lag)


def linear_chain_stationary_covariance(transition, noise_cov) -> np.ndarray:
    """Sigma with Sigma = F Sigma F^T + Q for the chain x' = F x + Q^{1/2} xi."""
    from scipy.linalg import solve_discrete_lyapunov

    f = _matrix(transition)
    return solve_discrete_lyapunov(f, _matrix(noise_cov, f.shape[0]))


def linear_chain_autocovariance(transition, noise_cov, lag: int) -> np.ndarray:
    """E[x_k x_{k+lag}^T] at stationarity: Sigma (F^T)^lag."""
    f = _matrix(transition)
    return (linear_chain_stationary_covariance(f, noise_cov)
            @ np.linalg.matrix_power(f.T, int(lag)))


# -- fits and indicators -------------------------------------------------------------------
def arrhenius_fit(inverse_temperature, tau, tau_se=None) -> dict:
    """Weighted least squares of ln tau on x = dV/T (or 1/T): slope (dV for x = 1/T, 1 for
    x = dV/T under Arrhenius), intercept, and the slope's standard error."""
    x = np.asarray(inverse_temperature, float)
    y = np.log(np.asarray(tau, float))
    if tau_se is None:
        w = np.ones_like(x)
    else:
        rel = np.asarray(tau_se, float) / np.asarray(tau, float)
        w = 1.0 / np.maximum(rel, 1e-12) ** 2
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(w)
    x, y, w = x[ok], y[ok], w[ok]
    if len(x) < 2:
        return {"slope": math.nan, "intercept": math.nan, "slope_se": math.nan, "n": len(x)}
    design = np.stack([x, np.ones_like(x)], 1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    slope, intercept = cov @ design.T @ (w * y)
    return {"slope": float(slope), "intercept": float(intercept),
            "slope_se": float(math.sqrt(cov[0, 0])), "n": int(len(x))}


def escape_efficiency(hessian, noise_cov) -> float:
    """Tr(H Sigma): Zhu et al.'s (ICML 2019) indicator of how well noise of covariance
    Sigma escapes a minimum of Hessian H (larger: faster); at fixed Tr Sigma it is largest
    for Sigma aligned with the top eigenvectors of H."""
    return float(np.trace(_matrix(hessian) @ _matrix(noise_cov)))
