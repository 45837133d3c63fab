"""Experiment "capacity": the threshold and double-descent logic on synthetic sweeps, the
grid, and the smoke scale end to end."""

import json
import time

import pandas as pd

from sgdlab.experiments.capacity import (
    EXPERIMENT,
    SCALES,
    _double_descent,
    _no_overfit,
    interpolation_threshold,
)

CLAIMS = ("Optimization gets easier", "Test error does not grow", "test error peaks near",
          "distance from initialization per hidden unit")


def sweep(errs, accs, p=0.2):
    P = [100 * 2 ** i for i in range(len(errs))]
    return pd.DataFrame({"P": P, "err": errs, "train_acc": accs, "p": p, "seed": 0,
                         "status": "finished"})


def test_interpolation_threshold_and_peak():
    t = sweep([0.5, 0.3, 0.25, 0.4, 0.3, 0.2], [0.5, 0.8, 0.95, 0.995, 1.0, 1.0])
    assert interpolation_threshold(t) == 800
    assert interpolation_threshold(t.assign(train_acc=0.5)) is None
    held = _double_descent(t, 800)
    assert held.verdict == "held" and "peak at P = 800" in held.measured
    flat = t.assign(err=[0.5, 0.3, 0.25, 0.24, 0.23, 0.2])  # no peak: monotone
    assert _double_descent(flat, 800).verdict == "not held"


def test_no_overfit_after_the_threshold():
    t = sweep([0.5, 0.3, 0.2, 0.18, 0.17, 0.17], [0.5, 0.9, 0.995, 1, 1, 1], p=0.0)
    assert _no_overfit(t, interpolation_threshold(t)).verdict == "held"
    worse = t.assign(err=[0.5, 0.3, 0.2, 0.22, 0.25, 0.3])
    assert _no_overfit(worse, 400).verdict == "not held"
    assert _no_overfit(t, None).verdict == "inconclusive"


def test_grid_spans_under_to_over_parametrized():
    for scale in EXPERIMENT.scales:
        sc, cfgs = SCALES[scale], EXPERIMENT.configs(scale)
        n, d = sc["data"]["n_train"], {"digits": 64, "mnist": 784}[sc["data"]["name"]]
        P = [(d + 1) * h + (h + 1) * 10 for h in sc["widths"]]
        assert min(P) < n * 10 / 4 and max(P) > 1.5 * n * 10  # from below n K to above it
        assert len(cfgs) == len(sc["widths"]) * len(sc["noise"]) * len(sc["seeds"])
        assert all(c["model"]["depth"] == 1 for c in cfgs)


def test_smoke_scale_end_to_end(tmp_path):
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("capacity", store, scale="smoke", quiet=True)
    print(f"\ncapacity smoke: {time.perf_counter() - start:.1f} s")
    assert len(store.runs(group="capacity-smoke")) == len(EXPERIMENT.configs("smoke"))
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    assert result.checks[0].verdict == "held"  # wider nets reach lower loss even at smoke
    html = result.html_path.read_text()
    assert html.count("data:image/png;base64,") == len(result.figure_paths) == 1
    assert "Nakkiran" in html
    data = json.loads(result.json_path.read_text())
    assert len(data["checks"]) == len(CLAIMS)
