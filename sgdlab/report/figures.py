"""Figures of one run, drawn from its stored metrics and arrays (never from the trainer).

Each figure function takes a :class:`RunView` and returns a list of ``(title, Figure)``;
:data:`FIGURES` lists them in page order. A figure with nothing to draw returns ``[]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


@dataclass
class RunView:
    """Everything a figure may read: the run's config, metrics (long format) and arrays."""

    id: str
    config: dict
    metrics: pd.DataFrame  # columns step, epoch, name, value
    arrays: Callable[[str], list[tuple[int, dict[str, np.ndarray]]]]
    array_names: list[str]

    def series(self, name: str) -> pd.DataFrame:
        m = self.metrics
        return m[m["name"] == name].sort_values("step")

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.metrics["name"].unique() if n.startswith(prefix))


def label_log_axes(fig: Figure) -> None:
    """Give log axes that span under two decades ticks at 1, 2 and 5 × 10^k with plain
    labels: matplotlib labels only powers of ten there, often one tick or none. Axes with
    ticks set by hand (a FixedLocator) are left alone."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    for ax in fig.axes:
        for axis, scale, lim in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()),
                                 (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
            lo, hi = sorted(lim)
            if (scale != "log" or lo <= 0 or hi / lo > 100
                    or isinstance(axis.get_major_locator(), FixedLocator)):
                continue
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())


def render_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, log axes labelled (:func:`label_log_axes`)."""
    import io

    label_log_axes(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def new_figure(width: float = 6.4, height: float = 3.6) -> tuple[Figure, plt.Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def plot_series(ax, view: RunView, name: str, label: str | None = None, **kw) -> bool:
    s = view.series(name)
    if s.empty:
        return False
    ax.plot(s["step"], s["value"], label=label or name, **kw)
    return True


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    if window <= 1 or len(values) == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def loss_figure(view: RunView):
    fig, ax = new_figure()
    batch = view.series("train/batch_loss")
    if not batch.empty:
        w = max(1, len(batch) // 100)
        ax.plot(batch["step"], smooth(batch["value"].to_numpy(), w), lw=0.8, alpha=0.6,
                label=f"batch loss (mean of {w})")
    for name in ("train/loss", "test/loss", "clean/loss", "corrupted/loss"):
        plot_series(ax, view, name, marker=".")
    if not ax.lines:
        return []
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend(fontsize=8)
    return [("Loss", fig)]


def accuracy_figure(view: RunView):
    fig, ax = new_figure()
    for name in ("train/acc", "test/acc", "clean/acc", "corrupted/acc", "corrupted/acc_true"):
        plot_series(ax, view, name, marker=".")
    if not ax.lines:
        return []
    ax.set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    return [("Accuracy", fig)]


def schedule_figure(view: RunView):
    """The learning rate (and a varying batch size) over steps; nothing for constant ones
    (the summary table gives them)."""
    lr, bs = view.series("lr"), view.series("batch_size")
    if lr.empty or (lr["value"].nunique() <= 1 and bs["value"].nunique() <= 1):
        return []
    fig, ax = new_figure(height=2.8)
    plot_series(ax, view, "lr", drawstyle="steps-post", color="C0")
    ax.set(xlabel="step", ylabel="learning rate")
    if not bs.empty and bs["value"].nunique() > 1:
        ax2 = ax.twinx()
        ax2.plot(bs["step"], bs["value"], drawstyle="steps-post", color="C1")
        ax2.set_ylabel("batch size", color="C1")
    return [("Schedules", fig)]


RESERVED = ("train/", "test/", "clean/", "corrupted/", "lr", "batch_size", "n_params", "n_train")


def probe_scalars_figure(view: RunView):
    """One panel per probe for scalar series no dedicated figure draws."""
    claimed = {name for fn in FIGURES for name in getattr(fn, "claims", ())}
    groups: dict[str, list[str]] = {}
    for name in view.names():
        if name.startswith(RESERVED) or name.startswith(tuple(claimed)) or "/" not in name:
            continue
        groups.setdefault(name.split("/", 1)[0], []).append(name)
    out = []
    for names in groups.values():
        for name in names[:12]:  # one small panel per series: their scales differ
            fig, ax = new_figure(4.2, 2.8)
            plot_series(ax, view, name, label=name.split("/", 1)[1], marker=".")
            values = view.series(name)["value"].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
                ax.set_yscale("log")
            ax.set(xlabel="step", ylabel=name.split("/", 1)[1], title=name)
            out.append((f"Probe: {name}", fig))
    return out


FIGURES: list[Callable[[RunView], list[tuple[str, Figure]]]] = [
    loss_figure, accuracy_figure, schedule_figure,
]


def register_figure(fn: Callable, claims: tuple[str, ...] = (), position: int | None = None):
    """Add a figure function; ``claims`` are prefixes of the metric names it draws (kept
    off the generic per-probe panels)."""
    fn.claims = claims
    FIGURES.insert(len(FIGURES) if position is None else position, fn)
    return fn


def all_figures(view: RunView) -> list[tuple[str, Figure]]:
    out = []
    for fn in [*FIGURES, probe_scalars_figure]:
        out.extend(fn(view))
    return out
