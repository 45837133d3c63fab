"""Slices against closed forms (quadratics, linear regression), storage and bad input."""

import numpy as np
import pytest
import torch
from landscape_cases import linear_regression, relu_mlp, vec
from torch import nn

from sgdlab.landscape import (
    LandscapeError,
    Layout,
    Slice,
    fixed_subset,
    given_directions,
    loss_slice,
    slice_1d,
    slice_2d,
)


class Quadratic(nn.Module):
    """L(θ) = ½ (θ − c)ᵀ A (θ − c) + L0, output per example (the loss is their mean)."""

    def __init__(self, A, c, L0=0.3):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(len(c), dtype=torch.float64))
        self.register_buffer("A", A)
        self.register_buffer("c", c)
        self.L0 = L0

    def forward(self, x):
        r = self.theta - self.c
        return (0.5 * r @ self.A @ r + self.L0).expand(len(x), 1) + 0 * x[:, :1]


def mean_out(out, y):
    return out.mean()


def quadratic(seed=0, P=5, indefinite=False):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.5, 3.0, P, dtype=torch.float64)
    if indefinite:
        lam[0] = -2.0
    A = q @ torch.diag(lam) @ q.T
    c = torch.randn(P, generator=g, dtype=torch.float64)
    model = Quadratic(A, c)
    with torch.no_grad():
        model.theta.copy_(torch.randn(P, generator=g, dtype=torch.float64))
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4))
    return model, data, A, c, lam, q


def test_a_plane_on_a_quadratic_is_the_analytic_quadratic():
    model, data, A, c, _, _ = quadratic()
    layout = Layout.of(model)
    g = torch.Generator().manual_seed(1)
    D = torch.randn(2, 5, generator=g, dtype=torch.float64)
    xs, ys = np.linspace(-1, 1, 7), np.linspace(-2, 0.5, 5)
    s = slice_2d(model, mean_out, data, xs, ys, directions=given_directions(D, layout))
    th = vec(model)
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            r = th + a * D[0] + b * D[1] - c
            assert s.loss[i, j] == pytest.approx(float(0.5 * r @ A @ r + 0.3), rel=1e-13)
    assert np.isnan(s.accuracy).all()  # one output: no classes


def test_hessian_slices_through_the_minimum_are_half_lambda_a_squared():
    model, data, A, c, lam, _ = quadratic()
    xs = np.linspace(-1.5, 1.5, 11)
    s = slice_1d(model, mean_out, data, xs, directions="hessian", center=c,
                 hessian_options={"tol": 1e-12})
    lam_max = float(lam.max())
    assert s.directions.recipes[0]["eigenvalue"] == pytest.approx(lam_max, rel=1e-10)
    np.testing.assert_allclose(s.loss, 0.3 + 0.5 * lam_max * xs**2, rtol=1e-10)


def test_a_random_slice_of_linear_regression_is_its_quadratic_in_closed_form():
    model, loss_fn, data, H, w_star, exact = linear_regression()
    xs = np.linspace(-2, 2, 9)
    s = slice_1d(model, loss_fn, data, xs, seed=5)
    d = s.directions.vectors[0]
    w = vec(model)
    g = H @ (w - w_star)
    L0 = exact(w)
    closed = L0 + xs * float(g @ d) + 0.5 * xs**2 * float(d @ H @ d)
    np.testing.assert_allclose(s.loss, closed, rtol=1e-12)
    np.testing.assert_allclose(s.loss, [exact(w + a * d) for a in xs], rtol=1e-12)
    # a filter-normalized direction of a 1×6 weight has the weights' norm
    assert float(d.norm()) == pytest.approx(float(w.norm()), rel=1e-12)


def test_saved_slices_load_back_and_redraw_identically(tmp_path):
    model, loss_fn, data = relu_mlp()
    s = slice_2d(model, loss_fn, data, np.linspace(-1, 1, 5), np.linspace(0, 1, 3), seed=2)
    s.save(tmp_path / "plane.npz")
    t = Slice.load(tmp_path / "plane.npz")
    assert t.directions.recipes == s.directions.recipes and t.meta == s.meta
    assert torch.equal(t.center, s.center) and torch.equal(t.directions.vectors,
                                                           s.directions.vectors)
    np.testing.assert_array_equal(t.loss, s.loss)
    assert t.loss.shape == (5, 3) and t.coordinates.shape == (15, 2)
    # the stored directions and center give the same values when evaluated again
    again = loss_slice(model, loss_fn, data, t.axes, directions=t.directions, center=t.center)
    np.testing.assert_array_equal(again.loss, s.loss)
    # coordinates follow loss.reshape(-1): the last axis fastest
    i, j = 3, 2
    assert tuple(t.coordinates[i * 3 + j]) == (t.axes[0][i], t.axes[1][j])


def test_a_fixed_subset_is_the_same_examples_every_time():
    model, loss_fn, (x, y) = relu_mlp()
    xs, ys = fixed_subset((x, y), 12, seed=7)
    again = fixed_subset([(x[:10], y[:10]), (x[10:], y[10:])], 12, seed=7)
    assert torch.equal(xs, again[0]) and torch.equal(ys, again[1])
    a = slice_1d(model, loss_fn, (x, y), np.linspace(-1, 1, 5), subset=12, subset_seed=7)
    b = slice_1d(model, loss_fn, (xs, ys), np.linspace(-1, 1, 5))
    np.testing.assert_array_equal(a.loss, b.loss)
    assert a.meta["num_examples"] == 12 and a.meta["subset_seed"] == 7
    with pytest.raises(LandscapeError, match="subset: must be between 1 and 30"):
        fixed_subset((x, y), 31)


def test_directions_of_the_wrong_shape_or_number_are_refused():
    model, loss_fn, data = relu_mlp()
    P = Layout.of(model).dim
    with pytest.raises(LandscapeError, match=rf"directions: expected shape \(m, {P}\)"):
        slice_1d(model, loss_fn, data, directions=torch.zeros(1, P - 1, dtype=torch.float64))
    with pytest.raises(LandscapeError, match="directions: 1 given for 2 axes"):
        slice_2d(model, loss_fn, data, directions=torch.zeros(1, P, dtype=torch.float64))
    with pytest.raises(LandscapeError, match="directions: must be 'random', 'hessian'"):
        slice_1d(model, loss_fn, data, directions="pca")
