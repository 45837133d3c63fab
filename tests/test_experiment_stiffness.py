"""Experiment "stiffness": the grid and the smoke scale end to end."""

import json
import math
import time

import numpy as np

from sgdlab.experiments.stiffness import EXPERIMENT, SCALES, _xi

CLAIMS = ("Within-class cosine stiffness exceeds", "Stiffness falls with input distance",
          "critical length ξ decreases", "the smaller the critical length",
          "Smaller learning rates give higher stiffness")


def test_grid_and_never_crossing():
    assert _xi(math.nan) == math.inf and _xi(2.5) == 2.5
    for scale in EXPERIMENT.scales:
        cfgs = EXPERIMENT.configs(scale)
        assert len(cfgs) == len(SCALES[scale]["lrs"]) * len(SCALES[scale]["seeds"])
        assert all(c["probes"][0]["name"] == "stiffness" and c["probes"][0]["split"] == "train"
                   for c in cfgs)
    assert len(SCALES["cpu"]["lrs"]) >= 3 and len(SCALES["cpu"]["seeds"]) >= 2


def test_smoke_scale_end_to_end(tmp_path):
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("stiffness", store, scale="smoke", quiet=True)
    print(f"\nstiffness smoke: {time.perf_counter() - start:.1f} s")
    runs = store.runs(group="stiffness-smoke")
    assert len(runs) == len(EXPERIMENT.configs("smoke"))
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    run = store.get_run(runs["id"].iloc[0])
    series = run.load_arrays("stiffness")
    assert len(series) >= SCALES["smoke"]["log_points"] and series[0][0] == 0
    c = series[-1][1]["class_cos"]
    assert c.shape == (10, 10) and np.nanmax(np.abs(c)) <= 1
    assert "test pairs" in result.checks[0].claim and "test" in result.checks[0].measured
    html = result.html_path.read_text()
    assert html.count("data:image/png;base64,") == len(result.figure_paths) == 2
    assert "Fort" in html
    assert len(json.loads(result.json_path.read_text())["checks"]) == len(CLAIMS)
