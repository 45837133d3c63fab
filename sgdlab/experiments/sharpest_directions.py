"""Sharpest directions of the loss and the SGD step length (Jastrzębski et al., ICLR 2019).

Claims checked (all curvature on a fixed probe subset of the training set):

1. λ_max(t), the top Hessian eigenvalue, grows early in training and peaks at a value set
   by η and S: the peak falls as η grows (Spearman ρ(η, peak) < 0 at fixed S) and rises
   with S (ρ(S, peak) > 0 at fixed η). The peak of a measured curve is its largest
   3-point running median (:func:`robust_peak`): one measurement taken mid-oscillation is
   not a peak.
2. The peak stays below, or hovers near, the stability threshold of gradient descent on a
   quadratic, 2/η ((2 + 2β)/η with momentum β): r = peak_t λ_max(t) η / 2 ≤ 1.25.
3. The SGD step is too large for the sharpest direction ("commonly fails to minimize the
   loss along the sharpest directions"). Along v_1, with Δ = −η g the step and
   s = |⟨Δ, v_1⟩|, the "bowl" is L(θ + u s v_1), oriented so that u = +1 is where the
   step lands. For L = L_0 + G x + λ x²/2 along v_1 the valley floor sits at
   u* = G / (η λ g) (G the probe-subset, g the mini-batch slope), i.e. u* = 1/(ηλ) for
   G = g: the step overshoots the floor iff u* < 1 (ηλ > 1) and raises the loss along v_1
   iff u* < 1/2. Held if the median u* over the bowls of the SGD runs (after step 0) < 1.
4. Nudged SGD (g' = g + (γ − 1) V Vᵀ g, V the top-K eigenvectors) with γ < 1 reaches a
   sharper region (larger peak λ_max) than SGD and γ > 1 a flatter one; with γ = 1 it is
   exactly SGD: the same train-loss series as the SGD run of the same seed (bit-identical
   on CPU; on CUDA within 1e-3 relative, cuDNN kernels not being bit-reproducible).

Grids (``configs``, one seed): SGD at η ∈ lrs with batch S0, SGD at η0 with the extra
batch sizes, NSGD at (η0, S0) with γ ∈ {0.1, 1, 5}, K = 5, its subspace refreshed where
the Hessian probe measures (one shared Lanczos run); its baseline is the SGD run at
(η0, S0). Probes: "hessian" (top-5, ``probes_per_epoch`` times per epoch, so the early
peak is resolved) and "sharpest" (top-3 bowls, 25 offsets in [−3, 3], every epoch).

- smoke: MNIST-1D (4,000 train, generated offline), MLP 40-128-128-10 (23k parameters),
  4 epochs, η ∈ {0.05, 0.2, 0.5} at S = 32, S ∈ {8, 128} at η = 0.2, probe subset 256:
  8 runs, 13-18 s on this 2-core CPU in pytest (one thread), analysis included.
- paper: Fashion-MNIST (60k; ``data.file`` or $SGDLAB_DATA), simple CNN (421,642
  parameters), 10 epochs, η ∈ {0.01, 0.03, 0.1} at S = 128, S ∈ {32, 512} at η = 0.03,
  probe subset 1024, Hessian 4x per epoch: 8 runs, ~48k SGD steps, ~330 top-5 Lanczos
  runs (~8k Hessian-vector products), ~6.6k bowl forward passes on 1024 examples, 88
  evaluations on 70k examples. Not run here (no GPU). Reduced CPU timing (2 loaded
  cores, the η = 0.03 run cut to 120 steps): 3.7 s per Hessian-vector product on 1024
  examples, ~22 products per warm-started Lanczos run. Assuming ~10 ms per product,
  ~1.5 ms per step and ~60 ms per evaluation on an H100: ~80 s of Lanczos + ~70 s of
  steps + ~20 s of bowls and evaluations, i.e. ~3-6 minutes with start-up (≤ 10 min).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import plain, spearman

GAMMAS = (0.1, 1.0, 5.0)
GRIDS = {
    "smoke": dict(
        data={"name": "mnist1d", "download": False},
        model={"name": "mlp", "depth": 2, "width": 128}, epochs=4, lrs=(0.05, 0.2, 0.5),
        batch=32, lr=0.2, batches=(8, 128), n=256,
        probes_per_epoch=4, eval_batch=4096),
    # cpu: the paper grid with the MLP 784-256-256-10 in place of the simple CNN, whose
    # Hessian-vector products are too slow for two CPU cores (3.7 s on 1,024 examples)
    "cpu": dict(
        data={"name": "fashion-mnist"}, model={"name": "mlp", "depth": 2, "width": 256},
        epochs=10, lrs=(0.01, 0.03, 0.1), batch=128, lr=0.03, batches=(32, 512), n=1024,
        probes_per_epoch=4, eval_batch=8192),
    "paper": dict(
        data={"name": "fashion-mnist"}, model={"name": "cnn"}, epochs=10,
        lrs=(0.01, 0.03, 0.1), batch=128, lr=0.03, batches=(32, 512), n=1024,
        probes_per_epoch=4, eval_batch=8192),
}
N_TRAIN = {"mnist1d": 4000, "fashion-mnist": 60000}



def robust_peak(values) -> float:
    """The peak of a measured curve: the largest 3-point running median, so that one
    measurement taken mid-oscillation (a spike of the noisy trajectory) is not the peak."""
    v = pd.Series(np.asarray(values, float)).dropna()
    if v.empty:
        return math.nan
    return float(v.rolling(3, center=True, min_periods=1).median().max())


def bowl_minimum(offsets, bowl, projection: float) -> float:
    """u*: where the bowl ``L(θ + u s v)`` is lowest, in units of the step's projection
    and oriented so that the step lands at u = +1 (``projection`` = ⟨Δ, v⟩, signed);
    a parabola through the lowest grid point and its neighbours refines it."""
    u = np.asarray(offsets, float) * (1.0 if projection >= 0 else -1.0)
    order = np.argsort(u)
    u, b = u[order], np.asarray(bowl, float)[order]
    i = int(np.argmin(b))
    if 0 < i < len(u) - 1:
        (u0, u1, u2), (b0, b1, b2) = u[i - 1:i + 2], b[i - 1:i + 2]
        denom = (u0 - u1) * (u0 - u2) * (u1 - u2)
        a = (u2 * (b1 - b0) + u1 * (b0 - b2) + u0 * (b2 - b1)) / denom
        c = (u2 ** 2 * (b0 - b1) + u1 ** 2 * (b2 - b0) + u0 ** 2 * (b1 - b2)) / denom
        if a > 0:
            return float(np.clip(-c / (2 * a), u0, u2))
    return float(u[i])


def steps_per_epoch(ctx: AnalysisContext) -> pd.Series:
    """Optimizer steps per epoch of each run (constant batch size), indexed by run id."""
    n = ctx.final("n_train")
    return (n // ctx.runs.set_index("id")["optim.batch_size"]).astype(float)


def wide(ctx: AnalysisContext, names: list[str]) -> dict[str, pd.DataFrame]:
    """run id -> frame indexed by step with one column per metric name."""
    m = ctx.metrics(names)
    return {rid: g.pivot_table(index="step", columns="name", values="value")
            for rid, g in m.groupby("run")}


class SharpestDirections(Experiment):
    name = "sharpest-directions"
    title = "Sharpest directions of the loss and the SGD step length"
    scales = ("smoke", "cpu", "paper")
    reference = ("S. Jastrzębski, Z. Kenton, N. Ballas, A. Fischer, Y. Bengio, A. Storkey. "
                 "On the Relation Between the Sharpest Directions of DNN Loss and the SGD "
                 "Step Length. ICLR 2019 (arXiv:1807.05031)")
    summary = ("Top-5 Hessian eigenvalues along SGD for several learning rates η and batch "
               "sizes S; the peak of λ_max against η and S and against 2/η; the loss along "
               "the top eigenvectors in units of the SGD step (bowls); Nudged SGD, which "
               "multiplies the gradient inside the top-5 subspace by γ.")

    def configs(self, scale: str) -> list[dict]:
        g = GRIDS[scale]
        out = []

        def add(tag: str, lr: float, batch: int, optim: dict | None = None) -> None:
            n_train = g["data"].get("n_train") or N_TRAIN[g["data"]["name"]]
            every = max(1, n_train // batch // g["probes_per_epoch"])
            optim = {"lr": lr, "batch_size": batch, **(optim or {})}
            if optim.get("name") == "nsgd":  # refresh where the probe measures: shared Lanczos
                optim.update(nsgd_k=5, nsgd_every=every, nsgd_subset=g["n"])
            out.append({
                "name": f"{self.name}-{scale}_{tag}", "seed": 0, "data": dict(g["data"]),
                "model": dict(g["model"]), "optim": optim,
                "train": {"epochs": g["epochs"],
                          "eval_batch_size": g["eval_batch"]},
                "probes": [{"name": "hessian", "every": every, "k": 5, "n": g["n"]},
                           {"name": "sharpest", "every": "epoch", "k": 3, "n": g["n"]}]})

        for lr in g["lrs"]:
            add(f"sgd_lr-{lr:g}_S-{g['batch']}", lr, g["batch"])
        for batch in g["batches"]:
            add(f"sgd_lr-{g['lr']:g}_S-{batch}", g["lr"], batch)
        for gamma in GAMMAS:
            add(f"nsgd_gamma-{gamma:g}", g["lr"], g["batch"], {"name": "nsgd", "nsgd_gamma": gamma})
        return out

    # -- analysis ------------------------------------------------------------------------
    def analyze(self, ctx: AnalysisContext):
        g = GRIDS[ctx.scale]
        runs = ctx.runs.set_index("id")
        sgd = runs[runs["optim.name"] == "sgd"]
        nsgd = runs[runs["optim.name"] == "nsgd"].sort_values("optim.nsgd_gamma")
        lr_runs = sgd[sgd["optim.batch_size"] == g["batch"]].sort_values("optim.lr")
        s_runs = sgd[np.isclose(sgd["optim.lr"], g["lr"])].sort_values("optim.batch_size")
        base = s_runs[s_runs["optim.batch_size"] == g["batch"]].index
        curves = wide(ctx, ["hessian/lambda_max", "hessian/stability", "train/loss",
                            "train/batch_loss", "test/acc"])
        spe = steps_per_epoch(ctx)

        def col(rid, name):
            f = curves.get(rid)
            return f[name].dropna() if f is not None and name in f else pd.Series(dtype=float)

        peak = {rid: robust_peak(col(rid, "hessian/lambda_max")) for rid in runs.index}
        checks = []

        rho = spearman(lr_runs["optim.lr"], [peak[r] for r in lr_runs.index])
        checks.append(Check(
            "λ_max peak decreases as η grows at fixed S (Spearman ρ(η, peak) < 0)",
            f"ρ = {rho:.2f}; peaks " + _pairs(lr_runs["optim.lr"], [peak[r] for r in lr_runs.index],
                                             "η"),
            verdict(None if math.isnan(rho) else rho < 0), rho))
        rho = spearman(s_runs["optim.batch_size"], [peak[r] for r in s_runs.index])
        checks.append(Check(
            "λ_max peak increases with S at fixed η (Spearman ρ(S, peak) > 0)",
            f"ρ = {rho:.2f}; peaks " + _pairs(s_runs["optim.batch_size"],
                                             [peak[r] for r in s_runs.index], "S"),
            verdict(None if math.isnan(rho) else rho > 0), rho))

        ratio = {rid: robust_peak(col(rid, "hessian/lambda_max") / col(rid, "hessian/stability"))
                 for rid in sgd.index}
        worst = max(ratio.values(), default=math.nan)
        checks.append(Check(
            "the λ_max peak stays below the stability threshold 2/η or hovers near it "
            "(peak of λ_max η/2 ≤ 1.25)",
            "peak λ_max·η/2 = " + ", ".join(f"{ratio[r]:.2f} (η={sgd.at[r, 'optim.lr']:g}, "
                                           f"S={sgd.at[r, 'optim.batch_size']})" for r in ratio),
            verdict(None if math.isnan(worst) else worst <= 1.25), worst))

        checks.append(self._bowl_check(ctx, sgd.index))

        if len(nsgd) and len(base):
            gam = dict(zip(nsgd["optim.nsgd_gamma"], nsgd.index))
            p = {γ: peak[gam[γ]] for γ in gam if γ != 1.0}
            p_sgd = peak[base[0]]
            lo, hi = min(p), max(p)
            ok = (p[lo] > p_sgd > p[hi]) if lo < 1 < hi else None
            checks.append(Check(
                "NSGD with γ < 1 reaches a larger λ_max peak than SGD, γ > 1 a smaller one",
                f"peak λ_max: γ={lo:g}: {p[lo]:.3g}, SGD: {p_sgd:.3g}, γ={hi:g}: {p[hi]:.3g}",
                verdict(ok), p[lo] / p[hi]))
            if 1.0 in gam:
                cpu = ctx.devices(gam[1.0]) | ctx.devices(base[0]) == {"cpu"}
                checks.append(self._equality_check(curves, gam[1.0], base[0], cpu))

        figures = [
            ("λ_max over training, several learning rates η (batch size fixed)",
             self._lam_figure(lr_runs, col, spe, "η", "optim.lr")),
            ("λ_max over training, several batch sizes S (learning rate fixed)",
             self._lam_figure(s_runs, col, spe, "S", "optim.batch_size")),
            ("Peak λ_max against the learning rate and the batch size",
             self._peak_figure(lr_runs, s_runs, peak)),
        ]
        if len(base):
            fig = self._bowl_figure(ctx.run(base[0]), spe[base[0]])
            if fig is not None:
                figures.insert(0, ("Bowls: loss along the top-3 eigenvectors in SGD-step "
                                   f"units (η={g['lr']:g}, S={g['batch']})", fig))
        if len(nsgd) and len(base):
            figures.append(("Nudged SGD: λ_max, train loss and test accuracy over training",
                            self._nsgd_figure(nsgd, base[0], col, spe)))
        return checks, figures

    def _bowl_check(self, ctx: AnalysisContext, run_ids) -> Check:
        u_star, rises = [], []
        for rid in run_ids:
            for step, a in _bowls(ctx.run(rid)):
                if step == 0:
                    continue
                u = bowl_minimum(a["offsets"], a["bowl"][0], a["step_projection"][0])
                u_star.append(u)
                rises.append(u < 0.5)
        claim = ("the SGD step is too large for the sharpest direction: along v_1 it lands "
                 "past the valley floor (median u* < 1, u = +1 the step's end)")
        if not u_star:
            return Check(claim, "no bowls recorded", "inconclusive")
        med = float(np.median(u_star))
        return Check(claim, f"median u* = {med:.2f} over {len(u_star)} bowls; overshoot "
                            f"(u* < 1) in {np.mean(np.array(u_star) < 1):.0%}, loss raised "
                            f"along v_1 (u* < 1/2) in {np.mean(rises):.0%}",
                     verdict(med < 1), med)

    @staticmethod
    def _equality_check(curves, nsgd_id: str, sgd_id: str, exact: bool) -> Check:
        """Bit-identical (``exact``: both runs trained on the CPU only), else 1e-3 relative:
        CUDA kernels need not be deterministic."""
        diffs = []
        for name in ("train/loss", "train/batch_loss"):
            a, b = curves[nsgd_id][name].dropna(), curves[sgd_id][name].dropna()
            same = a.index.intersection(b.index)
            complete = len(same) == len(a) == len(b) > 0
            diffs.append(float(np.max(np.abs(a[same] - b[same]))) if complete else math.inf)
        diff = max(diffs)
        final = float(curves[sgd_id]["train/loss"].dropna().iloc[-1])
        ok = diff == 0 if exact else diff <= 1e-3 * abs(final)
        return Check(
            "with γ = 1 NSGD equals SGD: same train-loss series as the SGD run of the same "
            "seed (" + ("bit-identical on CPU" if exact else "within 1e-3 relative on GPU")
            + ")",
            f"max |Δ loss| = {diff:.3g} (final train loss {final:.6g})", verdict(ok), diff)

    # -- figures ----------------------------------------------------------------------------
    @staticmethod
    def _lam_figure(rows, col, spe, label, key):
        from sgdlab.report.figures import new_figure

        fig, ax = new_figure()
        for i, (rid, r) in enumerate(rows.iterrows()):
            lam, stab = col(rid, "hessian/lambda_max"), col(rid, "hessian/stability")
            ax.plot(lam.index / spe[rid], lam.values, marker=".", color=f"C{i}",
                    label=f"{label}={r[key]:g}")
            if len(stab):
                ax.axhline(stab.iloc[0], ls="--", lw=0.8, color=f"C{i}")
        ax.set(xlabel="epoch", ylabel="λ_max (dashed: 2/η)", yscale="log")
        plain(ax)
        ax.legend(fontsize=8)
        return fig

    @staticmethod
    def _peak_figure(lr_runs, s_runs, peak):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3.2), layout="constrained")
        for ax, rows, key, label in zip(fig.subplots(1, 2), (lr_runs, s_runs),
                                        ("optim.lr", "optim.batch_size"), ("η", "S")):
            ax.plot(rows[key], [peak[r] for r in rows.index], "o-")
            if key == "optim.lr":
                x = np.asarray(rows[key], float)
                ax.plot(x, 2 / x, "k--", lw=0.8, label="2/η")
                ax.legend(fontsize=8)
            ax.set(xscale="log", yscale="log", xlabel=label, ylabel="peak λ_max")
            plain(ax)
        return fig

    @staticmethod
    def _bowl_figure(run, per_epoch: float):
        from matplotlib.figure import Figure

        bowls = [(s, a) for s, a in _bowls(run)]
        if not bowls:
            return None
        picks = sorted({bowls[i][0] for i in np.linspace(0, len(bowls) - 1, 4).round().astype(int)})
        chosen = [(s, a) for s, a in bowls if s in picks]
        k = min(3, len(chosen[0][1]["bowl"]))
        fig = Figure(figsize=(2.6 * len(chosen), 2.2 * k), layout="constrained")
        axes = np.atleast_2d(fig.subplots(k, len(chosen), squeeze=False))
        for j, (step, a) in enumerate(chosen):
            for i in range(k):
                ax = axes[i, j]
                sign = 1.0 if a["step_projection"][i] >= 0 else -1.0
                ax.plot(sign * a["offsets"], a["bowl"][i], ".-", ms=3)
                ax.axvline(0, color="k", lw=0.6)
                ax.axvline(1, color="r", ls="--", lw=0.8)
                if i == 0:
                    ax.set_title(f"epoch {step / per_epoch:.3g} (step {step})", fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"loss along v_{i + 1}", fontsize=8)
                if i == k - 1:
                    ax.set_xlabel("u (SGD steps; red: where the step lands)", fontsize=7)
                ax.tick_params(labelsize=7)
        return fig

    @staticmethod
    def _nsgd_figure(nsgd, sgd_id, col, spe):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 3.2), layout="constrained")
        axes = fig.subplots(1, 3)
        items = [(f"NSGD γ={r['optim.nsgd_gamma']:g}", rid) for rid, r in nsgd.iterrows()]
        items.append(("SGD", sgd_id))
        for i, (label, rid) in enumerate(items):
            style = dict(color="k", ls=":") if label == "SGD" else dict(color=f"C{i}")
            for ax, name in zip(axes, ("hessian/lambda_max", "train/loss", "test/acc")):
                s = col(rid, name)
                ax.plot(s.index / spe[rid], s.values, marker=".", label=label, **style)
        for ax, ylabel, scale in zip(axes, ("λ_max", "train loss", "test accuracy"),
                                     ("log", "log", "linear")):
            ax.set(xlabel="epoch", ylabel=ylabel, yscale=scale)
            plain(ax)
        axes[0].legend(fontsize=8)
        return fig



def _bowls(run) -> list[tuple[int, dict]]:
    """The "sharpest" probe's measurements that carry a bowl (all but the final one)."""
    if "sharpest" not in run.array_names():
        return []
    return [(s, a) for s, a in run.load_arrays("sharpest") if "bowl" in a]


def _pairs(keys, values, label: str) -> str:
    return ", ".join(f"{v:.3g} ({label}={k:g})" for k, v in zip(keys, values))


EXPERIMENT = SharpestDirections()
