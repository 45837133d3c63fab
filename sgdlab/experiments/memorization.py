"""Memorization: networks fit noise, but learn patterns first (Arpit, Jastrzębski, Ballas,
Krueger et al., ICML 2017; Zhang, Bengio, Hardt, Recht, Vinyals, ICLR 2017; and the η/S
result of the extended "Three Factors" paper, arXiv:1711.04623).

A fraction p of the training labels is replaced by uniform random labels (the mask marks
every chosen example; a random label equals the true one with probability 1/10), or every
training input is replaced by shuffled pixels (one fixed permutation), random pixels (a
permutation per image) or Gaussian noise with the data's mean and variance (Zhang et al.).
The trainer evaluates every epoch on the clean and on the corrupted training examples
separately (``clean/acc``, ``corrupted/acc`` against the noisy labels). Claims checked,
thresholds fixed before the runs:

1. real patterns are fitted before noise (Arpit §3-4): in every run with 0 < p < 1, the
   corrupted subset reaches 90% accuracy (against its noisy labels) at least twice as late
   as the clean subset reaches 90%: t_noisy ≥ 2 t_clean;
2. time to fit grows with the noise (Zhang Fig. 1b): the epoch where the training accuracy
   first reaches 99% (inf if never) rises with p (Spearman ρ(p, t_fit) > 0, seed means)
   and t_fit(p = 1) > t_fit(p = 0);
3. networks fit random labels and random inputs (Zhang Fig. 1a): final training accuracy
   ≥ 0.99 for p = 1 and for each input corruption;
4. generalization falls with p (Zhang Table/Fig. 1c): ρ(p, final test acc) < 0, and at
   p = 1 the test accuracy is at chance (≤ 0.15 for 10 classes);
5. regularizers hinder memorization, not learning (Arpit §5, Fig. 7-8): at p = ``REG_P``,
   dropout, weight decay and input noise (Gaussian noise of std ``INPUT_NOISE`` on the
   standardized training inputs, drawn afresh every step: ``train.input_noise``) each
   lower the final corrupted-subset accuracy by ≥ 0.2 (seed means) while the clean-subset
   accuracy drops by ≤ 0.05 and the final test accuracy is not lower by more than 0.02
   than without them;
6. the critical sample ratio (CSR, probe ``csr`` on test examples, Arpit §4.1) is higher
   for networks fitting more noise: ρ(p, final CSR) > 0 (seed means);
7. ... and is largely set early: |CSR(T/4) − CSR(T)| ≤ 0.1 in every label-noise run;
8. a larger η/S memorizes the noisy labels more slowly (arXiv:1711.04623, extended
   version, §4.3): at p = ``REG_P`` and fixed S, the corrupted-subset accuracy at the middle
   epoch falls with η/S (Spearman ρ < 0 over the seed means of three ratios).

Grids: label noise p ∈ ``noise`` × seeds; the three input corruptions (one seed); at
p = ``REG_P``: dropout 0.5, weight decay ``wd`` and input noise σ = ``INPUT_NOISE`` (seeds),
and η × {1/2, 2} (seeds). The input-noise strength is one value fixed before any cpu run
(the paper sweeps each regularizer's strength; one standard deviation of the standardized
pixels would hide the digits' strokes, half of it keeps them legible).

- smoke: digits (512 train), MLP 64-128-128-10, 12 epochs, p ∈ {0, 0.5, 1}, one seed,
  Gaussian inputs only, CSR on 100 test examples at 4 log points: 8 runs.
- cpu: MNIST (2,000 of the 8,000 offline images, all 2,000 test), MLP 784-512-512-10,
  SGD η = 0.02, momentum 0.9, S = 64, 80 epochs, p ∈ {0, 0.2, 0.4, 0.6, 0.8, 1}, 2 seeds,
  CSR on 300 test examples at 8 log points (label-noise sweep only): 25 runs.
- paper: MNIST (60,000), MLP 784-4096-4096-10 as in Arpit et al.'s MNIST runs, 200
  epochs, the same grid with 1,000 CSR examples: 25 runs (GPU).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import first_reach, fmt_spread, mean_spread, spearman

REG_P = 0.6  # label noise of the regularizer and η/S comparisons
FIT = 0.99  # claim 2/3: "fitted"
LEARNT = 0.9  # claim 1: a subset counts as learnt at this accuracy
SLOWER = 2.0  # claim 1: t_noisy ≥ SLOWER · t_clean
CHANCE = 0.15  # claim 4
REG_DROP, CLEAN_DROP, TEST_DROP = 0.2, 0.05, 0.02  # claim 5
INPUT_NOISE = 0.5  # claim 5: std of the input-noise regularizer (standardized inputs)
REGULARIZERS = ("dropout", "weight decay", "input noise")
CSR_EARLY = 0.1  # claim 7
CORRUPTIONS = ("shuffled-pixels", "random-pixels", "gaussian")

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 512, "download": False},
                  model={"name": "mlp", "depth": 2, "width": 128}, lr=0.05, batch=32,
                  epochs=12, noise=(0.0, 0.5, 1.0), seeds=(0,), corruptions=("gaussian",),
                  wd=1e-3, csr={"n": 100, "log_points": 4, "max_iter": 20}),
    "cpu": dict(data={"name": "mnist", "n_train": 2000, "stratified": True},
                model={"name": "mlp", "depth": 2, "width": 512}, lr=0.02, batch=64,
                epochs=80, noise=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), seeds=(0, 1),
                corruptions=CORRUPTIONS, wd=1e-3, csr={"n": 300, "log_points": 8}),
    "paper": dict(data={"name": "mnist"},
                  model={"name": "mlp", "depth": 2, "width": 4096}, lr=0.02, batch=64,
                  epochs=200, noise=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), seeds=(0, 1),
                  corruptions=CORRUPTIONS, wd=1e-3, csr={"n": 1000, "log_points": 20}),
}


class Memorization(Experiment):
    name = "memorization"
    title = "Memorization: networks fit noise, but learn patterns first"
    reference = ("D. Arpit, S. Jastrzębski, N. Ballas, D. Krueger, E. Bengio, M. S. Kanwal, "
                 "T. Maharaj, A. Fischer, A. Courville, Y. Bengio, S. Lacoste-Julien, \"A "
                 "Closer Look at Memorization in Deep Networks\", ICML 2017; C. Zhang, S. "
                 "Bengio, M. Hardt, B. Recht, O. Vinyals, \"Understanding deep learning "
                 "requires rethinking generalization\", ICLR 2017; S. Jastrzębski et al., "
                 "arXiv:1711.04623 (extended version)")
    summary = ("A sweep over the fraction of random labels and three kinds of random inputs, "
               "with accuracy on the clean and the corrupted training examples every epoch "
               "and the critical sample ratio along training; dropout, weight decay and "
               "input noise, and three values of η/S, at one noise level.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        reg_p = REG_P if REG_P in sc["noise"] else sorted(sc["noise"])[len(sc["noise"]) // 2]

        def run(tag, seed, data=None, model=None, lr=sc["lr"], csr=False, train=None,
                **optim):
            return {"name": f"{tag}_seed-{seed}", "seed": seed,
                    "data": {**sc["data"], **(data or {})},
                    "model": {**sc["model"], **(model or {})},
                    "optim": {"lr": lr, "momentum": 0.9, "batch_size": sc["batch"], **optim},
                    "train": {"epochs": sc["epochs"], **(train or {})},
                    "probes": [{"name": "csr", "split": "test", **sc["csr"]}] if csr else []}

        # the CSR (the costliest measurement) on the label-noise sweep, which its checks read
        out = [run(f"labels-{p:g}", s, {"label_noise": p}, csr=True)
               for p in sc["noise"] for s in sc["seeds"]]
        out += [run(f"inputs-{kind}", sc["seeds"][0], {"input_corruption": kind})
                for kind in sc["corruptions"]]
        noisy = {"label_noise": reg_p}
        for s in sc["seeds"]:
            out += [run(f"labels-{reg_p:g}_dropout-0.5", s, noisy, {"dropout": 0.5}),
                    run(f"labels-{reg_p:g}_wd-{sc['wd']:g}", s, noisy,
                        weight_decay=sc["wd"]),
                    run(f"labels-{reg_p:g}_input-noise-{INPUT_NOISE:g}", s, noisy,
                        train={"input_noise": INPUT_NOISE})]
            out += [run(f"labels-{reg_p:g}_lr-{sc['lr'] * f:g}", s, noisy, lr=sc["lr"] * f)
                    for f in (0.5, 2.0)]
        return out

    def analyze(self, ctx: AnalysisContext):
        t = run_table(ctx)
        sc = SCALES[ctx.scale]
        reg_p = REG_P if REG_P in sc["noise"] else sorted(sc["noise"])[len(sc["noise"]) // 2]
        checks = [_patterns_first(t), _time_to_fit(t), _fits_noise(t), _generalization(t),
                  _regularizers(t, reg_p), *_csr_checks(t), _ratio_check(t, reg_p, sc)]
        return checks, figures(ctx, t, reg_p)


def run_table(ctx: AnalysisContext) -> pd.DataFrame:
    """One row per run: its role and setting, and the numbers the checks read; the
    per-epoch curves (``curves``: name -> (epochs, values)) ride along."""
    names = ["train/acc", "test/acc", "clean/acc", "corrupted/acc", "csr/csr"]
    m = ctx.metrics(names)
    rows = []
    for _, r in ctx.runs.iterrows():
        mine = m[m["run"] == r["id"]]
        curves = {n: (g.sort_values("step")["epoch"].to_numpy(float),
                      g.sort_values("step")["value"].to_numpy(float))
                  for n, g in mine.groupby("name")}
        name = r["name"].split("_seed-")[0].split("_", 1)[-1]
        noise = r.get("train.input_noise", 0.0)
        noise = 0.0 if noise is None or pd.isna(noise) else float(noise)
        role = ("dropout" if float(r["model.dropout"]) > 0 else
                "weight decay" if float(r["optim.weight_decay"]) > 0 else
                "input noise" if noise > 0 else
                "inputs" if r["data.input_corruption"] != "none" else "labels")
        rows.append({"id": r["id"], "name": name, "role": role, "seed": int(r["seed"]),
                     "p": float(r["data.label_noise"]), "kind": r["data.input_corruption"],
                     "lr": float(r["optim.lr"]), "S": int(r["optim.batch_size"]),
                     "status": r["status"], "epochs": int(r["train.epochs"]),
                     "curves": curves})
    t = pd.DataFrame(rows)

    def last(c, name):
        e, v = c.get(name, ([], []))
        return float(v[-1]) if len(v) else math.nan

    def reach(c, name, level):
        e, v = c.get(name, ([], []))
        return first_reach(e, v, level) if len(v) else math.nan

    def at(c, name, epoch):  # the value at the last evaluation up to ``epoch``
        e, v = c.get(name, ([], []))
        ok = np.flatnonzero(np.asarray(e) <= epoch + 1e-9)
        return float(v[ok[-1]]) if len(ok) else math.nan

    c = t["curves"]
    t["train_acc"] = [last(x, "train/acc") for x in c]
    t["test_acc"] = [last(x, "test/acc") for x in c]
    t["clean_acc"] = [last(x, "clean/acc") for x in c]
    t["noisy_acc"] = [last(x, "corrupted/acc") for x in c]
    t["t_fit"] = [reach(x, "train/acc", FIT) for x in c]
    t["t_clean"] = [reach(x, "clean/acc", LEARNT) for x in c]
    t["t_noisy"] = [reach(x, "corrupted/acc", LEARNT) for x in c]
    t["noisy_mid"] = [at(x, "corrupted/acc", e / 2) for x, e in zip(c, t["epochs"])]
    t["csr_end"] = [last(x, "csr/csr") for x in c]
    t["csr_quarter"] = [at(x, "csr/csr", e / 4) for x, e in zip(c, t["epochs"])]
    return t


def _base(t: pd.DataFrame, lr: float | None = None) -> pd.DataFrame:
    """The label-noise sweep at the base learning rate."""
    lab = t[(t["role"] == "labels") & (t["status"] == "finished")]
    base_lr = lr if lr is not None else lab["lr"].mode().iloc[0] if len(lab) else math.nan
    return lab[np.isclose(lab["lr"], base_lr)]


def _by_p(t: pd.DataFrame, col: str) -> dict[float, list[float]]:
    return {p: list(g[col]) for p, g in t.groupby("p")}


def _patterns_first(t: pd.DataFrame) -> Check:
    b = _base(t)
    mixed = b[(b["p"] > 0) & (b["p"] < 1)]
    ratio = mixed["t_noisy"] / mixed["t_clean"]
    parts = [f"p={p:g}: t_clean {fmt_spread(g['t_clean'])}, t_noisy {fmt_spread(g['t_noisy'])}"
             for p, g in mixed.groupby("p")]
    ok = [bool(r >= SLOWER) for r in ratio if not math.isnan(r)]
    return Check(f"Real patterns are fitted before noise: in every run with 0 < p < 1 the "
                 f"corrupted subset reaches {LEARNT:.0%} accuracy (noisy labels) at least "
                 f"{SLOWER:g}× later than the clean subset (epochs; inf = never)",
                 "; ".join(parts) or "no runs", verdict(all(ok) if ok else None),
                 float(np.nanmin(ratio)) if len(ratio) else None)


def _time_to_fit(t: pd.DataFrame) -> Check:
    b = _base(t)
    fit = _by_p(b, "t_fit")
    means = {p: mean_spread(v)[0] for p, v in fit.items()}
    finite = {p: v for p, v in means.items() if not math.isnan(v)}
    big = 1e9  # never fitted ranks above every fitted run
    rho = spearman(list(finite), [min(v, big) for v in finite.values()])
    lo, hi = min(finite, default=math.nan), max(finite, default=math.nan)
    ok = None if len(finite) < 3 else (rho > 0 and finite[hi] > finite[lo])
    return Check(f"Time to fit grows with the label noise: the first epoch with training "
                 f"accuracy ≥ {FIT:g} rises with p (Spearman ρ > 0 over seed means) and is "
                 "later at p = 1 than at p = 0",
                 f"ρ = {rho:.2f}; " + ", ".join(f"p={p:g}: {fmt_spread(v)}"
                                               for p, v in fit.items()),
                 verdict(ok), rho)


def _fits_noise(t: pd.DataFrame) -> Check:
    b = _base(t)
    rows = [(f"random labels seed {r.seed}", r.train_acc) for r in b[b["p"] == 1].itertuples()]
    rows += [(r.kind, r.train_acc) for r in t[t["role"] == "inputs"].itertuples()]
    ok = [v >= FIT for _, v in rows if not math.isnan(v)]
    return Check(f"Networks fit random labels and random inputs: final training accuracy ≥ "
                 f"{FIT:g} with p = 1 and with shuffled pixels, random pixels, Gaussian inputs",
                 ", ".join(f"{k}: {v:.3f}" for k, v in rows) or "no runs",
                 verdict(all(ok) if ok else None), min((v for _, v in rows), default=None))


def _generalization(t: pd.DataFrame) -> Check:
    b = _base(t)
    acc = _by_p(b, "test_acc")
    means = {p: mean_spread(v)[0] for p, v in acc.items()}
    rho = spearman(list(means), list(means.values()))
    chance = means.get(1.0, math.nan)
    ok = None if len(means) < 3 or math.isnan(chance) else (rho < 0 and chance <= CHANCE)
    return Check(f"Test accuracy falls with the label noise (Spearman ρ < 0) and is at chance "
                 f"(≤ {CHANCE:g}) with random labels",
                 f"ρ = {rho:.2f}; " + ", ".join(f"p={p:g}: {fmt_spread(v)}"
                                               for p, v in acc.items()), verdict(ok), rho)


def _regularizers(t: pd.DataFrame, reg_p: float) -> Check:
    b = _base(t)
    plain = b[np.isclose(b["p"], reg_p)]
    parts, ok = [], []
    for role in REGULARIZERS:
        reg = t[(t["role"] == role) & (t["status"] == "finished")]
        if not len(reg) or not len(plain):
            continue
        d_noisy = plain["noisy_acc"].mean() - reg["noisy_acc"].mean()
        d_clean = plain["clean_acc"].mean() - reg["clean_acc"].mean()
        d_test = plain["test_acc"].mean() - reg["test_acc"].mean()
        ok.append(d_noisy >= REG_DROP and d_clean <= CLEAN_DROP and d_test <= TEST_DROP)
        parts.append(f"{role}: corrupted acc {fmt_spread(reg['noisy_acc'])} vs "
                     f"{fmt_spread(plain['noisy_acc'])}, clean acc {fmt_spread(reg['clean_acc'])}"
                     f" vs {fmt_spread(plain['clean_acc'])}, test acc "
                     f"{fmt_spread(reg['test_acc'])} vs {fmt_spread(plain['test_acc'])}")
    return Check(f"Regularizers hinder memorization, not learning (p = {reg_p:g}): dropout "
                 f"0.5, weight decay and input noise (σ = {INPUT_NOISE:g}) each lower the "
                 f"final corrupted-subset accuracy by ≥ "
                 f"{REG_DROP:g} while the clean-subset accuracy drops ≤ {CLEAN_DROP:g} and the "
                 f"test accuracy ≤ {TEST_DROP:g} (seed means)",
                 "; ".join(parts) or "no runs", verdict(all(ok) if ok else None))


def _csr_checks(t: pd.DataFrame) -> list[Check]:
    b = _base(t)
    csr = _by_p(b, "csr_end")
    means = {p: mean_spread(v)[0] for p, v in csr.items()}
    rho = spearman(list(means), list(means.values()))
    ok = None if len([v for v in means.values() if not math.isnan(v)]) < 3 else rho > 0
    drift = (b["csr_quarter"] - b["csr_end"]).abs()
    return [
        Check("The critical sample ratio is higher for networks fitting more noise: final "
              "CSR (test examples) rises with p (Spearman ρ > 0 over seed means)",
              f"ρ = {rho:.2f}; " + ", ".join(f"p={p:g}: {fmt_spread(v)}"
                                             for p, v in csr.items()), verdict(ok), rho),
        Check(f"The CSR is largely set early in training: |CSR(T/4) − CSR(T)| ≤ {CSR_EARLY:g} "
              "in every label-noise run",
              ", ".join(f"p={r.p:g} s{r.seed}: {r.csr_quarter:.3f} → {r.csr_end:.3f}"
                        for r in b.itertuples()),
              verdict(bool((drift <= CSR_EARLY).all()) if drift.notna().any() else None),
              float(drift.max()) if drift.notna().any() else None)]


def _ratio_check(t: pd.DataFrame, reg_p: float, sc: dict) -> Check:
    lab = t[(t["role"] == "labels") & (t["status"] == "finished") & np.isclose(t["p"], reg_p)]
    groups = {lr / S: list(g["noisy_mid"]) for (lr, S), g in lab.groupby(["lr", "S"])}
    means = {k: mean_spread(v)[0] for k, v in groups.items()}
    rho = spearman(list(means), list(means.values()))
    ok = None if len(means) < 3 else rho < 0
    return Check(f"A larger η/S memorizes the noisy labels more slowly (p = {reg_p:g}, S = "
                 f"{sc['batch']}): the corrupted-subset accuracy at epoch {sc['epochs'] // 2} "
                 "falls with η/S (Spearman ρ < 0 over seed means)",
                 f"ρ = {rho:.2f}; " + ", ".join(f"η/S={k:.3g}: {fmt_spread(v)}"
                                               for k, v in sorted(groups.items())),
                 verdict(ok), rho)


# -- figures ---------------------------------------------------------------------------------
def figures(ctx: AnalysisContext, t: pd.DataFrame, reg_p: float) -> list:
    from matplotlib.figure import Figure

    figs = []
    b = _base(t)
    seed0 = b[b["seed"] == b["seed"].min()] if len(b) else b
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, r in enumerate(seed0.sort_values("p").itertuples()):
        for ax, name in zip(axes, ("clean/acc", "corrupted/acc", "test/acc")):
            e, v = r.curves.get(name, ([], []))
            if name == "clean/acc" and r.p == 0:
                e, v = r.curves.get("train/acc", ([], []))
            ax.plot(e, v, color=f"C{i}", label=f"p = {r.p:g}")
    for ax, label in zip(axes, ("clean training examples", "corrupted examples (noisy labels)",
                                "test")):
        ax.set(xlabel="epoch", ylabel="accuracy", title=label, ylim=(0, 1.02))
    axes[0].legend(fontsize=8)
    figs.append(("Accuracy on clean and corrupted examples over training", fig))

    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for r in t[t["role"] == "inputs"].itertuples():
        e, v = r.curves.get("train/acc", ([], []))
        axes[0].plot(e, v, label=r.kind)
    for r in seed0.sort_values("p").itertuples():
        if r.p in (0.0, 1.0):
            e, v = r.curves.get("train/acc", ([], []))
            axes[0].plot(e, v, ls="--", label=f"labels p = {r.p:g}")
    axes[0].set(xlabel="epoch", ylabel="training accuracy", title="random labels and inputs")
    axes[0].legend(fontsize=7)
    fit = b.groupby("p")["t_fit"].agg(["mean", "min", "max"]).replace(np.inf, np.nan)
    axes[1].errorbar(fit.index, fit["mean"], yerr=[fit["mean"] - fit["min"],
                                                   fit["max"] - fit["mean"]], fmt="o-")
    axes[1].set(xlabel="label noise p", ylabel=f"epochs to {FIT:.0%} training accuracy",
                title="time to fit (never fitted: omitted)")
    for r in b.itertuples():
        e, v = r.curves.get("csr/csr", ([], []))
        axes[2].plot(e, v, color=f"C{sorted(b['p'].unique()).index(r.p)}",
                     ls="-" if r.seed == b["seed"].min() else ":",
                     label=f"p = {r.p:g}" if r.seed == b["seed"].min() else None)
    axes[2].set(xlabel="epoch", ylabel="critical sample ratio", title="CSR (test examples)")
    axes[2].legend(fontsize=7)
    figs.append(("Fitting noise: time to fit and critical sample ratio", fig))

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    noisy = t[np.isclose(t["p"], reg_p) & (t["seed"] == t["seed"].min())]
    for r in noisy.itertuples():
        label = (r.role if r.role != "labels" else f"η = {r.lr:g}")
        for ax, name in zip(axes, ("corrupted/acc", "test/acc")):
            e, v = r.curves.get(name, ([], []))
            ax.plot(e, v, label=label)
    for ax, label in zip(axes, ("corrupted examples (noisy labels)", "test")):
        ax.set(xlabel="epoch", ylabel="accuracy", title=f"{label}, p = {reg_p:g}")
    axes[0].legend(fontsize=7)
    figs.append(("Regularizers and eta-S against memorization", fig))
    return figs


__all__ = ["EXPERIMENT", "Memorization", "run_table"]
EXPERIMENT = Memorization()
