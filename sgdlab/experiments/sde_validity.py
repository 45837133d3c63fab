"""Is SGD on a network its SDE? SGD beside an SVAG simulation of the Itô SDE at matched eta/S
(Li, Malladi, Arora, "On the Validity of Modeling SGD with Stochastic Differential
Equations", NeurIPS 2021; Bombari 2020 on the discreteness of SGD).

All chains start from one initialization of an MLP on scikit-learn's digits (cross-entropy)
and train for the same time T = eta * steps (a whole number of steps of every pair). SGD
runs at several (eta, S) with the same eta/S, so they share one SDE,
d theta = -grad L dt + sqrt(eta Sigma_S) dW; the SDE is simulated by SVAG from the smallest
pair (step eta/l, two minibatches per step combined so that the noise covariance is
l Sigma_S) at l and 2l. Everything is computed in :meth:`analyze` (no sgdlab run; cached
under ``extra/``), with many chains at once (:mod:`sgdlab.dynamics.networks`): means over
chains of the training loss, test loss and test accuracy at a few times, with their
standard errors.

Claims and thresholds (written before the cpu run):

1. Li et al. Thm 4.3 (SVAG converges to the SDE, weak error O(1/l)): SVAG at l and 2l agree
   on the mean training and test loss at every recorded time within max(3 SE, 2%).
2. Where they agree: SGD at the smallest eta matches the SDE (SVAG at 2l) at the final time
   within max(3 SE, 5%) on the mean training and test loss.
3. Where they do not (Bombari; Li et al. §5 on the failure of the linear scaling rule):
   SGD at the largest eta differs from the SDE at the final time by more than max(3 SE, 5%)
   in the training or the test loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sgdlab.dynamics.networks import NetworkChains, record, stack_states
from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import cached, plain

SVAG_TOL, AGREE_TOL = 0.02, 0.05  # relative tolerances of claims 1 and 2-3 (with 3 SE)
DATA = {"name": "digits", "n_train": 1024, "normalize": "standardize", "download": False}
MODEL = {"name": "mlp", "depth": 1, "width": 32, "activation": "relu"}
GRIDS = {
    # (eta, S) pairs at one eta/S; SVAG amplifications l and 2l; time T; chains; metric times
    # (every recorded time a whole number of steps of every pair: t = 9.6 k at cpu scale).
    # lambda_max of this MLP after t = 40 of SGD is ~0.9 (measured at eta = 0.05 and 0.8), so
    # the cpu pairs span eta lambda_max from ~0.04 (SDE regime) to ~3 (beyond 2/eta)
    "smoke": {"pairs": ((0.05, 4), (0.4, 32)), "l": 2, "time": 1.6, "chains": 8, "points": 3},
    "cpu": {"pairs": ((0.05, 4), (0.2, 16), (0.8, 64), (3.2, 256)), "l": 4, "time": 38.4,
            "chains": 64, "points": 5},
    "paper": {"pairs": ((0.025, 2), (0.05, 4), (0.2, 16), (0.8, 64), (1.6, 128), (3.2, 256)),
              "l": 8, "time": 76.8, "chains": 512, "points": 9},
}
VERSION = 1


class SDEValidity(Experiment):
    name = "sde-validity"
    title = "SGD beside its SDE (simulated by SVAG) on a network, as eta grows at fixed eta/S"
    reference = ("Z. Li, S. Malladi, S. Arora, \"On the Validity of Modeling SGD with Stochastic "
                 "Differential Equations (SDEs)\", NeurIPS 2021; S. Bombari, MSc thesis, Pisa 2020")
    summary = ("Many chains of an MLP on digits from one initialization: SGD at several (eta, S) "
               "with equal eta/S against SVAG simulations of their common SDE, in the same time "
               "t = eta * steps; mean training and test loss over chains.")
    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        return []

    def analyze(self, ctx: AnalysisContext):
        g = GRIDS[ctx.scale]
        runs = cached(ctx, "trajectories", [VERSION, g], lambda: simulate(g))
        checks = [svag_check(runs), agree_check(runs, small=True), agree_check(runs, small=False)]
        return checks, figures(runs)


def setup(seed: int = 0):
    """The data, one initialized model, and the loss (sgdlab's data, models and loss)."""
    from sgdlab.config import DataConfig, ModelConfig
    from sgdlab.data import load_data
    from sgdlab.models import build_model
    from sgdlab.train import make_loss  # (sgdlab.losses on newer main; re-exported here)

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the chains run where the data is
    data = load_data(DataConfig(**DATA), seed, device)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**MODEL), data.input_shape, data.n_classes).to(device)
    return data, model, make_loss("cross_entropy")


def simulate(g: dict) -> list[dict]:
    data, model, loss = setup()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    times = np.linspace(0, g["time"], g["points"])

    def metrics(c: NetworkChains) -> dict:
        return {"train_loss": c.losses(), "test_loss": c.losses(data.x_test, data.y_test),
                "test_acc": c.accuracies(data.x_test, data.y_test)}

    def one(label, lr, size, ell, seed):
        model.load_state_dict(init)  # every run from the same initialization
        chains = NetworkChains(model, loss, data.x_train, data.y_train,
                               stack_states(model, n_chains=g["chains"]), seed=seed)
        h = lr / ell
        n_steps = int(round(g["time"] / h))
        out = record(chains, lambda c: c.svag_step(lr, size, ell), n_steps,
                     [int(round(t / h)) for t in times], metrics)
        lam = _sharpness(model, loss, data, chains)
        return {"label": label, "eta": lr, "S": size, "l": ell, "h": h,
                "time": (out["step"] * h).tolist(),
                **{k: {"mean": v.mean(1).tolist(),
                       "se": (v.std(1, ddof=1) / math.sqrt(v.shape[1])).tolist()}
                   for k, v in out.items() if k != "step"}, "lambda_max_end": lam}

    runs = [one(f"SGD η={lr:g} S={s}", lr, s, 1, 10 + i) for i, (lr, s) in enumerate(g["pairs"])]
    lr0, s0 = g["pairs"][0]
    for j, ell in enumerate((g["l"], 2 * g["l"])):
        runs.append(one(f"SVAG l={ell} (η={lr0:g}, S={s0})", lr0, s0, ell, 100 + j))
    return runs


def _sharpness(model, loss, data, chains: NetworkChains, n: int = 2) -> float:
    """Mean lambda_max of the full training loss over the first ``n`` chains at the end."""
    from sgdlab.curvature import hessian_eigs

    vals = []
    for i in range(min(n, chains.n_chains)):
        model.load_state_dict({k: v[i] for k, v in chains.params.items()})
        vals.append(float(hessian_eigs(model, loss, (data.x_train, data.y_train), k=1,
                                       tol=1e-3).values[0]))
    return float(np.mean(vals))


# -- checks ------------------------------------------------------------------------------------
def _differ(a: dict, b: dict, key: str, i: int, tol: float) -> tuple[float, bool]:
    """(relative difference, beyond max(3 SE, tol)) of the means of ``key`` at point i."""
    ma, mb = a[key]["mean"][i], b[key]["mean"][i]
    se = math.hypot(a[key]["se"][i], b[key]["se"][i])
    rel = (ma - mb) / abs(mb)
    return rel, abs(ma - mb) > max(3 * se, tol * abs(mb))


def svag_check(runs: list[dict]) -> Check:
    lo, hi = [r for r in runs if r["l"] > 1]
    devs, bad = [], 0
    for key in ("train_loss", "test_loss"):
        for i in range(len(hi["time"])):
            rel, beyond = _differ(lo, hi, key, i, SVAG_TOL)
            devs.append(abs(rel))
            bad += beyond
    return Check(f"Li et al. (Thm 4.3): SVAG converges to the SDE: l = {lo['l']} and {hi['l']} "
                 f"agree on the mean training and test loss at every recorded time within "
                 f"max(3 SE, {SVAG_TOL:.0%})", f"largest relative difference {max(devs):.2%}, "
                 f"{bad} of {len(devs)} points beyond", verdict(bad == 0), max(devs))


def agree_check(runs: list[dict], small: bool) -> Check:
    sgd = [r for r in runs if r["l"] == 1]
    ref = max((r for r in runs if r["l"] > 1), key=lambda r: r["l"])
    run = min(sgd, key=lambda r: r["eta"]) if small else max(sgd, key=lambda r: r["eta"])
    parts, beyond = [], []
    for key in ("train_loss", "test_loss"):
        rel, out = _differ(run, ref, key, -1, AGREE_TOL)
        beyond.append(out)
        parts.append(f"{key.replace('_', ' ')} {run[key]['mean'][-1]:.4g} vs "
                     f"{ref[key]['mean'][-1]:.4g} ({rel:+.1%})")
    parts.append(f"η λ_max at the end {run['eta'] * run['lambda_max_end']:.2f}")
    if small:
        return Check(f"Where they agree: SGD at the smallest η ({run['label']}) matches the SDE "
                     f"({ref['label']}) at t = T within max(3 SE, {AGREE_TOL:.0%}) on the mean "
                     "training and test loss", "; ".join(parts), verdict(not any(beyond)))
    return Check(f"Where they do not: SGD at the largest η ({run['label']}) differs from the SDE "
                 f"at t = T by more than max(3 SE, {AGREE_TOL:.0%}) in the training or test loss",
                 "; ".join(parts), verdict(any(beyond)))


# -- figures ---------------------------------------------------------------------------------
def figures(runs: list[dict]) -> list:
    from matplotlib.figure import Figure

    keys = (("train_loss", "training loss"), ("test_loss", "test loss"),
            ("test_acc", "test accuracy"))
    fig = Figure(figsize=(14, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (key, label) in zip(axes, keys):
        for j, r in enumerate(runs):
            m, se = np.array(r[key]["mean"]), np.array(r[key]["se"])
            style = "-" if r["l"] == 1 else "--"
            ax.plot(r["time"], m, style, marker="o", ms=3, color=f"C{j}", label=r["label"])
            ax.fill_between(r["time"], m - 2 * se, m + 2 * se, color=f"C{j}", alpha=0.2)
        ax.set(xlabel="t = η · steps", ylabel=label)
        if key != "test_acc":
            ax.set_yscale("log")
            plain(ax)
    axes[0].legend(fontsize=7)
    return [("SGD and its SDE simulated by SVAG at fixed eta over S", fig)]


__all__ = ["EXPERIMENT", "GRIDS", "SDEValidity"]
EXPERIMENT = SDEValidity()
