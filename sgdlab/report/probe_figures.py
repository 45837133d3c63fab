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
    """lambda_max (and top-k) with the stability threshold 2/eta (or (2+2beta)/eta)."""
    fig, ax = new_figure()
    if not plot_series(ax, view, "hessian/lambda_max", label=r"$\lambda_{max}(H)$", marker="."):
        return []
    for name in view.names("hessian/eig_"):
        plot_series(ax, view, name, label=name.split("/")[1], lw=0.8, alpha=0.7)
    plot_series(ax, view, "hessian/stability", label=r"$2/\eta$ (stability)", ls="--", color="k")
    ax.set(xlabel="step", ylabel="eigenvalue", yscale="log")
    ax.legend(fontsize=7)
    return [("Sharpness: top Hessian eigenvalues and the stability threshold", fig)]


register_figure(sharpness_figure,
                claims=("hessian/lambda_max", "hessian/stability", "hessian/eig_"))


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
    fig, ax = new_figure(height=3.0)
    if not plot_series(ax, view, "csr/csr", label="critical sample ratio", marker="."):
        return []
    ax.set(xlabel="step", ylabel="CSR")
    return [("Critical sample ratio", fig)]


register_figure(csr_figure, claims=("csr/csr", "csr/mean_iter"))


def stiffness_figures(view: RunView):
    items = _last_arrays(view, "stiffness", 3)
    if not items:
        return []
    out = []
    step, last = items[-1]
    if "class_cos" in last:
        fig, ax = new_figure(4.6, 4.0)
        m = last["class_cos"]
        im = ax.imshow(m, cmap="RdBu_r", vmin=-np.nanmax(np.abs(m)), vmax=np.nanmax(np.abs(m)))
        fig.colorbar(im, ax=ax)
        ax.set(xlabel="class", ylabel="class", title=f"cosine stiffness, step {step}")
        out.append(("Class stiffness matrix", fig))
    fig, ax = new_figure()
    for step, arrays in items:
        ax.plot(arrays["bin_centers"], arrays["stiffness_cos"], marker=".", label=f"step {step}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="input distance", ylabel="cosine stiffness")
    ax.legend(fontsize=7)
    out.append(("Stiffness against input distance", fig))
    return out


register_figure(stiffness_figures)


def bowl_figure(view: RunView):
    """Loss along the top eigenvectors in units of the SGD step's projection."""
    items = [(s, a) for s, a in _last_arrays(view, "sharpest", 10**6) if "bowl" in a]
    if not items:
        return []
    picks = [items[i] for i in np.unique(np.linspace(0, len(items) - 1, 3).round().astype(int))]
    fig = new_figure(9.0, 3.0)[0]
    fig.clear()
    axes = fig.subplots(1, len(picks), squeeze=False)[0]
    for ax, (step, arrays) in zip(axes, picks):
        for i, row in enumerate(arrays["bowl"][:3]):
            ax.plot(arrays["offsets"], row, label=f"v{i + 1}")
        ax.axvline(1.0, color="k", ls=":", lw=0.8)
        ax.set(title=f"step {step}", xlabel="offset (SGD steps)")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    return [("Bowl: loss along the sharpest directions", fig)]


register_figure(bowl_figure)


def weights_figure(view: RunView):
    fig, ax = new_figure()
    drew = False
    for name, label in (("weights/norm", "‖θ‖"), ("weights/dist_init", "‖θ − θ₀‖")):
        drew |= plot_series(ax, view, name, label=label, marker=".")
    if not drew:
        return []
    ax.set(xlabel="step", ylabel="norm")
    ax.legend(fontsize=8)
    return [("Weights", fig)]


register_figure(weights_figure, claims=("weights/norm", "weights/dist_init"))


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
