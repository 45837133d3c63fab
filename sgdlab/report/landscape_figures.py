"""Report figures for the loss landscape of a run: every ``landscape-*`` array the
``sgdlab landscape`` command stored (the newest step of each), drawn from the arrays and
their ``meta_json`` document alone (the format of :mod:`sgdlab.landscape.storage`).

- a slice with one axis: loss (and accuracy) along the line;
- a slice with two axes: loss contours on the plane, the center marked; a trajectory
  plane also draws the run's path (its principal coordinates, start to end);
- a path: loss and accuracy against t, the chord between the ends and the barrier.
"""

from __future__ import annotations

import json

import numpy as np

from sgdlab.report.figures import RunView, new_figure, register_figure

PREFIX = "landscape-"


def _directions_label(recipes: list[dict]) -> str:
    kinds = {r.get("kind") for r in recipes}
    if kinds == {"random"}:
        r = recipes[0]
        return f"{r['normalization']}-normalized random directions (seed {r['seed']})"
    if kinds == {"hessian"}:
        return "top Hessian eigenvectors (" + ", ".join(
            f"λ={r['eigenvalue']:.3g}" for r in recipes) + ")"
    if kinds == {"pca"}:
        return "principal directions of the trajectory"
    return "given directions"


def _where(meta: dict) -> str:
    inner = meta.get("meta", {})
    return f"{inner.get('split', 'train')}, {inner.get('num_examples', '?')} examples"


def _slice_figure(name: str, a: dict, meta: dict):
    recipes = meta["recipes"]
    axes = [a[f"axis_{i}"] for i in range(len(recipes))]
    loss, acc = a["loss"], a["accuracy"]
    label = _directions_label(recipes)
    if len(axes) == 1:
        fig, ax = new_figure()
        ax.plot(axes[0], loss, color="C0", label="loss")
        ax.set(xlabel="coordinate along the direction", ylabel="loss", yscale="log")
        if np.isfinite(acc).any():
            ax2 = ax.twinx()
            ax2.plot(axes[0], acc, color="C1", ls="--", label="accuracy")
            ax2.set(ylabel="accuracy", ylim=(0, 1.02))
        ax.axvline(0, color="k", lw=0.5)
        return [(f"Landscape line ({name}): {label}; {_where(meta)}", fig)]
    fig, ax = new_figure(5.6, 4.6)
    positive = loss[np.isfinite(loss) & (loss > 0)]
    grid_x, grid_y = np.meshgrid(axes[0], axes[1], indexing="ij")
    if len(positive) and positive.max() / positive.min() > 20:
        levels = np.geomspace(positive.min(), positive.max(), 20)
        cs = ax.contour(grid_x, grid_y, loss, levels=levels, cmap="viridis", linewidths=0.8)
        cbar_label = "loss (log-spaced levels)"
    else:
        cs = ax.contour(grid_x, grid_y, loss, levels=20, cmap="viridis", linewidths=0.8)
        cbar_label = "loss"
    fig.colorbar(cs, ax=ax, label=cbar_label)
    ax.plot([0], [0], "k*", ms=9, label="center (final weights)")
    title = f"Landscape plane ({name}): {label}; {_where(meta)}"
    if "path_coordinates" in a:
        c = a["path_coordinates"]
        ax.plot(c[:, 0], c[:, 1], "-o", color="C3", ms=2.5, lw=1, label="trajectory")
        ax.plot(c[0, 0], c[0, 1], "s", color="C3", ms=6, label="start")
        ex = a.get("explained", np.full(2, np.nan))
        ax.set(xlabel=f"PC 1 ({100 * ex[0]:.1f}% of the variance)",
               ylabel=f"PC 2 ({100 * ex[1]:.1f}%)")
        h = meta.get("meta", {}).get("history")
        if h:
            kb = h["disk_bytes"] / 2**10
            stored = f"{kb:.1f} kB" if kb < 1024 else f"{kb / 1024:.1f} MB"
            title += (f"; history {h['points']} points × {h['parameters']:,} ({h['dtype']}), "
                      f"{stored} stored")
    else:
        ax.set(xlabel="coordinate 1", ylabel="coordinate 2")
    ax.legend(fontsize=7, loc="upper right")
    return [(title, fig)]


def _path_figure(name: str, a: dict, meta: dict):
    ts, loss, acc = a["ts"], a["loss"], a["accuracy"]
    s = meta.get("summary", {})
    fig, ax = new_figure()
    ax.plot(ts, loss, "-o", ms=3, color="C0", label="loss")
    la, lb = s.get("endpoint_loss", [loss[ts == 0][0], loss[ts == 1][0]])
    inside = (ts >= 0) & (ts <= 1)
    ax.plot(ts[inside], (1 - ts[inside]) * la + ts[inside] * lb, color="C0", lw=0.7, ls=":",
            label="chord between the ends")
    ax.set(xlabel="t (0: this run, 1: the other)", ylabel="loss")
    if np.isfinite(acc).any():
        ax2 = ax.twinx()
        ax2.plot(ts, acc, color="C1", ls="--", label="accuracy")
        ax2.set(ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper left")
    other = meta.get("meta", {}).get("other", "")
    return [(f"Landscape path ({name}{', to ' + other if other else ''}): barrier "
             f"{s.get('barrier', float('nan')):.3g}; {_where(meta)}", fig)]


def landscape_figures(view: RunView):
    out = []
    for name in view.array_names:
        if not name.startswith(PREFIX):
            continue
        items = view.arrays(name)
        if not items or "meta_json" not in items[-1][1]:
            continue
        arrays = items[-1][1]
        meta = json.loads(str(arrays["meta_json"]))
        short = name[len(PREFIX):]
        if meta.get("kind") == "slice":
            out += _slice_figure(short, arrays, meta)
        elif meta.get("kind") == "path":
            out += _path_figure(short, arrays, meta)
    return out


register_figure(landscape_figures)
