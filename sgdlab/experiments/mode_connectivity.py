"""Mode connectivity: independently trained solutions are joined by low-loss curves, and a
whole set of them by one low-loss connector (Garipov, Izmailov, Podoprikhin, Vetrov &
Wilson, NeurIPS 2018; Draxler, Veschgini, Salmhofer & Hamprecht, ICML 2018; Fort &
Jastrzębski, NeurIPS 2019).

Three networks are trained from different seeds (``configs``). The analysis, on the
training loss over the whole training set (test accuracy beside it), measures the
straight segment between solutions 1 and 2 (Goodfellow et al. 2015), trains a quadratic
Bézier curve and a two-segment polygonal chain between them (Garipov et al.: one bend,
t ~ U[0, 1] each step, SGD with momentum on minibatches), and a connector through all
three: one hub h, every pair linked by w_i → h → w_j (our reading of Fort & Jastrzębski's
low-loss subspaces through a set of solutions; see docs/landscape.md). The barrier of a
path is the largest rise of the loss above the chord between its ends (grid of t).
Claims checked, thresholds fixed before the runs:

1. the segment between two independently trained solutions crosses a barrier: its
   train-loss barrier is at least ``BARRIER_MIN`` = 0.1 (Goodfellow et al.; Garipov et
   al. §1; Draxler et al.: "the loss is high along a line segment connecting two optima");
2. the trained Bézier curve removes it (Garipov et al.: near-constant loss along the
   curve; Draxler et al.: "essentially no barriers"): its barrier is at most
   ``REMOVED`` = 10% of the segment's;
3. the two-segment chain too (Garipov et al. find both shapes): barrier ≤ 10% of the
   segment's;
4. accuracy is nearly constant along the Bézier curve (Garipov et al.): its lowest test
   accuracy is at most ``ACC_TOL`` = 1 point below the lower of its two ends';
5. a connector through the three solutions (Fort & Jastrzębski): for every pair, the
   path w_i → h → w_j has a barrier at most 10% of that pair's segment barrier.

- smoke: digits (512 train), MLP 64-32-10, 3 seeds, 6 epochs; curves and hub for 4
  epochs of minibatches; paths on 9 values of t, the plane on 7 × 7 points.
- cpu: MNIST (the 8,000 offline training images), MLP 784-256-256-10, SGD η = 0.05,
  momentum 0.9, S = 64, 20 epochs, 3 seeds; curves and hub trained for 50 epochs of S = 128
  minibatches (η = 0.05, momentum 0.9); paths on 21 values of t over all 8,000 images; the
  plane through the two solutions and the bend on 21 × 21 points over 2,000 of them.
- paper: CIFAR-10 (50,000), VGG-11 (the zoo's VGG nearest Garipov's VGG-16), SGD η = 0.05,
  momentum 0.9, weight decay 5e-4, S = 128, 200 epochs, 3 seeds; curves and hub for 200
  epochs at η = 0.015 (Garipov et al.'s curve settings); 61 values of t. Networks with
  BatchNorm are handled with recomputed statistics at every point (``bn="recompute"``,
  as Garipov et al. do).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import cached

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 512, "download": False},
                  model={"name": "mlp", "depth": 1, "width": 32},
                  optim={"lr": 0.05, "momentum": 0.9, "batch_size": 64}, epochs=6,
                  seeds=(0, 1, 2), curve=dict(epochs=4, lr=0.05, batch=128), ts=9,
                  plane=7, plane_n=256),
    "cpu": dict(data={"name": "mnist", "n_train": 8000},
                model={"name": "mlp", "depth": 2, "width": 256},
                optim={"lr": 0.05, "momentum": 0.9, "batch_size": 64}, epochs=20,
                seeds=(0, 1, 2), curve=dict(epochs=50, lr=0.05, batch=128), ts=21,
                plane=21, plane_n=2000),
    "paper": dict(data={"name": "cifar10"}, model={"name": "vgg11"},
                  optim={"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                         "batch_size": 128}, epochs=200, seeds=(0, 1, 2),
                  curve=dict(epochs=200, lr=0.015, batch=128), ts=61, plane=31,
                  plane_n=5000),
}
BARRIER_MIN = 0.1  # claim 1: the segment's train-loss barrier at least this
REMOVED = 0.1  # claims 2, 3, 5: a trained path's barrier at most this fraction of the segment's
ACC_TOL = 0.01  # claim 4: test accuracy along the curve at most this below the lower end


class ModeConnectivity(Experiment):
    name = "mode-connectivity"
    title = "Mode connectivity: low-loss curves between solutions and a connector through three"
    reference = ("T. Garipov, P. Izmailov, D. Podoprikhin, D. Vetrov, A. G. Wilson, \"Loss "
                 "Surfaces, Mode Connectivity, and Fast Ensembling of DNNs\", NeurIPS 2018; "
                 "F. Draxler, K. Veschgini, M. Salmhofer, F. Hamprecht, \"Essentially No "
                 "Barriers in Neural Network Energy Landscape\", ICML 2018; S. Fort, "
                 "S. Jastrzębski, \"Large Scale Structure of Neural Network Loss Landscapes\", "
                 "NeurIPS 2019")
    summary = ("Three networks trained from different seeds; the training loss along the "
               "straight segment between two of them, along a trained quadratic Bézier curve "
               "and a two-segment chain, and along a trained connector through all three.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        return [{"name": f"seed-{s}", "seed": s, "data": dict(sc["data"]),
                 "model": dict(sc["model"]), "optim": dict(sc["optim"]),
                 "train": {"epochs": sc["epochs"]}} for s in sc["seeds"]]

    def analyze(self, ctx: AnalysisContext):
        done = ctx.runs[ctx.runs["status"] == "finished"]
        if len(done) < 3:
            return [Check("Three finished runs are needed", f"{len(done)} finished",
                          "inconclusive")], []
        res = connectivity(ctx, list(done["id"][:3]), SCALES[ctx.scale])
        return checks(res), figures(res)


def _has_batchnorm(model) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def connectivity(ctx: AnalysisContext, ids: list[str], sc: dict) -> dict:
    """Segments, trained curves and the connector of three finished runs (cached)."""
    from sgdlab.landscape import (
        Connector,
        Curve,
        Layout,
        connector_values,
        curve_values,
        evaluate_path,
        fixed_subset,
        loss_slice,
        train_connector,
        train_curve,
    )
    from sgdlab.train.restore import restore

    rs = [restore(ctx.run(i)) for i in ids]
    model, data, loss_fn = rs[0]
    layout = Layout.of(model)
    thetas = [layout.vector(r.model) for r in rs]
    train, test = (data.x_train, data.y_train), (data.x_test, data.y_test)
    bn = "recompute" if _has_batchnorm(model) else "eval"
    ev = dict(bn=bn, bn_data=train)
    c = sc["curve"]
    steps = c["epochs"] * (len(data.y_train) // min(c["batch"], len(data.y_train)))
    opts = dict(steps=steps, lr=c["lr"], momentum=0.9, batch_size=c["batch"], seed=0, bn=bn)
    key = {"runs": ids, **opts}
    ts = np.linspace(0, 1, sc["ts"])

    def values(kind, nodes, split):
        return evaluate_path(model, loss_fn, train if split == "train" else test, kind,
                             nodes, ts, **ev)

    def curve(kind):
        return cached(ctx, kind, {**key, "kind": kind},
                      lambda: train_curve(model, loss_fn, train, thetas[0], thetas[1],
                                          kind=kind, bends=1, **opts),
                      save=lambda v, p: v.save(p), load=Curve.load)

    out = {"ids": ids, "steps": steps, "bn": bn, "paths": {}}
    segment = torch.stack(thetas[:2])
    out["paths"]["segment"] = {s: values("line", segment, s) for s in ("train", "test")}
    curves = {kind: curve(kind) for kind in ("bezier", "chain")}
    for kind, cv in curves.items():
        out["paths"][kind] = {s: curve_values(model, loss_fn, train if s == "train" else test,
                                              cv, ts, **ev) for s in ("train", "test")}
    hub = cached(ctx, "connector", key,
                 lambda: train_connector(model, loss_fn, train, thetas, **opts),
                 save=lambda v, p: v.save(p), load=Connector.load)
    out["connector"] = connector_values(model, loss_fn, train, hub, ts, **ev)
    out["hub_distance"] = [float((hub.hub - t).norm()) for t in thetas]
    out["solution_distance"] = float((thetas[0] - thetas[1]).norm())

    # the plane through w_1, w_2 and the Bézier bend (Garipov et al., Fig. 1)
    w1, w2, bend = thetas[0], thetas[1], curves["bezier"].nodes[1]
    u = w2 - w1
    v = (bend - w1) - (bend - w1) @ u / (u @ u) * u
    basis = torch.stack([u / u.norm(), v / v.norm()])
    pts = {"w1": w1, "w2": w2, "bend": bend}
    coords = {k: ((p - w1) @ basis.T).cpu().numpy() for k, p in pts.items()}
    path_ts = np.linspace(0, 1, 101)
    coords["curve"] = ((curves["bezier"].points(path_ts) - w1) @ basis.T).cpu().numpy()
    allc = np.concatenate([coords["curve"], np.stack([coords[k] for k in pts])])
    lo, hi = allc.min(0), allc.max(0)
    pad = 0.2 * (hi - lo)
    axes = [np.linspace(lo[i] - pad[i], hi[i] + pad[i], sc["plane"]) for i in range(2)]
    sub = fixed_subset(train, min(sc["plane_n"], len(data.y_train)), 0)
    plane = cached(ctx, "plane", {**key, "plane": sc["plane"], "n": sc["plane_n"]},
                   lambda: _plane_arrays(loss_slice(model, loss_fn, sub, axes,
                                                    directions=basis, center=w1, **ev)),
                   save=lambda v, p: np.savez_compressed(p, **v),
                   load=lambda p: dict(np.load(p)))
    out["plane"] = {"axes": axes, "loss": plane["loss"], "coords": coords}
    return out


def _plane_arrays(s) -> dict:
    return {"loss": s.loss, "accuracy": s.accuracy}


# -- checks -----------------------------------------------------------------------------
def checks(res: dict) -> list[Check]:
    seg_tr = res["paths"]["segment"]["train"]
    b_seg = seg_tr.barrier
    out = [Check(f"The straight segment between two independently trained solutions crosses "
                 f"a barrier: train-loss barrier ≥ {BARRIER_MIN}",
                 f"barrier {b_seg:.3g} at t = {seg_tr.barrier_t:.2f} (ends "
                 f"{seg_tr.endpoint_loss[0]:.3g}, {seg_tr.endpoint_loss[1]:.3g}); test accuracy "
                 f"drop {res['paths']['segment']['test'].accuracy_drop:.3f}",
                 verdict(b_seg >= BARRIER_MIN), b_seg)]
    for kind, label in (("bezier", "quadratic Bézier curve"),
                        ("chain", "two-segment polygonal chain")):
        b = res["paths"][kind]["train"].barrier
        out.append(Check(f"A trained {label} between them removes the barrier: its barrier ≤ "
                         f"{REMOVED:.0%} of the segment's",
                         f"{b:.3g} vs {b_seg:.3g} (ratio {b / b_seg:.3f})" if b_seg > 0 else
                         f"{b:.3g} (the segment has none)",
                         verdict(b <= REMOVED * b_seg if b_seg > 0 else None),
                         b / b_seg if b_seg > 0 else None))
    test = res["paths"]["bezier"]["test"]
    lowest_end = min(test.accuracy[0], test.accuracy[-1])
    drop = float(lowest_end - test.accuracy.min())
    out.append(Check(f"Test accuracy is nearly constant along the Bézier curve: its minimum is "
                     f"at most {ACC_TOL * 100:.0f} point below the lower end's",
                     f"minimum {test.accuracy.min():.4f}, ends {test.accuracy[0]:.4f} and "
                     f"{test.accuracy[-1]:.4f} (the segment's minimum "
                     f"{res['paths']['segment']['test'].accuracy.min():.4f})",
                     verdict(drop <= ACC_TOL), drop))
    parts, ratios = [], []
    for (i, j), pair in res["connector"].items():
        bc, bl = pair["connector"].barrier, pair["line"].barrier
        ratios.append(bc / bl if bl > 0 else math.inf)
        parts.append(f"{i + 1}–{j + 1}: {bc:.3g} vs segment {bl:.3g}")
    out.append(Check(f"A connector through three solutions: for every pair the path through "
                     f"the trained hub has a barrier ≤ {REMOVED:.0%} of the pair's segment",
                     "; ".join(parts), verdict(max(ratios) <= REMOVED), max(ratios)))
    return out


# -- figures ----------------------------------------------------------------------------
def figures(res: dict) -> list:
    from matplotlib.figure import Figure

    figs = []
    p = res["plane"]
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.add_subplot()
    gx, gy = np.meshgrid(*p["axes"], indexing="ij")
    cs = ax.contourf(gx, gy, np.log10(np.clip(p["loss"], 1e-6, None)), levels=24,
                     cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 train loss")
    c = p["coords"]
    ax.plot([c["w1"][0], c["w2"][0]], [c["w1"][1], c["w2"][1]], "w--", lw=1.2, label="segment")
    ax.plot(c["curve"][:, 0], c["curve"][:, 1], "w-", lw=1.5, label="Bézier curve")
    ax.plot(*c["bend"], "wx", ms=8, label="bend")
    for k in ("w1", "w2"):
        ax.plot(*c[k], "o", color="C3", ms=8)
        ax.annotate(k.replace("w", "w_"), c[k], color="w", xytext=(5, 5),
                    textcoords="offset points")
    ax.set(xlabel="along w_2 − w_1", ylabel="toward the bend (orthogonalized)")
    ax.legend(fontsize=7, loc="lower right")
    figs.append(("Training loss on the plane through two solutions and the Bezier bend", fig))

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    styles = {"segment": ("k", "--", "segment"), "bezier": ("C0", "-", "Bézier curve"),
              "chain": ("C1", "-", "two-segment chain")}
    for kind, (color, ls, label) in styles.items():
        for ax, split, key in ((axes[0], "train", "loss"), (axes[1], "test", "accuracy")):
            v = res["paths"][kind][split]
            ax.plot(v.ts, getattr(v, key), color=color, ls=ls, marker=".", label=label)
    axes[0].set(xlabel="t", ylabel="train loss", yscale="log", title="solutions 1 → 2")
    axes[1].set(xlabel="t", ylabel="test accuracy", title="solutions 1 → 2")
    for n, ((i, j), pair) in enumerate(res["connector"].items()):
        axes[2].plot(pair["line"].ts, pair["line"].loss, color=f"C{n}", ls="--")
        axes[2].plot(pair["connector"].ts, pair["connector"].loss, color=f"C{n}",
                     label=f"{i + 1} → hub → {j + 1} (dashed: segment)")
    axes[2].set(xlabel="t (hub at 0.5)", ylabel="train loss", yscale="log",
                title="connector through three solutions")
    for ax in axes:
        ax.legend(fontsize=7)
    figs.append(("Loss and accuracy along the segment, the trained curves and the connector",
                 fig))
    return figs


__all__ = ["EXPERIMENT", "ModeConnectivity", "connectivity"]
EXPERIMENT = ModeConnectivity()
