"""The integrators on the Ornstein–Uhlenbeck process, where everything is known in closed
form: stationary covariance and autocovariance within 3 standard errors (batch means over
independent chains, so the SE accounts for the autocorrelation along each chain)."""

import math

import numpy as np
import pytest
import torch

from sgdlab.dynamics import (
    ExactOU,
    FiniteSum,
    Quadratic,
    batch_means,
    lagged_products,
    linear_chain_autocovariance,
    linear_chain_stationary_covariance,
    ou_autocovariance,
    ou_stationary_covariance,
    sample_path,
    sde,
    sgd,
    svag,
)

A = torch.tensor([[2.0, 0.6], [0.6, 0.8]], dtype=torch.float64)  # not diagonal
D = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)  # anisotropic


def _stationary_start(cov, n, seed):
    g = torch.Generator().manual_seed(seed)
    root = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    return torch.randn(n, root.shape[0], generator=g, dtype=torch.float64) @ root.T


def _autocov_checks(path, exact_at_lag, lags, n_batches=20):
    """(z-scores, relative SEs) of every entry of the lag autocovariance."""
    zs, rel = [], []
    for lag in lags:
        exact = exact_at_lag(lag)
        for i in range(path.shape[-1]):
            for j in range(path.shape[-1]):
                m, se = batch_means(lagged_products(path, lag, i, j), n_batches)
                zs.append((m - exact[i, j]) / se)
                rel.append(se / abs(exact).max())
    return np.array(zs), np.array(rel)


def test_batch_means_standard_error_accounts_for_autocorrelation():
    """An AR(1) series with coefficient 0.9 has a long-run variance 19x the marginal one:
    batch means report it, the naive sd/sqrt(T) does not."""
    g = np.random.default_rng(0)
    x = np.zeros((200_000, 8))
    e = g.standard_normal(x.shape)
    for t in range(1, len(x)):
        x[t] = 0.9 * x[t - 1] + e[t]
    _, se = batch_means(x, 40)
    naive = x.std() / math.sqrt(x.size)
    exact = math.sqrt((1 / (1 - 0.9) ** 2) / x.size)  # long-run sd of the mean
    assert se == pytest.approx(exact, rel=0.2) and se > 3 * naive


def test_exact_ou_scheme_reproduces_stationary_covariance_and_autocovariance():
    dt = 0.05
    scheme = ExactOU(Quadratic(A), dt, D)
    sigma = ou_stationary_covariance(A, D)
    np.testing.assert_allclose(A.numpy() @ sigma + sigma @ A.numpy(), 2 * D.numpy(), atol=1e-12)
    path = sample_path(scheme, _stationary_start(sigma, 400, 0), 400, 4000, seed=1)
    zs, rel = _autocov_checks(path, lambda lag: ou_autocovariance(A, D, lag * dt), (0, 10, 40))
    assert np.abs(zs).max() < 3, zs
    assert rel.max() < 0.02  # the test resolves the covariance to ~1%


def test_euler_maruyama_at_small_step_matches_the_continuous_ou():
    """1-D OU, k = 2, T = 0.5: at k dt = 2e-3 the Euler–Maruyama stationary variance
    T/(k (1 - k dt/2)) is 0.1% above T/k, far below the SE (~0.6%): the continuous value
    must hold within 3 SE, lags in units of the relaxation time 1/k."""
    k, temp, dt = 2.0, 0.5, 1e-3
    pot = Quadratic([k])
    scheme = sde(pot, lr=1.0, noise_cov=2 * temp, dt=dt)  # D = lr Sigma / 2 = T
    path = sample_path(scheme, _stationary_start([[temp / k]], 1000, 0), 1000, 20_000, seed=2,
                       every=10)
    lags = (0, 25, 50)  # 0, 0.5 and 1 relaxation time (every = 10 steps)
    # 10 batches of 2 time units = 4 relaxation times: nearly independent batch means
    zs, rel = _autocov_checks(path, lambda lag: ou_autocovariance([[k]], [[temp]], lag * 10 * dt),
                              lags, n_batches=10)
    discrete = linear_chain_stationary_covariance([[1 - k * dt]], [[2 * temp * dt]])[0, 0]
    bias = discrete / (temp / k) - 1
    assert bias == pytest.approx(k * dt / 2 / (1 - k * dt / 2))
    assert np.abs(zs).max() < 3, zs
    assert bias < rel[0] / 3  # the step's bias is below a third of the SE


def test_euler_maruyama_at_large_step_departs_from_the_continuous_ou_as_predicted():
    """k dt = 0.5: the Euler–Maruyama chain's variance is 4/3 of T/k; the simulation
    rejects the continuous value and agrees with the exact discrete one (a test that can
    fail: the continuous check above would fail at this step)."""
    k, temp, dt = 2.0, 0.5, 0.25
    f, q = [[1 - k * dt]], [[2 * temp * dt]]
    scheme = sde(Quadratic([k]), lr=1.0, noise_cov=2 * temp, dt=dt)
    sigma = linear_chain_stationary_covariance(f, q)
    path = sample_path(scheme, _stationary_start(sigma, 500, 3), 500, 4000, seed=4)
    for lag in (0, 1, 3):
        m, se = batch_means(lagged_products(path, lag), 20)
        assert abs(m - linear_chain_autocovariance(f, q, lag)[0, 0]) < 3 * se
        assert abs(m - ou_autocovariance([[k]], [[temp]], lag * dt)[0, 0]) > 5 * se


def test_sgd_and_svag_on_a_quadratic_finite_sum_converge_to_the_sde_as_l_grows():
    """Minibatch SGD on V = k x^2/2 with per-example noise C has the exact stationary
    variance eta C / (S k (2 - eta k / l)) for SVAG with amplification l (l = 1: SGD): the
    SDE's T/k in the limit. Checked at eta k = 1, where SGD is 2x the SDE."""
    k, c, size, lr = 1.0, 1.0, 2, 1.0
    problem = FiniteSum.designed(Quadratic([k]), c, n=200, seed=0)
    for ell in (1, 8):
        exact = lr * c / (size * k * (2 - lr * k / ell))
        scheme = svag(problem, lr, size, ell) if ell > 1 else sgd(problem, lr, size)
        path = sample_path(scheme, _stationary_start([[exact]], 1000, ell), 1000, 400 * ell,
                           seed=ell, every=ell)
        m, se = batch_means(lagged_products(path, 0), 20)
        assert abs(m - exact) < 3 * se, (ell, m, exact, se)
    assert lr * c / (size * k * 2) == pytest.approx(0.25)  # the SDE value T/k


def test_linear_chain_formulas_against_their_series():
    f = np.array([[0.7, 0.2], [-0.1, 0.5]])
    q = np.array([[0.4, 0.1], [0.1, 0.3]])
    series = sum(np.linalg.matrix_power(f, i) @ q @ np.linalg.matrix_power(f.T, i)
                 for i in range(200))
    np.testing.assert_allclose(linear_chain_stationary_covariance(f, q), series, rtol=1e-10)
    np.testing.assert_allclose(linear_chain_autocovariance(f, q, 3),
                               series @ np.linalg.matrix_power(f.T, 3), rtol=1e-10)
    assert ou_stationary_covariance([[3.0]], [[0.6]])[0, 0] == pytest.approx(0.2)
