"""Experiment "sharpest-directions": helpers on synthetic bowls, the smoke scale end to end."""

import math
from html import escape

import numpy as np
import pytest

from sgdlab.experiments.sharpest_directions import (
    EXPERIMENT,
    bowl_minimum,
    robust_peak,
    spearman,
)

CLAIMS = ("λ_max peak decreases as η grows", "λ_max peak increases with S",
          "stability threshold 2/η", "SGD step is too large for the sharpest direction",
          "NSGD with γ < 1 reaches a larger λ_max", "with γ = 1 NSGD equals SGD")


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("floor", [0.6, -1.3, 2.05])
def test_bowl_minimum_is_in_step_units_and_oriented(sign, floor):
    offsets = np.linspace(-3, 3, 25)
    u = sign * offsets  # the step lands at offset t = sign, i.e. u = +1
    bowl = 2.0 + 0.7 * (u - floor) ** 2
    assert bowl_minimum(offsets, bowl, projection=0.3 * sign) == pytest.approx(floor, abs=1e-9)


def test_bowl_minimum_on_the_grid_edge_and_for_a_concave_bowl():
    offsets = np.linspace(-3, 3, 25)
    assert bowl_minimum(offsets, (offsets - 5.0) ** 2, 1.0) == 3.0
    assert bowl_minimum(offsets, -(offsets ** 2), 1.0) in (-3.0, 3.0)


def test_robust_peak_ignores_a_single_spike():
    assert robust_peak([1.0, 2.0, 9.0, 2.5, 3.0, 2.0]) == 3.0
    assert robust_peak([1.0, 2.0, 4.0, 5.0, 4.5]) == 4.75  # the edge: mean of two
    assert math.isnan(robust_peak([]))


def test_spearman():
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 2], [2, 1]))
    assert math.isnan(spearman([1, 2, 3], [1, 1, 1]))


def test_configs_grid():
    for scale in EXPERIMENT.scales:
        cfgs = EXPERIMENT.configs(scale)
        assert len(cfgs) == 8 and len({c["name"] for c in cfgs}) == 8
        nsgd = [c for c in cfgs if c["optim"].get("name") == "nsgd"]
        assert sorted(c["optim"]["nsgd_gamma"] for c in nsgd) == [0.1, 1.0, 5.0]
        assert all(c["optim"]["nsgd_k"] == 5 for c in nsgd)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    root = tmp_path_factory.mktemp("sharpest")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGDLAB_DATA", str(root / "data"))
        store = Store(root / "store")
        return store, run_experiment("sharpest-directions", store, scale="smoke", quiet=True)


def test_smoke_runs_end_to_end_and_reports(smoke):
    store, result = smoke
    runs = store.runs(group="sharpest-directions-smoke")
    assert len(runs) == 8 and set(runs["status"]) == {"finished"}
    for claim in CLAIMS:
        assert sum(claim in c.claim for c in result.checks) == 1, claim
    html = result.html_path.read_text()
    assert "<h2>Checks</h2>" in html
    assert all(escape(c.claim) in html and escape(c.measured) in html for c in result.checks)
    assert any("Bowls" in p.name or "bowls" in p.name for p in result.figure_paths)
    print(f"\nsharpest-directions smoke: {result.seconds:.1f} s")
    for c in result.checks:
        print(f"{c.verdict:>12}  {c.claim}\n              {c.measured}")


def test_smoke_nsgd_gamma_one_is_bit_identical_to_sgd(smoke):
    _, result = smoke
    (check,) = [c for c in result.checks if "with γ = 1 NSGD equals SGD" in c.claim]
    assert check.verdict == "held" and check.value == 0.0
    assert "bit-identical on CPU" in check.claim  # from the runs' environment records


def test_smoke_bowls_are_stored(smoke):
    store, _ = smoke
    runs = store.runs(group="sharpest-directions-smoke")
    run = store.get_run(runs["id"].iloc[0])
    arrays = [a for _, a in run.load_arrays("sharpest") if "bowl" in a]
    assert arrays and arrays[0]["bowl"].shape == (3, len(arrays[0]["offsets"]))
