"""Random-subspace training: exact equivalences, closed forms and d_int."""

import math

import numpy as np
import pytest
import torch
from landscape_cases import linear_regression, relu_mlp, vec

from sgdlab.landscape import (
    LandscapeError,
    Layout,
    evaluate_points,
    intrinsic_dimension,
    projection_matrix,
    subspace_sweep,
    train_subspace,
)
from sgdlab.landscape.training import batch_indices


def _plain_sgd(model, loss_fn, data, steps, lr, momentum, batch_size, batch_seed):
    """torch.optim.SGD on the model's own parameters with the same minibatches."""
    import copy

    m = copy.deepcopy(model)
    x, y = data
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum)
    for idx in batch_indices(len(y), batch_size, steps, batch_seed):
        opt.zero_grad()
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        loss_fn(m(xb), yb).backward()
        opt.step()
    return vec(m)


@pytest.mark.parametrize("projection", ["orthogonal", "identity"])
def test_full_dimensional_orthogonal_subspace_training_is_plain_sgd(projection):
    model, loss_fn, data = relu_mlp()
    D = Layout.of(model).dim
    opts = dict(steps=60, lr=0.1, momentum=0.9, batch_size=8, batch_seed=3)
    run = train_subspace(model, loss_fn, data, D, projection=projection, seed=1,
                         return_point=True, **opts)
    ref = _plain_sgd(model, loss_fn, data, **opts)
    assert float((run.meta["point"] - ref).abs().max()) <= 1e-10
    assert float((ref - vec(model)).abs().max()) > 1e-2  # it moved


def test_subspace_gradient_descent_reaches_the_projected_least_squares_solution():
    model, loss_fn, (x, y), _, _, exact = linear_regression()
    d = 3
    run = train_subspace(model, loss_fn, (x, y), d, projection="dense", seed=4, steps=3000,
                         lr=0.5, momentum=0.5, batch_size=None, return_point=True)
    P = projection_matrix(6, d, "dense", seed=4, dtype=torch.float64)
    theta0 = vec(model)
    XP = x @ P
    z = torch.linalg.solve(XP.T @ XP, XP.T @ (y.reshape(-1) - x @ theta0))
    torch.testing.assert_close(run.z, z, rtol=0, atol=1e-9)
    assert run.train_loss == pytest.approx(exact(theta0 + P @ z), rel=1e-10)
    assert math.isnan(run.train_accuracy)  # one output: no classes


def test_projections_have_unit_columns_and_the_sparse_one_is_sparse():
    D, d = 2500, 40
    dense = projection_matrix(D, d, "dense", seed=0, dtype=torch.float64)
    torch.testing.assert_close(dense.norm(dim=0), torch.ones(d, dtype=torch.float64))
    assert torch.equal(dense, projection_matrix(D, d, "dense", seed=0, dtype=torch.float64))
    sparse = projection_matrix(D, d, "sparse", seed=0, dtype=torch.float64)
    assert sparse.is_sparse
    full = sparse.to_dense()
    torch.testing.assert_close(full.norm(dim=0), torch.ones(d, dtype=torch.float64))
    density = float((full != 0).double().mean())
    assert 0.5 / 50 < density < 2.0 / 50  # 1/√D = 1/50
    orth = projection_matrix(30, 30, "orthogonal", seed=2, dtype=torch.float64)
    torch.testing.assert_close(orth.T @ orth, torch.eye(30, dtype=torch.float64))
    with pytest.raises(LandscapeError, match="d: must be between 1 and 30"):
        projection_matrix(30, 31, "orthogonal")
    with pytest.raises(LandscapeError, match="projection: must be one of"):
        projection_matrix(30, 3, "fastfood")


def test_sparse_and_dense_subspaces_train_and_the_radius_rescales_the_start():
    model, loss_fn, data = relu_mlp()
    start_loss, _ = evaluate_points(model, loss_fn, data, [vec(model) * (3.0 / vec(model).norm())])
    still = train_subspace(model, loss_fn, data, 5, radius=3.0, steps=0)
    assert still.start_norm == pytest.approx(3.0, rel=1e-12)
    assert still.train_loss == pytest.approx(float(start_loss[0]), rel=1e-12)
    for projection in ["dense", "sparse"]:
        run = train_subspace(model, loss_fn, data, 10, projection=projection, steps=100,
                             lr=0.2, batch_size=None, eval_data=data)
        assert run.train_loss < run.history[0]
        assert run.eval_loss == pytest.approx(run.train_loss, rel=1e-12)
        assert 0 <= run.train_accuracy <= 1 and run.summary()["d"] == 10


def test_intrinsic_dimension_is_the_first_d_reaching_90_percent_of_the_baseline():
    res = intrinsic_dimension([100, 10, 50, 200], [0.95, 0.3, 0.80, 0.97], baseline=0.98)
    # target 0.882: d = 50 gives 0.80, d = 100 gives 0.95
    assert res.d_int == 100
    assert res.d_int_interpolated == pytest.approx(50 + (0.882 - 0.80) / 0.15 * 50)
    assert list(res.dims) == [10, 50, 100, 200]
    none = intrinsic_dimension([10, 20], [0.1, 0.2], baseline=0.9)
    assert none.d_int is None and none.d_int_interpolated is None
    first = intrinsic_dimension([10, 20], [0.95, 0.96], baseline=1.0)
    assert first.d_int == 10 and first.d_int_interpolated == 10
    with pytest.raises(LandscapeError):
        intrinsic_dimension([1, 2], [0.5], baseline=1.0)


def test_batch_indices_are_epochs_of_a_seeded_permutation():
    idx = list(batch_indices(10, 4, 5, seed=1))
    gen = torch.Generator().manual_seed(1)
    p1, p2, p3 = (torch.randperm(10, generator=gen) for _ in range(3))
    expect = [p1[:4], p1[4:8], p2[:4], p2[4:8], p3[:4]]
    assert all(torch.equal(a, b) for a, b in zip(idx, expect))
    assert list(batch_indices(10, None, 2, 0)) == [None, None]
    assert np.all([i is None for i in batch_indices(10, 50, 3, 0)])


def test_a_sweep_over_d_uses_one_start_and_the_full_space_run_as_baseline():
    model, loss_fn, data = relu_mlp()
    opts = dict(steps=30, lr=0.1, momentum=0.9, batch_size=8, batch_seed=3)
    res, runs, base = subspace_sweep(model, loss_fn, data, [2, 8, 30], eval_data=data,
                                     seed=5, **opts)
    assert [r.d for r in runs] == [2, 8, 30] and base.projection == "identity"
    assert base.d == Layout.of(model).dim
    assert len({r.start_norm for r in [*runs, base]}) == 1
    ref = _plain_sgd(model, loss_fn, data, **opts)
    (ref_acc,) = evaluate_points(model, loss_fn, data, [ref])[1]
    assert base.eval_accuracy == ref_acc
    again = intrinsic_dimension([2, 8, 30], [r.eval_accuracy for r in runs], ref_acc)
    assert (res.d_int, res.baseline) == (again.d_int, again.baseline)
    with pytest.raises(LandscapeError, match="eval_data: needed"):
        subspace_sweep(model, loss_fn, data, [2])


def test_the_full_space_baseline_never_builds_a_dense_identity():
    """P = I is applied as z itself: a 200k-parameter model (an identity of 160 GB) trains
    as plain SGD, and building that identity explicitly is refused in one line."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(1000, 200), nn.ReLU(), nn.Linear(200, 3))
    x, y = torch.randn(16, 1000), torch.randint(0, 3, (16,))
    loss_fn = torch.nn.functional.cross_entropy
    D = Layout.of(model).dim
    assert D > 200_000
    opts = dict(steps=3, lr=0.1, momentum=0.0, batch_size=8, batch_seed=0)
    run = train_subspace(model, loss_fn, (x, y), D, projection="identity", return_point=True,
                         **opts)
    torch.testing.assert_close(run.meta["point"], _plain_sgd(model, loss_fn, (x, y), **opts))
    with pytest.raises(LandscapeError, match="use projection='sparse'"):
        projection_matrix(D, D, "identity")
    with pytest.raises(LandscapeError, match="identity projection needs d"):
        train_subspace(model, loss_fn, (x, y), 10, projection="identity")


def test_a_sparse_projection_and_its_gradient_equal_the_dense_matrix_products():
    from sgdlab.landscape.subspace import project

    P = projection_matrix(500, 7, "sparse", seed=2, dtype=torch.float64)
    dense = P.to_dense()
    z = torch.randn(7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(500, dtype=torch.float64)
    (project(P, z) @ g).backward()
    torch.testing.assert_close(project(P, z.detach()), dense @ z.detach(), rtol=0, atol=1e-14)
    torch.testing.assert_close(z.grad, dense.T @ g, rtol=0, atol=1e-13)
    assert torch.allclose(dense.norm(dim=0), torch.ones(7, dtype=torch.float64))


def test_the_sparse_nonzeros_are_independent_bernoulli_entries():
    """Geometric gaps give every entry probability p, at every row position: the overall
    density, the density of the first and last rows, and the per-column count's variance
    D p (1 − p) match within 4 standard errors."""
    from sgdlab.landscape.subspace import _bernoulli_positions

    D, d, p = 400, 5000, 0.05
    rows, cols = _bernoulli_positions(D, d, p, torch.Generator().manual_seed(0))
    mask = torch.zeros(D, d, dtype=torch.bool)
    mask[rows, cols] = True
    assert int(mask.sum()) == len(rows)  # no position drawn twice
    n = D * d
    assert abs(float(mask.double().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    for part in (mask[:20], mask[-20:]):
        assert abs(float(part.double().mean()) - p) < 4 * math.sqrt(p * (1 - p) / part.numel())
    counts = mask.sum(0).double()
    var = D * p * (1 - p)
    assert abs(float(counts.var()) - var) < 4 * var * math.sqrt(2 / (d - 1))
