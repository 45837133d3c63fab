"""The break-even point on the SGD trajectory (Jastrzębski et al., ICLR 2020).

Early in training λ_max(H), the top eigenvalue of the Hessian, grows until the SGD step
stops fitting the sharpest direction: gradient descent on a quadratic of curvature λ is
stable iff λ < 2/η. From that "break-even point" on, λ_max(H) is held near 2/η, so that
larger η (and, through the noise, smaller S) keeps the trajectory in flatter regions; the
gradient covariance K = (1/n) Σ (g_i − ḡ)(g_i − ḡ)ᵀ follows: λ_max(K) and Tr K are smaller.

Compared at matched training loss: each run's probe values are read against the training
loss L at the same step (the whole training set, evaluated every few steps and
interpolated to the probe step), then interpolated onto a common grid ℓ_1 > ... > ℓ_m,
log-spaced between the largest loss every run starts from, min_r max_t L_r(t), and the
smallest loss every run reaches, max_r min_t L_r(t). Each level is read at its first
passage (the first t with L_r(t) ≤ ℓ, linear in log L between the two bracketing
measurements), so non-monotone loss curves are handled. Claims (1-3 with Spearman ρ per
loss level and its median; with two runs, the sign of their difference per level):

1. larger η ⇒ smaller λ_max(H) at matched loss (median ρ(η, λ_max(H)) < 0);
2. larger η ⇒ smaller λ_max(K) and Tr K at matched loss (both median ρ < 0);
3. smaller S ⇒ smaller λ_max(H) at matched loss (median ρ(S, λ_max(H)) > 0);
4. the break-even point comes earlier for larger η. The break-even step of a run is the
   first step at which λ_max(H) reaches the stability threshold 2/η ((2 + 2β)/η with
   momentum β: the metric ``hessian/stability`` stored by the hessian probe, else computed
   from the config), linear in step between the two bracketing probe points (NaN if never
   reached; each run also reports its largest λ_max/(2/η)). Held if at least two η reach
   it and their steps strictly decrease with η; not held if they do not, or if an η
   reaches it while a larger η never does; inconclusive if fewer than two η reach it;
5. after the break-even point λ_max(H) stays near or below 2/η (SGD cannot go sharper
   than the stability threshold): the largest λ_max(H)·η/2 at the probe steps after the
   break-even step is ≤ 1.2 for every η that reaches it. Not held if one exceeds it;
   held if at least two η reach 2/η and none does; else inconclusive.

Figures: the three quantities against the loss and against the step (2/η dashed, the
break-even step marked per run), and the break-even step against η (η that never reach
2/η at the last probe step, with their largest λ_max η/2). At the smoke scale only
η = 0.5 reaches 2/η (step ≈ 73 of 750; η = 0.1 and 0.2 peak at 0.42 and 0.67 of it), so
checks 4 and 5 are inconclusive there.

Grids (one seed): SGD at η ∈ lrs with batch S0 and at (η0, S1). Probes "hessian" (top-1)
and "gradient_noise" (Tr K and λ_max(K) by Lanczos) on a fixed probe subset at
``log_points`` log-spaced steps (dense early, where the break-even point lies); the
training loss on the whole training set every ``steps_per_epoch / evals_per_epoch`` steps,
interpolated (linearly in log loss) to the probe steps.

- smoke: MNIST-1D (4,000 train, generated offline), MLP 40-128-128-10 (23k parameters),
  6 epochs, η ∈ {0.1, 0.2, 0.5} at S = 32 and S = 8 at η = 0.2, probe subset 256, 30
  log points, 25 evaluations per epoch: 4 runs, 18-30 s on this 2-core CPU in pytest.
- paper: Fashion-MNIST, simple CNN (421,642 parameters), 4 epochs, η ∈ {0.01, 0.03, 0.1}
  at S = 128 and S = 32 at η = 0.03, probe subset 1024, 40 log points (~33 distinct
  steps per run), 20 evaluations per epoch: 4 runs, ~13k SGD steps, ~130 probe points
  (top-1 Lanczos on H, ~20 products; 1024 per-example gradients, materialized, and
  Lanczos on K), 320 evaluations on 70k examples. Not run here (no GPU). From the
  reduced CPU timing of the CNN (3.7 s per Hessian-vector product on 1024 examples on 2
  loaded cores) and assuming ~10 ms per product, ~0.3 s of per-example gradients per
  point, ~1.5 ms per step and ~60 ms per evaluation on an H100: ~1 min of probes, ~20 s
  of steps, ~20 s of evaluations, i.e. ~2-4 minutes with start-up (≤ 10 min).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import plain, spearman

AFTER_MAX = 1.2  # "stays near or below 2/η": λ_max(H)·η/2 ≤ AFTER_MAX after break-even
GRIDS = {
    "smoke": dict(
        data={"name": "mnist1d", "download": False},
        model={"name": "mlp", "depth": 2, "width": 128}, epochs=6, lrs=(0.1, 0.2, 0.5),
        batch=32, lr=0.2, batch2=8, n=256, log_points=30, evals_per_epoch=25, eval_batch=4096),
    # cpu: the MLP 784-256-256-10 in place of the CNN on 20,000 images, with learning rates
    # scaled to the MLP's sharpness (at the CNN's η its λ_max stays below every 2/η)
    "cpu": dict(
        data={"name": "fashion-mnist", "n_train": 20000},
        model={"name": "mlp", "depth": 2, "width": 256}, epochs=4, lrs=(0.1, 0.2, 0.3),
        batch=128, lr=0.2, batch2=32, n=512, log_points=30, evals_per_epoch=10,
        eval_batch=8192),
    "paper": dict(
        data={"name": "fashion-mnist"}, model={"name": "cnn"}, epochs=4,
        lrs=(0.01, 0.03, 0.1), batch=128, lr=0.03, batch2=32, n=1024, log_points=40,
        evals_per_epoch=20, eval_batch=8192),
}
N_TRAIN = {"mnist1d": 4000, "fashion-mnist": 60000}
QUANTITIES = (("hessian/lambda_max", "λ_max(H)"), ("gradient_noise/lambda_max_K", "λ_max(K)"),
              ("gradient_noise/trace_K", "Tr K"))


def matched_loss_grid(losses, n: int = 20) -> np.ndarray:
    """``n`` loss levels, log-spaced and decreasing, from min_r max L_r to max_r min L_r:
    the range every run passes through (empty if the runs do not overlap)."""
    curves = [np.asarray(c, float)[np.isfinite(c)] for c in losses]
    if not curves or any(len(c) == 0 for c in curves):
        return np.array([])
    hi, lo = min(c.max() for c in curves), max(c.min() for c in curves)
    if not 0 < lo < hi:
        return np.array([])
    return np.geomspace(hi, lo, n)


def at_matched_loss(loss, values, levels) -> np.ndarray:
    """``values`` read at the first passage of ``loss`` below each level: for the first
    index i with loss[i] ≤ ℓ, interpolate between i − 1 and i linearly in log loss.
    NaN for a level never reached."""
    loss, values = np.asarray(loss, float), np.asarray(values, float)
    out = np.full(len(levels), math.nan)
    for j, level in enumerate(levels):
        hit = np.flatnonzero(loss <= level)
        if not len(hit):
            continue
        i = hit[0]
        if i == 0 or not loss[i - 1] > loss[i]:
            out[j] = values[i]
            continue
        t = (math.log(loss[i - 1]) - math.log(level)) / (math.log(loss[i - 1]) - math.log(loss[i]))
        out[j] = values[i - 1] + t * (values[i] - values[i - 1])
    return out


def break_even_step(steps, values, threshold) -> float:
    """The step at which ``values`` first reaches ``threshold`` (a number, or one per
    step), linear in step between the two bracketing points: for the first i with
    values[i] ≥ threshold[i], where the ratio values/threshold crosses 1 between i − 1 and
    i. ``steps[0]`` if reached at the first point, NaN if never."""
    steps = np.asarray(steps, float)
    ratio = np.asarray(values, float) / np.broadcast_to(np.asarray(threshold, float),
                                                        steps.shape)
    hit = np.flatnonzero(ratio >= 1)
    if not len(hit):
        return math.nan
    i = hit[0]
    if i == 0 or not np.isfinite(ratio[i - 1]):
        return float(steps[i])
    t = (1 - ratio[i - 1]) / (ratio[i] - ratio[i - 1])
    return float(steps[i - 1] + t * (steps[i] - steps[i - 1]))


def break_even_stats(table: pd.DataFrame) -> dict:
    """One run's break-even step (``step``, NaN if never), its largest λ_max(H)/(2/η)
    (``peak``), the largest after the break-even step (``after``, NaN if never) and its
    last probe step (``last``)."""
    if not len(table):
        return {"step": math.nan, "peak": math.nan, "after": math.nan, "last": math.nan}
    steps = table.index.to_numpy(float)
    ratio = (table[QUANTITIES[0][0]] / table["hessian/stability"]).to_numpy(float)
    step = break_even_step(steps, ratio, 1.0)
    after = ratio[steps >= step] if not math.isnan(step) else np.array([])
    return {"step": step, "peak": float(np.nanmax(ratio)),
            "after": float(np.nanmax(after)) if len(after) else math.nan,
            "last": float(steps[-1])}


def level_correlation(keys, table: np.ndarray) -> np.ndarray:
    """Spearman ρ between ``keys`` (one per run) and each column (loss level) of ``table``
    (runs x levels)."""
    return np.array([spearman(keys, table[:, j]) for j in range(table.shape[1])])


class BreakEven(Experiment):
    name = "break-even"
    title = "The break-even point: λ_max(H), λ_max(K) and Tr K at matched training loss"
    scales = ("smoke", "cpu", "paper")
    reference = ("S. Jastrzębski, M. Szymczak, S. Fort, D. Arpit, J. Tabor, K. Cho, "
                 "K. Geras. The Break-Even Point on Optimization Trajectories of Deep "
                 "Neural Networks. ICLR 2020 (arXiv:2002.09572)")
    summary = ("SGD at several learning rates η (and two batch sizes S); the top Hessian "
               "eigenvalue, the top eigenvalue and trace of the gradient covariance K, "
               "read against the training loss so that runs are compared at the same "
               "loss, and the step at which λ_max(H) first reaches 2/η.")

    def configs(self, scale: str) -> list[dict]:
        g = GRIDS[scale]
        points = [(lr, g["batch"]) for lr in g["lrs"]] + [(g["lr"], g["batch2"])]
        out = []
        for lr, batch in points:
            n_train = g["data"].get("n_train") or N_TRAIN[g["data"]["name"]]
            every = max(1, n_train // batch // g["evals_per_epoch"])
            out.append({
                "name": f"{self.name}-{scale}_lr-{lr:g}_S-{batch}", "seed": 0,
                "data": dict(g["data"]), "model": dict(g["model"]),
                "optim": {"lr": lr, "batch_size": batch},
                "train": {"epochs": g["epochs"], "eval_every": every,
                          "eval_batch_size": g["eval_batch"]},
                "probes": [{"name": "hessian", "log_points": g["log_points"], "k": 1,
                            "n": g["n"]},
                           {"name": "gradient_noise", "log_points": g["log_points"],
                            "n": g["n"]}]})
        return out

    def analyze(self, ctx: AnalysisContext):
        g = GRIDS[ctx.scale]
        runs = ctx.runs.set_index("id")
        names = [q for q, _ in QUANTITIES] + ["hessian/stability", "train/loss"]
        m = ctx.metrics(names)
        frames = {rid: f.pivot_table(index="step", columns="name", values="value")
                  for rid, f in m.groupby("run")}
        table = {rid: _probe_table(frames.get(rid), _threshold(r)) for rid, r in runs.iterrows()}
        lr_runs = runs[runs["optim.batch_size"] == g["batch"]].sort_values("optim.lr")
        s_runs = runs[np.isclose(runs["optim.lr"], g["lr"])].sort_values("optim.batch_size")

        checks = []
        lam_h, label_h = QUANTITIES[0]
        checks.append(_trend_check(f"larger η ⇒ smaller {label_h} at matched training loss",
                                   lr_runs, "optim.lr", table, [lam_h], sign=-1))
        checks.append(_trend_check(
            "larger η ⇒ smaller λ_max(K) and Tr K at matched training loss", lr_runs,
            "optim.lr", table, [q for q, _ in QUANTITIES[1:]], sign=-1))
        checks.append(_trend_check(f"smaller S ⇒ smaller {label_h} at matched training loss",
                                   s_runs, "optim.batch_size", table, [lam_h], sign=+1))

        stats = {rid: break_even_stats(t) for rid, t in table.items()}
        checks += [_earlier_check(lr_runs, stats), _held_check(lr_runs, stats)]
        be = {rid: st["step"] for rid, st in stats.items()}
        figures = [
            ("λ_max(H), λ_max(K) and Tr K against training loss (matched loss)",
             _against_loss(runs, table)),
            ("λ_max(H), λ_max(K) and Tr K against step", _against_step(runs, table, be)),
            ("Break-even step against η", _break_even_figure(lr_runs, stats)),
        ]
        return checks, figures


def _threshold(run) -> float:
    """The stability threshold from the config, where the probe stored none."""
    from sgdlab.probes.hessian import stability_threshold

    momentum = run.get("optim.momentum", 0.0)
    return stability_threshold(float(run["optim.lr"]),
                               0.0 if pd.isna(momentum) else float(momentum))


def _reached(lr_runs, stats) -> tuple[list, str]:
    """The ids of the runs that reach 2/η (by η), and their break-even steps as text."""
    parts, reached = [], []
    for rid, r in lr_runs.iterrows():
        st, eta = stats[rid], r["optim.lr"]
        if math.isnan(st["peak"]):
            parts.append(f"η={eta:g}: no probe data")
        elif math.isnan(st["step"]):
            parts.append(f"η={eta:g}: never (max λ_max η/2 {st['peak']:.2f})")
        else:
            reached.append(rid)
            parts.append(f"η={eta:g}: step {st['step']:.3g} (max λ_max η/2 {st['peak']:.2f})")
    last = max((stats[rid]["last"] for rid in lr_runs.index
                if not math.isnan(stats[rid]["last"])), default=math.nan)
    return reached, "break-even " + "; ".join(parts) + f"; of {last:g} steps"


def _earlier_check(lr_runs, stats) -> Check:
    """Held if ≥ 2 η reach 2/η and their break-even steps strictly decrease with η; not
    held if they do not, or if an η reaches it and a larger one never does."""
    claim = ("larger η ⇒ earlier break-even point: the first step where λ_max(H) reaches 2/η "
             "(the probe's stability threshold, (2+2β)/η with momentum β; linear between probe "
             "steps) decreases with η among the η that reach it, and no larger η fails to "
             "reach it (inconclusive if fewer than 2 η reach it)")
    reached, measured = _reached(lr_runs, stats)
    if not reached:
        return Check(claim, measured, "inconclusive")
    etas = lr_runs["optim.lr"]
    missed = [rid for rid in lr_runs.index if rid not in reached
              and not math.isnan(stats[rid]["peak"]) and etas[rid] > etas[reached[0]]]
    steps = np.array([stats[rid]["step"] for rid in reached])
    rho = spearman(etas[reached].to_numpy(float), steps) if len(reached) > 1 else math.nan
    if missed:
        return Check(claim, measured + f"; η={etas[missed[0]]:g} never reaches 2/η although "
                     f"η={etas[reached[0]]:g} does", "not held", rho)
    if len(reached) < 2:
        return Check(claim, measured, "inconclusive", rho)
    return Check(claim, measured, verdict(bool(np.all(np.diff(steps) < 0))), rho)


def _held_check(lr_runs, stats) -> Check:
    """Not held if any η exceeds AFTER_MAX·2/η after its break-even step; held if ≥ 2 η
    reach 2/η and none does; else inconclusive."""
    claim = ("after the break-even point λ_max(H) stays near or below 2/η: the largest "
             f"λ_max(H)·η/2 at the later probe steps is ≤ {AFTER_MAX:g} for every η that "
             "reaches 2/η (inconclusive if fewer than 2 η reach it)")
    reached, measured = _reached(lr_runs, stats)
    if not reached:
        return Check(claim, measured, "inconclusive")
    measured = "max λ_max η/2 after break-even: " + ", ".join(
        f"η={lr_runs.at[rid, 'optim.lr']:g}: {stats[rid]['after']:.2f} (steps "
        f"{stats[rid]['step']:.3g}-{stats[rid]['last']:g})" for rid in reached)
    never = [f"{r['optim.lr']:g}" for rid, r in lr_runs.iterrows() if rid not in reached]
    if never:
        measured += f"; η={', '.join(never)} never reach 2/η"
    worst = max(stats[rid]["after"] for rid in reached)
    if worst > AFTER_MAX:
        return Check(claim, measured, "not held", worst)
    return Check(claim, measured, "inconclusive" if len(reached) < 2 else "held", worst)


def _probe_table(frame: pd.DataFrame | None, threshold: float) -> pd.DataFrame:
    """Probe steps with all quantities, the stability threshold (stored by the hessian
    probe; ``threshold`` where it is missing) and the training loss at that step (the
    evaluations, every few steps, interpolated linearly in log loss)."""
    cols = [q for q, _ in QUANTITIES]
    if frame is None or not {*cols, "train/loss"} <= set(frame.columns):
        return pd.DataFrame(columns=[*cols, "hessian/stability", "train/loss"])
    table = frame[cols].dropna()
    stored = (frame["hessian/stability"].reindex(table.index) if "hessian/stability" in frame
              else pd.Series(math.nan, index=table.index))
    table["hessian/stability"] = stored.fillna(threshold)
    loss = frame["train/loss"].dropna()
    table["train/loss"] = np.exp(np.interp(table.index, loss.index, np.log(loss.to_numpy())))
    return table


def _trend_check(claim: str, rows, key: str, table, quantities, sign: int) -> Check:
    """Held if, for every quantity, the median over loss levels of ρ(key, quantity) has
    the sign ``sign``."""
    claim = f"{claim} (median over loss levels of Spearman ρ {'<' if sign < 0 else '>'} 0)"
    ids = list(rows.index)
    levels = matched_loss_grid([table[r]["train/loss"] for r in ids])
    if len(ids) < 2 or not len(levels):
        return Check(claim, "the runs share no range of training loss", "inconclusive")
    parts, oks, medians = [], [], []
    for q in quantities:
        vals = np.stack([at_matched_loss(table[r]["train/loss"], table[r][q], levels)
                         for r in ids])
        rho = level_correlation(rows[key].to_numpy(float), vals)
        med = float(np.nanmedian(rho)) if np.isfinite(rho).any() else math.nan
        if len(ids) == 2:  # two runs: the sign of the difference, level by level
            diff = np.sign(vals[1] - vals[0]) * np.sign(rows[key].iloc[1] - rows[key].iloc[0])
            med = float(np.nanmedian(diff)) if np.isfinite(diff).any() else math.nan
            rho = diff
        means = np.exp(np.nanmean(np.log(np.abs(vals)), axis=1))
        label = dict(QUANTITIES)[q]
        parts.append(f"{label}: median ρ = {med:.2f} ({np.mean(sign * rho > 0):.0%} of "
                     f"{len(levels)} levels); geometric means " + ", ".join(
                         f"{v:.3g} ({key.split('.')[-1].replace('batch_size', 'S')}="
                         f"{k:g})" for k, v in zip(rows[key], means)))
        oks.append(None if math.isnan(med) else sign * med > 0)
        medians.append(med)
    ok = None if None in oks else all(oks)
    return Check(claim, f"loss {levels[0]:.3g} → {levels[-1]:.3g}; " + "; ".join(parts),
                 verdict(ok), medians[0])


def _label(r) -> str:
    return f"η={r['optim.lr']:g}, S={r['optim.batch_size']}"


def _against_loss(runs, table):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.3), layout="constrained")
    axes = fig.subplots(1, 3)
    levels = matched_loss_grid([t["train/loss"] for t in table.values()], n=60)
    for i, (rid, r) in enumerate(runs.iterrows()):
        t = table[rid]
        for ax, (q, label) in zip(axes, QUANTITIES):
            ax.plot(t["train/loss"], t[q], ".", ms=3, alpha=0.3, color=f"C{i}")
            if len(levels):
                ax.plot(levels, at_matched_loss(t["train/loss"], t[q], levels), color=f"C{i}",
                        label=_label(r))
            ax.set(xscale="log", yscale="log", xlabel="training loss (decreasing →)",
                   ylabel=label)
            plain(ax)
    for ax in axes:
        if not ax.xaxis_inverted():
            ax.invert_xaxis()
    axes[0].legend(fontsize=7)
    return fig


def _against_step(runs, table, be):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.3), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, (rid, r) in enumerate(runs.iterrows()):
        t = table[rid]
        for ax, (q, label) in zip(axes, QUANTITIES):
            ax.plot(t.index, t[q], ".-", ms=3, color=f"C{i}", label=_label(r))
            ax.set(yscale="log", ylabel=label)
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlabel("step (linear below 10)")
            plain(ax)
        if len(t):
            threshold = t["hessian/stability"].iloc[0]
            axes[0].axhline(threshold, ls="--", lw=0.8, color=f"C{i}")
            if not math.isnan(be[rid]):
                axes[0].axvline(be[rid], ls=":", lw=0.8, color=f"C{i}")
                axes[0].plot([be[rid]], [threshold], "o", ms=6, mfc="none", color=f"C{i}")
    axes[0].set_title("dashed: 2/η; ○ and dotted: break-even step", fontsize=8)
    axes[0].legend(fontsize=7)
    return fig


def _break_even_figure(lr_runs, stats):
    from sgdlab.report.figures import new_figure

    fig, ax = new_figure(5, 3.2)
    x = lr_runs["optim.lr"].to_numpy(float)
    y = np.array([stats[r]["step"] for r in lr_runs.index])
    ax.plot(x, y, "o-", label="break-even step (λ_max(H) = 2/η)")
    for eta, st in zip(x, (stats[r] for r in lr_runs.index)):
        if math.isnan(st["step"]) and not math.isnan(st["last"]):
            ax.plot([eta], [st["last"]], "^", mfc="none", color="C1")
            ax.annotate(f"max λη/2 = {st['peak']:.2f}", (eta, st["last"]), fontsize=7,
                        xytext=(4, -10), textcoords="offset points")
    if np.isnan(y).any():
        ax.plot([], [], "^", mfc="none", color="C1", label="never reached (at the last step)")
    ax.set(xscale="log", yscale="log", xlabel="η", ylabel="break-even step")
    plain(ax)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.margins(0.12, 0.2)
    ax.legend(fontsize=7)
    return fig


EXPERIMENT = BreakEven()
