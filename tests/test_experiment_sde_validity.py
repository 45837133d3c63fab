"""Experiment "sde-validity": the verdict logic on synthetic trajectories, the smoke scale
end to end."""

import time

from sgdlab.experiments import sde_validity as sv

CLAIMS = ("SVAG converges", "Where they agree", "Where they do not")


def _run(label, lr, ell, train, test, se=0.001):
    return {"label": label, "eta": lr, "S": 4, "l": ell, "time": [0.0, 1.0],
            "train_loss": {"mean": [2.3, train], "se": [se, se]},
            "test_loss": {"mean": [2.3, test], "se": [se, se]},
            "test_acc": {"mean": [0.1, 0.9], "se": [0.01, 0.01]}, "lambda_max_end": 5.0}


def test_checks_on_synthetic_trajectories():
    runs = [_run("sgd small", 0.05, 1, 0.50, 0.60), _run("sgd large", 0.8, 1, 0.40, 0.55),
            _run("svag 4", 0.05, 4, 0.505, 0.602), _run("svag 8", 0.05, 8, 0.502, 0.601)]
    assert sv.svag_check(runs).verdict == "held"
    assert sv.agree_check(runs, small=True).verdict == "held"
    assert sv.agree_check(runs, small=False).verdict == "held"  # 20% off in training loss
    runs[0] = _run("sgd small", 0.05, 1, 0.60, 0.60)
    assert sv.agree_check(runs, small=True).verdict == "not held"
    runs[2] = _run("svag 4", 0.05, 4, 0.55, 0.602)
    assert sv.svag_check(runs).verdict == "not held"


def test_smoke_scale_end_to_end(tmp_path):
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    start = time.perf_counter()
    result = run_experiment("sde-validity", Store(tmp_path / "store"), scale="smoke", quiet=True)
    print(f"\nsde-validity smoke: {time.perf_counter() - start:.1f} s")
    assert result.run_ids == []
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    assert len(result.figure_paths) == 1


def test_every_scale_sets_the_same_parameters():
    keys = set(sv.GRIDS["smoke"])
    assert all(set(g) == keys for g in sv.GRIDS.values())
    for g in sv.GRIDS.values():  # one eta/S, the smallest eta first (the SVAG reference)
        ratios = {round(lr / s, 12) for lr, s in g["pairs"]}
        assert len(ratios) == 1 and g["pairs"][0][0] == min(lr for lr, _ in g["pairs"])
        every = g["time"] / (g["points"] - 1)  # each recorded time a whole number of steps
        for lr, _ in g["pairs"]:
            assert abs(every / lr - round(every / lr)) < 1e-9
