"""Experiment "edge-of-stability": statistics on synthetic curves, the smoke scale end to end."""

import json
import math
import time

import numpy as np
import pytest

from sgdlab.experiments.edge_of_stability import EXPERIMENT, edge_statistics

CLAIMS = ("Progressive sharpening", "reaches 2/η", "training loss still decreases")


def test_edge_statistics_on_a_synthetic_edge():
    eta = 0.5  # 2/η = 4
    steps = np.arange(0, 1001, 10)
    lam = np.where(steps < 400, 2 + steps / 200, 4 + 0.1 * np.sin(steps))
    loss = np.stack([np.arange(1001), 1 / (1 + np.arange(1001) / 100)
                     + 0.01 * (np.arange(1001) % 7 == 0)], 1)
    s = edge_statistics(np.stack([steps, lam], 1), loss, eta)
    assert s["t_reach"] == 320  # first λ η/2 >= 0.9
    assert s["sharpening"] == pytest.approx(3.6 / 2)  # λ_max(t_reach) / λ_max(0)
    assert s["hover"] == pytest.approx(1, abs=0.05) and s["peak"] >= 1
    assert s["loss_drop"] < 1 and s["rises"] > 0


def test_edge_statistics_when_never_reaching():
    s = edge_statistics(np.array([[0, 1.0], [10, 1.2]]), np.array([[0, 1.0], [10, 0.5]]), 0.5)
    assert s["t_reach"] is None and math.isnan(s["loss_drop"]) and s["peak"] == 0.3
    assert s["sharpening"] == pytest.approx(1.2)  # to the last step
    assert math.isnan(edge_statistics(np.empty((0, 2)), np.empty((0, 2)), 0.1)["sharpening"])


def test_configs_are_full_batch_with_the_full_batch_hessian():
    for scale in EXPERIMENT.scales:
        for cfg in EXPERIMENT.configs(scale):
            assert cfg["optim"]["batch_size"] == 0
            (probe,) = cfg["probes"]
            assert probe["name"] == "hessian" and probe["n"] == cfg["data"]["n_train"]
            assert cfg["data"]["normalize"] == "center"
    paper = EXPERIMENT.configs("paper")
    assert {(c["model"]["name"], c["train"]["loss"]) for c in paper} == {
        (m, loss) for m in ("mlp", "cnn") for loss in ("mse", "cross_entropy")}
    assert all(c["data"]["n_train"] == 5000 for c in paper)


def test_smoke_scale_end_to_end(tmp_path):
    """One test (not a shared fixture), so that pytest-xdist never trains it twice."""
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("edge-of-stability", store, scale="smoke", quiet=True)
    print(f"\nedge-of-stability smoke: {time.perf_counter() - start:.1f} s")
    assert len(store.runs(group="edge-of-stability-smoke")) == 2
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    # λ_max is measured every 20 steps on all 512 examples, from step 0 to the end
    lam = store.metrics(runs=result.run_ids[:1], names=["hessian/lambda_max"])
    assert list(lam["step"]) == list(range(0, 1501, 20))

    html = result.html_path.read_text()
    assert html.count("data:image/png;base64,") == len(result.figure_paths) == 2
    assert "Cohen" in html
    data = json.loads(result.json_path.read_text())
    assert [c["claim"] for c in data["checks"]] == [c.claim for c in result.checks]
