"""Experiment "memorization": helpers, the grid, and the smoke scale end to end."""

import json
import math
import time

import pytest

from sgdlab.experiments.common import first_reach, fmt_spread, mean_spread
from sgdlab.experiments.memorization import CORRUPTIONS, EXPERIMENT, INPUT_NOISE, REG_P, SCALES

CLAIMS = ("Real patterns are fitted before noise", "Time to fit grows", "Networks fit random",
          "Test accuracy falls", "Regularizers hinder memorization", "critical sample ratio is "
          "higher", "CSR is largely set early", "larger η/S memorizes")


def test_first_reach_and_spread():
    assert first_reach([1, 2, 3, 4], [0.1, 0.5, 0.95, 0.99], 0.9) == 3
    assert first_reach([1, 2], [0.1, 0.2], 0.9) == math.inf
    assert mean_spread([1.0, 3.0, math.nan]) == (2.0, 1.0, 3.0)
    assert fmt_spread([1.0, 3.0]) == "2 [1, 3]" and fmt_spread([0.5]) == "0.5"
    assert fmt_spread([2.0, math.inf]) == "inf [2, inf]"


def test_grid():
    for scale in EXPERIMENT.scales:
        sc, cfgs = SCALES[scale], EXPERIMENT.configs(scale)
        assert len({c["name"] for c in cfgs}) == len(cfgs)
        sweep = [c for c in cfgs if "label_noise" in c["data"] and not c["model"].get("dropout")
                 and not c["optim"].get("weight_decay") and c["optim"]["lr"] == sc["lr"]
                 and not c["train"].get("input_noise")]
        assert len(sweep) == len(sc["noise"]) * len(sc["seeds"])
        assert all(c["probes"][0]["name"] == "csr" and c["probes"][0]["split"] == "test"
                   for c in sweep)
        noise = {c["data"]["label_noise"] for c in cfgs if c["data"].get("input_corruption")
                 is None}
        assert min(noise) == 0 and max(noise) == 1
        kinds = {c["data"]["input_corruption"] for c in cfgs if "input_corruption" in c["data"]}
        assert kinds == set(sc["corruptions"])
        reg = [c for c in cfgs if c["model"].get("dropout") or c["optim"].get("weight_decay")]
        assert len(reg) == 2 * len(sc["seeds"])
        reg_p = REG_P if REG_P in sc["noise"] else sorted(sc["noise"])[len(sc["noise"]) // 2]
        noised = [c for c in cfgs if c["train"].get("input_noise")]
        assert len(noised) == len(sc["seeds"])
        assert all(c["train"]["input_noise"] == INPUT_NOISE and c["data"]["label_noise"] == reg_p
                   and not c["model"].get("dropout") for c in noised)
    cpu = EXPERIMENT.configs("cpu")
    assert set(SCALES["cpu"]["corruptions"]) == set(CORRUPTIONS)
    ratio = [c for c in cpu if c["data"].get("label_noise") == REG_P
             and not c["model"].get("dropout") and not c["optim"].get("weight_decay")
             and not c["train"].get("input_noise")]
    assert len({c["optim"]["lr"] for c in ratio}) == 3  # three η/S at one S
    assert {c["optim"]["batch_size"] for c in ratio} == {SCALES["cpu"]["batch"]}


def test_smoke_scale_end_to_end(tmp_path):
    """One test (not a shared fixture), so that pytest-xdist never trains it twice."""
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("memorization", store, scale="smoke", quiet=True)
    print(f"\nmemorization smoke: {time.perf_counter() - start:.1f} s")
    runs = store.runs(group="memorization-smoke")
    assert len(runs) == len(EXPERIMENT.configs("smoke")) and set(runs["status"]) == {"finished"}
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    # clean and corrupted subsets are evaluated every epoch; the CSR at its log points
    noisy = runs[runs["name"].str.contains("labels-0.5_seed")]["id"].iloc[0]
    m = store.metrics(runs=[noisy], names=["clean/acc", "corrupted/acc", "csr/csr"])
    epochs = SCALES["smoke"]["epochs"]
    assert len(m[m["name"] == "corrupted/acc"]) == len(m[m["name"] == "clean/acc"]) >= epochs
    csr = m[m["name"] == "csr/csr"]["value"]
    assert len(csr) >= 3 and ((csr >= 0) & (csr <= 1)).all()
    html = result.html_path.read_text()
    assert html.count("data:image/png;base64,") == len(result.figure_paths) == 3
    assert "Arpit" in html and "Zhang" in html
    data = json.loads(result.json_path.read_text())
    assert [c["claim"] for c in data["checks"]] == [c.claim for c in result.checks]
    assert data["checks"][3]["verdict"] in ("held", "not held")  # test accuracy vs noise


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_larger_scales_validate(scale):
    from sgdlab.experiments import build_configs

    cfgs = build_configs(EXPERIMENT, scale)
    assert {c.data.name for c in cfgs} == {"mnist"}
