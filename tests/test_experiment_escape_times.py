"""Experiment "escape-times": verdict logic on synthetic rows, the smoke scale end to end."""

import json
import math
import time

from sgdlab.experiments import escape_times as et

CLAIMS = ("Eyring–Kramers", "Arrhenius", "Discrete SGD", "discrete chain", "Anisotropic",
          "Sharp against flat")


def _kramers_rows(devs, ratios=(3.0, 5.0, 6.0)):
    return [{"landscape": "w (1-D)", "ratio": r, "T": 1 / r, "ek": math.exp(r),
             "tau": math.exp(r) * (1 + d), "se": 0.01 * math.exp(r), "exact": 1.1 * math.exp(r),
             "chain": 1.09 * math.exp(r)} for r, d in zip(ratios, devs)]


def test_kramers_check_reads_only_the_points_at_large_barriers():
    check = et.kramers_check(_kramers_rows([0.5, 0.1, 0.12]))
    assert check.verdict == "held" and "w 5: 1.100" in check.measured  # 3: ignored
    assert "-0.91%" in check.measured  # the Euler–Maruyama bias, chain / exact - 1
    assert et.kramers_check(_kramers_rows([0.0, 0.1, 0.2])).verdict == "not held"
    assert et.kramers_check(_kramers_rows([0.0], ratios=(3.0,))).verdict == "inconclusive"


def test_arrhenius_slope_check():
    rows = [{"landscape": "w", "ratio": r, "tau": 2 * math.exp(0.95 * r), "se": 0.1}
            for r in (4.0, 5.0, 6.0)]
    check = et.arrhenius_check(rows)
    assert check.verdict == "held" and abs(check.value - 0.95) < 1e-9
    rows = [dict(r, tau=2 * math.exp(0.8 * r["ratio"])) for r in rows]
    assert et.arrhenius_check(rows).verdict == "not held"


def test_discreteness_check_needs_agreement_at_small_and_departure_at_large_eta():
    def rows(devs):
        return [{"eta_k": k, "sgd": 100 * (1 + d), "sde": 100.0, "T": 0.2}
                for k, d in zip((0.04, 0.3, 1.2), devs)]

    assert et.discreteness_check(rows([0.05, -0.1, -0.5])).verdict == "held"
    assert et.discreteness_check(rows([0.3, -0.1, -0.5])).verdict == "not held"
    assert et.discreteness_check(rows([0.05, -0.1, -0.1])).verdict == "not held"


def test_smoke_scale_end_to_end(tmp_path):
    """One test (not a shared fixture), so that pytest-xdist never runs it twice."""
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("escape-times", store, scale="smoke", quiet=True)
    first = time.perf_counter() - start
    print(f"\nescape-times smoke: {first:.1f} s")
    assert result.run_ids == []  # trains nothing
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    assert len(result.figure_paths) == 3
    saved = json.loads(result.json_path.read_text())
    assert saved["n_runs"] == 0 and len(saved["checks"]) == len(CLAIMS)
    assert list((result.html_path.parent / "extra").glob("*.json"))  # cached simulations
    start = time.perf_counter()
    again = run_experiment("escape-times", store, scale="smoke", quiet=True)
    assert [c.measured for c in again.checks] == [c.measured for c in result.checks]
    assert time.perf_counter() - start < first  # the rerun reads the cache


def test_every_scale_sets_the_same_parameters():
    """The scales differ only by numbers: the paper scale runs the smoke scale's code path."""
    keys = set(et.GRIDS["smoke"])
    assert all(set(g) == keys for g in et.GRIDS.values())
    assert et.EXPERIMENT.configs("paper") == []
