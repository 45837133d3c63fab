"""Escape times on controlled landscapes: Eyring–Kramers, Arrhenius, the discreteness of
SGD, anisotropic noise, and sharp against flat minima.

Everything is computed in :meth:`analyze` with :mod:`sgdlab.dynamics` (``configs`` is empty:
no network is trained), cached under ``extra/``. Time is t = eta * steps for SGD and the
SDE's own time for the SDE dx = -grad V dt + sqrt(eta Sigma) dW (temperature
T = eta sigma^2 / (2S)). Landscapes: the double well V = h((x/a)^2 - 1)^2 with h = 1 and
V''(minimum) = 8, and the 2-D surface with a saddle (the same well along u, transverse
curvature 2(1 + u^2/a^2), rotated by 30 degrees). Escape: from one minimum to past the
other, checked at every step.

1. Eyring–Kramers (Bombari 2020, §Eyring–Kramers law): the SDE's mean escape time within
   15% of tau_EK where dV/T >= 5 (its relative error is O(T/dV): 10.7% at dV/T = 5 in 1-D,
   from the exact integral), on both landscapes, beside the exact values (1-D integral;
   2-D backward equation on a grid); Arrhenius: the slope of ln tau against dV/T over
   dV/T >= 4 is 1 within 10%.
2. Discreteness (Bombari: SGD is strongly discrete; Jastrzębski et al. 2018: the SDE sees
   only eta/S): minibatch SGD on a finite sum (per-example noise of variance sigma^2 =
   2T S / eta) at fixed eta/S, hence one SDE, for eta k from 0.04 to 1.6: within 15% of
   the SDE's exact 1-D mean escape time at the smallest eta, more than 15% away from
   eta k >= 1; gradient descent with Gaussian noise of the same covariance follows the
   exact mean passage time of its discrete chain (Nyström) within 3 SE at every eta: the
   departure is the step's, not the noise's shape.
3. Anisotropic noise (Zhu, Wu, Yu, Wu, Ma, ICML 2019): at equal Tr D, noise aligned with the
   Hessian at the minimum (D ∝ H) escapes faster than isotropic noise, which escapes faster
   than D ∝ H^{-1} (each gap > 3 combined SE); beside them the projected Eyring–Kramers
   time (T_e = e^T D e along the escape direction e) and Tr(H D).
4. Sharp against flat (Xie, Sato, Sugiyama, ICLR 2021): two double wells of equal barrier,
   curvatures k_flat < k_sharp. With noise proportional to the curvature (SGD near a
   minimum: covariance ∝ H) the flat well outlives the sharp one by a ratio exponential in
   dV (1/T_flat - 1/T_sharp); with white noise only by the prefactor k_sharp/k_flat
   (exactly, for this family). Both measured ratios within 15% of the exact SDE ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from sgdlab.dynamics import (
    DoubleWell,
    FiniteSum,
    SaddleSurface,
    arrhenius_fit,
    between_minima,
    discrete_mfpt_1d,
    escape_efficiency,
    eyring_kramers,
    first_passage,
    gd_matching,
    mfpt_1d,
    mfpt_grid_2d,
    sde,
    sgd,
)
from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import cached, plain

KRAMERS_TOL = 0.15  # claim 1: |tau / tau_EK - 1| where dV/T >= KRAMERS_FROM
KRAMERS_FROM = 5.0
ARRHENIUS_FROM, ARRHENIUS_TOL = 4.0, 0.10  # claim 2: slope 1 within 10% over dV/T >= 4
DISCRETE_TOL = 0.15  # claim 3: agree within 15% at the smallest eta, depart beyond 15% ...
DEPART_FROM = 1.0  # ... from eta k >= 1
RATIO_TOL = 0.15  # claim 6: flat/sharp ratios within 15% of the exact SDE ratios

GRIDS = {
    # chains per point, SDE step, barrier/T values, SGD batch sizes at eta = eta_per_s * S
    # and barrier/T, anisotropic Tr D, flat/sharp curvatures and temperature
    "smoke": {"chains": 100, "dt": 0.02, "ratios": (1.5, 2.5), "max_time_factor": 10.0,
              "batches": (1, 8, 32), "eta_per_s": 0.01, "sgd_ratio": 1.5, "n": 200,
              "aniso_trace": 1.2, "curvatures": (6.0, 12.0), "flat_sharp_t": 0.6},
    "cpu": {"chains": 3000, "dt": 0.004, "ratios": (2.0, 3.0, 4.0, 5.0, 6.0),
            "max_time_factor": 20.0, "batches": (1, 2, 4, 8, 16, 32, 40), "eta_per_s": 0.005,
            "sgd_ratio": 5.0, "n": 1000, "aniso_trace": 0.5, "curvatures": (6.0, 12.0),
            "flat_sharp_t": 0.25},
    "paper": {"chains": 10000, "dt": 0.002, "ratios": (2.0, 3.0, 4.0, 5.0, 6.0, 7.0),
              "max_time_factor": 20.0, "batches": (1, 2, 4, 8, 16, 24, 32, 40),
              "eta_per_s": 0.005, "sgd_ratio": 6.0, "n": 2000, "aniso_trace": 0.45,
              "curvatures": (6.0, 12.0), "flat_sharp_t": 0.22},
}
WELL = {"barrier": 1.0, "curvature": 8.0}
SURFACE = {"barrier": 1.0, "curvature": 8.0, "transverse": 2.0, "coupling": 1.0,
           "angle": math.pi / 6}
Cached = Callable[[str, dict, Callable], object]  # (name, parameters, compute) -> result
VERSION = 2  # bump to invalidate the cache when the simulations change


class EscapeTimes(Experiment):
    name = "escape-times"
    title = "Escape times on controlled landscapes: Eyring–Kramers and the discreteness of SGD"
    reference = ("S. Bombari, \"The dynamics of Stochastic Gradient Descent in the loss landscape "
                 "of Deep Neural Networks\", MSc thesis, Pisa 2020; Z. Zhu et al., ICML 2019; "
                 "Z. Xie, I. Sato, M. Sugiyama, ICLR 2021; S. Jastrzębski et al. 2018")
    summary = ("Thousands of chains on a 1-D double well and a 2-D surface with a saddle: the SDE "
               "of SGD against the Eyring–Kramers law and the exact 1-D formula, minibatch SGD "
               "at fixed eta/S as eta grows, anisotropic noise, and flat against sharp wells.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        return []

    def analyze(self, ctx: AnalysisContext):
        g = GRIDS[ctx.scale]

        def cache(name: str, params: dict, compute):  # simulations keyed by their parameters
            return cached(ctx, name, [VERSION, params], compute)

        kramers = kramers_rows(g, cache)
        discrete = discreteness_rows(g, cache)
        aniso = anisotropy_rows(g, cache)
        flat = flat_sharp_rows(g, cache)
        checks = [kramers_check(kramers), arrhenius_check(kramers), discreteness_check(discrete),
                  chain_check(discrete), anisotropy_check(aniso), flat_sharp_check(flat)]
        return checks, figures(kramers, discrete, aniso, flat)


def _estimate(run) -> dict:
    mean, se = run.estimate()
    return {"tau": mean, "se": se, "passed": run.n_passed, "n": run.n}


def _landscapes() -> dict:
    return {"double well (1-D)": DoubleWell(**WELL),
            "saddle surface (2-D)": SaddleSurface(**SURFACE)}


# -- 1. Eyring–Kramers and Arrhenius ---------------------------------------------------------
def kramers_rows(g: dict, cache: Cached) -> list[dict]:
    """One batched SDE simulation per landscape: groups of chains at each dV/T (the noise
    scaled per chain), beside Eyring–Kramers and, in 1-D, the exact formulas."""
    rows = []
    for name, pot in _landscapes().items():
        params = {"landscape": name, "chains": g["chains"], "dt": g["dt"],
                  "ratios": g["ratios"], "f": g["max_time_factor"]}
        rows += cache("kramers", params, lambda pot=pot, name=name: _kramers(pot, name, g))
    return rows


def _kramers(pot, name: str, g: dict) -> list[dict]:
    start, target = between_minima(pot)
    barrier = float(pot.value(pot.saddles[0]) - pot.value(pot.minima[0]))
    temps = [barrier / r for r in g["ratios"]]
    t_ref = temps[0]
    n = g["chains"]
    scale = torch.tensor([math.sqrt(t / t_ref) for t in temps for _ in range(n)])
    preds = [eyring_kramers(pot, pot.minima[0], pot.saddles[0], t) for t in temps]
    scheme = sde(pot, lr=1.0, noise_cov=2 * t_ref * torch.eye(pot.dim), dt=g["dt"],
                 std_scale=scale)
    run = first_passage(scheme, start, target, n * len(temps),
                        max_time=g["max_time_factor"] * max(p.tau for p in preds), seed=1)
    rows = []
    for i, (r, t, p) in enumerate(zip(g["ratios"], temps, preds)):
        row = {"landscape": name, "ratio": r, "T": t, "ek": p.tau,
               **_estimate(run.select(slice(i * n, (i + 1) * n)))}
        if pot.dim == 1:
            a, b = float(pot.minima[0]), float(pot.minima[1])
            row["exact"] = mfpt_1d(pot, a, b, t)
            dt = g["dt"]
            row["chain"] = discrete_mfpt_1d(pot, dt, math.sqrt(2 * t * dt), a, b) * dt
        else:  # isotropic noise: the escape time does not depend on the rotation
            flat = SaddleSurface(**{**SURFACE, "angle": 0.0})
            a = flat.width
            row["exact"] = mfpt_grid_2d(flat, [-a, 0.0], a, t, (-2.3 * a, -3.0, 3.0))
        rows.append(row)
    return rows


def kramers_check(rows: list[dict]) -> Check:
    sel = [r for r in rows if r["ratio"] >= KRAMERS_FROM and np.isfinite(r["tau"])]
    devs = [r["tau"] / r["ek"] - 1 for r in sel]
    parts = [f"{r['landscape'].split(' (')[0]} ΔV/T={r['ratio']:g}: τ = {r['tau']:.4g} ± "
             f"{r['se']:.2g} vs τ_EK = {r['ek']:.4g} ({d:+.1%})" for r, d in zip(sel, devs)]
    exact = [r for r in sel if "exact" in r]
    if exact:
        parts.append("exact/τ_EK (1-D integral, 2-D backward equation on a grid): " + ", ".join(
            f"{r['landscape'].split(' (')[0]} {r['ratio']:g}: {r['exact'] / r['ek']:.3f}"
            for r in exact))
        chain = [r for r in exact if "chain" in r]
        parts.append("1-D Euler–Maruyama bias (Nyström): " + ", ".join(
            f"{r['chain'] / r['exact'] - 1:+.2%}" for r in chain))
    return Check(f"The SDE's mean escape time is within {KRAMERS_TOL:.0%} of the Eyring–Kramers "
                 f"prediction where ΔV/T ≥ {KRAMERS_FROM:g} (1-D double well and 2-D saddle "
                 "surface)", "; ".join(parts) or f"no point with ΔV/T ≥ {KRAMERS_FROM:g}",
                 verdict(all(abs(d) <= KRAMERS_TOL for d in devs) if devs else None),
                 max(map(abs, devs)) if devs else None)


def arrhenius_check(rows: list[dict]) -> Check:
    parts, good, slopes = [], [], []
    for name in dict.fromkeys(r["landscape"] for r in rows):
        sel = [r for r in rows if r["landscape"] == name and r["ratio"] >= ARRHENIUS_FROM]
        fit = arrhenius_fit([r["ratio"] for r in sel], [r["tau"] for r in sel],
                            [r["se"] for r in sel])
        if np.isfinite(fit["slope"]):
            slopes.append(fit["slope"])
            good.append(abs(fit["slope"] - 1) <= ARRHENIUS_TOL)
            parts.append(f"{name}: slope {fit['slope']:.3f} ± {fit['slope_se']:.3f} "
                         f"({fit['n']} points)")
    return Check(f"Arrhenius law: the slope of ln τ against ΔV/T (ΔV/T ≥ {ARRHENIUS_FROM:g}) is 1 "
                 f"within {ARRHENIUS_TOL:.0%}", "; ".join(parts) or "fewer than 2 points",
                 verdict(all(good) if good else None), min(slopes, key=lambda s: -abs(s - 1))
                 if slopes else None)


# -- 2. discreteness at fixed eta/S ----------------------------------------------------------
def discreteness_rows(g: dict, cache: Cached) -> list[dict]:
    params = {k: g[k] for k in ("chains", "batches", "eta_per_s", "sgd_ratio", "n",
                                "max_time_factor")}
    return cache("discreteness", params, lambda: _discreteness(g))


def _discreteness(g: dict) -> list[dict]:
    pot = DoubleWell(**WELL)
    t = WELL["barrier"] / g["sgd_ratio"]
    sigma2 = 2 * t / g["eta_per_s"]  # T = eta sigma^2 / (2S) with eta/S fixed
    problem = FiniteSum.designed(pot, sigma2, n=g["n"], seed=0)
    start, target = between_minima(pot)
    a, b = float(pot.minima[0]), float(pot.minima[1])
    exact = mfpt_1d(pot, a, b, t)
    rows = []
    for i, size in enumerate(g["batches"]):
        lr = g["eta_per_s"] * size
        row = {"S": size, "eta": lr, "eta_k": lr * WELL["curvature"], "T": t, "sde": exact,
               "ek": eyring_kramers(pot, pot.minima[0], pot.saddles[0], t).tau,
               "chain": discrete_mfpt_1d(pot, lr, lr * math.sqrt(sigma2 / size), a, b) * lr}
        for key, scheme in (("sgd", sgd(problem, lr, size)),
                            ("gd", gd_matching(problem, lr, size))):
            run = first_passage(scheme, start, target, g["chains"],
                                max_time=g["max_time_factor"] * exact, seed=10 + 2 * i
                                + (key == "gd"))
            est = _estimate(run)
            row.update({key: est["tau"], f"{key}_se": est["se"]})
        rows.append(row)
    return rows


def discreteness_check(rows: list[dict]) -> Check:
    first = rows[0]
    small = abs(first["sgd"] / first["sde"] - 1)
    far = [r for r in rows if r["eta_k"] >= DEPART_FROM]
    devs = {r["eta_k"]: r["sgd"] / r["sde"] - 1 for r in rows}
    ok = None if not far else (small <= DISCRETE_TOL
                               and all(abs(devs[r["eta_k"]]) > DISCRETE_TOL for r in far))
    text = ", ".join(f"ηk={k:.2g}: {d:+.0%}" for k, d in devs.items())
    return Check(f"Discrete SGD at fixed η/S (one SDE) agrees with the SDE's mean escape time "
                 f"within {DISCRETE_TOL:.0%} at the smallest η and departs from it by more than "
                 f"{DISCRETE_TOL:.0%} where η·k ≥ {DEPART_FROM:g} (k = V'' at the minimum)",
                 f"τ_SGD/τ_SDE − 1: {text} (ΔV/T = {WELL['barrier'] / first['T']:g}, "
                 f"τ_SDE = {first['sde']:.4g})", verdict(ok),
                 max(abs(devs[r["eta_k"]]) for r in far) if far else None)


def chain_check(rows: list[dict]) -> Check:
    zs = [(r["gd"] - r["chain"]) / r["gd_se"] for r in rows]
    return Check("Gradient descent with Gaussian noise of SGD's covariance follows the exact mean "
                 "passage time of its discrete chain (Nyström) within 3 SE at every η: the "
                 "departure from the SDE is the step's discreteness",
                 ", ".join(f"ηk={r['eta_k']:.2g}: {r['gd']:.4g} vs {r['chain']:.4g} "
                           f"(z = {z:+.1f})" for r, z in zip(rows, zs)),
                 verdict(all(abs(z) < 3 for z in zs)), max(map(abs, zs)))


# -- 3. anisotropic noise --------------------------------------------------------------------
def anisotropy_rows(g: dict, cache: Cached) -> list[dict]:
    params = {k: g[k] for k in ("chains", "dt", "aniso_trace", "max_time_factor")}
    return cache("anisotropy", params, lambda: _anisotropy(g))


def _anisotropy(g: dict) -> list[dict]:
    surf = SaddleSurface(**SURFACE)
    h = surf.hessian(surf.minima[0])
    shapes = {"aligned (D ∝ H)": h, "isotropic": torch.eye(2, dtype=torch.float64),
              "misaligned (D ∝ H⁻¹)": torch.linalg.inv(h)}
    start, target = between_minima(surf)
    rows = []
    for i, (name, shape) in enumerate(shapes.items()):
        d = g["aniso_trace"] * shape / torch.trace(shape)
        pred = eyring_kramers(surf, surf.minima[0], surf.saddles[0], d)
        run = first_passage(sde(surf, 1.0, 2 * d, g["dt"]), start, target, g["chains"],
                            max_time=g["max_time_factor"] * pred.tau, seed=20 + i)
        rows.append({"noise": name, "ek_projected": pred.tau, "T_escape": pred.temperature,
                     "tr_hd": escape_efficiency(h, d), **_estimate(run)})
    return rows


def anisotropy_check(rows: list[dict]) -> Check:
    taus = [r["tau"] for r in rows]
    gaps = [(rows[i + 1]["tau"] - rows[i]["tau"]) / math.hypot(rows[i]["se"], rows[i + 1]["se"])
            for i in range(len(rows) - 1)]
    return Check("Anisotropic noise (Zhu et al. 2019): at equal Tr D, noise aligned with the "
                 "Hessian at the minimum escapes faster than isotropic noise, which escapes "
                 "faster than D ∝ H⁻¹ (each gap > 3 combined SE)",
                 "; ".join(f"{r['noise']}: τ = {r['tau']:.4g} ± {r['se']:.2g} (projected EK "
                           f"{r['ek_projected']:.4g}, Tr(HD) = {r['tr_hd']:.3g})" for r in rows),
                 verdict(all(z > 3 for z in gaps) and taus == sorted(taus)), min(gaps))


# -- 4. flat against sharp -------------------------------------------------------------------
def flat_sharp_rows(g: dict, cache: Cached) -> list[dict]:
    params = {k: g[k] for k in ("chains", "dt", "curvatures", "flat_sharp_t", "max_time_factor")}
    return cache("flat-sharp", params, lambda: _flat_sharp(g))


def _flat_sharp(g: dict) -> list[dict]:
    rows = []
    k_ref = WELL["curvature"]
    for i, k in enumerate(g["curvatures"]):
        pot = DoubleWell(WELL["barrier"], k)
        a, b = float(pot.minima[0]), float(pot.minima[1])
        start, target = between_minima(pot)
        dt = g["dt"] * k_ref / k  # the same k dt for every well
        for j, (noise, t) in enumerate((("∝ H", g["flat_sharp_t"] * k / k_ref),
                                        ("white", g["flat_sharp_t"]))):
            exact = mfpt_1d(pot, a, b, t)
            run = first_passage(sde(pot, 1.0, 2 * t, dt), start, target, g["chains"],
                                max_time=g["max_time_factor"] * exact, seed=30 + 2 * i + j)
            rows.append({"k": k, "noise": noise, "T": t, "exact": exact,
                         "ek": eyring_kramers(pot, pot.minima[0], pot.saddles[0], t).tau,
                         **_estimate(run)})
    return rows


def flat_sharp_check(rows: list[dict]) -> Check:
    parts, good, devs = [], [], []
    for noise in ("∝ H", "white"):
        flat, sharp = sorted((r for r in rows if r["noise"] == noise), key=lambda r: r["k"])
        ratio, exact = flat["tau"] / sharp["tau"], flat["exact"] / sharp["exact"]
        devs.append(ratio / exact - 1)
        good.append(abs(devs[-1]) <= RATIO_TOL)
        parts.append(f"noise {noise}: τ(k={flat['k']:g})/τ(k={sharp['k']:g}) = {ratio:.3g} "
                     f"(exact SDE {exact:.3g}, Eyring–Kramers {flat['ek'] / sharp['ek']:.3g})")
    return Check("Sharp against flat minima (Xie et al. 2021): with noise ∝ H the flat well "
                 "outlives the sharp one by a factor exponential in ΔV(1/T_flat − 1/T_sharp), "
                 "with white noise only by k_sharp/k_flat; both ratios within "
                 f"{RATIO_TOL:.0%} of the exact SDE ratios", "; ".join(parts),
                 verdict(all(good)), max(map(abs, devs)))


# -- figures ---------------------------------------------------------------------------------
def figures(kramers, discrete, aniso, flat) -> list:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, dict.fromkeys(r["landscape"] for r in kramers)):
        sel = [r for r in kramers if r["landscape"] == name]
        x = np.array([r["ratio"] for r in sel])
        ax.errorbar(x, [r["tau"] for r in sel], yerr=[r["se"] for r in sel], fmt="o",
                    label="SDE (Euler–Maruyama)")
        ax.plot(x, [r["ek"] for r in sel], "k--", label="Eyring–Kramers")
        if "exact" in sel[0]:
            ax.plot(x, [r["exact"] for r in sel], "C1-", lw=1,
                    label="exact (1-D integral)" if "chain" in sel[0] else
                    "exact (backward equation, grid)")
        ax.set(yscale="log", xlabel="ΔV / T", ylabel="mean escape time", title=name)
        plain(ax)
        ax.legend(fontsize=8)
    out = [("Mean escape time against the barrier over the temperature", fig)]

    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    x = np.array([r["eta_k"] for r in discrete])
    sde_tau = np.array([r["sde"] for r in discrete])
    for key, label, m in (("sgd", "minibatch SGD", "o"), ("gd", "GD + Gaussian noise", "s")):
        ax.errorbar(x, [r[key] for r in discrete] / sde_tau,
                    yerr=[r[f"{key}_se"] for r in discrete] / sde_tau, fmt=m, label=label)
    ax.plot(x, [r["chain"] for r in discrete] / sde_tau, "k-", lw=1,
            label="discrete chain, exact (Nyström)")
    ax.axhspan(1 - DISCRETE_TOL, 1 + DISCRETE_TOL, color="0.9", label="SDE ± 15%")
    ax.set(xscale="log", xlabel="η · k (fixed η/S)", ylabel="τ / τ_SDE",
           title=f"ΔV/T = {WELL['barrier'] / discrete[0]['T']:g}")
    plain(ax)
    ax.legend(fontsize=8)
    out.append(("Discrete SGD against the SDE at fixed eta over S", fig))

    fig = Figure(figsize=(10, 4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    pos = np.arange(len(aniso))
    a1.bar(pos - 0.2, [r["tau"] for r in aniso], 0.4, yerr=[r["se"] for r in aniso],
           label="SDE")
    a1.bar(pos + 0.2, [r["ek_projected"] for r in aniso], 0.4, label="projected Eyring–Kramers")
    a1.set(xticks=pos, xticklabels=[r["noise"] for r in aniso], yscale="log",
           ylabel="mean escape time", title="equal Tr D, 2-D saddle surface")
    a1.legend(fontsize=8)
    for noise, m in (("∝ H", "o-"), ("white", "s-")):
        sel = sorted((r for r in flat if r["noise"] == noise), key=lambda r: r["k"])
        a2.errorbar([r["k"] for r in sel], [r["tau"] for r in sel],
                    yerr=[r["se"] for r in sel], fmt=m, label=f"noise {noise} (SDE)")
        a2.plot([r["k"] for r in sel], [r["exact"] for r in sel], "k:", lw=1)
    a2.set(yscale="log", xscale="log", xlabel="curvature k at the minimum",
           ylabel="mean escape time", title="flat against sharp (dotted: exact)")
    plain(a2)
    a2.legend(fontsize=8)
    out.append(("Anisotropic noise and flat against sharp minima", fig))
    return out


__all__ = ["EXPERIMENT", "EscapeTimes", "GRIDS"]
EXPERIMENT = EscapeTimes()
