"""Escape of SGD from trained network minima of measured sharpness (Xie, Sato, Sugiyama,
ICLR 2021; Bombari 2020).

The minima are trained as ordinary sgdlab runs (:meth:`configs`): a one-hidden-layer ReLU
MLP on a noisy teacher-student regression (MSE; at a least-squares minimum the gradient
noise covariance is close to sigma^2 times the Hessian, the case of Xie et al.'s theory),
with SGD at several (eta, S) and a step decay, and the top Hessian eigenvalue measured at
the end (probe ``hessian``). :meth:`analyze` loads each run's final weights
(``run.load_tensors("final")``) and adds rescaled copies of the first minimum
(W1, b1 -> alpha W1, alpha b1, W2 -> W2 / alpha: the same function and loss, a Hessian
about alpha^2 times sharper: minima of controlled sharpness). From every minimum theta*,
chains continue with SGD at larger eta / smaller S (:mod:`sgdlab.dynamics.networks`,
many chains at once under vmap) until the full training loss first exceeds
L(theta*) + delta: leaving the basin {L <= L* + delta}. Time is t = eta * steps.

Claims and thresholds (written before the cpu run):

1. Xie et al. Thm 3.2: the escape time grows exponentially in S/eta: at every minimum and
   eta, ln tau increases with S/eta, and linear fits of ln tau on S/eta have R^2 >= 0.9 on
   average.
2. Xie et al.: SGD escapes sharp minima faster: at every (eta, S), tau falls with
   lambda_max across the minima (Spearman rho < 0).
3. Jastrzębski et al. 2018 (the SDE sees only eta/S): equal eta/S gives equal tau (in t)
   within 25% where eta lambda_max <= 0.5 (the SDE regime), checked at the flattest
   minimum; beside it the sharpest, where they part.
4. The discrete escape an SDE lacks (linear stability, Wu, Ma, E 2018; Bombari's
   discreteness): full-batch GD at step eta leaves the minimum within ``gd_steps`` steps
   for every minimum with lambda_max eta >= 2.2 and for none with lambda_max eta <= 1.8.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sgdlab.dynamics.networks import NetworkChains, escape_steps, stack_states
from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import cached, plain, spearman

R2_MIN = 0.9  # claim 1
EQUAL_TOL, SDE_REGIME = 0.25, 0.5  # claim 3
UNSTABLE, STABLE = 2.2, 1.8  # claim 4

DATA = {"name": "teacher-student", "n_train": 256, "n_test": 1000, "dim": 10, "n_classes": 1,
        "teacher_width": 8, "noise_std": 0.5, "normalize": "none"}
MODEL = {"name": "mlp", "depth": 1, "width": 16, "activation": "relu"}
GRIDS = {
    # training (eta, S) of the minima and epochs; rescalings of the first minimum; the
    # continuation grid: eta -> batch sizes; chains, step cap, loss rise delta, GD steps
    "smoke": {"train": ((0.1, 4), (0.2, 2)), "epochs": 6, "alphas": (3.0,),
              "grid": {0.05: (1, 2), 0.1: (2,)}, "chains": 8, "max_steps": 150,
              "delta": 0.03, "gd_lrs": (0.1, 0.4), "gd_steps": 50, "check_every": 5},
    "cpu": {"train": ((0.1, 4), (0.05, 8), (0.2, 2)), "epochs": 125, "alphas": (1.5, 2.0, 3.0),
            "grid": {0.05: (1, 2, 3), 0.1: (2, 4, 6)}, "chains": 128, "max_steps": 3000,
            "delta": 0.03, "gd_lrs": (0.1, 0.15), "gd_steps": 500, "check_every": 5},
    "paper": {"train": ((0.1, 4), (0.05, 8), (0.2, 2), (0.02, 16)), "epochs": 250,
              "alphas": (1.25, 1.5, 2.0, 3.0), "grid": {0.05: (1, 2, 3, 4), 0.1: (2, 4, 6, 8)},
              "chains": 1024, "max_steps": 20000, "delta": 0.03, "gd_lrs": (0.1, 0.15, 0.2),
              "gd_steps": 2000, "check_every": 5},
}
VERSION = 1


class SharpMinimaEscape(Experiment):
    name = "sharp-minima-escape"
    title = "SGD escapes sharp minima of a network faster, exponentially in S/eta"
    reference = ("Z. Xie, I. Sato, M. Sugiyama, \"A Diffusion Theory For Deep Learning Dynamics: "
                 "Stochastic Gradient Descent Exponentially Favors Flat Minima\", ICLR 2021; "
                 "S. Bombari, MSc thesis, Pisa 2020")
    summary = ("Minima of a small ReLU network trained as sgdlab runs (and rescaled copies of one, "
               "sharper by construction), then many SGD chains from each until the training "
               "loss rises by delta: escape time against S/eta and lambda_max, and full-batch GD "
               "beyond the stability limit 2/eta.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        g = GRIDS[scale]
        e = g["epochs"]
        return [{"name": f"minimum_lr-{lr:g}_S-{s}", "seed": 0, "data": dict(DATA),
                 "model": dict(MODEL),
                 "optim": {"lr": lr, "batch_size": s,
                           "lr_schedule": {"kind": "step", "milestones": [int(0.6 * e),
                                                                          int(0.8 * e)],
                                           "gamma": 0.1}},
                 "train": {"epochs": e, "loss": "mse", "eval_every": 0,
                           "checkpoint_epochs": max(1, e // 4)},
                 "probes": [{"name": "hessian", "every": "end", "k": 1, "n": DATA["n_train"]}]}
                for lr, s in g["train"]]

    def analyze(self, ctx: AnalysisContext):
        g = GRIDS[ctx.scale]
        setup = load_minima(ctx, g)
        rows = results(ctx, "escape", g, lambda: escape_rows(setup, g))
        gd = results(ctx, "gd-stability", g, lambda: gd_rows(setup, g))
        minima = [{k: m[k] for k in ("name", "lambda_max", "loss", "alpha")}
                  for m in setup["minima"]]
        checks = [ratio_check(rows), sharpness_check(rows), equal_ratio_check(rows),
                  stability_check(gd)]
        return checks, figures(rows, gd, minima, g)


def results(ctx: AnalysisContext, name: str, g: dict, compute):
    """Results per grid and per set of runs, under ``extra/`` (:func:`cached`)."""
    return cached(ctx, name, [VERSION, g, list(ctx.runs["id"])], compute)


# -- the minima ------------------------------------------------------------------------------
def rescale(state: dict, alpha: float) -> dict:
    """W1, b1 -> alpha W1, alpha b1 and W2 -> W2/alpha: a ReLU network's function unchanged."""
    out = {k: v.clone() for k, v in state.items()}
    out["features.1.weight"] *= alpha
    out["features.1.bias"] *= alpha
    out["classifier.weight"] /= alpha
    return out


def load_minima(ctx: AnalysisContext, g: dict) -> dict:
    """The trained minima (final weights of the runs) and rescaled copies of the first, with
    their loss and lambda_max (full training set), the data, the model and the loss."""
    from sgdlab.config import from_dict
    from sgdlab.curvature import hessian_eigs
    from sgdlab.data import load_data
    from sgdlab.models import build_model
    from sgdlab.train import make_loss  # (sgdlab.losses on newer main; re-exported here)

    finished = ctx.runs[ctx.runs["status"] == "finished"]
    if finished.empty:
        raise ValueError("sharp-minima-escape: no finished run to start from")
    cfg = from_dict(ctx.configs[int(finished.iloc[0]["point"])])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the chains run where the data is
    data = load_data(cfg.data, cfg.seed, device)
    model = build_model(cfg.model, data.input_shape, data.n_classes).to(device)
    loss = make_loss(cfg.train.loss)
    x, y = data.x_train, data.y_train
    minima = []
    states = [(r["name"], ctx.run(r["id"]).load_tensors("final"), 1.0)
              for _, r in finished.iterrows()]
    states += [(f"{states[0][0]} ×{a:g}", rescale(states[0][1], a), a) for a in g["alphas"]]
    for name, state, alpha in states:
        model.load_state_dict(state)
        with torch.no_grad():
            value = float(loss(model(x), y))
        lam = float(hessian_eigs(model, loss, (x, y), k=1, tol=1e-6).values[0])
        minima.append({"name": name, "state": state, "loss": value, "lambda_max": lam,
                       "alpha": alpha})
    return {"minima": minima, "model": model, "loss": loss, "x": x, "y": y}


# -- escape runs -----------------------------------------------------------------------------
def escape_rows(setup: dict, g: dict) -> list[dict]:
    rows = []
    for i, m in enumerate(setup["minima"]):
        for lr, sizes in g["grid"].items():
            for s in sizes:
                setup["model"].load_state_dict(m["state"])
                chains = NetworkChains(setup["model"], setup["loss"], setup["x"], setup["y"],
                                       stack_states(setup["model"], n_chains=g["chains"]),
                                       seed=1000 * i + s)
                esc = escape_steps(chains, lambda c, lr=lr, s=s: c.sgd_step(lr, s),
                                   lambda c: c.losses(), m["loss"] + g["delta"],
                                   g["max_steps"], g["check_every"], time_step=lr)
                mean, se = esc.mean_steps()
                rows.append({"minimum": m["name"], "lambda_max": m["lambda_max"],
                             "alpha": m["alpha"], "eta": lr, "S": s,
                             "s_over_eta": round(s / lr, 9),
                             "steps": mean, "steps_se": se, "tau": mean * lr, "tau_se": se * lr,
                             "escaped": float(esc.escaped.mean())})
    return rows


def gd_rows(setup: dict, g: dict) -> list[dict]:
    """Full-batch GD (no noise) from every minimum at once: escaped within gd_steps?"""
    model, minima = setup["model"], setup["minima"]
    rows = []
    for lr in g["gd_lrs"]:
        chains = NetworkChains(model, setup["loss"], setup["x"], setup["y"],
                               stack_states(model, [m["state"] for m in minima]))
        thr = torch.tensor([m["loss"] + g["delta"] for m in minima], dtype=torch.float64)
        esc = escape_steps(chains, lambda c, lr=lr: c._update(c.full_gradients(), lr),
                           lambda c: torch.nan_to_num(c.losses(), nan=math.inf), thr,
                           g["gd_steps"], 1, time_step=lr)
        rows += [{"minimum": m["name"], "lambda_max": m["lambda_max"], "eta": lr,
                  "product": m["lambda_max"] * lr, "escape_step": int(st)}
                 for m, st in zip(minima, esc.steps)]
    return rows


# -- checks ------------------------------------------------------------------------------------
def _fit_r2(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(y) == 0:
        return math.nan
    coef = np.polyfit(x, y, 1)
    res = y - np.polyval(coef, x)
    return float(1 - res.var() / y.var())


def ratio_check(rows: list[dict]) -> Check:
    r2s, monotone, parts = [], [], []
    for name in dict.fromkeys(r["minimum"] for r in rows):
        for lr in dict.fromkeys(r["eta"] for r in rows):
            sel = sorted((r for r in rows if r["minimum"] == name and r["eta"] == lr),
                         key=lambda r: r["s_over_eta"])
            taus = [r["tau"] for r in sel]
            if len(sel) < 2 or not all(np.isfinite(taus)):
                continue
            monotone.append(all(b > a for a, b in zip(taus, taus[1:])))
            r2 = _fit_r2([r["s_over_eta"] for r in sel], np.log(taus))
            if np.isfinite(r2):
                r2s.append(r2)
            parts.append(f"{name} η={lr:g}: τ = " + ", ".join(f"{t:.3g}" for t in taus))
    mean_r2 = float(np.mean(r2s)) if r2s else math.nan
    ok = None if not monotone else (all(monotone) and (not r2s or mean_r2 >= R2_MIN))
    return Check(f"Xie et al. (Thm 3.2): the escape time grows exponentially in S/η: ln τ "
                 f"increases with S/η at every minimum and η, linear fits in S/η with mean "
                 f"R² ≥ {R2_MIN:g}", f"increasing in {sum(monotone)}/{len(monotone)} series, "
                 f"mean R² = {mean_r2:.3f}; " + "; ".join(parts), verdict(ok), mean_r2)


def sharpness_check(rows: list[dict]) -> Check:
    rhos, parts = [], []
    for lr, s in dict.fromkeys((r["eta"], r["S"]) for r in rows):
        sel = [r for r in rows if r["eta"] == lr and r["S"] == s]
        rho = spearman([r["lambda_max"] for r in sel], [r["tau"] for r in sel])
        rhos.append(rho)
        parts.append(f"η={lr:g} S={s}: ρ = {rho:.2f}")
    finite = [r for r in rhos if np.isfinite(r)]
    return Check("Xie et al.: SGD escapes sharper minima faster: at every (η, S) the escape time "
                 "falls with λ_max across the minima (Spearman ρ < 0)", "; ".join(parts),
                 verdict(all(r < 0 for r in finite) if finite else None),
                 max(finite) if finite else None)


def equal_ratio_check(rows: list[dict]) -> Check:
    by_min = {}
    for r in rows:
        by_min.setdefault(r["minimum"], []).append(r)
    flat = min(by_min.values(), key=lambda rs: rs[0]["lambda_max"])
    sharp = max(by_min.values(), key=lambda rs: rs[0]["lambda_max"])
    devs, parts = {}, []
    for which, sel in (("flattest", flat), ("sharpest", sharp)):
        for ratio in sorted({r["s_over_eta"] for r in sel}):
            same = [r for r in sel if r["s_over_eta"] == ratio and np.isfinite(r["tau"])]
            if len(same) < 2:
                continue
            taus = [r["tau"] for r in same]
            dev = max(taus) / min(taus) - 1
            prod = max(r["eta"] for r in same) * same[0]["lambda_max"]
            devs[(which, ratio)] = (dev, prod)
            parts.append(f"{which} (λ_max={same[0]['lambda_max']:.3g}) S/η={ratio:g}: "
                         f"{', '.join(f'{t:.3g}' for t in taus)} ({dev:.0%}, max ηλ={prod:.2f})")
    inside = [d for (which, _), (d, p) in devs.items() if which == "flattest" and p <= SDE_REGIME]
    return Check(f"Jastrzębski et al. 2018 (the SDE sees only η/S): equal η/S gives equal escape "
                 f"time t = η·steps within {EQUAL_TOL:.0%} where η λ_max ≤ {SDE_REGIME:g} (at the "
                 "flattest minimum; the sharpest shown beside)", "; ".join(parts) or "no pairs",
                 verdict(all(d <= EQUAL_TOL for d in inside) if inside else None),
                 max(inside) if inside else None)


def stability_check(rows: list[dict]) -> Check:
    unstable = [r for r in rows if r["product"] >= UNSTABLE]
    stable = [r for r in rows if r["product"] <= STABLE]
    ok = None if not (unstable and stable) else (
        all(r["escape_step"] >= 0 for r in unstable) and all(r["escape_step"] < 0 for r in stable))
    parts = [f"ηλ={r['product']:.2f}: " + (f"step {r['escape_step']}" if r["escape_step"] >= 0
                                          else "stays")
             for r in sorted(rows, key=lambda r: r["product"])]
    return Check(f"Full-batch GD leaves a minimum iff λ_max > 2/η (linear stability, the discrete "
                 f"escape the SDE lacks): every minimum with ηλ_max ≥ {UNSTABLE:g} escapes, none "
                 f"with ηλ_max ≤ {STABLE:g}", "; ".join(parts), verdict(ok))


# -- figures ---------------------------------------------------------------------------------
def figures(rows: list[dict], gd: list[dict], minima: list[dict], g: dict) -> list:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    lams = np.log([m["lambda_max"] for m in minima])
    norm = (lams - lams.min()) / max(np.ptp(lams), 1e-9)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(5.5 * len({r["eta"] for r in rows}), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len({r["eta"] for r in rows})))
    for ax, lr in zip(axes, sorted({r["eta"] for r in rows})):
        for m, c in zip(minima, norm):
            sel = sorted((r for r in rows if r["minimum"] == m["name"] and r["eta"] == lr),
                         key=lambda r: r["S"])
            ax.errorbar([r["s_over_eta"] for r in sel], [r["tau"] for r in sel],
                        yerr=[r["tau_se"] for r in sel], fmt="o-" if m["alpha"] == 1 else "s--",
                        color=cmap(c), label=f"{m['name']} (λ={m['lambda_max']:.3g})")
            none = [r for r in sel if not np.isfinite(r["tau"])]  # no escape: above the cap
            ax.plot([r["s_over_eta"] for r in none], [lr * g["max_steps"]] * len(none), "^",
                    mfc="none", color=cmap(c))
        ax.set(yscale="log", xlabel="S / η", ylabel="mean escape time t = η·steps",
               title=f"SGD at η = {lr:g} (open triangles: no escape by the cap)")
        plain(ax)
    axes[0].legend(fontsize=7)
    out = [("Escape time against S over eta for minima of measured sharpness", fig)]

    fig = Figure(figsize=(10, 4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    for j, (lr, s) in enumerate(dict.fromkeys((r["eta"], r["S"]) for r in rows)):
        sel = sorted((r for r in rows if r["eta"] == lr and r["S"] == s),
                     key=lambda r: r["lambda_max"])
        a1.errorbar([r["lambda_max"] for r in sel], [r["tau"] for r in sel],
                    yerr=[r["tau_se"] for r in sel], fmt="o-", color=f"C{j % 10}",
                    label=f"η={lr:g}, S={s}")
    a1.set(xscale="log", yscale="log", xlabel="λ_max at the minimum",
           ylabel="mean escape time", title="escape time against sharpness")
    plain(a1)
    a1.legend(fontsize=7)
    for j, lr in enumerate(dict.fromkeys(r["eta"] for r in gd)):
        sel = sorted((r for r in gd if r["eta"] == lr), key=lambda r: r["product"])
        out_ = [r for r in sel if r["escape_step"] >= 0]
        stay = [r for r in sel if r["escape_step"] < 0]
        a2.plot([r["product"] for r in out_], [r["escape_step"] for r in out_], "o",
                color=f"C{j}", label=f"η={lr:g}: escaped")
        a2.plot([r["product"] for r in stay], [g["gd_steps"]] * len(stay), "^", mfc="none",
                color=f"C{j}", label=f"η={lr:g}: stays (drawn at the cap)")
    a2.axvline(2.0, color="k", ls="--", lw=1)
    a2.set(xscale="log", yscale="log", xlabel="η λ_max", ylabel="GD escape step",
           title="full-batch GD: escape beyond 2/η (dashed)")
    plain(a2)
    a2.legend(fontsize=7)
    out.append(("Escape time against sharpness and the GD stability limit", fig))
    return out


__all__ = ["EXPERIMENT", "GRIDS", "SharpMinimaEscape", "rescale"]
EXPERIMENT = SharpMinimaEscape()
