"""The report draws every recorded probe; the bowl marks where the SGD step lands."""

import numpy as np
import pandas as pd
import pytest
from conftest import small_config

from sgdlab.report import probe_figures
from sgdlab.report.figures import RunView, all_figures
from sgdlab.report.html import run_view

ALL_PROBES = [
    {"name": "hessian", "every": "end", "k": 2, "n": 32, "tol": 0.05, "trace": True,
     "trace_products": 30, "trace_rtol": 0.5},
    {"name": "hessian_density", "every": "end", "n": 32, "steps": 8},
    {"name": "gradient_noise", "every": 6, "n": 32},
    {"name": "sharpest", "every": 5, "k": 3, "n": 32, "tol": 0.05, "points": 5},
    {"name": "csr", "every": 6, "n": 32, "max_iter": 3, "radius": 0.5},
    {"name": "stiffness", "every": 6, "n": 24, "bins": 4},
    {"name": "residual", "every": 6, "n": 32},
    {"name": "weights", "every": 4},
    {"name": "loss", "log_points": 5},
]


def view_of(arrays: dict, metrics: pd.DataFrame | None = None) -> RunView:
    if metrics is None:
        metrics = pd.DataFrame(columns=["step", "epoch", "name", "value"])
    return RunView("r", {}, metrics, lambda name: arrays[name], list(arrays))


def test_the_report_draws_every_probe(store):
    from sgdlab.train import train

    cfg = small_config(**{"train.epochs": 1, "train.max_steps": 10, "model.name": "resnet20",
                          "model.width_mult": 0.25, "model.batchnorm": True},
                       probes=ALL_PROBES)
    run = train(cfg, store)
    figures = dict(all_figures(run_view(store, run)))
    for title in ("Sharpness: top Hessian eigenvalues and the stability threshold",
                  "Hessian trace", "Gradient noise: Tr K and λmax(K)",
                  "Hessian spectral density (SLQ)", "Critical sample ratio",
                  "Class stiffness matrices (cosine and sign)",
                  "Stiffness against input distance (cosine and sign)",
                  "Bowl: loss along the sharpest directions (dot: where the SGD step lands)",
                  "Weights", "Residual blocks: iterative inference",
                  "Loss and accuracy (loss probe)"):
        assert title in figures, (title, sorted(figures))
    heat = [ax.get_title() for ax in figures["Class stiffness matrices (cosine and sign)"].axes]
    assert any(t.startswith("cosine") for t in heat) and any(t.startswith("sign") for t in heat)
    csr_axes = figures["Critical sample ratio"].axes
    assert [ax.get_ylabel().split("\n")[0] for ax in csr_axes] == ["CSR", "mean LASS iterations"]
    bowl = figures["Bowl: loss along the sharpest directions (dot: where the SGD step lands)"]
    assert all(len([ln for ln in ax.lines if ln.get_gid() == "step"]) == 3 for ax in bowl.axes)
    loss_axes = figures["Loss and accuracy (loss probe)"].axes
    assert [ax.get_legend_handles_labels()[1] for ax in loss_axes] == [["test", "train"]] * 2
    # csr and loss are drawn by their own figures, never again in the generic panels
    assert "Probe: csr" not in figures and "Probe: loss" not in figures


def test_bowl_marker_sits_at_the_sign_of_the_step_projection():
    offsets = np.linspace(-2, 2, 9)
    bowl = np.stack([offsets ** 2, 2 * offsets ** 2 + 1, offsets ** 2 - offsets])
    arrays = {"sharpest": [(5, {"offsets": offsets, "bowl": bowl,
                                "step_projection": np.array([-0.3, 0.2, -1e-3])})]}
    [(_, fig)] = probe_figures.bowl_figure(view_of(arrays))
    marks = [ln for ln in fig.axes[0].lines if ln.get_gid() == "step"]
    assert [ln.get_xdata()[0] for ln in marks] == [-1.0, 1.0, -1.0]
    assert [ln.get_ydata()[0] for ln in marks] == pytest.approx([1.0, 3.0, 2.0])
    assert len(fig.axes[0].get_lines()) == 6  # all k curves, not only the first three


def test_stiffness_marks_the_critical_length_only_when_finite():
    centers = np.array([1.0, 2.0, 3.0, 4.0])
    arrays = {"stiffness": [(0, {"bin_centers": centers,
                                 "stiffness_cos": np.array([0.5, 0.1, -0.1, -0.2]),
                                 "stiffness_sign": np.array([0.8, 0.6, 0.4, 0.2]),
                                 "class_cos": np.eye(2), "class_sign": np.eye(2)})]}
    metrics = pd.DataFrame({"step": [0, 0], "epoch": [0, 0],
                            "name": ["stiffness/critical_length",
                                     "stiffness/critical_length_sign"],
                            "value": [2.5, np.nan]})
    figs = dict(probe_figures.stiffness_figures(view_of(arrays, metrics)))
    cos_ax, sign_ax = figs["Stiffness against input distance (cosine and sign)"].axes
    dashed = [ln.get_xdata()[0] for ln in cos_ax.lines if ln.get_linestyle() == "--"]
    assert dashed == [2.5]
    assert not [ln for ln in sign_ax.lines if ln.get_linestyle() == "--"]


def test_log_axes_under_two_decades_get_readable_ticks():
    from matplotlib.ticker import FixedLocator

    from sgdlab.report.figures import label_log_axes, new_figure, render_png

    fig, ax = new_figure()
    ax.plot([1, 2, 3], [1.7, 9.0, 25.0])
    ax.set_yscale("log")
    wide = fig.add_subplot(2, 1, 2)
    wide.plot([1, 2], [1e-3, 1e3])
    wide.set(yscale="log", xscale="log")
    wide.set_xticks([1, 2], ["one", "two"])
    label_log_axes(fig)
    lo, hi = ax.get_ylim()
    shown = [t for t in ax.yaxis.get_major_locator().tick_values(lo, hi) if lo <= t <= hi]
    assert [ax.yaxis.get_major_formatter()(t) for t in shown] == ["2", "5", "10", "20"]
    assert not isinstance(wide.yaxis.get_major_formatter(), type(ax.yaxis.get_major_formatter()))
    assert isinstance(wide.xaxis.get_major_locator(), FixedLocator)  # hand-set ticks kept
    assert render_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
