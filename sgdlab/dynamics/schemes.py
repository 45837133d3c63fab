"""Discrete SGD, gradient descent with Gaussian noise, the SGD SDE and SVAG, side by side.

All of them are one chain x_{k+1} = x_k - h (grad V(x_k) + xi_k), run for thousands of
chains at once, and differ only in the step h and the noise xi_k; time is t = h k, so SGD
at learning rate eta and the SDE are compared in the same units (t = eta * steps):

- :func:`sgd`: h = eta, xi the minibatch noise of a :class:`FiniteSum` (S examples drawn
  with replacement: mean 0, covariance C/S, not Gaussian);
- :func:`noisy_gd`: h = eta, xi ~ N(0, Sigma) (``Sigma = C/S`` matches SGD's covariance;
  ``isotropic=True`` keeps its trace, Tr(C/S)/d I);
- :func:`sde`: the Itô SDE dx = -grad V dt + sqrt(eta Sigma) dW (Jastrzębski et al. 2018;
  Li, Malladi, Arora 2021), i.e. diffusion D = eta Sigma / 2, temperature T = eta sigma^2/(2S)
  for Sigma = sigma^2/S; Euler–Maruyama at a step dt well below eta, so
  xi ~ N(0, (eta/dt) Sigma);
- :func:`svag`: SVAG (Li, Malladi, Arora, NeurIPS 2021): h = eta/l and
  xi = c1 xi_B1 + c2 xi_B2 for two independent minibatches, c_{1,2} = (1 ± sqrt(2l - 1))/2:
  the mean is unchanged and the covariance is l C/S, so as l grows it converges (weakly,
  order 1 in 1/l) to the same SDE while using only minibatch gradients; l = 1 is SGD.

:class:`ExactOU` integrates the Ornstein–Uhlenbeck SDE on a :class:`Quadratic` exactly.

Every scheme has ``advance(x, k, gen, chains)``: k steps from the states ``x`` (n, d) of the
chains ``chains`` (indices into per-chain parameters), returning the k states visited
(k, n, d) with ``x`` left at the last one. The trajectory block is where the noise is
drawn and where first passage is checked (every step). Random numbers come from a numpy
``Generator`` (PCG64): its ziggurat normals are about twice as fast as torch's float64
``randn`` on CPU, and its ``integers`` + ``take`` gather minibatches as fast as torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sgdlab.dynamics.finite_sum import FiniteSum, as_covariance, matrix_sqrt
from sgdlab.dynamics.potentials import Potential, Quadratic


def svag_coefficients(l: int) -> tuple[float, float]:
    """SVAG's (c1, c2) = ((1 + √(2l − 1))/2, (1 − √(2l − 1))/2): c1 + c2 = 1 and
    c1² + c2² = l, so the two-batch gradient keeps the mean and multiplies the noise's
    covariance by l (Li, Malladi & Arora 2021)."""
    r = math.sqrt(2 * l - 1)
    return (1 + r) / 2, (1 - r) / 2


# -- noise samplers: sample(k, chains, gen, dtype) -> (k, n, d) ---------------------------------
class GaussianNoise:
    """xi ~ N(0, Sigma); ``std_scale`` (per chain, optional) multiplies xi: a grid of
    temperatures in one batch of chains."""


    def __init__(self, cov, dim: int, std_scale: Tensor | None = None):
        self.cov = as_covariance(cov, dim)
        self.root = matrix_sqrt(self.cov)
        self.dim = dim
        self.isotropic = bool(torch.allclose(self.cov, self.cov[0, 0] * torch.eye(dim,
                                                                                  dtype=torch.float64)))
        self.std_scale = None if std_scale is None else torch.as_tensor(std_scale,
                                                                        dtype=torch.float64)

    def sample(self, k: int, chains: Tensor, gen: np.random.Generator, dtype) -> Tensor:
        z = torch.from_numpy(gen.standard_normal((k, len(chains), self.dim))).to(dtype)
        if self.isotropic:
            z.mul_(math.sqrt(float(self.cov[0, 0])))
        else:
            z = z @ self.root.to(dtype).T
        if self.std_scale is not None:
            z.mul_(self.std_scale.to(dtype)[chains].unsqueeze(-1))
        return z


class MinibatchNoise:
    """xi = mean of S offsets drawn uniformly with replacement (exact finite-sum sampling)."""

    def __init__(self, offsets: Tensor, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.offsets, self.batch_size = offsets, int(batch_size)
        self.n, self.dim = offsets.shape
        self._columns = [(offsets[:, j] / self.batch_size).numpy().copy()
                         for j in range(self.dim)]

    def batch_means(self, k: int, m: int, gen: np.random.Generator, dtype) -> Tensor:
        """(k, m, d) minibatch means: k steps of m chains (a flat ``take`` per coordinate
        of the offsets divided by S: several times faster than gathering rows)."""
        idx = gen.integers(0, self.n, (k, self.batch_size, m))
        cols = [torch.from_numpy(c.take(idx)) for c in self._columns]  # (k, S, m) each
        cols = [c[:, 0] if self.batch_size == 1 else c.sum(1) for c in cols]
        out = cols[0].unsqueeze(-1) if self.dim == 1 else torch.stack(cols, -1)
        return out.to(dtype)

    def sample(self, k: int, chains: Tensor, gen: np.random.Generator, dtype) -> Tensor:
        return self.batch_means(k, len(chains), gen, dtype)


class SVAGNoise(MinibatchNoise):
    """c1 xi_B1 + c2 xi_B2 with c_{1,2} = (1 ± sqrt(2l - 1))/2: covariance l C/S."""

    def __init__(self, offsets: Tensor, batch_size: int, l: int):
        super().__init__(offsets, batch_size)
        if l < 1:
            raise ValueError(f"SVAG: l must be >= 1, got {l}")
        self.l = int(l)
        self.c1, self.c2 = svag_coefficients(self.l)

    def sample(self, k: int, chains: Tensor, gen: np.random.Generator, dtype) -> Tensor:
        if self.l == 1:
            return self.batch_means(k, len(chains), gen, dtype)
        both = self.batch_means(k, 2 * len(chains), gen, dtype)
        return both[:, : len(chains)].mul_(self.c1).add_(both[:, len(chains):], alpha=self.c2)


# -- the chain --------------------------------------------------------------------------------
class NoisyGradientScheme:
    """x_{k+1} = x_k - h (grad V(x_k) + xi_k); ``step`` h a float or one per chain."""

    def __init__(self, potential: Potential, step, noise, name: str = ""):
        self.potential, self.noise, self.name = potential, noise, name
        s = torch.as_tensor(step, dtype=torch.float64)
        if bool((s <= 0).any()):
            raise ValueError("step: must be > 0")
        self.step = s
        self.dim = potential.dim

    def time_step(self, chains: Tensor) -> Tensor:
        """Time per step of each chain (float64, shape (n,))."""
        return self.step.expand(len(chains)) if self.step.dim() == 0 else self.step[chains]

    def advance(self, x: Tensor, k: int, gen: np.random.Generator, chains: Tensor) -> Tensor:
        traj = self.noise.sample(k, chains, gen, x.dtype)  # xi, overwritten by the states
        if self.step.dim() == 0:
            h = float(self.step)
            traj.mul_(-h)
            prev = x
            for j in range(k):
                traj[j].add_(prev).add_(self.potential.grad(prev), alpha=-h)
                prev = traj[j]
        else:
            h = self.step.to(x.dtype)[chains].unsqueeze(-1)
            traj.mul_(-h)
            prev = x
            for j in range(k):
                traj[j].add_(prev).addcmul_(self.potential.grad(prev), h, value=-1.0)
                prev = traj[j]
        x.copy_(traj[-1])
        return traj


class ExactOU:
    """Exact transition of dx = -A (x - m) dt + sqrt(2D) dW over a step dt:
    x' = m + F (x - m) + Q^{1/2} z with F = exp(-A dt), Q = integral_0^dt e^{-As} 2D e^{-As} ds
    (from the Lyapunov equation A Q + Q A = 2D - F 2D F)."""

    def __init__(self, quadratic: Quadratic, dt: float, diffusion):
        from scipy.linalg import solve_continuous_lyapunov

        a = quadratic.A.numpy()
        d2 = 2 * as_covariance(diffusion, quadratic.dim).numpy()
        f = torch.linalg.matrix_exp(-quadratic.A * dt)
        rhs = d2 - f.numpy() @ d2 @ f.numpy().T
        q = torch.as_tensor(solve_continuous_lyapunov(a, rhs), dtype=torch.float64)
        self.potential, self.dim, self.dt = quadratic, quadratic.dim, float(dt)
        self.F, self.root, self.name = f, matrix_sqrt(0.5 * (q + q.T)), "exact OU"
        self.step = torch.tensor(float(dt), dtype=torch.float64)

    def time_step(self, chains: Tensor) -> Tensor:
        return torch.full((len(chains),), self.dt, dtype=torch.float64)

    def advance(self, x: Tensor, k: int, gen: np.random.Generator, chains: Tensor) -> Tensor:
        traj = torch.from_numpy(gen.standard_normal((k, len(chains), self.dim))).to(x.dtype) \
            @ self.root.to(x.dtype).T
        m, ft = self.potential.center.to(x.dtype), self.F.to(x.dtype).T
        prev = x
        for j in range(k):
            traj[j].add_((prev - m) @ ft).add_(m)
            prev = traj[j]
        x.copy_(traj[-1])
        return traj


# -- constructors -----------------------------------------------------------------------------
def sgd(problem: FiniteSum, lr: float, batch_size: int) -> NoisyGradientScheme:
    """Minibatch SGD at learning rate ``lr`` and batch ``batch_size`` (time step lr)."""
    return NoisyGradientScheme(problem.potential, lr, MinibatchNoise(problem.offsets, batch_size),
                               f"SGD η={lr:g} S={batch_size}")


def noisy_gd(potential: Potential, lr, cov, std_scale=None) -> NoisyGradientScheme:
    """Gradient descent plus N(0, cov) gradient noise (time step lr)."""
    return NoisyGradientScheme(potential, lr, GaussianNoise(cov, potential.dim, std_scale),
                               "GD + Gaussian noise")


def gd_matching(problem: FiniteSum, lr: float, batch_size: int,
                isotropic: bool = False) -> NoisyGradientScheme:
    """GD + Gaussian noise with SGD's minibatch covariance C/S, or (``isotropic``) with its
    trace spread evenly over the d directions."""
    cov = problem.minibatch_covariance(batch_size)
    if isotropic:
        cov = torch.trace(cov) / problem.dim * torch.eye(problem.dim, dtype=torch.float64)
    scheme = noisy_gd(problem.potential, lr, cov)
    scheme.name = f"GD + {'isotropic ' if isotropic else ''}noise η={lr:g}"
    return scheme


def sde(potential: Potential, lr: float, noise_cov, dt: float,
        std_scale=None) -> NoisyGradientScheme:
    """Euler–Maruyama at step ``dt`` for dx = -grad V dt + sqrt(lr noise_cov) dW, where
    ``noise_cov`` is the minibatch gradient covariance (C/S for SGD). ``std_scale`` (one
    per chain) multiplies the noise: chain i then has temperature ``std_scale[i]**2`` T."""
    if dt <= 0 or lr <= 0:
        raise ValueError("sde: lr and dt must be > 0")
    cov = as_covariance(noise_cov, potential.dim) * (lr / dt)
    return NoisyGradientScheme(potential, dt, GaussianNoise(cov, potential.dim, std_scale),
                               f"SDE (Euler–Maruyama, dt={dt:g})")


def svag(problem: FiniteSum, lr: float, batch_size: int, l: int) -> NoisyGradientScheme:
    """SVAG with amplification ``l`` (step lr/l, time step lr/l); l = 1 is SGD."""
    return NoisyGradientScheme(problem.potential, lr / l,
                               SVAGNoise(problem.offsets, batch_size, l),
                               f"SVAG l={l} η={lr:g} S={batch_size}")


def diffusion(lr: float, noise_cov) -> Tensor:
    """Diffusion matrix D = lr Sigma / 2 of the SGD SDE, Sigma the minibatch gradient
    covariance (a scalar: the temperature T = lr sigma^2 / (2S) for Sigma = sigma^2/S)."""
    return lr * torch.as_tensor(noise_cov, dtype=torch.float64) / 2
