"""Trace estimators and SLQ densities converge to exact values (fixed seeds)."""

import pytest
import torch

from sgdlab.curvature import DenseOperator, HessianOperator, hutchinson, hutchpp, slq
from sgdlab.testing import dense_hessian, make_case


def spectrum_matrix(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return (q * eigs) @ q.T


def decaying(dim: int = 300) -> torch.Tensor:
    return spectrum_matrix(torch.arange(1, dim + 1, dtype=torch.float64) ** -1.5)


@pytest.mark.parametrize("method", [hutchinson, hutchpp])
def test_estimate_within_a_few_standard_errors_and_error_shrinks(method):
    # P = 1000 > both budgets (with a budget of P, Hutch++ computes the trace exactly)
    A = spectrum_matrix(torch.linspace(-1, 4, 1000, dtype=torch.float64), seed=1)
    exact = float(A.trace())
    small = method(DenseOperator(A), rtol=0, max_products=60, seed=0)
    large = method(DenseOperator(A), rtol=0, max_products=600, seed=0)
    assert small.products == 60 and large.products == 600
    assert large.stderr < 0.5 * small.stderr
    for res in (small, large):
        assert abs(res.estimate - exact) <= 4 * res.stderr
        assert res.stderr > 0


@pytest.mark.parametrize("method", [hutchinson, hutchpp])
def test_stops_at_the_target_relative_standard_error(method):
    A = spectrum_matrix(torch.linspace(0.5, 3, 200, dtype=torch.float64), seed=2)
    res = method(DenseOperator(A), rtol=0.01, max_products=199, seed=0)  # budget < P = 200
    assert res.converged and res.relative_stderr <= 0.01 and res.products < 199
    assert abs(res.estimate - float(A.trace())) <= 4 * res.stderr
    capped = method(DenseOperator(A), rtol=1e-6, max_products=40, seed=0)
    assert not capped.converged and capped.products == 40


def test_standard_errors_are_honest_over_repetitions():
    """|error| / stderr behaves like a standard normal: mean square near 1."""
    A = decaying(120)
    exact = float(A.trace())
    for method in (hutchinson, hutchpp):
        z = [
            (r.estimate - exact) / r.stderr
            for r in (method(DenseOperator(A), rtol=0, max_products=45, seed=s) for s in range(60))
        ]
        ms = sum(v * v for v in z) / len(z)
        assert 0.4 < ms < 2.0, (method.__name__, ms)


def test_hutchpp_beats_hutchinson_at_equal_budget_on_a_decaying_spectrum():
    A = decaying()
    exact = float(A.trace())
    err = {"hutchinson": [], "hutch++": []}
    for s in range(20):
        for method in (hutchinson, hutchpp):
            res = method(DenseOperator(A), rtol=0, max_products=60, seed=s)
            err[res.method].append(abs(res.estimate - exact))
    mean = {k: sum(v) / len(v) for k, v in err.items()}
    assert mean["hutch++"] < 0.3 * mean["hutchinson"], mean


def test_hutchpp_on_a_network_hessian():
    c = make_case("mlp_wide_ce")
    exact = float(dense_hessian(c.model, c.loss_fn, c.data).trace())
    res = hutchpp(HessianOperator(c.model, c.loss_fn, c.data), rtol=0.02, max_products=400, seed=0)
    assert res.converged and abs(res.estimate - exact) <= 4 * res.stderr
    assert res.products == res.sketch_size * 2 + len(res.samples)  # sketch, Qᵀ A Q, samples


def test_hutchpp_is_exact_when_the_sketch_spans_the_range():
    eigs = torch.zeros(40, dtype=torch.float64)
    eigs[:5] = torch.tensor([5.0, 4.0, 3.0, -2.0, 1.0])
    A = spectrum_matrix(eigs)  # rank 5: a sketch of 10 spans its range
    res = hutchpp(DenseOperator(A), max_products=39, sketch_size=10)  # budget < P = 40
    assert res.method == "hutch++" and len(res.samples) == 39 - 15
    assert res.products == 10 + 5 + len(res.samples)  # rank-deficient directions dropped
    # the deflated samples are rounding (~1e-16, their standard error smaller still): the
    # reported standard error is the rounding floor of the exact part
    sample_se = float(res.samples.std()) / len(res.samples) ** 0.5
    assert float(res.samples.abs().max()) < 1e-13 and sample_se < 0.1 * res.stderr
    assert 1e-15 < res.stderr < 1e-12 and abs(res.estimate - 11.0) <= 4 * res.stderr


def test_hutchpp_with_a_budget_of_p_products_is_exact():
    A = spectrum_matrix(torch.linspace(-1, 4, 200, dtype=torch.float64), seed=1)
    exact = float(A.trace())
    for budget, block in ((200, 1), (1000, 7)):
        res = hutchpp(DenseOperator(A), rtol=1e-2, max_products=budget, block_size=block)
        assert res.method == "exact" and res.products == 200 and res.converged
        assert abs(res.estimate - exact) <= 1e-13 * float(A.diagonal().abs().sum())
        assert 0 < res.stderr < 1e-12 and abs(res.estimate - exact) <= 4 * res.stderr
    est = hutchpp(DenseOperator(A), rtol=0, max_products=199, seed=0)  # one short: estimated
    assert est.method == "hutch++" and est.stderr > 1e-3


def test_trace_bad_arguments():
    op = DenseOperator(torch.eye(50, dtype=torch.float64))
    with pytest.raises(ValueError, match="rtol"):
        hutchinson(op, rtol=-1)
    with pytest.raises(ValueError, match="max_products"):
        hutchinson(op, max_products=1)
    with pytest.raises(ValueError, match="too small"):
        hutchpp(op, max_products=20, sketch_size=10)


def two_clusters(dim: int = 240) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    low = torch.rand(dim - dim // 4, generator=g, dtype=torch.float64) * 2 - 1  # 3/4 in [-1, 1]
    high = 6 + torch.rand(dim // 4, generator=g, dtype=torch.float64)  # 1/4 in [6, 7]
    return torch.cat([low, high])


def test_density_integrates_to_one_and_matches_the_histogram():
    eigs = two_clusters()
    A = spectrum_matrix(eigs)
    res = slq(DenseOperator(A), num_steps=40, num_vectors=16, sigma=0.05, seed=0)
    assert res.products == 16 * 40
    assert abs(float(torch.trapezoid(res.density, res.grid)) - 1) < 1e-6
    assert torch.allclose(res.weights.sum(1), torch.ones(16, dtype=torch.float64))
    for lo, hi in [(-1.5, 1.5), (5.5, 7.5), (-1.5, 0.0), (6.0, 6.5), (2.0, 5.0)]:
        exact = float(((eigs >= lo) & (eigs <= hi)).double().mean())
        assert abs(res.mass(lo, hi) - exact) < 0.06, (lo, hi, res.mass(lo, hi), exact)
    grid_mass = float(torch.trapezoid(res.density[res.grid > 5.5], res.grid[res.grid > 5.5]))
    assert abs(grid_mass - 0.25) < 0.06



@pytest.mark.parametrize("case", ["mlp_mse", "cnn_bn_ce", "saddle"])
def test_density_of_a_network_hessian_matches_its_exact_eigenvalue_histogram(case):
    """Mass of the SLQ density in bins cut at the exact spectrum's 10/50/90% quantiles
    (tiny MLP, CNN with BatchNorm in eval mode, a saddle with negative eigenvalues)."""
    c = make_case(case)
    eigs = torch.linalg.eigvalsh(dense_hessian(c.model, c.loss_fn, c.data))
    n = len(eigs)
    res = slq(HessianOperator(c.model, c.loss_fn, c.data), num_steps=min(n, 60),
              num_vectors=30, sigma=1e-3 * float(eigs.max() - eigs.min()), seed=0)
    assert abs(float(torch.trapezoid(res.density, res.grid)) - 1) < 1e-6
    cuts = [float(eigs[int(q * n) - 1] + eigs[int(q * n)]) / 2 for q in (0.1, 0.5, 0.9)]
    edges = [float(eigs.min()) - 1, *cuts, float(eigs.max()) + 1]
    for lo, hi in zip(edges[:-1], edges[1:]):
        exact = float(((eigs >= lo) & (eigs <= hi)).double().mean())
        assert abs(res.mass(lo, hi) - exact) < 0.07, (lo, hi, res.mass(lo, hi), exact)

def test_density_nodes_reach_the_extreme_eigenvalues():
    eigs = two_clusters()
    res = slq(DenseOperator(spectrum_matrix(eigs)), num_steps=40, num_vectors=2, seed=1)
    assert abs(float(res.nodes.max()) - float(eigs.max())) < 1e-2  # no gap at the ends
    assert abs(float(res.nodes.min()) - float(eigs.min())) < 1e-2
    assert res.grid[0] < eigs.min() and res.grid[-1] > eigs.max()


def test_density_of_a_network_hessian_with_invariant_subspace_runs():
    c = make_case("mlp_unused")  # zero rows: Lanczos may stop early for some vectors
    H = dense_hessian(c.model, c.loss_fn, c.data)
    res = slq(
        HessianOperator(c.model, c.loss_fn, c.data), num_steps=H.shape[0], num_vectors=3, seed=0
    )
    assert abs(float(torch.trapezoid(res.density, res.grid)) - 1) < 1e-3
    exact_frac_zero = float((torch.linalg.eigvalsh(H).abs() < 1e-8).double().mean())
    assert abs(float(res.weights[res.nodes.abs() < 1e-8].sum()) / 3 - exact_frac_zero) < 0.15


def test_density_bad_arguments():
    op = DenseOperator(torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_steps"):
        slq(op, num_steps=0)
    with pytest.raises(ValueError, match="sigma"):
        slq(op, sigma=0.0)


def test_density_weights_repeated_eigenvalues_by_their_multiplicity():
    from curvature_cases import issue_matrix

    A = issue_matrix()  # 3, 2, 1 and .5, each three times
    res = slq(DenseOperator(A), num_steps=12, num_vectors=64, sigma=0.01, seed=0)
    # each run's Krylov space is invariant after 4 steps: its nodes are the 4 distinct values
    assert res.products == 64 * 4
    live = res.weights > 1e-12
    distinct = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.all((res.nodes[live][:, None] - distinct).abs().min(1).values < 1e-10)
    for v in distinct.tolist():  # mass 3/12 each, within ~4 standard errors of 64 vectors
        assert abs(res.mass(v - 0.1, v + 0.1) - 0.25) < 0.1
