"""Lanczos and power iteration against dense eigendecompositions (float64)."""

from functools import cache

import pytest
import torch

from sgdlab.curvature import DenseOperator, HessianOperator, lanczos, power_iteration
from sgdlab.testing import CASES, dense_hessian, eigh, make_case


@cache
def hessian_of(name: str) -> torch.Tensor:
    c = make_case(name)
    return dense_hessian(c.model, c.loss_fn, c.data, **c.reference_options)


def spectrum_matrix(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return (q * eigs) @ q.T


def gapped(dim: int = 300, seed: int = 0) -> torch.Tensor:
    """Five separated outliers on top of a bulk in [-1, 3]."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.rand(dim - 5, generator=g, dtype=torch.float64) * 4 - 1
    return torch.cat([torch.tensor([20.0, 15.0, 11.0, 8.0, 6.0], dtype=torch.float64), bulk])


def assert_matches(res, matrix: torch.Tensor, which: str, k: int, rtol: float = 1e-8) -> None:
    vals, vecs = eigh(matrix, which)
    scale = vals.abs().max()
    assert torch.all(
        (res.values - vals[:k]).abs() <= rtol * torch.maximum(vals[:k].abs(), 1e-3 * scale)
    )
    overlap = (res.vectors.double() * vecs[:k]).sum(1).abs()  # up to sign
    assert torch.all(overlap > 1 - 1e-8), overlap
    true = (res.vectors @ matrix - res.values[:, None] * res.vectors).norm(dim=1) / res.values.abs()
    assert torch.allclose(true, res.residuals, rtol=1e-3, atol=1e-14)
    assert res.all_converged


@pytest.mark.filterwarnings("ignore::sgdlab.curvature.model_function.CurvatureMemoryWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_top_eigenpairs_of_every_case(name):
    c = make_case(name)
    H = hessian_of(name)
    k = min(4, H.shape[0])
    op = HessianOperator(c.model, c.loss_fn, c.data, **c.options)
    res = lanczos(op, k, tol=1e-10)
    assert_matches(res, H, "LA", k)
    assert res.products == op.products


def test_largest_magnitude_versus_largest_algebraic():
    c = make_case("saddle")
    H = hessian_of("saddle")
    op = HessianOperator(c.model, c.loss_fn, c.data)
    lm = lanczos(op, 3, which="LM", tol=1e-10)
    la = lanczos(op, 3, which="LA", tol=1e-10)
    sa = lanczos(op, 2, which="SA", tol=1e-10)
    assert lm.values[0] < 0 < la.values[0]  # the dominant curvature is negative here
    assert_matches(lm, H, "LM", 3)
    assert_matches(la, H, "LA", 3)
    assert_matches(sa, H, "SA", 2)


def test_stops_on_the_residual_before_exhausting_the_space():
    H = hessian_of("mlp_wide_ce")
    loose = lanczos(DenseOperator(H), 3, tol=1e-3)
    tight = lanczos(DenseOperator(H), 3, tol=1e-9)
    assert loose.products < tight.products < 200 < H.shape[0]
    assert loose.residuals.max() <= 1e-3
    assert tight.residuals.max() <= 1e-9
    # eigenvalue error ~ residual^2: the loose run's values are already much better than 1e-3
    vals, _ = eigh(H)
    assert ((loose.values - vals[:3]).abs() / vals[:3]).max() < 1e-4


def test_warm_start_uses_fewer_products_than_cold():
    c = make_case("mlp_wide_ce")
    op = HessianOperator(c.model, c.loss_fn, c.data)
    first = lanczos(op, 4, tol=1e-8)
    with torch.no_grad():  # move the parameters a little, as a few SGD steps would
        g = torch.Generator().manual_seed(3)
        for p in c.model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g, dtype=p.dtype) * p.abs().mean())
    moved = HessianOperator(c.model, c.loss_fn, c.data)
    cold = lanczos(moved, 4, tol=1e-8)
    warm = lanczos(moved, 4, tol=1e-8, init=first)
    block = lanczos(moved, 4, tol=1e-8, init=first.vectors, block_size=4)
    for res in (warm, block):
        assert res.all_converged and res.residuals.max() <= 1e-8
        assert ((res.values - cold.values).abs() / cold.values).max() < 1e-12
        assert ((res.vectors * cold.vectors).sum(1).abs() > 1 - 1e-10).all()
    assert cold.all_converged and warm.products < cold.products
    assert (first.vectors * cold.vectors).sum(1).abs().min() < 0.999  # the vectors did move


def test_thick_restart_and_block_start():
    A = spectrum_matrix(gapped())
    vals, _ = eigh(A)
    restarted = lanczos(DenseOperator(A), 5, tol=1e-10, max_basis=12)
    assert_matches(restarted, A, "LA", 5)
    block = lanczos(DenseOperator(A), 5, tol=1e-10, block_size=3)
    assert_matches(block, A, "LA", 5)
    assert block.products % 3 == 0


def test_float32_reaches_a_float32_tolerance():
    A = spectrum_matrix(gapped()).float()
    res = lanczos(DenseOperator(A), 5, tol=1e-5)
    assert res.vectors.dtype == torch.float32 and res.all_converged
    vals, _ = eigh(A.double())
    assert ((res.values - vals[:5]).abs() / vals[:5]).max() < 1e-6


def test_budget_exhaustion_reports_unconverged_pairs():
    A = spectrum_matrix(gapped())
    res = lanczos(DenseOperator(A), 5, tol=1e-12, max_products=7)
    assert res.products <= 7 and not res.all_converged
    assert torch.all(res.residuals[~res.converged] > 1e-12)
    short = lanczos(DenseOperator(A), 5, tol=1e-6, max_products=3)
    assert torch.isnan(short.values[3:]).all() and short.vectors is None


def test_same_seed_same_result():
    A = spectrum_matrix(gapped())
    a = lanczos(DenseOperator(A), 3, tol=1e-6, seed=5)
    b = lanczos(DenseOperator(A), 3, tol=1e-6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)


def test_power_iteration_with_deflation():
    A = spectrum_matrix(gapped())
    res = power_iteration(DenseOperator(A), 3, tol=1e-7)
    vals, vecs = eigh(A, "LM")
    assert res.all_converged
    assert ((res.values - vals[:3]).abs() / vals[:3]).max() < 1e-10
    assert ((res.vectors * vecs[:3]).sum(1).abs() > 1 - 1e-10).all()
    assert res.products > 3 * lanczos(DenseOperator(A), 3, tol=1e-7).products


def test_bad_arguments():
    op = DenseOperator(torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="between 1 and the dimension 4"):
        lanczos(op, 5)
    with pytest.raises(ValueError, match="between 1"):
        lanczos(op, 0)
    with pytest.raises(ValueError, match="tol must be > 0"):
        lanczos(op, 1, tol=0.0)
    with pytest.raises(ValueError, match="which"):
        lanczos(op, 1, which="BE")
    with pytest.raises(ValueError, match="shape"):
        lanczos(op, 1, init=torch.ones(2, 5))
    with pytest.raises(ValueError, match="generator= or seed="):
        lanczos(op, 1, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="tol must be > 0"):
        power_iteration(op, 1, tol=-1.0)
