"""Residual connections encourage iterative inference (Jastrzębski, Arpit, Ballas, Verma,
Che, Bengio, ICLR 2018).

A residual block maps h → h + F(h); to first order L(h + F(h)) ≈ L(h) + F(h)·∂L/∂h, so a
block that points its branch against the loss gradient refines h like a gradient step.
The probe ``residual`` measures, per block t on training examples along training,
cos_t = cos(F(h_t), ∂L/∂h_t) and ratio_t = ‖F(h_t)‖/‖h_t‖ (for a downsampling block h_t is
its projected shortcut). The analysis also evaluates the trained networks with one block's
branch removed (h → s(h)) and with the last block applied more times. Claims checked,
thresholds fixed before the runs:

1. every block moves its representation against the gradient (§3-4.1, Fig. 2): at the end
   of training cos_t < 0 for every block, in every seed;
2. representation learning is concentrated in the early blocks, refinement in the later
   ones (§4.1, Fig. 3): ‖F(h)‖/‖h‖ falls with depth, Spearman ρ(t, ratio_t) < 0 over the
   blocks at the end, in every seed;
3. dropping single blocks hurts early blocks most (§4.2, Fig. 4, after Veit et al.): the
   mean drop of test accuracy when one block of the first third is removed exceeds the
   mean drop for a block of the last third, in every seed;
4. unrolling: applying the last block once more (first-order argument of §3, with
   cos < 0) lowers the training loss, in every seed; up to 8 extra applications are
   plotted.

Sharing the parameters of residual blocks (§5: naive sharing overfits; unshared batch
normalization helps) needs a model option that sgdlab's ResNets do not have; it is not
run here.

- smoke: digits (256 train), pre-activation ResNet-20 with width 0.25 (4-8-16 channels,
  BatchNorm), 3 epochs, 1 seed: 1 run.
- cpu: digits (1,437 train, 360 test, 8x8), ResNet-32 with width 0.5 (8-16-32 channels,
  15 blocks, BatchNorm), SGD η = 0.05, momentum 0.9, S = 64, 40 epochs, 2 seeds; the
  probe on 512 training examples at 8 log points: 2 runs.
- paper: CIFAR-10 (50,000), pre-activation ResNet-56 (27 blocks, BatchNorm), SGD
  η = 0.1, momentum 0.9, weight decay 5e-4, S = 128, 100 epochs with η/10 at 50 and 75,
  2 seeds: 2 runs (GPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import load_trained, spearman

UNROLL = 8  # extra applications of the last block plotted

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 256, "download": False},
                  model={"name": "resnet20", "width_mult": 0.25, "batchnorm": True},
                  lr=0.05, batch=32, epochs=3, seeds=(0,), n=128, log_points=3, optim={}),
    "cpu": dict(data={"name": "digits", "download": False},
                model={"name": "resnet32", "width_mult": 0.5, "batchnorm": True},
                lr=0.05, batch=64, epochs=40, seeds=(0, 1), n=512, log_points=8, optim={}),
    "paper": dict(data={"name": "cifar10"},
                  model={"name": "resnet56", "batchnorm": True}, lr=0.1, batch=128,
                  epochs=100, seeds=(0, 1), n=1000, log_points=12,
                  optim={"weight_decay": 5e-4,
                         "lr_schedule": {"kind": "step", "milestones": [50, 75],
                                         "gamma": 0.1}}),
}


class IterativeInference(Experiment):
    name = "iterative-inference"
    title = "Residual connections encourage iterative inference"
    reference = ("S. Jastrzębski, D. Arpit, N. Ballas, V. Verma, T. Che, Y. Bengio, \"Residual "
                 "Connections Encourage Iterative Inference\", ICLR 2018")
    summary = ("A pre-activation ResNet trained with SGD; per block, the cosine between the "
               "branch output and the loss gradient and the relative size of the branch "
               "along training; the trained network with single blocks removed and with "
               "its last block applied more times.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        return [{"name": f"{sc['model']['name']}_seed-{s}", "seed": s, "data": dict(sc["data"]),
                 "model": dict(sc["model"]),
                 "optim": {"lr": sc["lr"], "momentum": 0.9, "batch_size": sc["batch"],
                           **sc["optim"]},
                 "train": {"epochs": sc["epochs"]},
                 "probes": [{"name": "residual", "n": sc["n"], "log_points": sc["log_points"]}]}
                for s in sc["seeds"]]

    def analyze(self, ctx: AnalysisContext):
        rows = [block_study(ctx, r["id"], int(r["seed"])) for _, r in ctx.runs.iterrows()
                if r["status"] == "finished"]
        checks = [_cos_check(rows), _ratio_check(rows), _drop_check(rows), _unroll_check(rows)]
        return checks, figures(rows)


@torch.no_grad()
def forward_variant(model, x: torch.Tensor, drop: int | None = None, extra: int = 0):
    """Logits of a pre-activation ResNet with block ``drop``'s branch removed (h → s(h))
    and/or its last block applied ``extra`` more times."""
    h = model.stem(x)
    for i, block in enumerate(model.blocks):
        h = block.shortcut_of(h) if i == drop else block(h)
    for _ in range(extra):
        h = model.blocks[-1](h)
    return model.classifier(model.pool(model.head_act(model.head_norm(h))))


def _loss_acc(model, loss_fn, x, y, **variant) -> tuple[float, float]:
    out = torch.cat([forward_variant(model, x[i:i + 512], **variant)
                     for i in range(0, len(x), 512)])
    return float(loss_fn(out, y)), float((out.argmax(-1) == y).double().mean())


def block_study(ctx: AnalysisContext, run_id: str, seed: int) -> dict:
    """The probe's per-block cos and ratio over training, and the trained network's test
    accuracy with each block dropped and its training loss with the last block unrolled."""
    run = ctx.run(run_id)
    series = run.load_arrays("residual")
    model, data, loss_fn = load_trained(ctx, run_id)
    base_loss, base_acc = _loss_acc(model, loss_fn, data.x_test, data.y_test)
    drops = [base_acc - _loss_acc(model, loss_fn, data.x_test, data.y_test, drop=i)[1]
             for i in range(len(model.blocks))]
    unroll = [_loss_acc(model, loss_fn, data.x_train, data.y_train, extra=k)
              for k in range(UNROLL + 1)]
    return {"id": run_id, "seed": seed, "series": series, "cos": series[-1][1]["cos"],
            "ratio": series[-1][1]["ratio"], "identity": series[-1][1]["identity"],
            "test_acc": base_acc, "drops": np.array(drops), "unroll": np.array(unroll)}


def _thirds(n: int) -> tuple[slice, slice]:
    k = max(1, n // 3)
    return slice(0, k), slice(n - k, n)


def _cos_check(rows: list[dict]) -> Check:
    parts = [f"seed {r['seed']}: max cos {r['cos'].max():.3f} (block "
             f"{int(r['cos'].argmax()) + 1}), mean {r['cos'].mean():.3f}" for r in rows]
    ok = [bool((r["cos"] < 0).all()) for r in rows]
    return Check("Every block moves its representation against the loss gradient: "
                 "cos(F(h), ∂L/∂h) < 0 for every block at the end of training, in every seed",
                 "; ".join(parts) or "no runs", verdict(all(ok) if ok else None),
                 max((float(r["cos"].max()) for r in rows), default=None))


def _ratio_check(rows: list[dict]) -> Check:
    rhos = [(r["seed"], spearman(np.arange(len(r["ratio"])), r["ratio"])) for r in rows]
    ok = [rho < 0 for _, rho in rhos if not math.isnan(rho)]
    text = "; ".join(f"seed {s}: ρ = {rho:.2f}, ratio {r['ratio'][0]:.3g} (block 1) → "
                     f"{r['ratio'][-1]:.3g} (block {len(r['ratio'])})"
                     for (s, rho), r in zip(rhos, rows))
    return Check("Representation learning early, refinement late: ‖F(h)‖/‖h‖ falls with depth "
                 "(Spearman ρ(block, ratio) < 0 at the end, in every seed)", text or "no runs",
                 verdict(all(ok) if ok else None), max((v for _, v in rhos), default=None))


def _drop_check(rows: list[dict]) -> Check:
    parts, ok = [], []
    for r in rows:
        first, last = _thirds(len(r["drops"]))
        a, b = float(r["drops"][first].mean()), float(r["drops"][last].mean())
        ok.append(a > b)
        parts.append(f"seed {r['seed']}: test acc {r['test_acc']:.3f}; mean drop {a:.3f} "
                     f"(first third) vs {b:.3f} (last third); worst block "
                     f"{int(r['drops'].argmax()) + 1} ({r['drops'].max():.3f})")
    return Check("Dropping single blocks hurts early blocks most: the mean test-accuracy drop "
                 "for a block of the first third exceeds that for a block of the last third, "
                 "in every seed", "; ".join(parts) or "no runs",
                 verdict(all(ok) if ok else None))


def _unroll_check(rows: list[dict]) -> Check:
    parts, ok = [], []
    for r in rows:
        (l0, _), (l1, _) = r["unroll"][0], r["unroll"][1]
        ok.append(l1 < l0)
        parts.append(f"seed {r['seed']}: training loss {l0:.4g} → {l1:.4g} (1 extra), "
                     f"{r['unroll'][-1][0]:.4g} ({UNROLL} extra)")
    return Check("Applying the last block once more lowers the training loss (iterative "
                 "refinement, cos < 0), in every seed", "; ".join(parts) or "no runs",
                 verdict(all(ok) if ok else None))


# -- figures ---------------------------------------------------------------------------------
def figures(rows: list[dict]) -> list:
    from matplotlib.figure import Figure

    if not rows:
        return []
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for k, r in enumerate(rows):
        blocks = np.arange(1, len(r["cos"]) + 1)
        ls = "-" if k == 0 else ":"
        for j, (step, a) in enumerate(r["series"]):
            if k == 0:
                axes[0].plot(blocks, a["cos"], color=f"C{j}", label=f"step {step}")
                axes[1].plot(blocks, a["ratio"], color=f"C{j}", label=f"step {step}")
        axes[2].plot(blocks, r["drops"], "o", ls=ls, color="C0",
                     label=f"seed {r['seed']}")
        ident = np.asarray(r["identity"], bool)
        axes[2].plot(blocks[~ident], r["drops"][~ident], "x", color="C3", ms=8)
    axes[0].axhline(0, color="k", lw=0.7)
    axes[0].set(xlabel="block", ylabel="cos(F(h), ∂L/∂h)", title=f"seed {rows[0]['seed']}")
    axes[1].set(xlabel="block", ylabel="‖F(h)‖ / ‖h‖", yscale="log")
    axes[2].set(xlabel="block removed (x: downsampling)", ylabel="test accuracy drop")
    axes[0].legend(fontsize=6)
    axes[2].legend(fontsize=7)
    figs = [("Per block: cosine with the gradient, relative branch size, dropping a block",
             fig)]
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.plot(np.arange(UNROLL + 1), r["unroll"][:, 0], "o-", label=f"seed {r['seed']}")
    ax.set(xlabel="extra applications of the last block", ylabel="training loss",
           yscale="log")
    ax.legend(fontsize=7)
    figs.append(("Unrolling the last block", fig))
    return figs


__all__ = ["EXPERIMENT", "IterativeInference", "block_study", "forward_variant"]
EXPERIMENT = IterativeInference()
