"""Trajectory PCA against numpy's SVD, plane recovery, and the colander envelope."""

import numpy as np
import pytest
import torch
from landscape_cases import linear_regression, relu_mlp, vec

from sgdlab.landscape import (
    LandscapeError,
    Layout,
    colander_envelope,
    colander_points,
    loss_slice,
    sharpness_at,
    trajectory_pca,
    trajectory_plane,
)


def test_pca_matches_numpy_svd_of_the_centered_differences():
    g = np.random.default_rng(0)
    layout = Layout(("w",), ((12,),))
    pts = torch.from_numpy(np.cumsum(g.normal(size=(9, 12)) * np.linspace(3, 0.1, 12), 0))
    pca = trajectory_pca(pts, layout, k=3)
    m = (pts[:-1] - pts[-1]).numpy()
    u, s, vt = np.linalg.svd(m - m.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.directions.vectors.numpy() @ vt[:3].T), np.eye(3),
                               atol=1e-10)
    np.testing.assert_allclose(pca.explained, s[:3] ** 2 / (s**2).sum(), rtol=1e-10)
    np.testing.assert_allclose(pca.coordinates,
                               (pts - pts[-1]).numpy() @ pca.directions.vectors.numpy().T,
                               atol=1e-12)
    assert np.all(pca.coordinates[0] >= 0) and np.all(pca.coordinates[-1] == 0)


def test_a_trajectory_in_a_known_plane_recovers_that_plane():
    g = torch.Generator().manual_seed(3)
    P = 40
    basis, _ = torch.linalg.qr(torch.randn(P, 2, generator=g, dtype=torch.float64))
    end = torch.randn(P, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 1, 15, dtype=torch.float64)
    ab = torch.stack([3 * (1 - t) ** 2, torch.sin(4 * t) * (1 - t)], 1)  # a curved path
    pts = end + ab @ basis.T
    pca = trajectory_pca(pts, Layout(("theta",), ((P,),)), k=2)
    U = pca.directions.vectors.T
    torch.testing.assert_close(U @ U.T, basis @ basis.T, rtol=0, atol=1e-10)
    assert pca.explained.sum() == pytest.approx(1.0, abs=1e-12)
    back = end + torch.from_numpy(pca.coordinates) @ pca.directions.vectors
    torch.testing.assert_close(back, pts, rtol=0, atol=1e-12)


def test_the_trajectory_plane_covers_the_path_and_equals_a_slice_on_those_directions():
    model, loss_fn, data = relu_mlp()
    layout = Layout.of(model)
    g = torch.Generator().manual_seed(0)
    steps = torch.randn(6, layout.dim, generator=g, dtype=torch.float64) * 0.05
    pts = vec(model) + torch.cumsum(steps, 0)
    pca = trajectory_pca(pts, layout)
    plane = trajectory_plane(model, loss_fn, data, pca, num=7, margin=0.1)
    for i in range(2):
        lo, hi = pca.plane_extent[i]
        assert plane.axes[i][0] < lo and plane.axes[i][-1] > hi
    same = loss_slice(model, loss_fn, data, plane.axes, directions=pca.directions,
                      center=pts[-1])
    np.testing.assert_array_equal(plane.loss, same.loss)
    assert [r["kind"] for r in plane.directions.recipes] == ["pca", "pca"]
    with pytest.raises(LandscapeError, match="trajectory: needs at least 2 points"):
        trajectory_pca(pts[:1], layout)


def test_the_envelope_is_the_minimum_sharpness_below_each_level_by_brute_force():
    g = np.random.default_rng(1)
    loss = g.uniform(0.01, 2.0, 300)
    lam = 5.0 / loss * g.uniform(1, 3, 300)  # sharp only where the loss is low
    loss[7] = np.nan
    env = colander_envelope(loss, lam, num_levels=12)
    for k, level in enumerate(env.levels):
        below = [lam[i] for i in range(300) if not np.isnan(loss[i]) and loss[i] <= level]
        assert env.counts[k] == len(below)
        if below:
            assert env.min_sharpness[k] == min(below) == lam[env.argmin[k]]
        else:
            assert np.isnan(env.min_sharpness[k]) and env.argmin[k] == -1
    assert env.trend() < -0.9
    empty = colander_envelope([1.0, 2.0], [3.0, 4.0], levels=[0.5, 1.5])
    assert np.isnan(empty.min_sharpness[0]) and empty.argmin[0] == -1
    assert empty.min_sharpness[1] == 3.0


def test_sharpness_at_points_of_linear_regression_is_the_top_eigenvalue_of_h():
    model, loss_fn, data, H, w_star, _ = linear_regression()
    pts = torch.stack([w_star, w_star + 1.0, vec(model)])
    lam = sharpness_at(model, loss_fn, data, pts, k=2, tol=1e-10)
    top = np.linalg.eigvalsh(H.numpy())[::-1][:2]
    np.testing.assert_allclose(lam, np.tile(top, (3, 1)), rtol=1e-9)


def test_colander_points_pair_each_points_loss_with_its_sharpness():
    model, loss_fn, data, H, w_star, exact = linear_regression()
    runs = [torch.stack([w_star + 1.0, w_star]), torch.stack([w_star - 0.5, w_star + 0.1,
                                                              w_star])]
    pts = colander_points(model, loss_fn, data, runs, tol=1e-10)
    assert list(pts.trajectory) == [0, 0, 1, 1, 1] and list(pts.step) == [0, 1, 0, 1, 2]
    np.testing.assert_allclose(pts.loss, [exact(p) for r in runs for p in r], rtol=1e-12)
    np.testing.assert_allclose(pts.sharpness, np.linalg.eigvalsh(H.numpy())[-1], rtol=1e-9)
    assert pts.envelope(levels=[1e9]).counts[0] == 5
