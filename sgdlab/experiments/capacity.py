"""Capacity: a width sweep from under- to over-parametrized networks (Golikov, "Theoretical
Deep Learning", MIPT 2019; Neyshabur, Tomioka, Srebro 2015 and Neyshabur, Li, Bhojanapalli,
LeCun, Srebro, ICLR 2019; Nakkiran, Kaplun, Bansal, Yang, Barak, Sutskever, "Deep Double
Descent", 2019; Belkin, Hsu, Ma, Mandal, PNAS 2019).

One-hidden-layer MLPs of width h on n training examples (P = (d + 1) h + (h + 1) K
parameters, from well below n to far above n K), trained for a fixed budget of SGD steps,
with clean labels and with a fraction of random labels. The interpolation threshold of a
noise level is the smallest width whose final training accuracy is ≥ 0.99. Claims checked
(seed means; thresholds fixed before the runs):

1. optimization gets easier with parameters (Golikov, the "local optimization" puzzle):
   the final training loss falls with P (Spearman ρ(P, loss) < 0, clean labels) and the
   widest network interpolates (training accuracy ≥ 0.99) at both noise levels;
2. test error does not grow with P past the interpolation threshold (Golikov, the
   "non-overfitting" puzzle; Neyshabur et al. 2015): clean labels, ρ(P, test error) ≤ 0
   over the widths at or past the threshold, and the widest net's test error is at most
   the error at the threshold;
3. with label noise the test error peaks near the interpolation threshold (model-wise
   double descent, Nakkiran et al. Fig. 1, 4): the worst width within a factor 4 in P of
   the noisy threshold has a test error ≥ 0.02 above both the best narrower width's and
   the widest width's;
4. the distance from initialization per hidden unit, ‖W₁ − W₁⁰‖_F / √h, falls with width
   (Neyshabur et al. 2019, Fig. 3: the unit-wise capacity behind their bound), ρ < 0 over
   all widths, clean labels. The product of the layers' spectral norms (the norm-based
   capacity of Neyshabur et al. 2015/Bartlett et al. 2017) is plotted, not checked.

- smoke: digits (256 train), h ∈ {2, 8, 64}, p ∈ {0, 0.2}, 30 epochs: 6 runs.
- cpu: MNIST (1,000 of the 8,000 offline images, stratified; 2,000 test), h ∈ {2, 4, 8,
  12, 16, 24, 32, 64, 128, 256, 1024} (P from 1.6k to 0.8M; n K = 10k), p ∈ {0, 0.2},
  2 seeds, SGD η = 0.05, momentum 0.9, S = 50, 200 epochs (4,000 steps): 44 runs.
- paper: MNIST (4,000 train, as Belkin et al.'s fully connected sweep), h from 2 to 2048
  (14 widths), p ∈ {0, 0.2}, 2 seeds, 1,000 epochs: 56 runs (GPU). Nakkiran et al.'s
  ResNet-18 width sweep on CIFAR-10 (4,000 epochs of Adam) is beyond one GPU-hour.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import fmt_spread, load_trained, plain, spearman

FIT = 0.99  # interpolation: final training accuracy ≥ FIT
PEAK = 0.02  # claim 3: peak above both sides by this much (test error)
NEAR = 4.0  # claim 3: peak within this factor in P of the interpolation threshold

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 256, "download": False},
                  widths=(2, 8, 64), noise=(0.0, 0.2), seeds=(0,), epochs=30, batch=32,
                  lr=0.05),
    "cpu": dict(data={"name": "mnist", "n_train": 1000, "stratified": True},
                widths=(2, 4, 8, 12, 16, 24, 32, 64, 128, 256, 1024), noise=(0.0, 0.2),
                seeds=(0, 1), epochs=200, batch=50, lr=0.05),
    "paper": dict(data={"name": "mnist", "n_train": 4000, "stratified": True},
                  widths=(2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048),
                  noise=(0.0, 0.2), seeds=(0, 1), epochs=1000, batch=50, lr=0.05),
}


class Capacity(Experiment):
    name = "capacity"
    title = "Capacity: width sweep from under- to over-parametrized, with and without noise"
    reference = ("E. Golikov, \"Theoretical Deep Learning\" (MIPT, 2019); B. Neyshabur, R. "
                 "Tomioka, N. Srebro, \"In Search of the Real Inductive Bias\" (2015); B. "
                 "Neyshabur, Z. Li, S. Bhojanapalli, Y. LeCun, N. Srebro, \"Towards "
                 "Understanding the Role of Over-Parametrization in Generalization of Neural "
                 "Networks\", ICLR 2019; P. Nakkiran, G. Kaplun, Y. Bansal, T. Yang, B. "
                 "Barak, I. Sutskever, \"Deep Double Descent\" (2019)")
    summary = ("One-hidden-layer MLPs of growing width on a fixed training subset, trained "
               "for the same number of steps with clean labels and with 20% random labels: "
               "training loss, test error and norm-based quantities against the number of "
               "parameters.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        n, S = sc["data"]["n_train"], sc["batch"]
        every = max(1, 10 * (n // S))  # evaluate every 10 epochs
        return [{"name": f"h-{h}_noise-{p:g}_seed-{s}", "seed": s,
                 "data": {**sc["data"], "label_noise": p},
                 "model": {"name": "mlp", "depth": 1, "width": h},
                 "optim": {"lr": sc["lr"], "momentum": 0.9, "batch_size": S},
                 "train": {"epochs": sc["epochs"], "eval_every": every,
                           "checkpoint_epochs": sc["epochs"]},
                 "probes": [{"name": "weights", "every": "end", "per_layer": True}]}
                for p in sc["noise"] for h in sc["widths"] for s in sc["seeds"]]

    def analyze(self, ctx: AnalysisContext):
        t = width_table(ctx)
        thresholds = {p: interpolation_threshold(g) for p, g in t.groupby("p")}
        clean = t[t["p"] == 0]
        noisy = t[t["p"] > 0]
        checks = [_easier(t), _no_overfit(clean, thresholds.get(0.0)),
                  _double_descent(noisy, thresholds.get(noisy["p"].max()) if len(noisy) else None),
                  _unit_distance(clean)]
        return checks, figures(t, thresholds)


def width_table(ctx: AnalysisContext) -> pd.DataFrame:
    """One row per run (width, noise, seed, P, final train loss/acc, test error, norms)."""
    names = ["n_params", "train/loss", "train/acc", "test/acc", "weights/dist_init"]
    last = {n: ctx.final(n) for n in names}
    rows = []
    for _, r in ctx.runs.iterrows():
        rid = r["id"]
        row = {"id": rid, "h": int(r["model.width"]), "p": float(r["data.label_noise"]),
               "seed": int(r["seed"]), "status": r["status"],
               "P": last["n_params"][rid], "loss": last["train/loss"][rid],
               "train_acc": last["train/acc"][rid], "err": 1 - last["test/acc"][rid],
               "unit_dist": math.nan, "spectral": math.nan}
        if r["status"] == "finished":
            row.update(_norms(ctx, rid, row["h"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _norms(ctx: AnalysisContext, run_id: str, h: int) -> dict:
    """‖W₁ − W₁⁰‖_F / √h from the weights probe's per-layer distances at the end, and the
    product of the spectral norms of the two weight matrices (final parameters)."""
    import torch

    out = {}
    run = ctx.run(run_id)
    arrays = run.load_arrays("weights") if "weights" in run.array_names() else []
    if arrays and "layer_dist_init" in arrays[-1][1]:
        out["unit_dist"] = float(arrays[-1][1]["layer_dist_init"][0]) / math.sqrt(h)
    model, _, _ = load_trained(ctx, run_id)
    mats = [p.detach().double() for n, p in model.named_parameters() if n.endswith("weight")]
    out["spectral"] = float(np.prod([torch.linalg.matrix_norm(w, 2).item() for w in mats]))
    return out


def _means(g: pd.DataFrame, col: str) -> pd.Series:
    """Seed mean of ``col`` per width (index P, sorted)."""
    return g.groupby("P")[col].mean().sort_index()


def interpolation_threshold(g: pd.DataFrame) -> float | None:
    """The smallest P whose seed-mean final training accuracy is ≥ FIT (None if none)."""
    acc = _means(g, "train_acc")
    hit = acc[acc >= FIT]
    return float(hit.index[0]) if len(hit) else None


def _spread(g: pd.DataFrame, col: str, P: float, fmt: str = ".3g") -> str:
    return fmt_spread(list(g[g["P"] == P][col]), fmt)


def _easier(t: pd.DataFrame) -> Check:
    clean = t[(t["p"] == 0) & (t["status"] == "finished")]
    loss = _means(clean, "loss")
    rho = spearman(loss.index, loss.values)
    widest = {p: _means(g, "train_acc").iloc[-1] for p, g in t.groupby("p") if len(g)}
    ok = None if len(loss) < 3 else (rho < 0 and all(v >= FIT for v in widest.values()))
    return Check(f"Optimization gets easier with parameters: the final training loss falls "
                 f"with P (Spearman ρ < 0, clean labels) and the widest network interpolates "
                 f"(training accuracy ≥ {FIT:g}) with and without label noise",
                 f"ρ = {rho:.2f}; loss {loss.iloc[0]:.3g} (P={loss.index[0]:.0f}) → "
                 f"{loss.iloc[-1]:.3g} (P={loss.index[-1]:.0f}); widest train acc "
                 + ", ".join(f"p={p:g}: {v:.3f}" for p, v in widest.items()),
                 verdict(ok), rho)


def _no_overfit(clean: pd.DataFrame, threshold: float | None) -> Check:
    claim = ("Test error does not grow with P past the interpolation threshold (clean labels): "
             "ρ(P, test error) ≤ 0 over the widths at or past it, and the widest network's "
             "test error ≤ the error at the threshold")
    if threshold is None:
        return Check(claim, "no width interpolates", "inconclusive")
    err = _means(clean, "err")
    past = err[err.index >= threshold]
    rho = spearman(past.index, past.values)
    ok = None if len(past) < 3 else (rho <= 0 and past.iloc[-1] <= past.iloc[0])
    return Check(claim, f"threshold P = {threshold:.0f}; ρ = {rho:.2f} over {len(past)} widths; "
                 f"test error {_spread(clean, 'err', past.index[0])} at the threshold, "
                 f"{_spread(clean, 'err', past.index[-1])} at P = {past.index[-1]:.0f}",
                 verdict(ok), rho)


def _double_descent(noisy: pd.DataFrame, threshold: float | None) -> Check:
    p = noisy["p"].max() if len(noisy) else math.nan
    claim = (f"With label noise (p = {p:g}) the test error peaks near the interpolation "
             f"threshold: the worst width within a factor {NEAR:g} in P of the threshold has "
             f"a test error ≥ {PEAK:g} above both the best narrower width and the widest")
    if threshold is None or not len(noisy):
        return Check(claim, "no width interpolates the noisy labels", "inconclusive")
    err = _means(noisy, "err")
    window = err[(err.index >= threshold / NEAR) & (err.index <= threshold * NEAR)]
    P_peak = float(window.idxmax())
    narrower = err[err.index < P_peak]
    above_left = err[P_peak] - narrower.min() if len(narrower) else math.nan
    above_right = err[P_peak] - err.iloc[-1]
    ok = bool(above_left >= PEAK and above_right >= PEAK)
    return Check(claim, f"threshold P = {threshold:.0f}; peak at P = {P_peak:.0f} (test error "
                 f"{_spread(noisy, 'err', P_peak)}); above the best narrower by "
                 f"{above_left:.3f}, above the widest (P = {err.index[-1]:.0f}, "
                 f"{_spread(noisy, 'err', err.index[-1])}) by {above_right:.3f}",
                 verdict(ok), above_right)


def _unit_distance(clean: pd.DataFrame) -> Check:
    d = _means(clean, "unit_dist").dropna()
    rho = spearman(d.index, d.values)
    return Check("The distance from initialization per hidden unit ‖W₁ − W₁⁰‖_F / √h falls "
                 "with width (Spearman ρ < 0, clean labels)",
                 f"ρ = {rho:.2f}; {d.iloc[0]:.3g} (P={d.index[0]:.0f}) → {d.iloc[-1]:.3g} "
                 f"(P={d.index[-1]:.0f})" if len(d) else "no runs",
                 verdict(None if len(d) < 3 else rho < 0), rho)


# -- figures ---------------------------------------------------------------------------------
def figures(t: pd.DataFrame, thresholds: dict) -> list:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, (p, g) in enumerate(t[t["status"] == "finished"].groupby("p")):
        for ax, col in zip(axes, ("loss", "err", "spectral")):
            grp = g.groupby("P")[col]
            mean, lo, hi = grp.mean(), grp.min(), grp.max()
            ax.plot(mean.index, mean.values, "o-", color=f"C{i}", ms=3,
                    label=f"label noise {p:g}")
            ax.fill_between(mean.index, lo.values, hi.values, color=f"C{i}", alpha=0.2)
        if thresholds.get(p):
            for ax in axes[:2]:
                ax.axvline(thresholds[p], color=f"C{i}", ls=":", lw=1)
    for ax, label in zip(axes, ("final training loss", "test error",
                                "product of spectral norms")):
        ax.set(xscale="log", xlabel="parameters P (dotted: interpolation threshold)",
               ylabel=label)
        plain(ax)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    return [("Training loss, test error and norms against the number of parameters", fig)]


__all__ = ["EXPERIMENT", "Capacity", "interpolation_threshold", "width_table"]
EXPERIMENT = Capacity()
