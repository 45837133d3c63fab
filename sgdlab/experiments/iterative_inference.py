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

Sharing residual blocks (§5): the same ResNet with the blocks of each stage sharing their
parameters (``model.options.share_blocks``: every block that keeps the shape reuses the
stage's first such block), naively (BatchNorm shared too) and with unshared BatchNorm
(Liao & Poggio 2016), trained like the unshared network. Their norms are read on the
final parameters (eval mode) on the training examples: ‖h_t‖, the mean per-example norm
of the residual stream after block t, and ‖h_0‖ after the stem.

5. naive sharing makes the representation explode (§5): the growth of the residual stream
   through the network, ‖h_T‖/‖h_0‖, is larger in the naively shared network than in the
   unshared one, in every seed;
6. ... and, counterintuitively for a network with fewer parameters, it overfits (§5): its
   generalization gap (training minus test accuracy) is larger and its test accuracy lower
   than the unshared network's (seed means);
7. unshared BatchNorm alleviates both (§5): with shared convolutions but per-block
   BatchNorm, the test accuracy is higher and ‖h_T‖/‖h_0‖ lower than with naive sharing
   (seed means).

- smoke: digits (256 train), pre-activation ResNet-20 with width 0.25 (4-8-16 channels,
  BatchNorm), 3 epochs, 1 seed, and the two shared variants: 3 runs.
- cpu: digits (1,437 train, 360 test, 8x8), ResNet-32 with width 0.5 (8-16-32 channels,
  15 blocks, BatchNorm), SGD η = 0.05, momentum 0.9, S = 64, 40 epochs, 2 seeds; the
  probe on 512 training examples at 8 log points; the naive and the unshared-BatchNorm
  shared variants (no probe), 2 seeds each: 6 runs.
- paper: CIFAR-10 (50,000), pre-activation ResNet-56 (27 blocks, BatchNorm), SGD
  η = 0.1, momentum 0.9, weight decay 5e-4, S = 128, 100 epochs with η/10 at 50 and 75,
  2 seeds, and the two shared variants: 6 runs (GPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import load_trained, spearman

UNROLL = 8  # extra applications of the last block plotted
SHARED = ("naive", "unshared-bn")  # the shared variants (model.options.share_blocks)

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

        def run(seed, share=None):
            tag = "" if share is None else f"_share-{share}"
            model = dict(sc["model"], **({"options": {"share_blocks": share}} if share else {}))
            probes = ([{"name": "residual", "n": sc["n"], "log_points": sc["log_points"]}]
                      if share is None else [])
            return {"name": f"{sc['model']['name']}{tag}_seed-{seed}", "seed": seed,
                    "data": dict(sc["data"]), "model": model,
                    "optim": {"lr": sc["lr"], "momentum": 0.9, "batch_size": sc["batch"],
                              **sc["optim"]},
                    "train": {"epochs": sc["epochs"]}, "probes": probes}

        return ([run(s) for s in sc["seeds"]]
                + [run(s, share) for share in SHARED for s in sc["seeds"]])

    def analyze(self, ctx: AnalysisContext):
        done = ctx.runs[ctx.runs["status"] == "finished"]
        rows, shared = [], []
        for _, r in done.iterrows():
            mode, seed = _sharing(r), int(r["seed"])
            trained = load_trained(ctx, r["id"])  # restored once for both studies
            block = block_study(ctx, r["id"], seed, trained) if mode == "none" else None
            if block is not None:
                rows.append(block)
            shared.append(sharing_study(r["id"], seed, mode, trained, block))
        checks = [_cos_check(rows), _ratio_check(rows), _drop_check(rows), _unroll_check(rows),
                  *_sharing_checks(shared)]
        return checks, figures(rows) + sharing_figures(shared)


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


def block_study(ctx: AnalysisContext, run_id: str, seed: int, trained) -> dict:
    """The probe's per-block cos and ratio over training, and the trained network's
    (``trained``: :func:`load_trained`) test accuracy with each block dropped and its
    training loss with the last block unrolled."""
    series = ctx.run(run_id).load_arrays("residual")
    model, data, loss_fn = trained
    base_loss, base_acc = _loss_acc(model, loss_fn, data.x_test, data.y_test)
    drops = [base_acc - _loss_acc(model, loss_fn, data.x_test, data.y_test, drop=i)[1]
             for i in range(len(model.blocks))]
    unroll = [_loss_acc(model, loss_fn, data.x_train, data.y_train, extra=k)
              for k in range(UNROLL + 1)]
    return {"id": run_id, "seed": seed, "series": series, "cos": series[-1][1]["cos"],
            "ratio": series[-1][1]["ratio"], "identity": series[-1][1]["identity"],
            "test_acc": base_acc, "drops": np.array(drops), "unroll": np.array(unroll)}


def _sharing(row) -> str:
    """The run's ``model.options.share_blocks`` ("none" when absent)."""
    mode = row.get("model.options.share_blocks")
    return mode if isinstance(mode, str) else "none"


@torch.no_grad()
def stream_norms(model, x: torch.Tensor) -> np.ndarray:
    """Mean per-example norm of the residual stream: after the stem, then after each block."""
    out = []
    for i in range(0, len(x), 512):
        h = model.stem(x[i:i + 512])
        norms = [h.flatten(1).norm(dim=1)]
        for block in model.blocks:
            h = block(h)
            norms.append(h.flatten(1).norm(dim=1))
        out.append(torch.stack(norms, 1))
    return torch.cat(out).double().mean(0).numpy()


def sharing_study(run_id: str, seed: int, mode: str, trained, block: dict | None = None) -> dict:
    """A trained network's stream norms and its training and test accuracy (eval mode);
    an unshared run's accuracies are its ``block`` study's (the same forward passes)."""
    model, data, loss_fn = trained
    if block is not None:
        train_acc, test_acc = float(block["unroll"][0][1]), block["test_acc"]
    else:
        _, train_acc = _loss_acc(model, loss_fn, data.x_train, data.y_train)
        _, test_acc = _loss_acc(model, loss_fn, data.x_test, data.y_test)
    norms = stream_norms(model, data.x_train)
    return {"id": run_id, "seed": seed, "mode": mode, "norms": norms,
            "growth": float(norms[-1] / norms[0]), "train_acc": train_acc,
            "test_acc": test_acc, "gap": train_acc - test_acc,
            "n_params": sum(p.numel() for p in model.parameters())}


def _by_mode(rows: list[dict], mode: str, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in rows if r["mode"] == mode}


def _sharing_checks(rows: list[dict]) -> list[Check]:
    def mean(mode, key):
        v = list(_by_mode(rows, mode, key).values())
        return float(np.mean(v)) if v else math.nan

    def text(mode):
        rs = [r for r in rows if r["mode"] == mode]
        return (f"{mode} ({rs[0]['n_params']:,} parameters): " + ", ".join(
            f"seed {r['seed']}: ‖h_T‖/‖h_0‖ {r['growth']:.3g}, train acc {r['train_acc']:.3f},"
            f" test acc {r['test_acc']:.3f}" for r in rs)) if rs else f"{mode}: no runs"

    plain, naive = _by_mode(rows, "none", "growth"), _by_mode(rows, "naive", "growth")
    paired = [s for s in naive if s in plain]
    explode = verdict(all(naive[s] > plain[s] for s in paired) if paired else None)
    have = all(_by_mode(rows, m, "gap") for m in ("none", "naive"))
    overfit = verdict((mean("naive", "gap") > mean("none", "gap")
                       and mean("naive", "test_acc") < mean("none", "test_acc")) if have else None)
    have = all(_by_mode(rows, m, "gap") for m in ("naive", "unshared-bn"))
    fixed = verdict((mean("unshared-bn", "test_acc") > mean("naive", "test_acc")
                     and mean("unshared-bn", "growth") < mean("naive", "growth"))
                    if have else None)
    both = f"{text('none')}; {text('naive')}"
    return [
        Check("Naive sharing of the blocks within a stage makes the representation explode: "
              "‖h_T‖/‖h_0‖ (residual stream after the last block vs after the stem) is larger "
              "than in the unshared network, in every seed", both, explode,
              min((naive[s] / plain[s] for s in paired), default=None)),
        Check("... and the naively shared network overfits: a larger generalization gap "
              "(training minus test accuracy) and a lower test accuracy than the unshared "
              "network (seed means)", both, overfit,
              mean("naive", "gap") - mean("none", "gap") if paired else None),
        Check("Unshared BatchNorm alleviates it: with shared convolutions and per-block "
              "BatchNorm, higher test accuracy and smaller ‖h_T‖/‖h_0‖ than naive sharing "
              "(seed means)", f"{text('unshared-bn')}; {text('naive')}", fixed,
              mean("unshared-bn", "test_acc") - mean("naive", "test_acc") if have else None)]


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


def sharing_figures(rows: list[dict]) -> list:
    from matplotlib.figure import Figure

    if not rows:
        return []
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    modes = [m for m in ("none", *SHARED) if any(r["mode"] == m for r in rows)]
    for j, mode in enumerate(modes):
        for r in (r for r in rows if r["mode"] == mode):
            axes[0].plot(np.arange(len(r["norms"])), r["norms"], color=f"C{j}",
                         ls="-" if r["seed"] == min(x["seed"] for x in rows) else ":",
                         label=f"{mode}, seed {r['seed']}")
        rs = [r for r in rows if r["mode"] == mode]
        axes[1].plot([j - 0.1] * len(rs), [r["train_acc"] for r in rs], "^", color=f"C{j}")
        axes[1].plot([j + 0.1] * len(rs), [r["test_acc"] for r in rs], "o", color=f"C{j}")
    axes[0].set(xlabel="after block (0: stem)", ylabel="mean ‖h‖ (training examples)",
                yscale="log", title="residual stream norm")
    axes[0].legend(fontsize=6)
    axes[1].set_xticks(range(len(modes)), [f"share: {m}" for m in modes])
    axes[1].set(ylabel="accuracy (▲ train, ● test)", title="generalization")
    return [("Sharing the blocks of a stage: stream norm and accuracy", fig)]


__all__ = ["EXPERIMENT", "IterativeInference", "block_study", "forward_variant",
           "sharing_study", "stream_norms"]
EXPERIMENT = IterativeInference()
