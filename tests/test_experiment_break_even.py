"""Experiment "break-even": matched-loss interpolation and the break-even step on synthetic
curves, the smoke scale end to end."""

import math
from html import escape

import numpy as np
import pytest

from sgdlab.experiments.break_even import (
    EXPERIMENT,
    at_matched_loss,
    first_step_reaching,
    level_correlation,
    matched_loss_grid,
)

CLAIMS = ("larger η ⇒ smaller λ_max(H) at matched training loss",
          "larger η ⇒ smaller λ_max(K) and Tr K at matched training loss",
          "smaller S ⇒ smaller λ_max(H) at matched training loss",
          "λ_max(H) reaches ≈ 2/η early")


def test_matched_loss_grid_spans_the_range_all_runs_share():
    a = np.array([2.3, 1.0, 0.5, 0.2])
    b = np.array([2.3, 2.5, 0.9, 0.4, 0.3])
    grid = matched_loss_grid([a, b], n=5)
    assert grid[0] == pytest.approx(2.3) and grid[-1] == pytest.approx(0.3)
    assert np.all(np.diff(grid) < 0) and np.allclose(np.diff(np.log(grid)), np.log(0.3 / 2.3) / 4)
    assert len(matched_loss_grid([np.array([2.0, 1.0]), np.array([0.9, 0.5])])) == 0


def test_at_matched_loss_is_exact_for_values_linear_in_log_loss():
    t = np.arange(0, 50, 5.0)
    loss = 2.0 * np.exp(-0.1 * t)
    values = 3.0 + 0.5 * t  # = 3 + 5 log(2 / loss): linear in log loss
    levels = np.geomspace(2.0, loss[-1], 17)
    expected = 3.0 + 5.0 * np.log(2.0 / levels)
    np.testing.assert_allclose(at_matched_loss(loss, values, levels), expected, rtol=1e-12)


def test_at_matched_loss_uses_the_first_passage():
    loss = np.array([2.0, 1.0, 1.5, 0.5])  # passes 1.2 first between index 0 and 1
    values = np.array([0.0, 10.0, 20.0, 30.0])
    t = math.log(2.0 / 1.2) / math.log(2.0)
    out = at_matched_loss(loss, values, [2.5, 1.2, 0.75, 0.1])
    assert out[0] == 0.0  # already below at the start
    assert out[1] == pytest.approx(10.0 * t)
    assert out[2] == pytest.approx(20.0 + 10.0 * math.log(1.5 / 0.75) / math.log(3.0))
    assert math.isnan(out[3])


def test_first_step_reaching():
    steps = [0, 10, 20, 30]
    assert first_step_reaching(steps, [1.0, 5.0, 9.0, 8.0], 8.5) == 20
    assert first_step_reaching(steps, [1.0, 5.0, 9.0, 8.0], 1.0) == 0
    assert math.isnan(first_step_reaching(steps, [1.0, 5.0, 7.0, 8.0], 8.5))
    eta = 0.5  # lambda(t) = 5 (1 - exp(-t / 10)) reaches 2/eta = 4 at t = 10 ln 5 = 16.1
    s = np.arange(0, 40, 2.0)
    assert first_step_reaching(s, 5 * (1 - np.exp(-s / 10)), 2 / eta) == 18


def test_level_correlation():
    table = np.array([[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    np.testing.assert_allclose(level_correlation([0.1, 0.2, 0.3], table), [-1.0, 1.0])


def test_configs_grid():
    for scale in EXPERIMENT.scales:
        cfgs = EXPERIMENT.configs(scale)
        assert len({(c["optim"]["lr"], c["optim"]["batch_size"]) for c in cfgs}) == len(cfgs) == 4
        for c in cfgs:  # one log schedule for both probes; the loss evaluated every few steps
            assert len({p["log_points"] for p in c["probes"]}) == 1
            assert 0 < c["train"]["eval_every"] <= 60000 // c["optim"]["batch_size"] // 10


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    root = tmp_path_factory.mktemp("break_even")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGDLAB_DATA", str(root / "data"))
        store = Store(root / "store")
        return store, run_experiment("break-even", store, scale="smoke", quiet=True)


def test_smoke_runs_end_to_end_and_reports(smoke):
    store, result = smoke
    runs = store.runs(group="break-even-smoke")
    assert len(runs) == 4 and set(runs["status"]) == {"finished"}
    for claim in CLAIMS:
        assert sum(claim in c.claim for c in result.checks) == 1, claim
    html = result.html_path.read_text()
    assert "<h2>Checks</h2>" in html
    assert all(escape(c.claim) in html and escape(c.measured) in html for c in result.checks)
    assert len(result.figure_paths) == 3
    print(f"\nbreak-even smoke: {result.seconds:.1f} s")
    for c in result.checks:
        print(f"{c.verdict:>12}  {c.claim}\n              {c.measured}")
