"""Run report panels a newcomer found hard to read, drawn from a synthetic run: the
Hessian probe's cost and residual, a stability threshold far above the eigenvalues, the
weights' labels, and no schedule panel for a constant learning rate."""

from __future__ import annotations

import pandas as pd

from sgdlab.report.figures import RunView, all_figures


def view(series: dict[str, list[float]]) -> RunView:
    rows = [(step, None, name, value) for name, values in series.items()
            for step, value in enumerate(values)]
    metrics = pd.DataFrame(rows, columns=["step", "epoch", "name", "value"])
    return RunView("r", {}, metrics, lambda name: [], [])


HESSIAN = {"hessian/lambda_max": [1.0, 4.0, 8.0], "hessian/eig_1": [0.8, 2.0, 5.0],
           "hessian/stability": [76.0, 76.0, 76.0], "hessian/products": [40, 18, 12],
           "hessian/seconds": [0.5, 0.2, 0.1], "hessian/residual_max": [1e-5, 3e-6, 2e-5],
           "weights/norm": [3.0, 4.0, 5.0], "weights/dist_init": [0.0, 1.0, 2.0],
           "weights/update": [0.1, 0.05, 0.02], "weights/rel_update": [0.03, 0.01, 0.004],
           "lr": [0.1, 0.1, 0.1], "batch_size": [64, 64, 64]}


def test_panels_are_labelled_and_scaled():
    figures = dict(all_figures(view(HESSIAN)))
    assert "Schedules" not in figures  # a constant learning rate: the summary says it
    sharp = figures["Sharpness: top Hessian eigenvalues and the stability threshold"].axes[0]
    low, high = sharp.get_ylim()
    assert high < 20  # eigenvalues 1..8 fill the panel; 2/eta = 76 is named instead
    assert any("76" in label and "above" in label for label in
               sharp.get_legend_handles_labels()[1])
    cost = figures["Hessian probe: cost (products, seconds) and Lanczos residual"].axes
    residual = next(ax for ax in cost if "residual" in ax.get_ylabel())
    assert residual.get_yscale() == "log"  # a 1e-5 residual does not read as zero
    assert {ax.get_ylabel() for ax in cost} >= {"Hessian-vector products", "seconds"}
    assert all(ax.get_ylabel() for ax in figures["Weights"].axes)
    assert not [t for t in figures if t.startswith("Probe: hessian")]  # nothing left over


def test_a_threshold_near_the_eigenvalues_is_drawn_and_a_varying_lr_gets_its_panel():
    series = {**HESSIAN, "hessian/stability": [10.0, 10.0, 10.0], "lr": [0.2, 0.1, 0.05]}
    figures = dict(all_figures(view(series)))
    assert "Schedules" in figures
    sharp = figures["Sharpness: top Hessian eigenvalues and the stability threshold"].axes[0]
    assert any(line.get_linestyle() == "--" and len(line.get_xdata()) == 3
               for line in sharp.lines)
