"""Controlled landscapes and the finite-sum problem: closed-form gradients against autograd,
known critical points, the designed covariance of the minibatch noise, and the schemes'
algebra (SGD, GD + noise, the SDE, SVAG) on one step."""

import itertools
import math

import numpy as np
import pytest
import torch

from sgdlab.dynamics import (
    CallablePotential,
    DoubleWell,
    FiniteSum,
    Polynomial1D,
    Quadratic,
    SaddleSurface,
    critical_point,
    designed_offsets,
    gd_matching,
    sde,
    sgd,
    svag,
    tilted_double_well,
)
from sgdlab.dynamics.schemes import GaussianNoise, MinibatchNoise, SVAGNoise

POTENTIALS = {
    "double-well": lambda: DoubleWell(1.5, 3.0),
    "tilted": lambda: tilted_double_well(1.0, 8.0, 0.4),
    "polynomial": lambda: Polynomial1D([0.3, -1.0, -2.0, 0.5, 1.0]),
    "saddle-surface": lambda: SaddleSurface(1.0, 8.0, 2.0, coupling=0.7, angle=0.6),
    "quadratic": lambda: Quadratic([[2.0, 0.3], [0.3, 1.0]], center=[0.5, -1.0]),
}


@pytest.mark.parametrize("name", POTENTIALS)
def test_closed_form_gradient_equals_autograd(name):
    pot = POTENTIALS[name]()
    x = torch.randn(7, 3, pot.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    xg = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(pot.value(xg).sum(), xg)
    torch.testing.assert_close(pot.grad(x), auto, rtol=1e-12, atol=1e-12)
    for point in x[0]:  # closed-form Hessians (where a built-in has one) against torch.func
        ref = torch.func.hessian(pot.value)(point).reshape(pot.dim, pot.dim)
        torch.testing.assert_close(pot.hessian(point), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", POTENTIALS)
def test_known_critical_points_are_critical_with_the_right_index(name):
    pot = POTENTIALS[name]()
    assert pot.minima
    for points, index in ((pot.minima, 0), (pot.saddles, 1)):
        for p in points:
            assert float(pot.grad(p.unsqueeze(0)).norm()) < 1e-10
            assert int((torch.linalg.eigvalsh(pot.hessian(p)) < 0).sum()) == index
            q, found = critical_point(pot, p + 1e-3)
            assert found == index and torch.allclose(q, p, atol=1e-9)


def test_double_well_has_its_barrier_and_curvatures():
    w = DoubleWell(barrier=2.0, curvature=5.0)
    (m, m2), (s,) = w.minima, w.saddles
    assert float(w.value(s) - w.value(m)) == pytest.approx(2.0)
    assert float(w.hessian(m)) == pytest.approx(5.0) and float(w.hessian(m2)) == pytest.approx(5.0)
    assert float(w.hessian(s)) == pytest.approx(-2.5)  # -4h/a^2 = -k/2
    t = tilted_double_well(1.0, 8.0, tilt=0.5)
    left, right = t.minima
    assert float(t.value(right)) < float(t.value(left))  # the right well is lower
    with pytest.raises(ValueError, match="tilt"):
        tilted_double_well(1.0, 8.0, tilt=2.0)
    with pytest.raises(ValueError, match="even degree"):
        Polynomial1D([0.0, 1.0, 0.0, 1.0])


def test_saddle_surface_hessians_follow_the_formula_in_rotated_axes():
    surf = SaddleSurface(barrier=1.0, curvature=8.0, transverse=2.0, coupling=0.5, angle=0.4)
    r = surf.rotation
    for p, diag in ((surf.minima[0], (8.0, 3.0)), (surf.saddles[0], (-4.0, 2.0))):
        torch.testing.assert_close(r @ surf.hessian(p) @ r.T,
                                   torch.diag(torch.tensor(diag, dtype=torch.float64)))


def test_user_callable_potential_is_batched_and_differentiated():
    def mueller_like(z):
        return (z[0] ** 2 - 1) ** 2 + 2 * (z[1] - 0.3 * z[0] ** 2) ** 2

    pot = CallablePotential(mueller_like, dim=2)
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = torch.stack([torch.func.grad(mueller_like)(xi) for xi in x])
    torch.testing.assert_close(pot.grad(x), expected)
    s, index = critical_point(pot, [0.05, 0.02])
    assert index == 1 and torch.allclose(s, torch.zeros(2, dtype=torch.float64), atol=1e-9)
    m, index = critical_point(pot, [0.9, 0.2])
    assert index == 0 and torch.allclose(m, torch.tensor([1.0, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("kind,dim", [("gaussian", 1), ("gaussian", 3), ("two-point", 1),
                                      ("two-point", 2)])
def test_designed_offsets_have_exactly_the_designed_covariance(kind, dim):
    g = torch.Generator().manual_seed(dim)
    b = torch.randn(dim, dim, dtype=torch.float64, generator=g)
    cov = b @ b.T + 0.5 * torch.eye(dim, dtype=torch.float64)
    a = designed_offsets(cov, n=64, seed=3, kind=kind)
    problem = FiniteSum(Quadratic(torch.eye(dim)), a)
    torch.testing.assert_close(a.mean(0), torch.zeros(dim, dtype=torch.float64), atol=1e-13, rtol=0)
    torch.testing.assert_close(problem.covariance, cov, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(problem.minibatch_covariance(4), cov / 4)


def test_minibatch_covariance_is_c_over_s_by_enumerating_every_batch():
    """With replacement, all n^S ordered batches are equally likely: their mean gradient
    noise has covariance exactly C/S."""
    a = designed_offsets(torch.tensor([[2.0, 0.5], [0.5, 1.0]]), n=6, seed=0)
    for size in (1, 2, 3):
        means = torch.stack([a[list(b)].mean(0) for b in itertools.product(range(6), repeat=size)])
        emp = means.T @ means / len(means)
        torch.testing.assert_close(emp, (a.T @ a / 6) / size, rtol=1e-12, atol=1e-12)


def _empirical_cov_within_3se(samples, cov):
    """Entry-wise: the sample covariance (known mean 0) within 3 standard errors."""
    x = samples.reshape(-1, samples.shape[-1])
    prods = x.unsqueeze(-1) * x.unsqueeze(-2)
    est, se = prods.mean(0), prods.std(0) / math.sqrt(len(x))
    assert bool(((est - cov).abs() <= 3 * se).all()), (est, cov, se)
    assert bool((se < 0.01 * cov.diagonal().max()).all())


@pytest.mark.parametrize("size", [1, 5])
def test_minibatch_sampler_noise_has_the_designed_covariance(size):
    cov = torch.tensor([[3.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
    problem = FiniteSum.designed(Quadratic(torch.eye(2)), cov, n=200, seed=1)
    gen = np.random.default_rng(0)
    xi = MinibatchNoise(problem.offsets, size).sample(200, torch.arange(2000), gen, torch.float64)
    assert xi.shape == (200, 2000, 2)
    _empirical_cov_within_3se(xi, cov / size)
    if size == 1:  # single-example noise takes only the offsets' values
        vals = set(map(tuple, problem.offsets.tolist()))
        assert {tuple(v) for v in xi[0, :50].tolist()} <= vals


def test_svag_noise_is_unbiased_with_l_times_the_covariance():
    problem = FiniteSum.designed(DoubleWell(), 2.0, n=100, seed=2)
    gen = np.random.default_rng(1)
    noise = SVAGNoise(problem.offsets, 4, l=8)
    assert noise.c1 + noise.c2 == pytest.approx(1.0)
    assert noise.c1**2 + noise.c2**2 == pytest.approx(8.0)
    xi = noise.sample(300, torch.arange(2000), gen, torch.float64)
    _empirical_cov_within_3se(xi, torch.tensor([[8 * 2.0 / 4]], dtype=torch.float64))


def test_gaussian_noise_per_chain_scale():
    noise = GaussianNoise(torch.tensor([[1.0, 0.3], [0.3, 0.5]]), 2,
                          std_scale=torch.tensor([1.0, 2.0]))
    xi = noise.sample(100_000, torch.tensor([0, 1]), np.random.default_rng(0), torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    _empirical_cov_within_3se(xi[:, :1], cov)
    _empirical_cov_within_3se(xi[:, 1:], 4 * cov)


def test_one_step_of_each_scheme_is_its_formula():
    """Same generator, same draws: SGD moves by -eta (grad V + mean of the drawn offsets),
    SVAG by -(eta/l) (grad V + c1 xi_B1 + c2 xi_B2), and the SDE by -dt grad V plus
    sqrt(dt * eta) times N(0, C/S)."""
    pot = DoubleWell()
    problem = FiniteSum.designed(pot, 4.0, n=10, seed=0)
    x0 = torch.tensor([[-0.8], [0.1], [0.7]], dtype=torch.float64)
    chains = torch.arange(3)
    grad = pot.grad(x0)

    def run(scheme, seed=5):
        x = x0.clone()
        traj = scheme.advance(x, 1, np.random.default_rng(seed), chains)
        return traj[0]

    a = problem.offsets[:, 0]
    idx = torch.from_numpy(np.random.default_rng(5).integers(0, 10, (1, 3, 3)))[0]
    xi = a[idx].mean(0).unsqueeze(-1)
    torch.testing.assert_close(run(sgd(problem, 0.1, 3)), x0 - 0.1 * (grad + xi))
    idx2 = torch.from_numpy(np.random.default_rng(5).integers(0, 10, (1, 3, 6)))[0]
    b1, b2 = a[idx2[:, :3]].mean(0), a[idx2[:, 3:]].mean(0)
    r = math.sqrt(2 * 4 - 1)
    xi2 = ((1 + r) / 2 * b1 + (1 - r) / 2 * b2).unsqueeze(-1)
    torch.testing.assert_close(run(svag(problem, 0.1, 3, 4)), x0 - 0.025 * (grad + xi2))
    z = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 3, 1)))[0]
    dt, lr = 1e-3, 0.1
    expected = x0 - dt * grad - math.sqrt(dt * lr * 4.0 / 3) * z  # xi drawn, then -dt xi
    torch.testing.assert_close(run(sde(pot, lr, problem.minibatch_covariance(3), dt)), expected)
    iso = gd_matching(FiniteSum.designed(SaddleSurface(), torch.diag(torch.tensor([3.0, 1.0])),
                                         n=10), 0.1, 2, isotropic=True)
    torch.testing.assert_close(iso.noise.cov, torch.eye(2, dtype=torch.float64))  # Tr(C/S)/d
