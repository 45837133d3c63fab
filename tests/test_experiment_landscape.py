"""The four landscape experiments: grids, check logic on hand-made inputs, and each smoke
scale end to end (every path, figure and check; verdicts meaningless at this size)."""

import json
import math
import time

import numpy as np
import pytest

from sgdlab.experiments import EXPERIMENTS, run_experiment
from sgdlab.experiments import flat_minima as fm
from sgdlab.experiments import intrinsic_dimension as idim
from sgdlab.experiments import mode_connectivity as mc
from sgdlab.experiments import tower_of_colanders as tc
from sgdlab.landscape import IntrinsicDimension
from sgdlab.landscape.paths import PathValues

NAMES = ("mode-connectivity", "intrinsic-dimension", "tower-of-colanders", "flat-minima")


def test_registered_with_three_scales_and_their_grids():
    for name in NAMES:
        exp = EXPERIMENTS[name]
        assert exp.scales == ("smoke", "cpu", "paper")
    assert len(mc.EXPERIMENT.configs("cpu")) == 3
    assert len(idim.EXPERIMENT.configs("cpu")) == 1
    grid = tc.EXPERIMENT.configs("cpu")
    assert len({(c["optim"]["lr"], c["optim"]["batch_size"]) for c in grid}) == 6
    assert all(c["probes"] == [{"name": "trajectory", "log_points": 12}] for c in grid)
    flat = fm.EXPERIMENT.configs("cpu")
    assert sorted({c["optim"]["batch_size"] for c in flat}) == [32, 800]  # LB = 10% of 8,000
    assert {c["train"]["epochs"] for c in flat} == {80}


def _path(loss, kind="line"):
    loss = np.asarray(loss, float)
    ts = np.linspace(0, 1, len(loss))
    return PathValues(kind, ts, loss, np.full(len(loss), 0.9), None, None)


def test_mode_connectivity_checks_read_barriers_against_the_segment():
    seg = _path([0.0, 0.5, 1.0, 0.5, 0.0])
    low = _path([0.0, 0.02, 0.05, 0.02, 0.0])
    res = {"paths": {"segment": {"train": seg, "test": seg}, "bezier": {"train": low,
                                                                       "test": low},
                     "chain": {"train": _path([0, 0.2, 0.3, 0.2, 0]), "test": low}},
           "connector": {(0, 1): {"connector": low, "line": seg},
                         (0, 2): {"connector": low, "line": seg}}}
    verdicts = [c.verdict for c in mc.checks(res)]
    assert verdicts == ["held", "held", "not held", "held", "held"]
    res["connector"][(1, 2)] = {"connector": _path([0, 0.3, 0.2, 0.1, 0]), "line": seg}
    assert mc.checks(res)[-1].verdict == "not held"


def test_intrinsic_dimension_checks():
    grid = [{"d": d, "test_accuracy": a, "train_accuracy": a} for d, a in
            ((100, 0.5), (500, 0.8), (1000, 0.9), (2000, 0.95))]
    radius = [{"radius_factor": f, "test_accuracy": a} for f, a in
              ((0.5, 0.85), (1.0, 0.9), (2.0, 0.88), (4.0, 0.8))]
    dint = IntrinsicDimension(np.array([100, 500, 1000, 2000.]), np.array([0.5, 0.8, 0.9, 0.95]),
                              1.0, 0.9, 1000, 1000.0)
    res = {"grid": grid, "radius": radius, "baseline": 1.0, "D": 199_210, "r0": 10.0,
           "dint": dint, "radius_d": 1000}
    assert [c.verdict for c in idim.checks(res)] == ["held"] * 4
    res["radius"][2]["test_accuracy"] = 0.95  # 2 r0 best, 4 r0 above r0: ρ = 0.5
    res["radius"][3]["test_accuracy"] = 0.92
    assert idim.checks(res)[-1].verdict == "not held"


def test_colander_checks_on_a_constructed_tower():
    """Points on λ = 1/L (every setting): the envelope rises steeply as L falls; adding a
    flat low-loss point breaks claim 1."""
    loss = np.geomspace(1, 1e-3, 12)
    runs = [{"lr": lr, "S": s, "seed": 0, "loss": list(loss * f), "lam": list(1 / (loss * f))}
            for lr, s, f in ((0.1, 32, 1.0), (0.1, 512, 1.3), (0.01, 32, 0.8))]
    pts = {"runs": runs, "loss": np.concatenate([r["loss"] for r in runs]),
           "lam": np.concatenate([r["lam"] for r in runs]),
           "setting": np.concatenate([[(r["lr"], r["S"])] * 12 for r in runs])}
    assert [c.verdict for c in tc.checks(pts)] == ["held", "held", "held"]
    pts["loss"] = np.append(pts["loss"], 1e-4)
    pts["lam"] = np.append(pts["lam"], 0.5)
    pts["setting"] = np.vstack([pts["setting"], [(0.1, 32)]])
    assert tc.checks(pts)[0].verdict == "not held"


def test_flat_minima_rise_and_checks():
    a = np.linspace(-1, 1, 9)
    sb = {"role": "SB", "seed": 0, "S": 32, "lam": 5.0, "test_acc": 0.97, "train_acc": 1.0,
          "train_loss": 1e-3, "alpha": list(a), "loss": list(0.01 + a**2)}
    lb = {**sb, "role": "LB", "S": 800, "lam": 20.0, "test_acc": 0.96,
          "loss": list(0.01 + 4 * a**2)}
    assert fm.rise(sb) == pytest.approx(0.0625) and fm.rise(lb) == pytest.approx(0.25)
    assert [c.verdict for c in fm.checks([sb, lb])] == ["held", "held", "held"]
    assert fm.checks([{**sb, "lam": 15.0}, lb])[0].verdict == "not held"


@pytest.mark.parametrize("name", NAMES)
def test_smoke_scale_end_to_end(tmp_path, name):
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment(name, store, scale="smoke", quiet=True)
    first = time.perf_counter() - start
    print(f"\n{name} smoke: {first:.1f} s")
    assert result.checks and all(c.measured for c in result.checks)
    assert all(c.verdict in ("held", "not held", "inconclusive") for c in result.checks)
    meta = json.loads(result.json_path.read_text())
    assert len(meta["checks"]) == len(result.checks) and meta["figures"]
    html = result.html_path.read_text()
    assert html.count("data:image/png;base64,") == len(result.figure_paths) >= 1
    again = run_experiment(name, store, scale="smoke", quiet=True)  # cached: re-reads
    assert [c.value for c in again.checks] == [c.value for c in result.checks] or all(
        (math.isnan(a.value) and math.isnan(b.value)) if a.value is not None and
        b.value is not None else a.value == b.value
        for a, b in zip(again.checks, result.checks))
    assert again.seconds < first
