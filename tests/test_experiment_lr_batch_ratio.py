"""Experiment "lr-batch-ratio": the linear least-squares theory, and the smoke scale end to end."""

import json
import math
import time

import numpy as np
import pytest

from sgdlab.experiments.lr_batch_ratio import (
    EXPERIMENT,
    LS_SPECTRUM,
    discrete_excess_loss,
    linear_sgd_excess_loss,
    sde_excess_loss,
    spread,
)

CLAIMS = ("Runs with equal η/S", "invariance breaks",
          "λ_max at the endpoint decreases with η/S", "Tr H at the endpoint decreases with η/S",
          "Linear least squares", "exact discrete-time formula", "Networks: time-averaged",
          "Cyclic batch size and cyclic learning rate", "A step decay of η and the equivalent")


def _rotated(spectrum, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(spectrum),) * 2))
    return q @ np.diag(spectrum) @ q.T


@pytest.mark.parametrize(("eta", "S", "sigma"), [(0.01, 1, 1.0), (0.1, 8, 0.5), (0.3, 32, 2.0)])
def test_sde_prediction_solves_the_lyapunov_equation(eta, S, sigma):
    """E[L − L*] = ½ Tr(HΣ) with HΣ + ΣH = (η/S) K, K = σ² C, H = C (C not diagonal)."""
    from scipy.linalg import solve_continuous_lyapunov

    C = _rotated(np.array(LS_SPECTRUM))
    Sigma = solve_continuous_lyapunov(C, eta / S * sigma**2 * C)
    exact = 0.5 * np.trace(C @ Sigma)
    assert sde_excess_loss(eta, S, LS_SPECTRUM, sigma) == pytest.approx(exact, rel=1e-10)
    assert sde_excess_loss(eta, S, LS_SPECTRUM) == pytest.approx(
        eta / (4 * S) * np.trace(C), rel=1e-12)  # σ = 1: η/(4S) Tr H


@pytest.mark.parametrize(("eta", "S"), [(0.05, 1), (0.3, 4), (0.6, 4)])
def test_discrete_prediction_is_the_fixed_point_of_the_covariance_recursion(eta, S):
    """Σ' = E[(I − ηĈ)Σ(I − ηĈ)] + η²σ²C/S with Gaussian fourth moments
    E[ĈAĈ] = CAC + (CAC + C Tr(AC))/S, iterated to its fixed point (C not diagonal)."""
    C = _rotated(np.array(LS_SPECTRUM), seed=1)
    Sigma = np.zeros_like(C)
    for _ in range(20000):
        CSC = C @ Sigma @ C
        Sigma = (Sigma - eta * (C @ Sigma + Sigma @ C)
                 + eta**2 * (CSC + (CSC + C * np.trace(Sigma @ C)) / S) + eta**2 * C / S)
    assert discrete_excess_loss(eta, S, LS_SPECTRUM) == pytest.approx(
        0.5 * np.trace(C @ Sigma), rel=1e-8)
    ratio = discrete_excess_loss(eta, S, LS_SPECTRUM) / sde_excess_loss(eta, S, LS_SPECTRUM)
    assert ratio > 1  # SGD's discreteness adds loss
    assert discrete_excess_loss(1e-6, S, LS_SPECTRUM) / sde_excess_loss(
        1e-6, S, LS_SPECTRUM) == pytest.approx(1, abs=1e-5)
    assert math.isinf(discrete_excess_loss(0.3, 1, LS_SPECTRUM))  # a >= 1: no stationary state


@pytest.mark.parametrize(("eta", "S"), [(0.01, 1), (0.02, 4), (0.05, 4)])
def test_linear_sgd_matches_eta_over_4s_trace_at_small_eta(eta, S):
    """The exact theory: E[L − L*] = η/(4S) Tr H within 10% at small η (and the discrete
    formula within 3%)."""
    measured = linear_sgd_excess_loss(eta, S, LS_SPECTRUM)
    assert measured / sde_excess_loss(eta, S, LS_SPECTRUM) == pytest.approx(1, abs=0.10)
    assert measured / discrete_excess_loss(eta, S, LS_SPECTRUM) == pytest.approx(1, abs=0.03)


def test_linear_sgd_follows_the_discrete_formula_at_large_eta():
    measured = linear_sgd_excess_loss(0.4, 4, LS_SPECTRUM)
    assert measured / sde_excess_loss(0.4, 4, LS_SPECTRUM) > 1.5  # the SDE fails here ...
    assert measured / discrete_excess_loss(0.4, 4, LS_SPECTRUM) == pytest.approx(1, abs=0.05)


def test_spread_and_configs():
    assert spread([2.0, 3.0]) == pytest.approx(0.5)
    assert math.isnan(spread([1.0])) and math.isnan(spread([1.0, math.nan]))
    for scale in EXPERIMENT.scales:
        cfgs = EXPERIMENT.configs(scale)
        assert len({c["name"] for c in cfgs}) == len(cfgs)
        grid = [c for c in cfgs if "cyclic" not in c["name"]]
        ratios = {round(c["optim"]["lr"] / c["optim"]["batch_size"], 12) for c in grid}
        assert len(ratios) >= 3
        assert all(c["probes"][0]["trace"] and c["probes"][0]["every"] == "epoch" for c in cfgs)
    paper = EXPERIMENT.configs("paper")
    assert {c["data"]["name"] for c in paper} == {"fashion-mnist"}
    # the step pair: the same η/S schedule, by η decay or by S growth
    for scale in EXPERIMENT.scales:
        lr_run, bs_run = (next(c for c in EXPERIMENT.configs(scale) if k in c["name"])
                          for k in ("_step-lr", "_step-bs"))
        lr_s, bs_s = lr_run["optim"]["lr_schedule"], bs_run["optim"]["batch_schedule"]
        assert lr_s["kind"] == bs_s["kind"] == "step"
        assert lr_s["milestones"] == bs_s["milestones"] and lr_s["gamma"] * bs_s["factor"] == 1
    cpu = EXPERIMENT.configs("cpu")
    assert {c["seed"] for c in cpu} == {0, 1} and len(cpu) == 2 * (2 * 4 + 1 + 2 + 2)
    assert {c["model"]["name"] for c in paper} == {"mlp", "cnn"}


def test_smoke_scale_end_to_end(tmp_path):
    """One test (not a shared fixture), so that pytest-xdist never trains it twice."""
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("lr-batch-ratio", store, scale="smoke", quiet=True)
    print(f"\nlr-batch-ratio smoke: {time.perf_counter() - start:.1f} s")
    runs = store.runs(group="lr-batch-ratio-smoke")
    assert len(runs) == len(EXPERIMENT.configs("smoke")) == len(result.run_ids)
    assert set(runs["status"]) <= {"finished", "diverged"}
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
        assert check.verdict in ("held", "not held", "inconclusive")
    assert [c.verdict for c in result.checks[4:6]] == ["held", "held"]  # exact theory

    html = result.html_path.read_text()
    assert html.count("data:image/png;base64,") == len(result.figure_paths) == 5
    assert "η/(4S) Tr H" in html and "Jastrzębski" in html
    data = json.loads(result.json_path.read_text())
    assert data["experiment"] == "lr-batch-ratio" and len(data["checks"]) == len(CLAIMS)
    assert (result.json_path.parent / "extra" / "linear_least_squares.json").is_file()
