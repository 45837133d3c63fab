"""Why two numbers of the cpu run of `escape-times` are what they are (docs/results/README.md).

1. ``ek``: the 2-D saddle surface departs from Eyring–Kramers by more than the 1-D well. The
   exact mean escape time over tau_EK for the well (1-D integral) and the surface (backward
   equation on a grid), and the 1-D exact integral on the adiabatic free energy
   F(u) = V(u) + (T/2) ln c(u), c(u) = 2(1 + u^2/a^2) the surface's transverse curvature.
2. ``sgd``: minibatch SGD at S = 2 (eta k = 0.08) came out 5.5% below its discrete chain
   (z = -3.2, chain seed 12, finite sum seed 0): the same point with other seeds.

    flock /tmp/sgdlab-cpu.lock .venv/bin/python docs/results/cpu/escape-times/diagnostics.py ek sgd
"""

import math
import sys
import time

from scipy.integrate import quad

from sgdlab.dynamics import (
    DoubleWell,
    FiniteSum,
    SaddleSurface,
    between_minima,
    discrete_mfpt_1d,
    eyring_kramers,
    first_passage,
    mfpt_1d,
    mfpt_grid_2d,
    sgd,
)
from sgdlab.experiments.escape_times import GRIDS, SURFACE, WELL


def adiabatic_mfpt(t: float, width: float) -> float:
    """1-D mean first-passage time from -a to a on F(u) = V(u) + (T/2) ln(1 + u^2/a^2)."""
    def free(u):
        q = (u / width) ** 2
        return SURFACE["barrier"] * (q - 1) ** 2 + 0.5 * t * math.log(1 + q)

    f0 = free(-width)

    def inner(y):
        return quad(lambda z: math.exp(-(free(z) - f0) / t), -4 * width, y, limit=200)[0]

    return quad(lambda y: math.exp((free(y) - f0) / t) * inner(y), -width, width,
                limit=200)[0] / t


def ek() -> None:
    well, surf = DoubleWell(**WELL), SaddleSurface(**SURFACE)
    flat = SaddleSurface(**{**SURFACE, "angle": 0.0})
    a = flat.width
    for r in (4, 5, 6, 7, 8, 10, 12):
        t = SURFACE["barrier"] / r
        ek1 = eyring_kramers(well, well.minima[0], well.saddles[0], t).tau
        ek2 = eyring_kramers(surf, surf.minima[0], surf.saddles[0], t).tau
        ex1 = mfpt_1d(well, float(well.minima[0]), float(well.minima[1]), t)
        ex2 = mfpt_grid_2d(flat, [-a, 0.0], a, t, (-2.3 * a, -3.0, 3.0))
        print(f"dV/T={r:>2}: 1-D exact/EK {ex1 / ek1:.4f} ((ratio-1) dV/T "
              f"{(ex1 / ek1 - 1) * r:.3f}); 2-D grid/EK {ex2 / ek2:.4f} "
              f"({(ex2 / ek2 - 1) * r:.3f}); adiabatic F(u) "
              f"integral/EK {adiabatic_mfpt(t, a) / ek2:.4f}", flush=True)


def sgd_s2() -> None:
    g = GRIDS["cpu"]
    pot = DoubleWell(**WELL)
    t = WELL["barrier"] / g["sgd_ratio"]
    sigma2 = 2 * t / g["eta_per_s"]
    start, target = between_minima(pot)
    a, b = float(pot.minima[0]), float(pot.minima[1])
    size = 2
    lr = g["eta_per_s"] * size
    chain = discrete_mfpt_1d(pot, lr, lr * math.sqrt(sigma2 / size), a, b) * lr
    cap = g["max_time_factor"] * mfpt_1d(pot, a, b, t)
    for sum_seed, seed in ((0, 12), (0, 112), (0, 212), (1, 12), (2, 12)):
        problem = FiniteSum.designed(pot, sigma2, n=g["n"], seed=sum_seed)
        t0 = time.perf_counter()
        run = first_passage(sgd(problem, lr, size), start, target, g["chains"], max_time=cap,
                            seed=seed)
        m, se = run.estimate()
        print(f"finite sum seed {sum_seed}, chain seed {seed}: tau = {m:.2f} ± {se:.2f}, "
              f"chain {chain:.2f}, z = {(m - chain) / se:+.2f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    for name in sys.argv[1:] or ("ek", "sgd"):
        {"ek": ek, "sgd": sgd_s2}[name]()
