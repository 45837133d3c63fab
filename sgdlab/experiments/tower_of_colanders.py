"""The tower of colanders (S. Bombari, "The dynamics of Stochastic Gradient Descent in the
loss landscape of Deep Neural Networks", MSc thesis, Pisa 2020): low loss is reached only
in sharp regions, a constraint between the loss and λ_max shared by trajectories.

SGD runs with several learning rates η and batch sizes S (and seeds) keep a thinned
parameter history (probe ``trajectory`` at log-spaced steps). At every stored point the
analysis computes the loss L and the top Hessian eigenvalue λ_max on one fixed subset of
training examples (:func:`sgdlab.landscape.colander_points`), and the lower envelope
m(ℓ) = min {λ_max(θ) : L(θ) ≤ ℓ} over all points of all runs
(:func:`sgdlab.landscape.colander_envelope`) on ``LEVELS`` log-spaced levels between the
lowest and the highest loss met. m can only grow as ℓ falls; the claim is that it grows
steeply (no flat point reaches low loss) and that the constraint belongs to the landscape,
not to one run. The thesis states the constraint without numbers; thresholds are ours,
fixed before the runs:

1. m grows as ℓ falls: Spearman ρ(ℓ, m(ℓ)) ≤ −0.8 over the levels, and m at the lowest
   level ≥ ``RISE`` = 3 × m at the highest;
2. it is a constraint of the landscape: with the runs of each (η, S) setting left out in
   turn, the envelope of the others still has ρ(ℓ, m(ℓ)) ≤ −0.8;
3. across runs, the endpoints that reach lower loss are sharper: Spearman ρ(final L,
   final λ_max) < 0 over the runs.

- smoke: digits (512 train), MLP 64-32-10, η ∈ {0.02, 0.1}, S ∈ {16, 128}, 4 epochs, 4 log
  points, L and λ_max on 128 examples: 4 runs.
- cpu: MNIST (the 8,000 offline training images), MLP 784-256-256-10, η ∈ {0.01, 0.05,
  0.2}, S ∈ {32, 512}, 10 epochs, seeds 0 and 1, 12 log points, L and λ_max on 1,024
  training examples: 12 runs, ~150 points.
- paper: Fashion-MNIST (60,000), the simple CNN, η ∈ {0.005, 0.01, 0.05, 0.1, 0.2}, S ∈
  {32, 128, 512}, 20 epochs, 3 seeds, 20 log points, 2,048 examples: 45 runs (GPU).
"""

from __future__ import annotations

import math

import numpy as np

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import cached, plain, spearman

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 512, "download": False},
                  model={"name": "mlp", "depth": 1, "width": 32}, lrs=(0.02, 0.1),
                  batches=(16, 128), epochs=4, seeds=(0,), log_points=4, n=128),
    "cpu": dict(data={"name": "mnist", "n_train": 8000},
                model={"name": "mlp", "depth": 2, "width": 256}, lrs=(0.01, 0.05, 0.2),
                batches=(32, 512), epochs=10, seeds=(0, 1), log_points=12, n=1024),
    "paper": dict(data={"name": "fashion-mnist"}, model={"name": "cnn"},
                  lrs=(0.005, 0.01, 0.05, 0.1, 0.2), batches=(32, 128, 512), epochs=20,
                  seeds=(0, 1, 2), log_points=20, n=2048),
}
LEVELS = 12  # log-spaced loss levels of the envelope
RHO_MAX = -0.8  # claims 1 and 2: ρ(ℓ, m(ℓ)) at most this
RISE = 3.0  # claim 1: m(lowest level) / m(highest level) at least this
TOL = 1e-3  # Lanczos residual of λ_max


class TowerOfColanders(Experiment):
    name = "tower-of-colanders"
    title = "The tower of colanders: low loss is reached only in sharp regions"
    reference = ("S. Bombari, \"The dynamics of Stochastic Gradient Descent in the loss "
                 "landscape of Deep Neural Networks\", MSc thesis, University of Pisa, 2020")
    summary = ("SGD with several learning rates and batch sizes, each run keeping a thinned "
               "parameter history; the loss and λ_max at every stored point, and their lower "
               "envelope: the least sharpness at which each loss level is reached.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        return [{"name": f"lr-{lr:g}_S-{s}_seed-{seed}", "seed": seed,
                 "data": dict(sc["data"]), "model": dict(sc["model"]),
                 "optim": {"lr": lr, "batch_size": s}, "train": {"epochs": sc["epochs"]},
                 "probes": [{"name": "trajectory", "log_points": sc["log_points"]}]}
                for lr in sc["lrs"] for s in sc["batches"] for seed in sc["seeds"]]

    def analyze(self, ctx: AnalysisContext):
        pts = points(ctx, SCALES[ctx.scale]["n"])
        if pts is None:
            return [Check("At least one run with a stored history is needed", "none",
                          "inconclusive")], []
        return checks(pts), figures(pts)


def points(ctx: AnalysisContext, n: int) -> dict | None:
    """Loss and λ_max at every stored point of every finished run (cached per run)."""
    from sgdlab.analysis.landscape import history
    from sgdlab.landscape import colander_points, fixed_subset
    from sgdlab.train.restore import restore

    rows = []
    for _, r in ctx.runs.iterrows():
        if r["status"] not in ("finished", "diverged"):
            continue
        run = ctx.run(r["id"])
        if "trajectory" not in run.array_names():
            continue

        def compute(run=run):
            steps, block = history(run)
            model, data, loss_fn = restore(run, weights="init")  # the architecture only
            sub = fixed_subset((data.x_train, data.y_train), min(n, len(data.y_train)), 0)
            import torch

            finite = np.isfinite(block).all(1)
            cp = colander_points(model, loss_fn, sub, [torch.from_numpy(block[finite])],
                                 tol=TOL)
            return {"steps": steps[finite].tolist(), "loss": cp.loss.tolist(),
                    "lam": cp.sharpness.tolist()}

        res = cached(ctx, "colander", {"run": run.id, "n": n, "tol": TOL}, compute)
        rows.append({"id": run.id, "lr": float(r["optim.lr"]),
                     "S": int(r["optim.batch_size"]), "seed": int(r["seed"]), **res})
    if not rows:
        return None
    loss = np.concatenate([r["loss"] for r in rows])
    lam = np.concatenate([r["lam"] for r in rows])
    setting = np.concatenate([[(r["lr"], r["S"])] * len(r["loss"]) for r in rows])
    return {"runs": rows, "loss": loss, "lam": lam, "setting": setting}


def envelope(loss, lam, levels=None):
    from sgdlab.landscape import colander_envelope

    return colander_envelope(loss, lam, levels, num_levels=LEVELS)


def trend(env) -> float:
    """ρ(ℓ, m(ℓ)); 0 where m is the same at three or more levels (it does not grow)."""
    m = env.min_sharpness[~np.isnan(env.min_sharpness)]
    return 0.0 if len(m) >= 3 and np.ptp(m) == 0 else env.trend()


def checks(pts: dict) -> list[Check]:
    env = envelope(pts["loss"], pts["lam"])
    rho = trend(env)
    ok = ~np.isnan(env.min_sharpness)
    rise = env.min_sharpness[ok][0] / env.min_sharpness[ok][-1]
    out = [Check(f"The least λ_max at which a loss level ℓ is reached grows as ℓ falls: "
                 f"Spearman ρ(ℓ, m(ℓ)) ≤ {RHO_MAX} over {LEVELS} log-spaced levels, and "
                 f"m(lowest) ≥ {RISE:g} m(highest)",
                 f"ρ = {rho:.2f}; m = {env.min_sharpness[ok][0]:.3g} at ℓ = "
                 f"{env.levels[ok][0]:.3g}, {env.min_sharpness[ok][-1]:.3g} at ℓ = "
                 f"{env.levels[ok][-1]:.3g} (×{rise:.2f}); {len(pts['loss'])} points of "
                 f"{len(pts['runs'])} runs",
                 verdict(None if math.isnan(rho) else rho <= RHO_MAX and rise >= RISE), rho)]
    settings = sorted({tuple(s) for s in pts["setting"]})
    parts, rhos = [], []
    for s in settings:
        keep = ~np.all(pts["setting"] == np.array(s), axis=1)
        if keep.sum() < 3:
            continue
        r = trend(envelope(pts["loss"][keep], pts["lam"][keep], env.levels))
        rhos.append(r)
        parts.append(f"without η={s[0]:g}, S={int(s[1])}: ρ = {r:.2f}")
    okl = [r <= RHO_MAX for r in rhos if not math.isnan(r)]
    out.append(Check(f"The constraint belongs to the landscape, not to one setting: leaving out "
                     f"each (η, S) in turn, the envelope still has ρ(ℓ, m(ℓ)) ≤ {RHO_MAX}",
                     "; ".join(parts) or "fewer than two settings",
                     verdict(all(okl) if len(okl) >= 2 else None),
                     max(rhos) if rhos else None))
    finals = [(r["loss"][-1], r["lam"][-1]) for r in pts["runs"]]
    rho_f = spearman([f[0] for f in finals], [f[1] for f in finals])
    out.append(Check("Across runs, the endpoints that reach lower loss are sharper: Spearman "
                     "ρ(final loss, final λ_max) < 0",
                     f"ρ = {rho_f:.2f} over {len(finals)} runs; " + ", ".join(
                         f"η={r['lr']:g} S={r['S']} s{r['seed']}: L={r['loss'][-1]:.3g}, "
                         f"λ={r['lam'][-1]:.3g}" for r in pts["runs"]),
                     verdict(None if math.isnan(rho_f) else rho_f < 0), rho_f))
    return out


def figures(pts: dict) -> list:
    from matplotlib.figure import Figure

    env = envelope(pts["loss"], pts["lam"])
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=(1.5, 1))
    lrs = sorted({r["lr"] for r in pts["runs"]})
    batches = sorted({r["S"] for r in pts["runs"]})
    markers = "os^Dv<>"
    for r in pts["runs"]:
        ax.plot(r["loss"], r["lam"], "-", lw=0.5, alpha=0.5, color=f"C{lrs.index(r['lr'])}")
        ax.scatter(r["loss"], r["lam"], s=14, color=f"C{lrs.index(r['lr'])}",
                   marker=markers[batches.index(r["S"]) % len(markers)])
    ok = ~np.isnan(env.min_sharpness)
    ax.step(env.levels[ok], env.min_sharpness[ok], where="post", color="k", lw=1.5,
            label="m(ℓ) = min λ_max over points with L ≤ ℓ")
    for i, lr in enumerate(lrs):
        ax.scatter([], [], color=f"C{i}", label=f"η = {lr:g}")
    for j, s in enumerate(batches):
        ax.scatter([], [], color="gray", marker=markers[j % len(markers)], label=f"S = {s}")
    ax.set(xscale="log", yscale="log", xlabel="training loss L(θ)",
           ylabel="λ_max(θ)", title="every stored point of every trajectory")
    plain(ax)
    ax.legend(fontsize=7)
    ax2.plot(env.levels[ok], env.min_sharpness[ok], "o-", color="k")
    ax2.set(xscale="log", yscale="log", xlabel="loss level ℓ", ylabel="m(ℓ)",
            title=f"the envelope (Spearman ρ = {trend(env):.2f})")
    ax2.invert_xaxis()
    plain(ax2)
    return [("Loss against the top Hessian eigenvalue over trajectories: the tower of colanders",
             fig)]


__all__ = ["EXPERIMENT", "TowerOfColanders", "points"]
EXPERIMENT = TowerOfColanders()
