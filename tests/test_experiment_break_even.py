"""Experiment "break-even": matched-loss interpolation and the break-even step on synthetic
curves, the smoke scale end to end."""

import math
from html import escape

import numpy as np
import pandas as pd
import pytest

from sgdlab.experiments.break_even import (
    EXPERIMENT,
    _earlier_check,
    _held_check,
    at_matched_loss,
    break_even_stats,
    break_even_step,
    level_correlation,
    matched_loss_grid,
)

CLAIMS = ("larger η ⇒ smaller λ_max(H) at matched training loss",
          "larger η ⇒ smaller λ_max(K) and Tr K at matched training loss",
          "smaller S ⇒ smaller λ_max(H) at matched training loss",
          "larger η ⇒ earlier break-even point",
          "after the break-even point λ_max(H) stays near or below 2/η")


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


def test_break_even_step_interpolates_between_probe_steps():
    steps = [0, 10, 20, 30]
    assert break_even_step(steps, [1.0, 5.0, 9.0, 8.0], 8.5) == pytest.approx(18.75)
    assert break_even_step(steps, [1.0, 5.0, 9.0, 8.0], 1.0) == 0
    assert break_even_step(steps, [1.0, 5.0, 9.0, 8.0], 9.0) == 20
    assert math.isnan(break_even_step(steps, [1.0, 5.0, 7.0, 8.0], 8.5))
    assert math.isnan(break_even_step([], [], 1.0))
    # a threshold per step (a learning-rate schedule): the ratio crosses 1 at step 15
    assert break_even_step(steps, [1.0, 2.0, 6.0, 6.0], [2.0, 4.0, 4.0, 4.0]) == pytest.approx(15)
    eta = 0.5  # lambda(t) = 5 (1 - exp(-t / 10)) reaches 2/eta = 4 at t = 10 ln 5 = 16.09
    s = np.arange(0, 40, 2.0)
    assert break_even_step(s, 5 * (1 - np.exp(-s / 10)), 2 / eta) == pytest.approx(
        10 * math.log(5), abs=0.05)


def test_break_even_stats():
    table = pd.DataFrame({"hessian/lambda_max": [1.0, 3.0, 5.0, 4.4, 3.0],
                          "hessian/stability": 4.0}, index=[0, 10, 20, 40, 80])
    st = break_even_stats(table)
    assert st["step"] == pytest.approx(15) and st["last"] == 80
    assert st["peak"] == pytest.approx(1.25) and st["after"] == pytest.approx(1.25)
    st = break_even_stats(table.assign(**{"hessian/stability": 10.0}))
    assert math.isnan(st["step"]) and math.isnan(st["after"]) and st["peak"] == 0.5
    assert math.isnan(break_even_stats(table.iloc[:0])["step"])


def _runs(etas):
    return pd.DataFrame({"optim.lr": etas}, index=[f"r{i}" for i in range(len(etas))])


def _stats(*rows):
    return {f"r{i}": {"step": s, "peak": p, "after": a, "last": 750.0}
            for i, (s, p, a) in enumerate(rows)}


@pytest.mark.parametrize(("rows", "earlier", "held"), [
    # (break-even step, max λη/2, max λη/2 after it) for η = 0.1, 0.2, 0.5
    ([(300, 1.1, 1.1), (120, 1.1, 1.05), (40, 1.2, 1.15)], "held", "held"),
    ([(nan := math.nan, 0.4, nan), (120, 1.1, 1.05), (40, 1.1, 1.1)], "held", "held"),
    ([(100, 1.1, 1.1), (120, 1.1, 1.05), (40, 1.1, 1.1)], "not held", "held"),
    ([(nan, 0.4, nan), (120, 1.1, 1.05), (40, 1.6, 1.6)], "held", "not held"),
    ([(nan, 0.4, nan), (nan, 0.7, nan), (73, 1.06, 1.06)], "inconclusive", "inconclusive"),
    ([(nan, 0.4, nan), (nan, 0.7, nan), (73, 1.5, 1.5)], "inconclusive", "not held"),
    ([(nan, 0.4, nan), (80, 1.1, 1.1), (nan, 0.9, nan)], "not held", "inconclusive"),
    ([(nan, 0.4, nan), (nan, 0.7, nan), (nan, 0.9, nan)], "inconclusive", "inconclusive"),
])
def test_break_even_checks(rows, earlier, held):
    runs, stats = _runs([0.1, 0.2, 0.5]), _stats(*rows)
    a, b = _earlier_check(runs, stats), _held_check(runs, stats)
    assert (a.verdict, b.verdict) == (earlier, held), (a.measured, b.measured)
    assert "η=0.1" in a.measured and ("never" in a.measured) == any(
        math.isnan(r[0]) for r in rows)


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
    stored = store.checks(experiment="break-even", scale="smoke")
    assert list(stored["verdict"]) == [c.verdict for c in result.checks]
    print(f"\nbreak-even smoke: {result.seconds:.1f} s")
    for c in result.checks:
        print(f"{c.verdict:>12}  {c.claim}\n              {c.measured}")
