"""Stiffness (Fort, Nowak, Jastrzębski, Narayanan, "Stiffness: A New Perspective on
Generalization in Neural Networks", 2019).

The stiffness of two examples is the cosine (or the sign) of the angle between their loss
gradients: how much a gradient step on one helps the other (probe ``stiffness``, on a fixed
subset of training examples along training; test pairs are measured on the final
parameters in the analysis). Claims checked, thresholds fixed before the runs:

1. class structure (Fort et al. §4.1, Fig. 2-4): the within-class cosine stiffness (mean
   of the diagonal of the class matrix) exceeds the between-class one (off-diagonal mean)
   at every measurement after step 0 in every run on training pairs, and at the end on
   test pairs;
2. stiffness falls with input distance (§4.2, Fig. 9): at the end of every run, the binned
   cosine stiffness against the distance of the pair has Spearman ρ < 0 (training pairs);
3. the dynamical critical length ξ (the distance where the binned cosine stiffness first
   crosses 0; never crossing = larger than every distance) decreases with training:
   ξ(end) < ξ(first measurement after step 0) in every run;
4. the higher the learning rate, the smaller the critical length (§4.3, Fig. 10):
   Spearman ρ(η, ξ(end)) < 0 over the seed means;
5. small learning rates lead to higher stiffness at a given epoch (§4.3): Spearman
   ρ(η, mean cosine stiffness at the end) < 0 over the seed means (training pairs).

- smoke: digits (512 train), MLP 64-64-64-10, η ∈ {0.03, 0.3}, S = 32, 4 epochs, stiffness
  on 64 examples at 3 log points: 2 runs.
- cpu: MNIST (4,000 of the 8,000 offline images), MLP 784-256-256-10, η ∈ {0.01, 0.03,
  0.1, 0.3}, S = 32, 10 epochs, 2 seeds, stiffness on 400 training examples at 8 log
  points, and on 400 test examples at the end: 8 runs.
- paper: Fashion-MNIST (60,000), MLP 784-500-500-500-10 (Fort et al.'s fully connected
  setting), η ∈ {0.01, 0.03, 0.1, 0.3}, S = 32, 20 epochs, 2 seeds, 1,000 examples at 12
  log points: 8 runs (GPU).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import fmt_spread, load_trained, mean_spread, spearman

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 512, "download": False},
                  model={"name": "mlp", "depth": 2, "width": 64}, lrs=(0.03, 0.3), batch=32,
                  epochs=4, seeds=(0,), n=64, log_points=3),
    "cpu": dict(data={"name": "mnist", "n_train": 4000},
                model={"name": "mlp", "depth": 2, "width": 256}, lrs=(0.01, 0.03, 0.1, 0.3),
                batch=32, epochs=10, seeds=(0, 1), n=400, log_points=8),
    "paper": dict(data={"name": "fashion-mnist"},
                  model={"name": "mlp", "depth": 3, "width": 500}, lrs=(0.01, 0.03, 0.1, 0.3),
                  batch=32, epochs=20, seeds=(0, 1), n=1000, log_points=12),
}


class Stiffness(Experiment):
    name = "stiffness"
    title = "Stiffness: gradient alignment by class, by input distance, over training"
    reference = ("S. Fort, P. K. Nowak, S. Jastrzębski, S. Narayanan, \"Stiffness: A New "
                 "Perspective on Generalization in Neural Networks\", arXiv:1901.09491 (2019)")
    summary = ("SGD at several learning rates; the cosine and sign stiffness of pairs of "
               "training examples along training (class-by-class matrices, stiffness against "
               "input distance, the dynamical critical length), and of test pairs at the end.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        return [{"name": f"lr-{lr:g}_seed-{s}", "seed": s, "data": dict(sc["data"]),
                 "model": dict(sc["model"]), "optim": {"lr": lr, "batch_size": sc["batch"]},
                 "train": {"epochs": sc["epochs"]},
                 "probes": [{"name": "stiffness", "split": "train", "n": sc["n"],
                             "log_points": sc["log_points"]}]}
                for lr in sc["lrs"] for s in sc["seeds"]]

    def analyze(self, ctx: AnalysisContext):
        t = stiffness_table(ctx, SCALES[ctx.scale]["n"])
        checks = [_class_check(t), _distance_check(t), _length_over_training(t),
                  _length_vs_lr(t), _stiffness_vs_lr(t)]
        return checks, figures(t)


def _xi(value: float) -> float:
    """A critical length that was never reached counts as larger than every distance."""
    return math.inf if math.isnan(value) else value


def stiffness_table(ctx: AnalysisContext, n: int) -> pd.DataFrame:
    """One row per run: the probe's arrays over training and the test-pair measurement at
    the end (computed here from the final parameters)."""
    from sgdlab.probes.stiffness import stiffness

    rows = []
    for _, r in ctx.runs.iterrows():
        row = {"id": r["id"], "lr": float(r["optim.lr"]), "seed": int(r["seed"]),
               "status": r["status"], "series": [], "test": None}
        if r["status"] == "finished":
            run = ctx.run(r["id"])
            row["series"] = [(step, a) for step, a in run.load_arrays("stiffness")]
            m = ctx.series(r["id"], "stiffness/cos_mean")
            row["epochs"] = dict(zip(m["step"], m["epoch"]))
            model, data, loss_fn = load_trained(ctx, r["id"])
            x, y = data.x_test[:n], data.y_test[:n]
            row["test"] = stiffness(model, loss_fn, x, y, n_classes=data.n_classes)
        rows.append(row)
    t = pd.DataFrame(rows)
    scal = {name: ctx.metrics([f"stiffness/{name}"]) for name in
            ("cos_within", "cos_between", "critical_length", "cos_mean")}
    for name, m in scal.items():
        t[f"{name}_series"] = [m[m["run"] == rid].sort_values("step")[["step", "value"]]
                               .to_numpy() for rid in t["id"]]
    return t


def _class_check(t: pd.DataFrame) -> Check:
    worst, parts, ok = math.inf, [], []
    for r in t[t["status"] == "finished"].itertuples():
        w, b = r.cos_within_series, r.cos_between_series
        gap = (w[:, 1] - b[:, 1])[w[:, 0] > 0]
        if not len(gap):
            continue
        test_gap = r.test["cos_within"] - r.test["cos_between"]
        worst = min(worst, float(gap.min()), test_gap)
        ok.append(bool((gap > 0).all() and test_gap > 0))
        parts.append(f"η={r.lr:g} s{r.seed}: train min gap {gap.min():.3f}, end "
                     f"{w[-1, 1]:.3f} vs {b[-1, 1]:.3f}; test {r.test['cos_within']:.3f} vs "
                     f"{r.test['cos_between']:.3f}")
    return Check("Within-class cosine stiffness exceeds between-class stiffness at every "
                 "measurement after step 0 (training pairs) and at the end (test pairs), in "
                 "every run", "; ".join(parts) or "no runs", verdict(all(ok) if ok else None),
                 worst if ok else None)


def _distance_check(t: pd.DataFrame) -> Check:
    rhos = []
    for r in t[t["status"] == "finished"].itertuples():
        _, a = r.series[-1]
        rhos.append((r, spearman(a["bin_centers"], a["stiffness_cos"])))
    ok = [rho < 0 for _, rho in rhos if not math.isnan(rho)]
    return Check("Stiffness falls with input distance: at the end, Spearman ρ(distance, binned "
                 "cosine stiffness) < 0 in every run (training pairs)",
                 ", ".join(f"η={r.lr:g} s{r.seed}: ρ = {rho:.2f}" for r, rho in rhos)
                 or "no runs", verdict(all(ok) if ok else None),
                 max((rho for _, rho in rhos), default=None))


def _length_over_training(t: pd.DataFrame) -> Check:
    parts, ok = [], []
    for r in t[t["status"] == "finished"].itertuples():
        xi = r.critical_length_series
        later = xi[xi[:, 0] > 0]
        if len(later) < 2:
            continue
        early, end = _xi(later[0, 1]), _xi(later[-1, 1])
        ok.append(end < early)
        parts.append(f"η={r.lr:g} s{r.seed}: {early:.3g} → {end:.3g}")
    return Check("The dynamical critical length ξ decreases with training: ξ(end) < ξ(first "
                 "measurement after step 0) in every run (never crossing zero = ∞)",
                 ", ".join(parts) or "no runs", verdict(all(ok) if ok else None))


def _lr_trend(t: pd.DataFrame, values: dict[float, list[float]], label: str, claim: str
              ) -> Check:
    means = {lr: mean_spread(v)[0] for lr, v in values.items()}
    finite = {k: v for k, v in means.items() if not math.isnan(v)}
    rho = spearman(list(finite), [min(v, 1e9) for v in finite.values()])
    return Check(claim, f"ρ = {rho:.2f}; " + ", ".join(
        f"η={lr:g}: {label} {fmt_spread(v)}" for lr, v in sorted(values.items())),
        verdict(None if len(finite) < 2 or math.isnan(rho) else rho < 0), rho)


def _length_vs_lr(t: pd.DataFrame) -> Check:
    done = t[t["status"] == "finished"]
    values: dict[float, list[float]] = {}
    for r in done.itertuples():
        values.setdefault(r.lr, []).append(_xi(r.critical_length_series[-1, 1]))
    return _lr_trend(t, values, "ξ", "The higher the learning rate, the smaller the critical "
                     "length at the end (Spearman ρ(η, ξ) < 0 over seed means)")


def _stiffness_vs_lr(t: pd.DataFrame) -> Check:
    done = t[t["status"] == "finished"]
    values: dict[float, list[float]] = {}
    for r in done.itertuples():
        values.setdefault(r.lr, []).append(float(r.cos_mean_series[-1, 1]))
    return _lr_trend(t, values, "stiffness", "Smaller learning rates give higher stiffness at "
                     "a given epoch: Spearman ρ(η, mean cosine stiffness at the end) < 0 over "
                     "seed means (training pairs)")


# -- figures ---------------------------------------------------------------------------------
def figures(t: pd.DataFrame) -> list:
    from matplotlib.figure import Figure

    done = t[t["status"] == "finished"]
    if not len(done):
        return []
    figs = []
    first_seed = done[done["seed"] == done["seed"].min()].sort_values("lr")
    r = first_seed.iloc[len(first_seed) // 2]
    picks = [r["series"][i] for i in sorted({1 if len(r["series"]) > 1 else 0,
                                            len(r["series"]) // 2, len(r["series"]) - 1})]
    fig = Figure(figsize=(3.3 * (len(picks) + 1), 3.2), layout="constrained")
    axes = fig.subplots(1, len(picks) + 1)
    mats = [(f"train, step {step}", a["class_cos"]) for step, a in picks]
    mats.append(("test, end", np.asarray(r["test"]["class_cos"])))
    for ax, (label, c) in zip(axes, mats):
        im = ax.imshow(c, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set(title=label, xlabel="class", ylabel="class")
    fig.colorbar(im, ax=axes[-1], shrink=0.8)
    figs.append((f"Class stiffness matrices (cosine), eta = {r['lr']:g}", fig))

    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, (step, a) in enumerate(r["series"]):
        axes[0].plot(a["bin_centers"], a["stiffness_cos"], color=f"C{i}", label=f"step {step}")
    axes[0].axhline(0, color="k", lw=0.7)
    axes[0].set(xlabel="input distance ‖x_i − x_j‖", ylabel="cosine stiffness",
                title=f"η = {r['lr']:g}, training pairs")
    axes[0].legend(fontsize=6)
    for i, (lr, g) in enumerate(done.groupby("lr")):
        for k, row in enumerate(g.itertuples()):
            xi = row.critical_length_series
            y = np.where(np.isnan(xi[:, 1]), np.nan, xi[:, 1])
            axes[1].plot(np.maximum(xi[:, 0], 1), y, marker="o", color=f"C{i}", ms=3,
                         ls="-" if k == 0 else ":", label=f"η = {lr:g}" if k == 0 else None)
            s = row.cos_mean_series
            axes[2].plot(np.maximum(s[:, 0], 1), s[:, 1], color=f"C{i}",
                         ls="-" if k == 0 else ":", label=f"η = {lr:g}" if k == 0 else None)
    axes[1].set(xscale="log", xlabel="step", ylabel="critical length ξ",
                title="dynamical critical length (gaps: ∞)")
    axes[2].set(xscale="log", xlabel="step", ylabel="mean cosine stiffness",
                title="stiffness over training")
    axes[1].legend(fontsize=7)
    figs.append(("Stiffness against distance, critical length and stiffness over training",
                 fig))
    return figs


__all__ = ["EXPERIMENT", "Stiffness", "stiffness_table"]
EXPERIMENT = Stiffness()
