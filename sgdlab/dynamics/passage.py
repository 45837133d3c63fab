"""Thousands of chains at once: first-passage times, checked at every step, with their
standard errors; sample paths for stationary statistics.

:func:`first_passage` runs chains of a scheme (:mod:`sgdlab.dynamics.schemes`) in blocks of
``block`` steps: the block's k states (k, n, d) are tested against the target region at
once, the first step inside it is each chain's passage step, and chains that have passed
are dropped before the next block (the work is proportional to the summed passage times,
not to n times the longest). The first-passage time is ``steps * h`` in the scheme's time
units (t = eta * steps for SGD). Chains still outside after ``max_time`` are censored.

Estimates (:class:`Passage`): the sample mean of the passage times and its standard error
sd/sqrt(n) when every chain passed (independent chains); with censoring, the exponential
maximum-likelihood rate (passages / total time at risk), right when passage is a Poisson
event after a short relaxation, as for escape over a barrier of many T.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


# -- target regions: region(states (k, n, d)) -> (k, n) bool ------------------------------------
class Halfspace:
    """{x : normal . x >= offset}; in 1-D ``Halfspace(1.0, b)`` is x >= b, ``(-1.0, -b)`` x <= b."""

    def __init__(self, normal, offset: float):
        self.normal = torch.as_tensor(normal, dtype=torch.float64).reshape(-1)
        self.offset = float(offset)

    @classmethod
    def beyond(cls, point, direction) -> Halfspace:
        """The half-space past ``point`` in ``direction``: (x - point) . direction >= 0."""
        d = torch.as_tensor(direction, dtype=torch.float64).reshape(-1)
        p = torch.as_tensor(point, dtype=torch.float64).reshape(-1)
        return cls(d, float(d @ p))

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-1] == 1:
            n = float(self.normal[0])
            return x[..., 0] >= self.offset / n if n > 0 else x[..., 0] <= self.offset / n
        return x @ self.normal.to(x.dtype) >= self.offset


class Ball:
    """{x : |x - center| <= radius}."""

    def __init__(self, center, radius: float):
        self.center = torch.as_tensor(center, dtype=torch.float64).reshape(-1)
        self.radius = float(radius)

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.center.to(x.dtype)).pow(2).sum(-1) <= self.radius**2


Region = Callable[[Tensor], Tensor]


def between_minima(potential, frm: int = 0, to: int = 1) -> tuple[Tensor, Halfspace]:
    """Start at minimum ``frm``; the target is the half-space past minimum ``to`` along the
    line joining them (where the Eyring–Kramers transition time ends)."""
    a, b = potential.minima[frm], potential.minima[to]
    return a, Halfspace.beyond(b, b - a)


# -- results ------------------------------------------------------------------------------------
@dataclass
class Passage:
    """First passage of n chains: ``steps`` (int64, -1 if censored), ``time_step`` per chain."""

    steps: np.ndarray
    time_step: np.ndarray
    max_steps: np.ndarray  # steps each chain ran when censored (its budget)
    name: str = ""
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.steps)

    @property
    def passed(self) -> np.ndarray:
        return self.steps >= 0

    @property
    def n_passed(self) -> int:
        return int(self.passed.sum())

    @property
    def times(self) -> np.ndarray:
        """Passage times t = steps * h (NaN where censored)."""
        return np.where(self.passed, self.steps * self.time_step, np.nan)

    @property
    def mean(self) -> float:
        """Sample mean of the passage times (NaN if any chain is censored)."""
        return float(np.mean(self.times)) if self.n_passed == self.n and self.n else math.nan

    @property
    def stderr(self) -> float:
        if self.n_passed != self.n or self.n < 2:
            return math.nan
        return float(np.std(self.times, ddof=1) / math.sqrt(self.n))

    @property
    def rate(self) -> tuple[float, float]:
        """Exponential MLE of the passage rate and its standard error (rate / sqrt(passages)),
        counting censored chains' time at risk."""
        exposure = float(np.sum(np.where(self.passed, self.steps, self.max_steps)
                                * self.time_step))
        k = self.n_passed
        if k == 0 or exposure == 0:
            return 0.0, math.nan
        r = k / exposure
        return r, r / math.sqrt(k)

    def estimate(self) -> tuple[float, float]:
        """Mean passage time and its standard error: the sample mean when all passed, else
        1/rate (exponential MLE) with the delta-method SE."""
        if self.n_passed == self.n:
            return self.mean, self.stderr
        r, se = self.rate
        return (math.inf, math.nan) if r == 0 else (1 / r, se / r**2)

    def select(self, index) -> Passage:
        """The chains ``index`` (a mask or indices) as their own :class:`Passage`."""
        return Passage(self.steps[index], self.time_step[index], self.max_steps[index],
                       self.name, self.seconds)

    def summary(self) -> dict:
        m, se = self.estimate()
        return {"name": self.name, "n": self.n, "passed": self.n_passed, "mean": m, "se": se,
                "seconds": self.seconds}


# -- running chains -------------------------------------------------------------------------
def _start(start, n_chains: int, dim: int, dtype) -> Tensor:
    x = torch.as_tensor(start, dtype=dtype)
    if x.dim() <= 1:
        return x.reshape(1, dim).repeat(n_chains, 1)
    if x.shape != (n_chains, dim):
        raise ValueError(f"start: expected a point ({dim},) or ({n_chains}, {dim}) states, "
                         f"got {tuple(x.shape)}")
    return x.clone()


def first_passage(scheme, start, target: Region, n_chains: int, max_time: float,
                  seed: int = 0, block: int = 256, dtype=torch.float64,
                  drop_passed: bool = True) -> Passage:
    """First passage of ``n_chains`` chains of ``scheme`` from ``start`` into ``target``,
    checked at every step, each chain run until it passes or for ``max_time`` time units.
    ``drop_passed=False`` keeps every chain running to the end (for timing the full load)."""
    import time

    t0 = time.perf_counter()
    gen = np.random.default_rng(seed)
    x = _start(start, n_chains, scheme.dim, dtype)
    chains = torch.arange(n_chains)
    h = scheme.time_step(chains).numpy().astype(np.float64)
    budget = np.floor(max_time / h + 1e-9).astype(np.int64)  # steps with t <= max_time
    steps = np.full(n_chains, -1, dtype=np.int64)
    done = 0
    while len(chains):
        alive = chains.numpy()
        left = budget[alive] - done  # steps each live chain may still take
        if left.max() <= 0:
            break
        k = int(min(block, left.max()))
        traj = scheme.advance(x, k, gen, chains)
        hit = target(traj)  # (k, n): inside the target after step done + j + 1
        if left.min() < k:  # chains with fewer steps left than the block cannot pass late
            hit &= torch.arange(k).unsqueeze(1) < torch.as_tensor(left).unsqueeze(0)
        new = hit.any(0) & torch.as_tensor(steps[alive] < 0)
        if bool(new.any()):
            first = hit[:, new].to(torch.uint8).argmax(0)  # the first True along the block
            steps[alive[new.numpy()]] = done + first.numpy() + 1
        done += k
        keep = torch.as_tensor(budget[alive] > done)
        if drop_passed:
            keep &= torch.as_tensor(steps[alive] < 0)
        if not bool(keep.all()):
            x, chains = x[keep], chains[keep]
    return Passage(steps, h, budget, getattr(scheme, "name", ""), time.perf_counter() - t0)


def sample_path(scheme, start, n_chains: int, n_steps: int, seed: int = 0, every: int = 1,
                block: int = 512, dtype=torch.float64) -> Tensor:
    """States of ``n_chains`` chains after every ``every``-th of ``n_steps`` steps:
    shape (n_steps // every, n_chains, d)."""
    gen = np.random.default_rng(seed)
    x = _start(start, n_chains, scheme.dim, dtype)
    chains = torch.arange(n_chains)
    out, done = [], 0
    block = max(every, block - block % every)
    while done < n_steps:
        k = min(block, n_steps - done)
        traj = scheme.advance(x, k, gen, chains)
        offset = (every - 1 - done) % every
        out.append(traj[offset::every].clone())
        done += k
    return torch.cat(out)[: n_steps // every]
