"""First passage of thousands of chains, checked at every step, against exact answers: the
1-D overdamped Langevin mean first-passage time (the integral formula, not only Kramers),
the exact mean passage time of the discrete chain (Nyström), and deterministic paths."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from sgdlab.dynamics import (
    DoubleWell,
    FiniteSum,
    Halfspace,
    Quadratic,
    discrete_mfpt_1d,
    eyring_kramers,
    first_passage,
    mfpt_1d,
    noisy_gd,
    sde,
    sgd,
    tilted_double_well,
)

WELL = DoubleWell(barrier=1.0, curvature=8.0)  # minima ±1, saddle 0, V''(0) = -4
TEMP = 1 / 3  # barrier / T = 3


def test_mean_first_passage_time_matches_the_exact_integral_formula():
    """Euler–Maruyama for dx = -V'dt + sqrt(2T) dW from -1 to +1 (the other minimum),
    10,000 chains: the mean passage time matches the integral formula within 3 SE, with
    the SE at most 1% of tau. The step's bias, discrete monitoring included, is known
    exactly from the Nyström solution of the Euler–Maruyama chain itself (-0.11% at
    dt = 4e-3, k dt = 0.032): below a third of the SE. Kramers' asymptotic formula is 16%
    off here, so the test tells the exact formula from the asymptotic one."""
    dt = 4e-3
    exact = mfpt_1d(WELL, -1.0, 1.0, TEMP)
    chain = discrete_mfpt_1d(WELL, dt, math.sqrt(2 * TEMP * dt), -1.0, 1.0) * dt
    scheme = sde(WELL, lr=1.0, noise_cov=2 * TEMP, dt=dt)  # D = T
    run = first_passage(scheme, [-1.0], Halfspace(1.0, 1.0), 10_000, max_time=40 * exact, seed=7)
    mean, se = run.estimate()
    assert run.n_passed == run.n
    assert se <= 0.01 * mean
    assert abs(chain - exact) < se / 3
    assert abs(mean - exact) < 3 * se, (mean, exact, se)
    kramers = eyring_kramers(WELL, [-1.0], [0.0], TEMP).tau
    assert abs(kramers - exact) > 10 * se


def test_coarse_step_follows_the_discrete_chain_not_the_continuum():
    """At dt = 0.1 (k dt = 0.8) the Euler–Maruyama chain escapes a third faster than the
    SDE; the simulation agrees with the chain's exact Nyström value and rejects the
    integral formula: the comparison above can fail."""
    dt = 0.1
    exact = mfpt_1d(WELL, -1.0, 1.0, TEMP)
    chain = discrete_mfpt_1d(WELL, dt, math.sqrt(2 * TEMP * dt), -1.0, 1.0) * dt
    run = first_passage(sde(WELL, 1.0, 2 * TEMP, dt), [-1.0], Halfspace(1.0, 1.0), 4000,
                        max_time=40 * exact, seed=8)
    mean, se = run.estimate()
    assert abs(mean - chain) < 3 * se
    assert abs(mean - exact) > 5 * se


def test_nystrom_chain_value_converges_to_the_integral_formula_as_the_step_shrinks():
    exact = mfpt_1d(WELL, -1.0, 1.0, 0.2)
    errors = []
    for dt in (4e-3, 1e-3, 2.5e-4):
        m = discrete_mfpt_1d(WELL, dt, math.sqrt(2 * 0.2 * dt), -1.0, 1.0)
        errors.append(abs(m * dt / exact - 1))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-4
    coarse = discrete_mfpt_1d(WELL, 1e-3, math.sqrt(2 * 0.2e-3), -1.0, 1.0, points_per_std=4)
    fine = discrete_mfpt_1d(WELL, 1e-3, math.sqrt(2 * 0.2e-3), -1.0, 1.0, points_per_std=16)
    assert abs(coarse / fine - 1) < 1e-4  # converged in the grid


def test_integral_formula_against_nested_quadrature():
    """mfpt_1d on an asymmetric well against scipy's adaptive nested quad."""
    pot = tilted_double_well(1.0, 8.0, tilt=0.3)
    (a,), (s,) = (float(p) for p in pot.minima[0]), (float(p) for p in pot.saddles[0])
    b = float(pot.minima[1])
    temp = 0.25

    def v(x):
        return float(pot.value(torch.tensor([[x]], dtype=torch.float64))[0])

    def inner(y):
        return integrate.quad(lambda z: math.exp(-(v(z) - v(a)) / temp), -3.0, y, limit=200)[0]

    ref = integrate.quad(lambda y: math.exp((v(y) - v(a)) / temp) * inner(y), a, b,
                         points=[s], limit=200)[0] / temp
    assert mfpt_1d(pot, a, b, temp, lower=-3.0) == pytest.approx(ref, rel=1e-6)


def test_finite_sum_sgd_at_small_step_matches_the_sde():
    """SGD on the finite-sum double well (S = 1, eta k = 0.04, T = eta C/2 = 1/3): the
    mean escape time in t = eta * steps equals the SDE's within 3 SE (SE ~2%) at a step
    small against the curvature."""
    lr, temp = 0.005, TEMP
    problem = FiniteSum.designed(WELL, 2 * temp / lr, n=1000, seed=0)
    exact = mfpt_1d(WELL, -1.0, 1.0, temp)
    run = first_passage(sgd(problem, lr, 1), [-1.0], Halfspace(1.0, 1.0), 2000,
                        max_time=40 * exact, seed=9)
    mean, se = run.estimate()
    chain = discrete_mfpt_1d(WELL, lr, math.sqrt(2 * temp * lr), -1.0, 1.0) * lr
    assert abs(chain / exact - 1) < 0.01  # the discreteness at this step: < 1%
    assert abs(mean - exact) < 3 * se


def test_deterministic_paths_pass_at_the_exact_step_and_censoring_is_counted():
    """Without noise, GD on k x^2/2 from 10 towards 0 first reaches x <= 5 at step
    ceil(ln(1/2)/ln(1 - h k)); per-chain steps give per-chain passage times."""
    pot = Quadratic([1.0])
    steps = torch.tensor([0.1, 0.05, 0.2], dtype=torch.float64)
    scheme = noisy_gd(pot, steps, 0.0)
    run = first_passage(scheme, [10.0], Halfspace(-1.0, -5.0), 3, max_time=100.0, block=4)
    expected = np.ceil(np.log(0.5) / np.log(1 - steps.numpy()))
    np.testing.assert_array_equal(run.steps, expected)
    np.testing.assert_allclose(run.times, expected * steps.numpy())
    assert list(expected) == [7, 14, 4]
    short = first_passage(scheme, [10.0], Halfspace(-1.0, -5.0), 3, max_time=0.7, block=4)
    assert short.n_passed == 2 and math.isnan(short.mean)  # h = 0.2 would pass at t = 0.8
    rate, _ = short.rate
    assert rate == pytest.approx(2 / (0.7 + 0.7 + 3 * 0.2))  # escapes / time at risk
    assert short.estimate()[0] == pytest.approx(1 / rate)


def test_drop_passed_changes_nothing_but_the_work():
    """Dropping passed chains changes the random stream, not the law: deterministic paths
    pass at the same steps, and noisy ones have equal mean passage times within 4 SE."""
    det = noisy_gd(Quadratic([1.0]), torch.tensor([0.1, 0.05, 0.2]), 0.0)
    a, b = (first_passage(det, [10.0], Halfspace(-1.0, -5.0), 3, 10.0, block=2, drop_passed=d)
            for d in (True, False))
    np.testing.assert_array_equal(a.steps, b.steps)
    problem = FiniteSum.designed(WELL, 2 * 0.3 / 0.01, n=100, seed=1)
    kwargs = dict(n_chains=400, max_time=400.0, seed=3, block=16)
    fast, full = (first_passage(sgd(problem, 0.01, 1), [-1.0], Halfspace(1.0, 0.0),
                                drop_passed=d, **kwargs) for d in (True, False))
    assert fast.n_passed == full.n_passed == 400
    assert abs(fast.mean - full.mean) < 4 * math.hypot(fast.stderr, full.stderr)


def test_regions_and_the_escape_target_between_minima():
    from sgdlab.dynamics import Ball, SaddleSurface, between_minima

    surf = SaddleSurface(angle=0.7)
    start, target = between_minima(surf)
    other = surf.minima[1]
    pts = torch.stack([start, 0.5 * (start + other), other, 1.1 * other]).unsqueeze(1)  # (4,1,2)
    assert target(pts)[:, 0].tolist() == [False, False, True, True]
    ball = Ball(other, 0.1)
    assert ball(pts)[:, 0].tolist() == [False, False, True, False]
    below = Halfspace(-1.0, -0.5)  # 1-D: x <= 0.5
    assert below(torch.tensor([[[0.4]], [[0.6]]]))[:, 0].tolist() == [True, False]
