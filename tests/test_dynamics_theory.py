"""Eyring–Kramers, Arrhenius fits and the noise-alignment indicator against closed forms."""

import math

import numpy as np
import pytest
import torch

from sgdlab.dynamics import (
    DoubleWell,
    SaddleSurface,
    arrhenius_fit,
    diffusion,
    escape_efficiency,
    eyring_kramers,
    mfpt_1d,
)


def test_eyring_kramers_on_the_double_well_is_the_1d_kramers_formula():
    w = DoubleWell(barrier=1.5, curvature=6.0)
    pred = eyring_kramers(w, w.minima[0], w.saddles[0], 0.25)
    expected = 2 * math.pi / math.sqrt(6.0 * 3.0) * math.exp(1.5 / 0.25)
    assert pred.tau == pytest.approx(expected, rel=1e-12)
    assert pred.exact and pred.exponent == pytest.approx(6.0)


def test_eyring_kramers_on_the_coupled_surface_has_the_transverse_prefactor():
    """Minimum Hessian diag(8, k(1 + c)), saddle diag(-4, k): tau = 2 pi / 4 *
    sqrt(4 k / (8 k (1 + c))) e^{h/T}, whatever the rotation."""
    surf = SaddleSurface(barrier=1.0, curvature=8.0, transverse=2.0, coupling=1.0, angle=0.7)
    pred = eyring_kramers(surf, surf.minima[0], surf.saddles[0], 0.2)
    expected = 2 * math.pi / 4 * math.sqrt(4 * 2.0 / (8 * 4.0)) * math.exp(5.0)
    assert pred.tau == pytest.approx(expected, rel=1e-10)


def test_anisotropic_diffusion_is_projected_on_the_escape_direction():
    surf = SaddleSurface(angle=0.3)
    e = surf.escape_direction
    d = 0.3 * torch.outer(e, e) + 0.05 * torch.eye(2, dtype=torch.float64)
    pred = eyring_kramers(surf, surf.minima[0], surf.saddles[0], d)
    assert not pred.exact and pred.temperature == pytest.approx(0.35)
    iso = eyring_kramers(surf, surf.minima[0], surf.saddles[0], 0.35 * torch.eye(2))
    assert iso.exact and iso.tau == pytest.approx(pred.tau)
    assert float(diffusion(0.1, torch.tensor(4.0))) == pytest.approx(0.2)  # eta sigma^2 / 2


def test_kramers_converges_to_the_exact_formula_at_rate_t_over_barrier():
    """The relative error of Eyring–Kramers against the exact 1-D MFPT to the other
    minimum falls like T/dV: 10.7% at dV/T = 5, 2.1% at 20."""
    w = DoubleWell(1.0, 8.0)
    errs = []
    for r in (5.0, 10.0, 20.0):
        exact = mfpt_1d(w, -1.0, 1.0, 1 / r)
        errs.append(exact / eyring_kramers(w, [-1.0], [0.0], 1 / r).tau - 1)
    assert 0 < errs[2] < errs[1] < errs[0] < 0.15 and errs[2] < 0.03
    assert 0.3 < (errs[2] * 20) / (errs[0] * 5) < 1  # first order in T/dV, plus a T^2 term


def test_arrhenius_fit_recovers_slope_and_its_error():
    x = np.array([3.0, 4.0, 5.0, 6.0])
    tau = 2.0 * np.exp(1.0 * x)
    fit = arrhenius_fit(x, tau, 0.01 * tau)
    assert fit["slope"] == pytest.approx(1.0) and fit["intercept"] == pytest.approx(math.log(2))
    # equal relative errors of 1%: the slope's SE is 0.01 / sqrt(sum (x - mean)^2)
    assert fit["slope_se"] == pytest.approx(0.01 / math.sqrt(5.0))
    assert math.isnan(arrhenius_fit([1.0], [2.0])["slope"])


def test_escape_efficiency_prefers_noise_aligned_with_the_hessian():
    h = np.diag([8.0, 1.0])
    aligned, iso, across = np.diag([1.8, 0.2]), np.eye(2), np.diag([0.2, 1.8])
    vals = [escape_efficiency(h, c) for c in (aligned, iso, across)]
    assert vals == pytest.approx([14.6, 9.0, 3.4])


def test_2d_backward_equation_on_a_separable_surface_is_the_1d_formula():
    """With no coupling the escape coordinate decouples: the grid solution of the 2-D
    backward equation (Richardson-extrapolated) equals the 1-D integral; the coupled
    surface's transverse prefactor sqrt(k_s/k_m) = sqrt(1/2) shows up against it."""
    from sgdlab.dynamics import mfpt_grid_2d

    exact = mfpt_1d(DoubleWell(1.0, 8.0), -1.0, 1.0, 0.25)
    sep = SaddleSurface(1.0, 8.0, 2.0, coupling=0.0)
    grid = mfpt_grid_2d(sep, [-1.0, 0.0], 1.0, 0.25, (-2.3, -3.0, 3.0))
    assert grid == pytest.approx(exact, rel=1e-3)
    coupled = SaddleSurface(1.0, 8.0, 2.0, coupling=1.0)
    ratios = [mfpt_grid_2d(coupled, [-1.0, 0.0], 1.0, t, (-2.3, -3.0, 3.0))
              / mfpt_1d(DoubleWell(1.0, 8.0), -1.0, 1.0, t) for t in (0.2, 0.125)]
    # towards Eyring–Kramers' prefactor ratio sqrt(1/2) as T falls (0.75 at T = 0.2)
    assert ratios[0] > ratios[1] > math.sqrt(0.5) and ratios[1] < 1.05 * math.sqrt(0.5)
