"""Flat and sharp minima: small-batch against large-batch SGD (Keskar, Mudigere, Nocedal,
Smelyanskiy & Tang, ICLR 2017; Li, Xu, Taylor, Studer & Goldstein, NeurIPS 2018).

Keskar et al. train the same network with a small batch (SB, 256) and a large one (LB,
10% of the training set) to the same number of epochs: the LB endpoints generalize worse
and are sharper (larger curvature, steeper 1-D plots). Li et al. show that a fair picture
of sharpness needs filter-normalized directions (each filter of a random direction scaled
to the norm of the matching filter of the weights), under which the small-batch minimum of
their SGD runs is visibly wider. Here each endpoint gets λ_max (top Hessian eigenvalue),
its test accuracy, and a 1-D filter-normalized slice of the training loss (Li et al.'s
coordinates α ∈ [−1, 1], directions drawn from one seed at each endpoint's own weights),
plus the straight line from the SB to the LB endpoint (Keskar et al., Fig. 3). Claims
checked, thresholds fixed before the runs:

1. LB endpoints are sharper: λ_max(LB) ≥ ``SHARPER`` = 2 × λ_max(SB) for every seed
   (Keskar et al.'s sharpness is several times larger for LB);
2. LB generalizes worse: the mean test accuracy over seeds is lower for LB than for SB;
3. the filter-normalized slice of the LB endpoint rises faster (Li et al., Fig. 3): the
   mean of L(θ ± α d) − L(θ) at α = ``ALPHA`` = 0.25 is larger for LB than for SB, for
   every seed.

- smoke: digits (512 train), MLP 64-32-10, SB S = 16, LB S = 128, η = 0.05, momentum 0.9,
  6 epochs, seeds 0, 1; slices of 7 points on all training images; λ_max on 128.
- cpu: MNIST (the 8,000 offline training images), MLP 784-256-256-10, SB S = 32, LB
  S = 800 (10% of the data, as Keskar et al.), η = 0.025, momentum 0.9, 80 epochs, seeds
  0 and 1: 4 runs; slices of 41 points on 4,000 training images, λ_max on 2,048. (A first
  cpu run at η = 0.05 lost its SB runs: at S = 32 they never fitted and collapsed to the
  constant predictor, loss 2.30, by epoch ~20; η = 0.025 at S = 32 has the η/S of the
  η = 0.05, S = 64 runs of mode-connectivity, which converge.)
- paper: CIFAR-10 (50,000), VGG-11 without BatchNorm (Li et al. draw VGG-9), SB 128, LB
  8,192 (Li et al.), SGD η = 0.1, momentum 0.9, 300 epochs, seeds 0 and 1; slices of 51
  points on 10,000 images, λ_max on 4,096.
"""

from __future__ import annotations

import math

import numpy as np

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import cached, mean_spread

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 512, "download": False},
                  model={"name": "mlp", "depth": 1, "width": 32}, sb=16, lb=128, lr=0.05,
                  epochs=6, seeds=(0, 1), points=7, slice_n=512, hessian_n=128),
    "cpu": dict(data={"name": "mnist", "n_train": 8000},
                model={"name": "mlp", "depth": 2, "width": 256}, sb=32, lb=800, lr=0.025,
                epochs=80, seeds=(0, 1), points=41, slice_n=4000, hessian_n=2048),
    "paper": dict(data={"name": "cifar10"}, model={"name": "vgg11"}, sb=128, lb=8192,
                  lr=0.1, epochs=300, seeds=(0, 1), points=51, slice_n=10000,
                  hessian_n=4096),
}
SHARPER = 2.0  # claim 1: λ_max(LB) / λ_max(SB) at least this, every seed
ALPHA = 0.25  # claim 3: the slice's rise is read at ±ALPHA
TOL = 1e-3


class FlatMinima(Experiment):
    name = "flat-minima"
    title = "Flat and sharp minima: small-batch against large-batch SGD"
    reference = ("N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang, \"On "
                 "Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima\", "
                 "ICLR 2017; H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, \"Visualizing the "
                 "Loss Landscape of Neural Nets\", NeurIPS 2018")
    summary = ("The same network trained with a small and a large batch for the same epochs; "
               "each endpoint's λ_max, test accuracy and filter-normalized 1-D slice of the "
               "training loss, and the line between the two endpoints.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        return [{"name": f"{role}-S-{s}_seed-{seed}", "seed": seed, "data": dict(sc["data"]),
                 "model": dict(sc["model"]),
                 "optim": {"lr": sc["lr"], "momentum": 0.9, "batch_size": s},
                 "train": {"epochs": sc["epochs"]}}
                for seed in sc["seeds"] for role, s in (("SB", sc["sb"]), ("LB", sc["lb"]))]

    def analyze(self, ctx: AnalysisContext):
        t = endpoints(ctx, SCALES[ctx.scale])
        if not t:
            return [Check("Finished runs are needed", "none", "inconclusive")], []
        return checks(t), figures(t)


def endpoints(ctx: AnalysisContext, sc: dict) -> list[dict]:
    """Per finished run: λ_max, accuracies, the filter-normalized slice (cached)."""
    from sgdlab.curvature import hessian_eigs
    from sgdlab.landscape import fixed_subset, slice_1d
    from sgdlab.train.restore import restore

    acc = ctx.final("test/acc")
    train_acc, train_loss = ctx.final("train/acc"), ctx.final("train/loss")
    out = []
    for _, r in ctx.runs.iterrows():
        if r["status"] != "finished":
            continue
        run = ctx.run(r["id"])

        def compute(run=run):  # the run restored only when its endpoint is not cached
            model, data, loss_fn = restore(run)
            train, n = (data.x_train, data.y_train), len(data.y_train)
            sub = fixed_subset(train, min(sc["slice_n"], n), 0)
            s = slice_1d(model, loss_fn, sub, np.linspace(-1, 1, sc["points"]), seed=0)
            hsub = fixed_subset(train, min(sc["hessian_n"], n), 1)
            lam = float(hessian_eigs(model, loss_fn, hsub, k=1, tol=TOL).values[0])
            return {"alpha": s.axes[0].tolist(), "loss": s.loss.tolist(),
                    "accuracy": s.accuracy.tolist(), "lam": lam}

        res = cached(ctx, "endpoint", {"run": run.id, **{k: sc[k] for k in
                                                         ("points", "slice_n", "hessian_n")}},
                     compute)
        out.append({"id": run.id, "S": int(r["optim.batch_size"]), "seed": int(r["seed"]),
                    "role": "SB" if int(r["optim.batch_size"]) == sc["sb"] else "LB",
                    "test_acc": float(acc[r["id"]]), "train_acc": float(train_acc[r["id"]]),
                    "train_loss": float(train_loss[r["id"]]),
                    **res})
    for seed in sorted({e["seed"] for e in out}):
        pair = {e["role"]: e for e in out if e["seed"] == seed}
        if len(pair) == 2:
            pair["SB"]["line"] = _line(ctx, pair["SB"]["id"], pair["LB"]["id"], sc)
    return out


def _line(ctx, sb_id: str, lb_id: str, sc: dict) -> dict:
    """Train loss and test accuracy on the line from the SB (t = 0) to the LB endpoint
    (t = 1), drawn on t ∈ [−0.5, 1.5] as Keskar et al."""
    from sgdlab.landscape import fixed_subset, interpolate
    from sgdlab.train.restore import restore

    def compute():
        a, b = restore(ctx.run(sb_id)), restore(ctx.run(lb_id))
        model, data, loss_fn = a
        ts = np.linspace(-0.5, 1.5, 21)
        n = len(data.y_train)
        tr = interpolate(model, loss_fn, fixed_subset((data.x_train, data.y_train),
                                                      min(sc["slice_n"], n), 0),
                         model, b.model, ts)
        te = interpolate(model, loss_fn, (data.x_test, data.y_test), model, b.model, ts)
        return {"ts": tr.ts.tolist(), "train_loss": tr.loss.tolist(),
                "test_acc": te.accuracy.tolist()}

    return cached(ctx, "line", {"sb": sb_id, "lb": lb_id, "n": sc["slice_n"]}, compute)


def rise(e: dict) -> float:
    """Mean of L(θ ± ALPHA d) − L(θ) on the slice."""
    a, loss = np.asarray(e["alpha"]), np.asarray(e["loss"])
    center = loss[np.argmin(np.abs(a))]
    return float(np.mean([np.interp(s * ALPHA, a, loss) for s in (-1, 1)]) - center)


def checks(t: list[dict]) -> list[Check]:
    seeds = sorted({e["seed"] for e in t})
    pairs = [{e["role"]: e for e in t if e["seed"] == s} for s in seeds]
    pairs = [p for p in pairs if len(p) == 2]
    if not pairs:
        return [Check("An SB and an LB run of the same seed are needed", "none",
                      "inconclusive")]
    ratios = [p["LB"]["lam"] / p["SB"]["lam"] for p in pairs]
    out = [Check(f"Large-batch endpoints are sharper: λ_max(LB) ≥ {SHARPER:g} λ_max(SB) for "
                 f"every seed",
                 "; ".join(f"seed {p['SB']['seed']}: {p['LB']['lam']:.3g} vs "
                           f"{p['SB']['lam']:.3g} (×{r:.2f})" for p, r in zip(pairs, ratios)),
                 verdict(min(ratios) >= SHARPER), min(ratios))]
    sb = mean_spread([p["SB"]["test_acc"] for p in pairs])[0]
    lb = mean_spread([p["LB"]["test_acc"] for p in pairs])[0]
    out.append(Check("Large-batch endpoints generalize worse: mean test accuracy over seeds "
                     "lower for LB than for SB",
                     f"SB {sb:.4f}, LB {lb:.4f} (gap {sb - lb:+.4f}); train accuracy / loss "
                     "SB " + ", ".join(f"{p['SB']['train_acc']:.4f} / {p['SB']['train_loss']:.2g}"
                                       for p in pairs)
                     + "; LB " + ", ".join(f"{p['LB']['train_acc']:.4f} / "
                                           f"{p['LB']['train_loss']:.2g}" for p in pairs),
                     verdict(None if math.isnan(sb - lb) else lb < sb), sb - lb))
    rises = [(rise(p["SB"]), rise(p["LB"])) for p in pairs]
    out.append(Check(f"The filter-normalized 1-D slice of the LB endpoint rises faster: mean "
                     f"L(θ ± {ALPHA:g} d) − L(θ) larger for LB than for SB, every seed",
                     "; ".join(f"seed {p['SB']['seed']}: LB {b:.3g} vs SB {a:.3g}"
                               for p, (a, b) in zip(pairs, rises)),
                     verdict(all(b > a for a, b in rises)),
                     min(b - a for a, b in rises)))
    return out


def figures(t: list[dict]) -> list:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    for e in sorted(t, key=lambda e: (e["role"] != "SB", e["seed"])):
        color = "C0" if e["role"] == "SB" else "C3"
        ls = "-" if e["seed"] == min(x["seed"] for x in t) else ":"
        ax.plot(e["alpha"], e["loss"], color=color, ls=ls,
                label=f"{e['role']} (S = {e['S']}), seed {e['seed']}: λ_max {e['lam']:.3g}, "
                      f"test {e['test_acc']:.4f}")
    ax.set(xlabel="α (filter-normalized direction)", ylabel="train loss", yscale="log",
           title="1-D slices through each endpoint")
    ax.legend(fontsize=6)
    ax3 = ax2.twinx()
    ax3.set_ylabel("test accuracy (orange)")
    for e in t:
        if "line" in e:
            line = e["line"]
            ls = "-" if e["seed"] == min(x["seed"] for x in t) else ":"
            ax2.plot(line["ts"], line["train_loss"], color="C0", ls=ls,
                     label=f"train loss, seed {e['seed']}")
            ax3.plot(line["ts"], line["test_acc"], color="C1", ls=ls)
    ax2.axvline(0, color="k", lw=0.5)
    ax2.axvline(1, color="k", lw=0.5)
    ax2.set(xlabel="t (0: SB endpoint, 1: LB endpoint)", ylabel="train loss", yscale="log",
            title="the line between the endpoints")
    ax2.legend(fontsize=7, loc="upper center")
    return [("Filter-normalized slices of small- and large-batch endpoints", fig)]


__all__ = ["EXPERIMENT", "FlatMinima", "endpoints"]
EXPERIMENT = FlatMinima()
