"""The learning rate to batch size ratio (Jastrzębski et al., "Three Factors Influencing
Minima in SGD", 2018).

SGD with learning rate η and batch S approximates the SDE dθ = −g dt + sqrt(η/S) R dW
with RRᵀ = K, the per-example gradient covariance: η and S enter only through η/S. At
a minimum with Hessian H, the stationary covariance Σ of θ solves HΣ + ΣH = (η/S) K, so

    E[L − L*] = ½ Tr(HΣ) = ¼ Tr(HΣ + ΣH) = η/(4S) Tr K  ≈  η/(4S) Tr H   (K ≈ H).

Claims checked:

1. Runs with equal η/S end at minima of equal sharpness (λ_max within 25%) ...
2. ... until η is large: the invariance breaks (the large-η member differs more, or diverges).
3. Larger η/S ends in flatter regions: λ_max and Tr H at the endpoint fall with η/S.
4. E[L] = η/(4S) Tr H, exactly (to first order in η) on linear least squares with
   Gaussian inputs x ~ N(0, C) and label noise σ (K = σ²C, H = C):
   E[L − L*] = ησ²/(4S) Tr C. Online SGD (fresh examples every step) is simulated here;
   its exact discrete-time stationary excess loss, from the fourth moments of Gaussian x
   in the eigenbasis of C (rotation invariant, so C is taken diagonal), is

       a = (η/S) Σ_j c_j / (2 − η c_j (1 + 1/S)),   E[L − L*] = σ² a / (2 (1 − a)),

   which tends to the SDE value as η → 0 and diverges as a → 1.
5. On the networks, the time-averaged training loss vs η/(4S) Tr H (both averaged over
   the last third of training): an order-of-magnitude relation, since K ≈ H is assumed.
6. Cyclic batch size and cyclic learning rate with the same η/S schedule train alike.

Grids: η = r S for η/S = r in ``ratios`` and S in ``batch_sizes`` (moderate η), one
large-η member at the largest ratio with S = ``big_batch``, and the cyclic pair; every
run has a "hessian" probe every epoch (λ_max and Tr H).

- smoke: digits (1,024 train), MLP 64-32-10, 15 epochs, r ∈ {1/800, 1/400, 1/200},
  S ∈ {16, 64}, large-η member S = 512 (η = 2.56), cyclic pair at S = 16, η = 0.08: 9 runs.
- paper: Fashion-MNIST (60k), MLP 784-256-256-10 and the simple CNN, 10 epochs,
  r ∈ {1/3200, 1/1600, 1/800, 1/400}, S ∈ {64, 256}, large-η member S = 1024
  (η = 2.56), cyclic pair at S = 64, η = 0.04: 11 runs per model, 22 in all.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from sgdlab.experiments.base import AnalysisContext, Check, Experiment, verdict
from sgdlab.experiments.common import spearman

SCALES = {
    "smoke": dict(data={"name": "digits", "n_train": 1024, "download": False},
                  models={"mlp": {"name": "mlp", "depth": 1, "width": 32}},
                  ratios=(1 / 800, 1 / 400, 1 / 200), batch_sizes=(16, 64), big_batch=512,
                  epochs=15, seeds=(0,),
                  hessian={"n": 256, "trace_products": 30}, cyclic=(16, 0.08),
                  step=(16, 0.08, [8, 12], 4)),
    # cpu: the MLP rows of the paper grid on 10,000 images, with S ∈ {32, 128} (η = r S
    # from 0.01 to 0.32: at S = 256 the members of a pair are 4x further from the SDE
    # limit) and 2 seeds; the CNN's Hessian-vector products are too slow for 2 cores
    "cpu": dict(data={"name": "fashion-mnist", "n_train": 10000},
                models={"mlp": {"name": "mlp", "depth": 2, "width": 256}},
                ratios=(1 / 3200, 1 / 1600, 1 / 800, 1 / 400), batch_sizes=(32, 128),
                big_batch=1024, epochs=10, seeds=(0, 1),
                hessian={"n": 512, "trace_products": 40}, cyclic=(32, 0.02),
                step=(32, 0.04, [5, 8], 4)),
    "paper": dict(data={"name": "fashion-mnist"},
                  models={"mlp": {"name": "mlp", "depth": 2, "width": 256},
                          "cnn": {"name": "cnn"}},
                  ratios=(1 / 3200, 1 / 1600, 1 / 800, 1 / 400), batch_sizes=(64, 256),
                  big_batch=1024, epochs=10, seeds=(0,),
                  hessian={"n": 1024, "trace_products": 80}, cyclic=(64, 0.04),
                  step=(64, 0.08, [5, 8], 4)),
}
CYCLE = {"period": 4, "min_factor": 0.25}
SAME_TOL = 0.25  # claim 1: equal η/S -> endpoint λ_max within 25%
LOSS_FACTOR = 3.0  # claim 5: measured / predicted within a factor 3
ACC_TOL = 0.02  # claim 6: cyclic BS and cyclic LR within 2 points of test accuracy
LS_SPECTRUM = tuple(np.logspace(math.log10(0.25), 0.0, 10))  # eigenvalues of C
LS_GRID = {1: (0.01, 0.02, 0.05, 0.1, 0.2), 4: (0.02, 0.05, 0.1, 0.2, 0.4, 0.6)}
LS_SMALL = 0.07  # claim 4: within 10% where the SDE's expansion parameter η Tr H / S <= this


# -- linear least squares: theory and simulation --------------------------------------------
def sde_excess_loss(eta: float, S: int, spectrum, sigma: float = 1.0) -> float:
    """SDE prediction ησ²/(4S) Tr C of the stationary E[L − L*] (= η/(4S) Tr H at σ = 1)."""
    return eta * sigma**2 * float(np.sum(spectrum)) / (4 * S)


def discrete_excess_loss(eta: float, S: int, spectrum, sigma: float = 1.0) -> float:
    """Exact stationary E[L − L*] of online SGD with Gaussian inputs (module docstring);
    ``inf`` where SGD has no stationary distribution."""
    c = np.asarray(spectrum, float)
    denom = 2 - eta * c * (1 + 1 / S)
    a = eta / S * float(np.sum(c / denom)) if np.all(denom > 0) else math.inf
    return sigma**2 * a / (2 * (1 - a)) if a < 1 else math.inf


def linear_sgd_excess_loss(eta: float, S: int, spectrum, sigma: float = 1.0, chains: int = 128,
                           burn: float = 4.0, measure: float = 10.0, seed: int = 0) -> float:
    """Time-averaged excess loss ½ ΔᵀCΔ of online SGD on y = w*ᵀx + σε started at w*.

    ``chains`` independent runs; ``burn`` and ``measure`` in units of the slowest
    relaxation time 1/(η c_min) of the mean."""
    c = np.asarray(spectrum, float)
    rng = np.random.default_rng(seed)
    tau = 1.0 / (eta * c.min())
    n_burn, n_meas = math.ceil(burn * tau), math.ceil(measure * tau)
    delta = np.zeros((chains, len(c)))
    total, block, t = 0.0, 256, 0
    while t < n_burn + n_meas:
        m = min(block, n_burn + n_meas - t)
        xs = rng.standard_normal((m, chains, S, len(c))) * np.sqrt(c)
        noise = sigma * rng.standard_normal((m, chains, S))
        for i in range(m):
            r = np.einsum("csd,cd->cs", xs[i], delta) - noise[i]
            delta -= eta / S * np.einsum("csd,cs->cd", xs[i], r)
            if t + i >= n_burn:
                total += 0.5 * float(np.mean((delta**2) @ c))
        t += m
        if not np.all(np.isfinite(delta)):
            return math.inf
    return total / n_meas


def linear_study(cache=None) -> pd.DataFrame:
    """Measured and predicted excess loss over ``LS_GRID`` (σ = 1), cached as JSON."""
    if cache is not None and cache.is_file():
        return pd.DataFrame(json.loads(cache.read_text()))
    rows = [{"S": S, "eta": eta, "measured": linear_sgd_excess_loss(eta, S, LS_SPECTRUM),
             "sde": sde_excess_loss(eta, S, LS_SPECTRUM),
             "discrete": discrete_excess_loss(eta, S, LS_SPECTRUM)}
            for S, etas in LS_GRID.items() for eta in etas]
    if cache is not None:
        cache.write_text(json.dumps(rows))
    return pd.DataFrame(rows)


def spread(values) -> float:
    """max / min − 1 of positive values (NaN if fewer than 2)."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    return float(v.max() / v.min() - 1) if len(v) >= 2 and v.min() > 0 else math.nan



# -- the experiment ----------------------------------------------------------------------
class LRBatchRatio(Experiment):
    name = "lr-batch-ratio"
    title = "Learning rate to batch size ratio: width of minima and E[L] = η/(4S) Tr H"
    reference = ("S. Jastrzębski, Z. Kenton, D. Arpit, N. Ballas, A. Fischer, Y. Bengio, "
                 "A. Storkey, \"Three Factors Influencing Minima in SGD\", arXiv:1711.04623 "
                 "(ICANN 2018)")
    summary = ("A grid over η and S with equal η/S along diagonals, one large-η member, and "
               "cyclic batch size against cyclic learning rate; λ_max and Tr H every epoch. "
               "The relation E[L] = η/(4S) Tr H is also checked exactly on linear least "
               "squares by simulation.")

    scales = ("smoke", "cpu", "paper")

    def configs(self, scale: str) -> list[dict]:
        sc = SCALES[scale]
        probe = {"name": "hessian", "every": "epoch", "k": 1, "trace": True,
                 "trace_rtol": 0.05, **sc["hessian"]}
        out = []
        for key, model in sc["models"].items():
            for seed in sc["seeds"]:
                def run(lr, S, suffix="", key=key, model=model, seed=seed, **optim):
                    tail = f"_seed-{seed}" if len(sc["seeds"]) > 1 else ""
                    return {"name": f"{key}_eta-{lr:g}_S-{S}{suffix}{tail}", "seed": seed,
                            "data": dict(sc["data"]), "model": dict(model),
                            "optim": {"lr": lr, "batch_size": S, **optim},
                            "train": {"epochs": sc["epochs"]}, "probes": [dict(probe)]}
                for r in sc["ratios"]:
                    out += [run(round(r * S, 10), S) for S in sc["batch_sizes"]]
                r, S = max(sc["ratios"]), sc["big_batch"]
                out.append(run(round(r * S, 10), S))
                S, lr = sc["cyclic"]
                out.append(run(lr, S, "_cyclic-lr", lr_schedule={"kind": "cyclic", **CYCLE}))
                out.append(run(lr, S, "_cyclic-bs", batch_schedule={"kind": "cyclic", **CYCLE}))
                S, lr, milestones, factor = sc["step"]
                out.append(run(lr, S, "_step-lr", lr_schedule={
                    "kind": "step", "milestones": milestones, "gamma": 1 / factor}))
                out.append(run(lr, S, "_step-bs", batch_schedule={
                    "kind": "step", "milestones": milestones, "factor": float(factor)}))
        return out

    def analyze(self, ctx: AnalysisContext):
        t = endpoint_table(ctx)
        ls = linear_study(ctx.extra_dir / "linear_least_squares.json")
        const = t[~t["role"].isin(["cyclic", "step"])]
        ok = const[(const["status"] == "finished") & (const["role"] == "grid")]  # moderate η
        checks = [_equal_ratio_check(ok), _break_check(const),
                  _trend_check(ok, "lam", "λ_max"), _trend_check(ok, "trace", "Tr H"),
                  *_linear_checks(ls), _network_loss_check(ok), _cyclic_check(t),
                  _schedule_check(t, "step", "A step decay of η and the equivalent step "
                                  "increase of S (same η/S schedule)")]
        return checks, figures(ctx, t, ls)


def endpoint_table(ctx: AnalysisContext) -> pd.DataFrame:
    """One row per run: model, η, S, role, status, endpoint λ_max, Tr H, test acc, and the
    time averages over the last third of training of the batch loss and of η/(4S) Tr H."""
    m = ctx.metrics(["hessian/lambda_max", "hessian/trace", "test/acc", "train/batch_loss"])
    rows = []
    for _, r in ctx.runs.iterrows():
        mine = m[m["run"] == r["id"]]
        series = {n: g.sort_values("step") for n, g in mine.groupby("name")}

        def last(name, series=series):
            s = series.get(name)
            return float(s["value"].iloc[-1]) if s is not None and len(s) else math.nan

        def tail_mean(name, series=series):
            s = series.get(name)
            if s is None or not len(s):
                return math.nan
            return float(s[s["step"] >= 2 * s["step"].max() / 3]["value"].mean())

        lr, S = float(r["optim.lr"]), int(r["optim.batch_size"])
        kinds = (r.get("optim.lr_schedule.kind"), r.get("optim.batch_schedule.kind"))
        role = "cyclic" if "cyclic" in kinds else "step" if "step" in kinds else "grid"
        rows.append({"id": r["id"], "name": r["name"], "model": r["model.name"], "lr": lr,
                     "S": S, "ratio": lr / S, "status": r["status"], "seed": int(r["seed"]),
                     "role": role, "lam": last("hessian/lambda_max"),
                     "trace": last("hessian/trace"), "acc": last("test/acc"),
                     "loss_avg": tail_mean("train/batch_loss"),
                     "pred_avg": lr / (4 * S) * tail_mean("hessian/trace")})
    t = pd.DataFrame(rows)
    if len(t):
        big = t["S"] > max(SCALES[ctx.scale]["batch_sizes"])
        t.loc[big & (t["role"] == "grid"), "role"] = "large-eta"
    return t


def _groups(t: pd.DataFrame):
    """(model, ratio, seed) -> rows with that η/S (ratios rounded to 6 significant digits)."""
    key = t["ratio"].map(lambda x: float(f"{x:.6g}"))
    return t.groupby([t["model"], key, t["seed"]])


def _equal_ratio_check(ok: pd.DataFrame) -> Check:
    moderate = ok[ok["role"] == "grid"]
    spreads = {k: spread(g["lam"]) for k, g in _groups(moderate) if len(g) >= 2}
    spreads = {k: v for k, v in spreads.items() if np.isfinite(v)}
    worst = max(spreads.values(), default=math.nan)
    by_ratio: dict = {}
    for (m, r, _), v in spreads.items():
        by_ratio.setdefault((m, r), []).append(v)
    text = ", ".join(f"{m} η/S={r:.3g}: " + "/".join(f"{v:.0%}" for v in vs)
                     for (m, r), vs in by_ratio.items())
    if len(moderate) and moderate["seed"].nunique() > 1:
        text += " (one value per seed)"
    return Check(f"Runs with equal η/S (moderate η) end with λ_max within {SAME_TOL:.0%} of "
                 "each other (max/min − 1)", text or "no complete pair",
                 verdict(None if not spreads else worst <= SAME_TOL), worst)


def _break_check(const: pd.DataFrame) -> Check:
    parts, broke = [], []
    done = const[(const["role"] == "grid") & (const["status"] == "finished")]
    for (model, seed), big in const[const["role"] == "large-eta"].groupby(["model", "seed"]):
        b = big.iloc[0]
        same = done[(done["model"] == model) & np.isclose(done["ratio"], b["ratio"])
                    & (done["seed"] == seed)]
        if b["status"] == "diverged":
            parts.append(f"{model}: η={b['lr']:g} diverged")
            broke.append(True)
        elif b["status"] == "finished" and len(same):
            dev = max(abs(b["lam"] / v - 1) for v in same["lam"])
            parts.append(f"{model}: η={b['lr']:g} λ_max {b['lam']:.3g} vs "
                         f"{', '.join(f'{v:.3g}' for v in same['lam'])} (η = "
                         f"{', '.join(f'{v:g}' for v in same['lr'])}): "
                         + (f"{dev:.0%}" if dev < 10 else f"{1 + dev:.3g}×"))
            broke.append(dev > SAME_TOL)
    return Check(f"At large η the η/S invariance breaks: the large-η run ends with λ_max more "
                 f"than {SAME_TOL:.0%} away from the moderate-η runs of equal η/S, or diverges",
                 "; ".join(parts) or "no large-η run finished",
                 verdict(all(broke) if broke else None))


def _trend_check(ok: pd.DataFrame, col: str, label: str) -> Check:
    rhos = {m: spearman(g["ratio"], g[col]) for m, g in ok.groupby("model")}
    text = ", ".join(f"{m}: ρ = {v:.2f} (n = {len(ok[ok['model'] == m])})"
                     for m, v in rhos.items())
    finite = [v for v in rhos.values() if np.isfinite(v)]
    return Check(f"{label} at the endpoint decreases with η/S (Spearman ρ < 0 per model, "
                 "moderate-η runs)",
                 text or "too few runs", verdict(all(v < 0 for v in finite) if finite else None),
                 min(finite) if finite else None)


def _linear_checks(ls: pd.DataFrame) -> list[Check]:
    tr = float(np.sum(LS_SPECTRUM))
    ls = ls.assign(r_sde=ls["measured"] / ls["sde"], r_disc=ls["measured"] / ls["discrete"])
    small = ls[ls["eta"] * tr / ls["S"] <= LS_SMALL + 1e-12]
    worst = float(np.max(np.abs(small["r_sde"] - 1)))
    drift = ", ".join(f"η={e:g}: {v:.2f}" for e, v in ls[ls["S"] == 1][["eta", "r_sde"]].values)
    stable = ls[np.isfinite(ls["discrete"])]
    worst_d = float(np.max(np.abs(stable["r_disc"] - 1)))
    return [
        Check(f"Linear least squares (σ = 1, Tr H = Tr C = {tr:.2f}): E[L − L*] = η/(4S) Tr H "
              f"within 10% for small η (η Tr H / S ≤ {LS_SMALL:g})",
              f"measured/predicted max deviation {worst:.1%} over {len(small)} (η, S) points; "
              f"at S = 1 the ratio drifts with η: {drift}", verdict(worst <= 0.10), worst),
        Check("Linear least squares: the exact discrete-time formula σ²a/(2(1 − a)) holds "
              "within 10% at every stable η", f"max deviation {worst_d:.1%} over "
              f"{len(stable)} (η, S) points", verdict(worst_d <= 0.10), worst_d)]


def _network_loss_check(ok: pd.DataFrame) -> Check:
    ratio = (ok["loss_avg"] / ok["pred_avg"]).replace([np.inf, -np.inf], np.nan).dropna()
    if ratio.empty:
        return Check("Networks: E[L] = η/(4S) Tr H", "no finished run", "inconclusive")
    text = (f"measured/predicted: median {ratio.median():.2g}, range "
            f"[{ratio.min():.2g}, {ratio.max():.2g}] over {len(ratio)} runs")
    held = bool(((ratio >= 1 / LOSS_FACTOR) & (ratio <= LOSS_FACTOR)).all())
    return Check(f"Networks: time-averaged training loss E[L] = η/(4S) Tr H within a factor "
                 f"{LOSS_FACTOR:g} (assumes K ≈ H and equilibrium)", text, verdict(held),
                 float(ratio.median()))


def _cyclic_check(t: pd.DataFrame) -> Check:
    return _schedule_check(t, "cyclic", "Cyclic batch size and cyclic learning rate with the "
                           "same η/S schedule")


def _schedule_check(t: pd.DataFrame, kind: str, what: str) -> Check:
    """The ``<kind>-lr`` and ``<kind>-bs`` runs of each model and seed end within ACC_TOL
    of test accuracy."""
    parts, diffs = [], []
    for (model, seed), g in t[t["role"] == kind].groupby(["model", "seed"]):
        lr_run = g[g["name"].str.contains(f"{kind}-lr")]
        bs_run = g[g["name"].str.contains(f"{kind}-bs")]
        if len(lr_run) and len(bs_run):
            a, b = lr_run.iloc[0], bs_run.iloc[0]
            diffs.append(abs(a["acc"] - b["acc"]))
            parts.append(f"{model} seed {seed}: test acc {a['acc']:.4f} ({kind} LR) vs "
                         f"{b['acc']:.4f} ({kind} BS); λ_max {a['lam']:.3g} vs {b['lam']:.3g}")
    finite = [d for d in diffs if np.isfinite(d)]
    return Check(f"{what} end within {ACC_TOL * 100:g} points of test accuracy",
                 "; ".join(parts) or "missing runs",
                 verdict(max(finite) <= ACC_TOL if finite else None),
                 max(finite) if finite else None)


# -- figures ---------------------------------------------------------------------------------
MARKERS = "osD^v<>"


def _panels(n: int, width: float = 4.2, height: float = 3.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, np.atleast_1d(fig.subplots(1, n))


def _curve(m: pd.DataFrame, run_id: str, name: str) -> pd.DataFrame:
    return m[(m["run"] == run_id) & (m["name"] == name)].sort_values("step")


def figures(ctx: AnalysisContext, t: pd.DataFrame, ls: pd.DataFrame) -> list:
    out = [_endpoint_figure(t)]
    m = ctx.metrics(["train/loss", "test/acc", "hessian/lambda_max"])
    for model in t["model"].unique():
        out.append(_equal_ratio_figure(
            m, t[(t["model"] == model) & (t["role"].isin(["grid", "large-eta"]))
                 & (t["seed"] == t["seed"].min())], model))
    out.append(_loss_figure(t, ls))
    for model in t["model"].unique():
        for kind in ("cyclic", "step"):
            out.append(_cyclic_figure(m, t[(t["model"] == model) & (t["role"] == kind)
                                           & (t["seed"] == t["seed"].min())], model, kind))
    return out


def _endpoint_figure(t: pd.DataFrame):
    fig, axes = _panels(3)
    ok = t[(t["status"] == "finished") & t["role"].isin(["grid", "large-eta"])]
    sizes = sorted(ok["S"].unique())
    for ci, (model, g) in enumerate(ok.groupby("model")):
        for S, h in g.groupby("S"):
            big = h["role"].iloc[0] == "large-eta"
            kw = dict(color=f"C{ci}", marker=MARKERS[sizes.index(S) % len(MARKERS)], ls="none",
                      mfc="none" if big else f"C{ci}", label=f"{model} S={S}"
                      + (" (large η)" if big else ""))
            for ax, col in zip(axes, ("lam", "trace", "acc")):
                ax.plot(h["ratio"], h[col], **kw)
    ratios = sorted({float(f"{r:.6g}") for r in ok["ratio"]})
    for ax, label in zip(axes, ("λ_max at the endpoint", "Tr H at the endpoint",
                                "test accuracy")):
        ax.set(xscale="log", xlabel="η / S", ylabel=label)
        ax.set_xticks(ratios, [f"{r:.3g}" for r in ratios])  # the grid's ratios, unclipped
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    return "Endpoint sharpness and test accuracy against eta-S", fig


def _equal_ratio_figure(m: pd.DataFrame, t: pd.DataFrame, model: str):
    fig, (ax_l, ax_h) = _panels(2, 5.0)
    ratios = sorted({float(f"{r:.6g}") for r in t["ratio"]})
    sizes = sorted(t["S"].unique())
    for _, r in t.iterrows():
        c = f"C{ratios.index(float(f'{r.ratio:.6g}'))}"
        ls = ("-", "--", ":", "-.")[sizes.index(r["S"]) % 4]
        label = f"η/S={r.ratio:.3g} (η={r.lr:g}, S={r.S})" + (
            " diverged" if r.status == "diverged" else "")
        for ax, name in ((ax_l, "train/loss"), (ax_h, "hessian/lambda_max")):
            s = _curve(m, r["id"], name)
            ax.plot(s["epoch"], s["value"], color=c, ls=ls, lw=2 if ls == ":" else 1.3,
                    label=label)
    ax_l.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax_h.set(xlabel="epoch", ylabel="λ_max", yscale="log")
    ax_h.legend(fontsize=7)
    return f"Equal eta-S: training loss and lambda_max over epochs ({model})", fig


def _loss_figure(t: pd.DataFrame, ls: pd.DataFrame):
    fig, (ax_n, ax_l) = _panels(2, 4.6)
    ok = t[(t["status"] == "finished") & t["role"].isin(["grid", "large-eta"])]
    for ci, (model, g) in enumerate(ok.groupby("model")):
        ax_n.plot(g["pred_avg"], g["loss_avg"], "o", color=f"C{ci}", label=model)
    if len(ok):
        lo = np.nanmin([ok["pred_avg"].min(), ok["loss_avg"].min()]) / 2
        hi = np.nanmax([ok["pred_avg"].max(), ok["loss_avg"].max()]) * 2
        xs = np.array([lo, hi])
        ax_n.plot(xs, xs, "k-", lw=0.8, label="E[L] = η/(4S) Tr H")
        ax_n.fill_between(xs, xs / LOSS_FACTOR, xs * LOSS_FACTOR, color="k", alpha=0.08)
    ax_n.set(xscale="log", yscale="log", xlabel="η/(4S) Tr H (last third)",
             ylabel="mean training loss (last third)", title="networks")
    ax_n.legend(fontsize=7)
    for ci, (S, g) in enumerate(ls.groupby("S")):
        ax_l.plot(g["eta"], g["measured"] / g["sde"], "o", color=f"C{ci}", label=f"S={S}")
        etas = np.linspace(0.005, g["eta"].max() * 1.05, 200)
        disc = [discrete_excess_loss(e, S, LS_SPECTRUM) / sde_excess_loss(e, S, LS_SPECTRUM)
                for e in etas]
        ax_l.plot(etas, disc, "-", color=f"C{ci}", lw=1)
    ax_l.axhline(1, color="k", lw=0.8)
    ax_l.axhspan(0.9, 1.1, color="k", alpha=0.08)
    ax_l.set(xlabel="η", ylabel="E[L − L*] / (η/(4S) Tr H)", yscale="log",
             title="linear least squares (lines: exact discrete)")
    ax_l.legend(fontsize=7)
    return "E[L] against eta-(4S) Tr H", fig


def _cyclic_figure(m: pd.DataFrame, t: pd.DataFrame, model: str, kind: str = "cyclic"):
    fig, axes = _panels(3)
    for i, (_, r) in enumerate(t.iterrows()):
        label = f"{kind} LR" if f"{kind}-lr" in r["name"] else f"{kind} batch size"
        for ax, name in zip(axes, ("train/loss", "test/acc", "hessian/lambda_max")):
            s = _curve(m, r["id"], name)
            ax.plot(s["epoch"], s["value"], color=f"C{i}", ls=("-", "--")[i % 2], label=label)
    for ax, label in zip(axes, ("training loss", "test accuracy", "λ_max")):
        ax.set(xlabel="epoch", ylabel=label)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    return f"{kind.capitalize()} batch size vs {kind} learning rate ({model})", fig


EXPERIMENT = LRBatchRatio()
