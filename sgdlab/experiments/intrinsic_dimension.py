"""The intrinsic dimension of an objective (Li, Farkhoor, Liu & Yosinski, ICLR 2018) and its
dependence on the radius of the starting point (Fort & Jastrzębski, NeurIPS 2019).

The network is trained in a random d-dimensional subspace, θ = θ₀ + P z, with θ₀ its
initialization and P a fixed sparse random projection with unit columns
(:func:`sgdlab.landscape.train_subspace`, Adam on z as in Li et al.'s code); d_int90 is
the smallest d whose test accuracy reaches 90% of the full network's, trained normally
(the one run of ``configs``, which also fixes θ₀: the run's own initialization, rebuilt
by :func:`sgdlab.train.restore.restore`). Fort & Jastrzębski's model of the landscape, and
Fort & Scherlis (AAAI 2019, the "Goldilocks zone") measuring it, make the accuracy a
random subspace reaches depend on where it starts: rescaling θ₀ to radius r, accuracy at
a fixed d falls as r grows past the usual initialization radius r₀. Claims checked,
thresholds fixed before the runs:

1. accuracy rises with d: Spearman ρ(d, test accuracy) ≥ 0.9 over the grid of d (Li et
   al., Fig. 3);
2. d_int90 of the MNIST fully connected network 784-200-200-10 is within a factor 2 of
   Li et al.'s 750: 375 ≤ d_int90 ≤ 1,500 (linear interpolation between grid points);
3. it is a small fraction of the D parameters: d_int90 / D ≤ 1% (Li et al.: 750 / 199,210
   = 0.4%);
4. the radius: at d = ``RADIUS_D``, test accuracy falls as ‖θ₀‖ grows from r₀ to 4 r₀:
   Spearman ρ(r, accuracy) < 0 over r ∈ {1, 2, 4} r₀ and accuracy(4 r₀) < accuracy(r₀)
   (r = 0.5 r₀ is drawn, not checked: the Goldilocks zone has an inner edge too).

- smoke: digits (512 train), MLP 64-32-10 (D = 2,442), d ∈ {10, 40, 160}, radius at
  d = 40, 20 epochs of subspace training; claim 2's window is the paper's and meaningless
  here.
- cpu: MNIST (the 8,000 offline training images, 2,000 test), MLP 784-200-200-10 (D =
  199,210), the full run SGD η = 0.05, momentum 0.9, S = 64, 20 epochs; subspaces
  d ∈ {100, 300, 600, 1,000, 1,500, 2,000}, Adam (lr 0.01), S = 128, 40 epochs (2,500
  steps); radius at d = 1,000 with r ∈ {0.5, 1, 2, 4} r₀.
- paper: MNIST (60,000), the same network, subspaces d from 100 to 1,500 (13 values), 40
  epochs each; radius at d = 750 with r ∈ {0.25, 0.5, 1, 2, 4, 8} r₀.
"""

from __future__ import annotations

import math

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import cached, spearman

MLP = {"name": "mlp", "depth": 2, "width": 200}
SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 512, "download": False},
                  model={"name": "mlp", "depth": 1, "width": 32}, epochs=5,
                  dims=(10, 40, 160), radius_d=40, radii=(0.5, 1.0, 2.0, 4.0),
                  sub=dict(epochs=20, lr=0.01, batch=128)),
    "cpu": dict(data={"name": "mnist", "n_train": 8000}, model=MLP, epochs=20,
                dims=(100, 300, 600, 1000, 1500, 2000), radius_d=1000,
                radii=(0.5, 1.0, 2.0, 4.0), sub=dict(epochs=40, lr=0.01, batch=128)),
    "paper": dict(data={"name": "mnist"}, model=MLP, epochs=20,
                  dims=(100, 200, 300, 400, 500, 600, 700, 750, 800, 900, 1000, 1250, 1500),
                  radius_d=750, radii=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                  sub=dict(epochs=40, lr=0.01, batch=128)),
}
RHO_MIN = 0.9  # claim 1
LI_D90 = 750  # claim 2: Li et al.'s d_int90 for MNIST FC 784-200-200-10 ...
FACTOR = 2.0  # ... within this factor
FRACTION = 0.01  # claim 3: d_int90 / D at most this
CHECKED_RADII = (1.0, 2.0, 4.0)  # claim 4


class IntrinsicDimension(Experiment):
    name = "intrinsic-dimension"
    title = "Intrinsic dimension: training in random subspaces, and the starting radius"
    reference = ("C. Li, H. Farkhoor, R. Liu, J. Yosinski, \"Measuring the Intrinsic Dimension "
                 "of Objective Landscapes\", ICLR 2018; S. Fort, S. Jastrzębski, \"Large Scale "
                 "Structure of Neural Network Loss Landscapes\", NeurIPS 2019")
    summary = ("The network trained normally once; then only z in θ = θ₀ + P z for a grid of "
               "subspace dimensions d (sparse random P); test accuracy against d, d_int90, and "
               "the accuracy at one d when θ₀ is rescaled to other radii.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        return [{"name": "full", "data": dict(sc["data"]), "model": dict(sc["model"]),
                 "optim": {"lr": 0.05, "momentum": 0.9, "batch_size": 64},
                 "train": {"epochs": sc["epochs"]}}]

    def analyze(self, ctx: AnalysisContext):
        done = ctx.runs[ctx.runs["status"] == "finished"]
        if not len(done):
            return [Check("The full-space run must finish", "no finished run",
                          "inconclusive")], []
        res = subspaces(ctx, done["id"].iloc[0], SCALES[ctx.scale])
        return checks(res), figures(res)


def subspaces(ctx: AnalysisContext, run_id: str, sc: dict) -> dict:
    """Subspace runs over the grid of d and of radii from the run's initialization."""
    from sgdlab.landscape import Layout, intrinsic_dimension, train_subspace
    from sgdlab.train.restore import restore

    model, data, loss_fn = restore(ctx.run(run_id), weights="init")
    train, test = (data.x_train, data.y_train), (data.x_test, data.y_test)
    layout = Layout.of(model)
    r0 = float(layout.vector(model).norm())
    o = sc["sub"]
    batch = min(o["batch"], len(data.y_train))
    steps = o["epochs"] * (len(data.y_train) // batch)
    opts = dict(projection="sparse", seed=0, steps=steps, lr=o["lr"], optimizer="adam",
                batch_size=batch, batch_seed=0)

    def one(d: int, factor: float) -> dict:
        def compute():
            run = train_subspace(model, loss_fn, train, d, eval_data=test,
                                 radius=None if factor == 1.0 else factor * r0, **opts)
            return {"d": d, "radius_factor": factor, "start_norm": run.start_norm,
                    "train_accuracy": run.train_accuracy, "test_accuracy": run.eval_accuracy,
                    "train_loss": run.train_loss, "seconds": run.meta["seconds"]}
        return cached(ctx, "subspace", {"run": run_id, "d": d, "radius": factor, **opts},
                      compute)

    grid = [one(d, 1.0) for d in sc["dims"]]
    radius = [one(sc["radius_d"], f) for f in sc["radii"]]
    baseline = float(ctx.final("test/acc").iloc[0])
    dint = intrinsic_dimension([g["d"] for g in grid], [g["test_accuracy"] for g in grid],
                               baseline, 0.9)
    return {"grid": grid, "radius": radius, "baseline": baseline, "D": layout.dim, "r0": r0,
            "dint": dint, "radius_d": sc["radius_d"], "steps": steps}


# -- checks -----------------------------------------------------------------------------
def checks(res: dict) -> list[Check]:
    dims = [g["d"] for g in res["grid"]]
    acc = [g["test_accuracy"] for g in res["grid"]]
    rho = spearman(dims, acc)
    out = [Check(f"Test accuracy rises with the subspace dimension d: Spearman ρ(d, accuracy) "
                 f"≥ {RHO_MIN}",
                 f"ρ = {rho:.2f}; " + ", ".join(f"d={d}: {a:.3f}" for d, a in zip(dims, acc)),
                 verdict(None if math.isnan(rho) else rho >= RHO_MIN), rho)]
    dint = res["dint"]
    d90 = dint.d_int_interpolated
    target = 0.9 * res["baseline"]
    measured = (f"d_int90 ≈ {d90:.0f} (first grid point above: {dint.d_int}); 90% of the full "
                f"run's {res['baseline']:.4f} = {target:.4f}" if d90 is not None else
                f"not reached on the grid (largest d = {max(dims)} gives {acc[-1]:.4f} < "
                f"{target:.4f})")
    lo, hi = LI_D90 / FACTOR, LI_D90 * FACTOR
    out.append(Check(f"d_int90 of MNIST with a 784-200-200-10 network is within a factor "
                     f"{FACTOR:g} of Li et al.'s {LI_D90}: {lo:.0f} ≤ d_int90 ≤ {hi:.0f}",
                     measured, verdict(None if d90 is None else lo <= d90 <= hi), d90))
    frac = None if d90 is None else d90 / res["D"]
    out.append(Check(f"The intrinsic dimension is a small fraction of the parameters: "
                     f"d_int90 / D ≤ {FRACTION:.0%}",
                     f"{d90:.0f} / {res['D']:,} = {frac:.2%}" if frac is not None
                     else f"d_int90 above {max(dims)} (D = {res['D']:,})",
                     verdict(frac <= FRACTION if frac is not None else False), frac))
    rows = {r["radius_factor"]: r["test_accuracy"] for r in res["radius"]}
    picked = [f for f in CHECKED_RADII if f in rows]
    rho_r = spearman(picked, [rows[f] for f in picked])
    ok = (None if len(picked) < 3 or math.isnan(rho_r)
          else rho_r < 0 and rows[max(picked)] < rows[1.0])
    out.append(Check(f"A larger starting radius is harder (Fort & Jastrzębski): at d = "
                     f"{res['radius_d']}, Spearman ρ(r, test accuracy) < 0 over r ∈ "
                     f"{{1, 2, 4}} r₀ and accuracy(4 r₀) < accuracy(r₀)",
                     f"ρ = {rho_r:.2f}; " + ", ".join(f"{f:g} r₀: {a:.3f}"
                                                     for f, a in sorted(rows.items()))
                     + f" (r₀ = {res['r0']:.2f})", verdict(ok), rho_r))
    return out


# -- figures ----------------------------------------------------------------------------
def figures(res: dict) -> list:
    from matplotlib.figure import Figure

    from sgdlab.experiments.common import plain

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=(1.6, 1))
    dims = [g["d"] for g in res["grid"]]
    ax.plot(dims, [g["test_accuracy"] for g in res["grid"]], "o-", label="test accuracy")
    ax.plot(dims, [g["train_accuracy"] for g in res["grid"]], "s:", color="C2",
            label="train accuracy")
    ax.axhline(res["baseline"], color="k", lw=1, label=f"full network ({res['D']:,} parameters)")
    ax.axhline(0.9 * res["baseline"], color="k", ls="--", lw=1, label="90% of it")
    if res["dint"].d_int_interpolated is not None:
        d90 = res["dint"].d_int_interpolated
        ax.axvline(d90, color="C3", ls=":", label=f"d_int90 ≈ {d90:.0f}")
    ax.axvline(LI_D90, color="C7", ls="-.", lw=1, label=f"Li et al.: {LI_D90}")
    ax.set(xscale="log", xlabel="subspace dimension d", ylabel="accuracy",
           title="accuracy in a random subspace")
    plain(ax)
    ax.legend(fontsize=7)
    rad = sorted(res["radius"], key=lambda r: r["radius_factor"])
    ax2.plot([r["radius_factor"] for r in rad], [r["test_accuracy"] for r in rad], "o-",
             color="C1", label="test accuracy")
    ax2.set(xscale="log", xlabel="starting radius ‖θ₀‖ / r₀", ylabel="test accuracy",
            title=f"d = {res['radius_d']}: the starting radius")
    plain(ax2)
    ax2.set_xticks([r["radius_factor"] for r in rad], [f"{r['radius_factor']:g}" for r in rad])
    return [("Accuracy against the subspace dimension, and against the starting radius", fig)]


__all__ = ["EXPERIMENT", "IntrinsicDimension", "subspaces"]
EXPERIMENT = IntrinsicDimension()
