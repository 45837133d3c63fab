"""Report figures for the probes: each draws from stored metrics and arrays only."""

from __future__ import annotations

import numpy as np

from sgdlab.report.figures import RunView, new_figure, plot_series, register_figure


def _last_arrays(view: RunView, name: str, count: int = 1):
    if name not in view.array_names:
        return []
    items = view.arrays(name)
    if count >= len(items):
        return items
    picks = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in picks]


def sharpness_figure(view: RunView):
    """lambda_max (and top-k) with the stability threshold 2/eta (or (2+2beta)/eta). The
    axis spans the eigenvalues; a threshold far above them is named in the legend rather
    than drawn (it would squeeze them into the bottom of the panel)."""
    fig, ax = new_figure()
    if not plot_series(ax, view, "hessian/lambda_max", label=r"$\lambda_{max}(H)$", marker="."):
        return []
    for name in view.names("hessian/eig_"):
        plot_series(ax, view, name, label=name.split("/")[1], lw=0.8, alpha=0.7)
    eigs = np.concatenate([view.series(n)["value"].to_numpy(dtype=float)
                           for n in ["hessian/lambda_max", *view.names("hessian/eig_")]])
    eigs = eigs[np.isfinite(eigs) & (eigs > 0)]
    stability = view.series("hessian/stability")["value"].to_numpy(dtype=float)
    log = eigs.size > 0 and eigs.max() / eigs.min() > 20
    top = eigs.max() if eigs.size else np.nan
    if stability.size and eigs.size and np.nanmin(stability) > 3 * top:
        ax.plot([], [], ls="--", color="k",
                label=rf"$2/\eta$ = {np.nanmin(stability):.3g} (above the axis)")
    else:
        plot_series(ax, view, "hessian/stability", label=r"$2/\eta$ (stability)", ls="--",
                    color="k")
    ax.set(xlabel="step", ylabel="eigenvalue", yscale="log" if log else "linear")
    if not log and eigs.size:
        ax.set_ylim(bottom=min(0.0, float(eigs.min())))
    ax.legend(fontsize=7)
    return [("Sharpness: top Hessian eigenvalues and the stability threshold", fig)]


register_figure(sharpness_figure,
                claims=("hessian/lambda_max", "hessian/stability", "hessian/eig_"))


def _twin(ax, series, label: str) -> None:
    """``series`` on a twin y axis of ``ax`` labelled ``label`` in its colour (if any)."""
    if not series.empty:
        twin = ax.twinx()
        twin.plot(series["step"], series["value"], marker=".", color="C1", lw=0.8)
        twin.set_ylabel(label, color="C1")


def hessian_cost_figure(view: RunView):
    """What each ``hessian`` measurement cost (Hessian-vector products, seconds) and how
    accurate it is (the largest Lanczos residual ``||H v - lambda v||``, log axis)."""
    products, residual = view.series("hessian/products"), view.series("hessian/residual_max")
    if products.empty and residual.empty:
        return []
    fig = new_figure(9, 3.0)[0]
    fig.clear()
    ax1, ax2 = fig.subplots(1, 2)
    if not products.empty:
        ax1.plot(products["step"], products["value"], marker=".", color="C0")
        ax1.set(xlabel="step", ylabel="Hessian-vector products")
        _twin(ax1, view.series("hessian/seconds"), "seconds")
    if not residual.empty:
        values = residual["value"].to_numpy(dtype=float)
        ax2.plot(residual["step"], values, marker=".", color="C2")
        ax2.set(xlabel="step", ylabel=r"largest residual $\|Hv - \lambda v\|$",
                yscale="log" if (values > 0).all() else "linear")
    return [("Hessian probe: cost (products, seconds) and Lanczos residual", fig)]


register_figure(hessian_cost_figure,
                claims=("hessian/products", "hessian/seconds", "hessian/residual_max"))


def loss_probe_figure(view: RunView):
    """The ``loss`` probe: loss and accuracy per split (train, test, clean, corrupted), on
    a symlog step axis since its schedule is often log-spaced."""
    names = view.names("loss/")
    if not names:
        return []
    fig = new_figure(9, 3.4)[0]
    fig.clear()
    axes = fig.subplots(1, 2)
    splits = sorted({name[len("loss/"):].rsplit("/", 1)[0] for name in names})
    for ax, kind in zip(axes, ("loss", "acc")):
        for name in names:
            split, metric = name[len("loss/"):].rsplit("/", 1)
            if metric.startswith(kind):
                plain = metric == kind
                plot_series(ax, view, name, label=split + ("" if plain else " (true labels)"),
                            marker=".", ls="-" if plain else "--",
                            color=f"C{splits.index(split)}")
        ax.set(xlabel="step", ylabel=kind if kind == "loss" else "accuracy", xscale="symlog")
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    return [("Loss and accuracy (loss probe)", fig)]


register_figure(loss_probe_figure, claims=("loss/",))


def trace_figure(view: RunView):
    out = []
    s, se = view.series("hessian/trace"), view.series("hessian/trace_se")
    if not s.empty:
        fig, ax = new_figure()
        err = se["value"].to_numpy() if len(se) == len(s) else None
        ax.errorbar(s["step"], s["value"], yerr=err, marker=".", capsize=2, label="Tr H ± SE")
        ax.set(xlabel="step", ylabel="Tr H")
        ax.legend(fontsize=8)
        out.append(("Hessian trace", fig))
    fig, ax = new_figure()
    drew = plot_series(ax, view, "gradient_noise/trace_K", label="Tr K", marker=".")
    drew |= plot_series(ax, view, "gradient_noise/lambda_max_K", label=r"$\lambda_{max}(K)$",
                        marker=".")
    if drew:
        ax.set(xlabel="step", ylabel="gradient covariance", yscale="log")
        ax.legend(fontsize=8)
        out.append(("Gradient noise: Tr K and λmax(K)", fig))
    return out


register_figure(trace_figure, claims=("hessian/trace", "hessian/trace_se",
                                      "gradient_noise/trace_K", "gradient_noise/lambda_max_K"))


def density_figure(view: RunView):
    items = _last_arrays(view, "hessian_density", 4)
    if not items:
        return []
    fig, ax = new_figure()
    for step, arrays in items:
        ax.plot(arrays["grid"], np.maximum(arrays["density"], 1e-12), label=f"step {step}")
    ax.set(xlabel="eigenvalue", ylabel="density", yscale="log")
    ax.legend(fontsize=7)
    return [("Hessian spectral density (SLQ)", fig)]


register_figure(density_figure)


def csr_figure(view: RunView):
    """Critical sample ratio and the mean LASS iterations of the critical samples."""
    if view.series("csr/csr").empty and view.series("csr/mean_iter").empty:
        return []
    fig = new_figure(height=4.2)[0]
    fig.clear()
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    plot_series(ax1, view, "csr/csr", label="critical sample ratio", marker=".")
    plot_series(ax2, view, "csr/mean_iter", label="mean iterations", marker=".", color="C1")
    ax1.set(ylabel="CSR")
    ax2.set(xlabel="step", ylabel="mean LASS iterations\n(critical samples)")
    return [("Critical sample ratio", fig)]


register_figure(csr_figure, claims=("csr/csr", "csr/mean_iter"))


def stiffness_figures(view: RunView):
    """Class stiffness matrices and stiffness against input distance, cosine and sign; the
    critical length (first zero crossing) as a dashed line where finite."""
    items = _last_arrays(view, "stiffness", 3)
    if not items:
        return []
    out = []
    step, last = items[-1]
    kinds = [k for k in ("cos", "sign") if f"class_{k}" in last]
    if kinds:
        fig = new_figure(4.4 * len(kinds), 3.8)[0]
        fig.clear()
        for ax, kind in zip(fig.subplots(1, len(kinds), squeeze=False)[0], kinds):
            m = last[f"class_{kind}"]
            lim = 1.0 if kind == "sign" else float(np.nanmax(np.abs(m), initial=0.0)) or 1.0
            im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set(xlabel="class", ylabel="class",
                   title=f"{'cosine' if kind == 'cos' else 'sign'} stiffness, step {step}")
        out.append(("Class stiffness matrices (cosine and sign)", fig))
    stored = {kind: view.series(f"stiffness/critical_length{suffix}")
              .groupby("step")["value"].last()
              for kind, suffix in (("cos", ""), ("sign", "_sign"))}
    kinds = [k for k in ("cos", "sign") if f"stiffness_{k}" in last]
    if not kinds:
        return out
    fig = new_figure(4.4 * len(kinds), 3.4)[0]
    fig.clear()
    for ax, kind in zip(fig.subplots(1, len(kinds), squeeze=False)[0], kinds):
        for i, (step, arrays) in enumerate(items):
            centers, values = arrays["bin_centers"], arrays[f"stiffness_{kind}"]
            ax.plot(centers, values, marker=".", color=f"C{i}", label=f"step {step}")
            crit = stored[kind].get(step, np.nan)
            if np.isfinite(crit):
                ax.axvline(crit, color=f"C{i}", ls="--", lw=0.9,
                           label=f"critical length {crit:.3g}")
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xlabel="input distance",
               ylabel=f"{'cosine' if kind == 'cos' else 'sign'} stiffness")
        ax.legend(fontsize=7)
    out.append(("Stiffness against input distance (cosine and sign)", fig))
    return out


register_figure(stiffness_figures)


def bowl_figure(view: RunView, columns: int = 3):
    """Loss along each top eigenvector in units of the SGD step's projection on it; a dot
    marks where the step lands, u = sign(<step, v_i>)."""
    items = [(s, a) for s, a in _last_arrays(view, "sharpest", 10**6) if "bowl" in a]
    if not items:
        return []
    picks = [items[i] for i in
             np.unique(np.linspace(0, len(items) - 1, columns).round().astype(int))]
    fig = new_figure(3.3 * len(picks) + 1.2, 3.2)[0]
    fig.clear()
    axes = fig.subplots(1, len(picks), squeeze=False)[0]
    for ax, (step, arrays) in zip(axes, picks):
        offsets = arrays["offsets"]
        for i, row in enumerate(arrays["bowl"]):
            u = float(np.sign(arrays["step_projection"][i]))
            ax.plot(offsets, row, color=f"C{i}", lw=1.0, label=f"v{i + 1}")
            ax.plot([u], [np.interp(u, offsets, row)], "o", color=f"C{i}", ms=4, gid="step")
        ax.set(title=f"step {step}", xlabel="offset (units of |step · v|)")
    axes[0].set_ylabel("loss")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    return [("Bowl: loss along the sharpest directions (dot: where the SGD step lands)", fig)]


register_figure(bowl_figure)


def weights_figure(view: RunView):
    """‖θ‖ and ‖θ − θ₀‖; beside them the update size ‖θ_{t+1} − θ_t‖ (relative on a twin
    axis)."""
    fig = new_figure(9, 3.2)[0]
    fig.clear()
    ax1, ax2 = fig.subplots(1, 2)
    drew = False
    for name, label in (("weights/norm", "‖θ‖"), ("weights/dist_init", "‖θ − θ₀‖")):
        drew |= plot_series(ax1, view, name, label=label, marker=".")
    moved = plot_series(ax2, view, "weights/update", label="‖θₜ₊₁ − θₜ‖", marker=".")
    if not (drew or moved):
        return []
    ax1.set(xlabel="step", ylabel="parameter norm")
    if drew:
        ax1.legend(fontsize=8)
    ax2.set(xlabel="step", ylabel="update size ‖θₜ₊₁ − θₜ‖")
    _twin(ax2, view.series("weights/rel_update"), "relative update")
    return [("Weights", fig)]


register_figure(weights_figure, claims=("weights/norm", "weights/dist_init", "weights/update",
                                        "weights/rel_update"))


def residual_figure(view: RunView):
    items = _last_arrays(view, "residual", 3)
    if not items:
        return []
    fig = new_figure(9.0, 3.2)[0]
    fig.clear()
    ax1, ax2 = fig.subplots(1, 2)
    for step, arrays in items:
        blocks = np.arange(1, len(arrays["cos"]) + 1)
        ax1.plot(blocks, arrays["cos"], marker=".", label=f"step {step}")
        ax2.plot(blocks, arrays["ratio"], marker=".", label=f"step {step}")
    ax1.set(xlabel="block", ylabel=r"cos$(F(h), \partial L/\partial h)$")
    ax2.set(xlabel="block", ylabel=r"$\|F(h)\| / \|h\|$", yscale="log")
    ax1.legend(fontsize=7)
    return [("Residual blocks: iterative inference", fig)]


register_figure(residual_figure)
