"""Repeated, clustered and zero eigenvalues: Lanczos and power iteration return every copy
and flag honestly (float64, against dense eigendecompositions).

The contract (see :func:`sgdlab.curvature.lanczos`): a value flagged converged is the
i-th wanted eigenvalue counted with multiplicity, within the residual bound
tol · max(|λ_i|, 1e-4 ‖A‖) (to 1e-12 relative when tol = 1e-10), whenever the block size is
at least the multiplicity of the wanted values, or the Krylov spaces fill up (small or
low-rank operators), after which the deflation restarts find the copies.
"""

from functools import cache

import pytest
import torch
from curvature_cases import MATRICES, NETWORKS, issue_matrix, rotate

from sgdlab.curvature import (
    DenseOperator,
    hessian_eigs,
    hessian_trace,
    lanczos,
    power_iteration,
)
from sgdlab.curvature.lanczos import ZERO_FLOOR
from sgdlab.testing import dense_ggn, dense_hessian, eigh


def assert_honest(res, A: torch.Tensor, which: str, tol: float, *, all_converged: bool = True):
    """Flagged values are the wanted ones counting multiplicity; residuals are the true ones."""
    vals, _ = eigh(A, which)
    k = len(res.values)
    scale = float(vals.abs().max())
    floor = torch.clamp(vals[:k].abs(), min=ZERO_FLOOR * scale)
    err = (res.values - vals[:k]).abs()
    conv = res.converged
    # residual bound for k orthonormal Ritz pairs (joint: a factor sqrt(k) at most)
    bound = 2 * k**0.5 * tol * floor
    assert torch.all(err[conv] <= bound[conv]), (res.values, vals[:k], res.converged)
    if tol <= 1e-10:  # eigenvalue errors ~ residual²: as good as float64 gets. An exact zero
        # comes back as the rounding of the products A v, |fl(Av) - Av| <= n eps |A||v| in
        # dimension n (Higham, Accuracy and Stability, §3.5): n eps ‖A‖, not a constant
        # (zeros_sa, n = 63: 2e-15 on torch 2.13's MKL 2024, 1.3e-14 = 11 eps ‖A‖ on 2.4.1's 2022)
        exact = 1e-12 * floor + A.shape[0] * torch.finfo(torch.float64).eps * scale
        assert torch.all(err[conv] <= exact[conv]), (err, floor)
    if all_converged:
        assert res.all_converged, res
    if res.vectors is not None:
        V = res.vectors.double()
        assert torch.allclose(V @ V.T, torch.eye(k, dtype=torch.float64), atol=1e-10)
        r = (V @ A - res.values[:, None] * V).norm(dim=1)
        assert torch.all(r[conv] <= tol * floor[conv] * 1.01)


def test_the_reported_example_returns_every_copy():
    A = issue_matrix()
    for which, want in (("LA", 3.0), ("SA", 0.5), ("LM", 3.0)):
        for b in (1, 3):
            res = lanczos(DenseOperator(A), k=3, which=which, tol=1e-10, block_size=b)
            assert torch.allclose(res.values, torch.full((3,), want, dtype=torch.float64))
            assert_honest(res, A, which, 1e-10)
            assert res.products <= 12
    full = lanczos(DenseOperator(A), k=12, tol=1e-10)  # the whole spectrum, in 12 products
    assert_honest(full, A, "LA", 1e-10)
    assert full.products == 12


@pytest.mark.parametrize("name", sorted(MATRICES))
@pytest.mark.parametrize("tol", [1e-10, 1e-6])
def test_block_as_large_as_the_multiplicity_finds_every_copy(name, tol):
    case = MATRICES[name]
    A = case.matrix()
    res = lanczos(DenseOperator(A), case.k, which=case.which, tol=tol, block_size=case.multiplicity)
    assert_honest(res, A, case.which, tol)


@pytest.mark.parametrize("name", ["top3", "bottom3", "lm_negative3", "cluster3", "zeros_sa"])
def test_block_size_one_flags_only_what_it_certifies(name):
    """With one vector a copy may be missed (documented), but what comes back converged has
    a residual below tol, and values are never flagged from an unexplored restart block."""
    case = MATRICES[name]
    A = case.matrix()
    vals, _ = eigh(A, case.which)
    for tol in (1e-10, 1e-6):
        res = lanczos(DenseOperator(A), case.k, which=case.which, tol=tol)
        r = (res.vectors @ A - res.values[:, None] * res.vectors).norm(dim=1)
        floor = torch.clamp(res.values.abs(), min=ZERO_FLOOR * float(vals.abs().max()))
        assert torch.all(r[res.converged] <= tol * floor[res.converged])
        assert torch.allclose(res.residuals, r / floor, rtol=1e-2, atol=1e-11)  # rounding


def test_near_degenerate_cluster_resolved_when_the_space_fills_up():
    eigs = torch.cat(
        [5 + 1e-8 * torch.arange(3, dtype=torch.float64), torch.linspace(-1, 3, 9).double()]
    )
    A = rotate(eigs, seed=7)
    for b in (1, 3):
        res = lanczos(DenseOperator(A), 4, tol=1e-12, block_size=b)
        assert_honest(res, A, "LA", 1e-12)
        vals, _ = eigh(A)
        assert torch.all((res.values[:3] - vals[:3]).abs() <= 1e-14 * 5)  # the 1e-8 gaps resolved


def test_budget_stop_after_a_restart_flags_only_values_no_copy_can_displace():
    A = issue_matrix()
    # the first sweep fills its invariant subspace after 4 products ([3, 2, 1, .5] found);
    # the restart block is multiplied twice, then the budget ends
    res = lanczos(DenseOperator(A), k=3, tol=1e-10, max_products=6)
    assert res.products == 6
    assert res.values[0] == pytest.approx(3.0, rel=1e-12)
    assert res.converged.tolist() == [True, False, False]  # a copy of 3 may still be missing
    assert_honest(res, A, "LA", 1e-10, all_converged=False)


def test_restarts_survive_thick_restarts():
    A = issue_matrix()
    for max_basis in (5, 6, 8):  # the smallest basis k + 2 holds no sweep whole
        res = lanczos(DenseOperator(A), k=3, tol=1e-10, max_basis=max_basis)
        assert_honest(res, A, "LA", 1e-10)


def test_block_warm_start_from_an_invariant_subspace_that_is_not_the_top():
    """A block start spanning eigenvectors 2-5 is invariant: its Krylov space shows
    nothing else, and its coupling is zero. The sweep is complete, so a fresh block must
    look beyond it before anything is flagged: the top eigenvalue is found."""
    A = MATRICES["middle3"].matrix()  # 7, 6, 6, 6, 5, bulk in [-1, 3]
    vals, vecs = eigh(A)
    res = lanczos(DenseOperator(A), 4, tol=1e-8, init=vecs[1:5], block_size=4)
    assert_honest(res, A, "LA", 1e-8)
    assert res.values[0] == pytest.approx(7.0, rel=1e-12)


def test_exact_zero_eigenvalues_converge_under_the_floor():
    case = MATRICES["zeros_sa"]
    A = case.matrix()
    for b in (1, 3):
        res = lanczos(DenseOperator(A), 3, which="SA", tol=1e-8, block_size=b)
        assert res.all_converged and res.values.abs().max() < 1e-12
        # the documented residual: ‖A v − θ v‖ / max(|θ|, 1e-4 ‖A‖)
        r = (res.vectors @ A - res.values[:, None] * res.vectors).norm(dim=1)
        assert torch.allclose(res.residuals, r / (ZERO_FLOOR * 5.0), rtol=1e-2, atol=1e-11)
    pw = power_iteration(DenseOperator(A), 4, tol=1e-8)  # k beyond the rank
    assert pw.all_converged and abs(float(pw.values[3])) < 1e-12
    assert torch.allclose(pw.values[:3], torch.tensor([5.0, 4.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize("name,k", [("top3", 3), ("top4", 4), ("lm_negative3", 4), ("zeros_la", 5)])
def test_power_iteration_finds_copies_by_deflation(name, k):
    """k stops before the bulk, which power iteration cannot resolve (gaps ~1e-2)."""
    case = MATRICES[name]
    A = case.matrix()
    vals, _ = eigh(A, "LM")  # power iteration ranks by magnitude: the same wanted values
    assert torch.allclose(vals[:k], eigh(A, case.which)[0][:k])
    res = power_iteration(DenseOperator(A), k, tol=1e-8)
    assert_honest(res, A, "LM", 1e-8)


def test_power_iteration_resolves_a_plus_minus_pair():
    A = rotate(torch.cat([torch.tensor([3.0, -3.0]), torch.linspace(-1, 1, 30)]).double())
    res = power_iteration(DenseOperator(A), 2, tol=1e-8, max_products=6000)
    assert_honest(res, A, "LM", 1e-8)
    assert sorted(res.values.tolist()) == pytest.approx([-3.0, 3.0], rel=1e-10)


def test_power_iteration_with_dependent_start_vectors():
    A = issue_matrix()
    v = torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = power_iteration(DenseOperator(A), 3, tol=1e-8, init=torch.stack([v, v, 2 * v]))
    assert torch.isfinite(res.values).all()
    assert_honest(res, A, "LM", 1e-8)


# --- networks with tied or shared weights, through the public model-level API ---------


@cache
def network(name: str):
    case = NETWORKS[name]()
    H = dense_hessian(case.model, case.loss_fn, case.data)
    G = dense_ggn(case.model, case.loss_fn, case.data)
    return case, {"hessian": H, "ggn": G}


def test_network_cases_have_the_multiplicities_they_claim():
    def mult(vals, i):
        return int(((vals - vals[i]).abs() <= 1e-9 * vals.abs().max()).sum())

    for name, which, matrix, want in [
        ("tied", "LA", "hessian", 3),
        ("tied", "LA", "ggn", 3),
        ("tied", "SA", "hessian", 3),
        ("shared", "LA", "hessian", 3),
        ("shared", "LA", "ggn", 3),
        ("units_one_example", "SA", "hessian", 2),  # a double negative eigenvalue
        ("units_one_example", "LA", "hessian", 1),  # then 2: the 2nd and 3rd are equal
    ]:
        _, mats = network(name)
        vals, _ = eigh(mats[matrix], which)
        assert mult(vals, 0) == want, (name, which, matrix, vals[:4])
    _, mats = network("units_one_example")
    assert float(eigh(mats["hessian"], "SA")[0][0]) < -10  # strongly negative
    assert mult(eigh(mats["hessian"], "LA")[0], 1) == 2


NETWORK_RUNS = [
    (name, matrix, which)
    for name in ("tied", "shared", "units_one_example")
    for matrix in ("hessian", "ggn")
    for which in ("LA", "SA", "LM")
]


@pytest.mark.parametrize("name,matrix,which", NETWORK_RUNS)
def test_network_eigs_count_multiplicity(name, matrix, which):
    case, mats = network(name)
    A = mats[matrix]
    for tol in (1e-10, 1e-6):
        res = hessian_eigs(
            case.model, case.loss_fn, case.data, k=3, which=which, matrix=matrix, tol=tol,
            block_size=case.multiplicity, dtype=torch.float64,
        )
        # an exact zero (GGN of one example, "SA") is certified only to tol·1e-4‖A‖, which
        # float64 products reach at tol = 1e-6 but not always at 1e-10
        exact_zero = bool((eigh(A, which)[0][:3].abs() < 1e-12 * A.abs().max()).any())
        assert_honest(res, A, which, tol, all_converged=not (exact_zero and tol < 1e-8))


@pytest.mark.parametrize("matrix", ["hessian", "ggn"])
def test_tied_network_with_one_vector_finds_every_copy(matrix):
    """P = 12 and four distinct eigenvalues: the first Krylov space fills up after four
    products, the restarts find the other copies (the reported failure: 3 values, 2 wrong)."""
    case, mats = network("tied")
    for which in ("LA", "SA", "LM"):
        res = hessian_eigs(case.model, case.loss_fn, case.data, k=3, which=which, matrix=matrix,
                           tol=1e-10, dtype=torch.float64)
        assert_honest(res, mats[matrix], which, 1e-10)


def test_network_power_iteration_counts_multiplicity():
    for name in ("tied", "shared"):
        case, mats = network(name)
        res = hessian_eigs(case.model, case.loss_fn, case.data, k=3, which="LM", method="power",
                           tol=1e-8, dtype=torch.float64, max_products=6000)
        assert_honest(res, mats["hessian"], "LM", 1e-8)


@pytest.mark.parametrize("name", ["tied", "shared", "units_one_example"])
def test_network_trace_is_exact_with_a_budget_of_p_products(name):
    case, mats = network(name)
    P = mats["hessian"].shape[0]
    for matrix in ("hessian", "ggn"):
        res = hessian_trace(case.model, case.loss_fn, case.data, matrix=matrix, max_products=P,
                            dtype=torch.float64)
        exact = float(mats[matrix].trace())
        assert res.method == "exact" and res.products == P and res.converged
        assert abs(res.estimate - exact) <= 1e-12 * float(mats[matrix].diagonal().abs().sum())
        assert 0 < res.stderr <= 1e-13 * float(mats[matrix].norm()) * P


def random_spectra(n: int, seed: int = 0):
    """Seeded random spectra: 2-11 distinct values (a zero in 30% of them), each repeated
    1-4 times, with a random which, k and tolerance."""
    g = torch.Generator().manual_seed(seed)
    for t in range(n):
        distinct = 3 * torch.randn(int(torch.randint(2, 12, (1,), generator=g)), generator=g,
                                   dtype=torch.float64)
        if torch.rand(1, generator=g) < 0.3:
            distinct[0] = 0.0
        mult = torch.randint(1, 5, (len(distinct),), generator=g)
        eigs = distinct.repeat_interleave(mult)
        k = int(torch.randint(1, min(6, len(eigs)) + 1, (1,), generator=g))
        # (tolerances well below the gaps between distinct values: at tol 1e-3 a Ritz value
        # may settle on the neighbour of a wanted value 0.5% away, plain Lanczos behaviour)
        yield rotate(eigs, seed=t), ("LA", "SA", "LM")[t % 3], k, (1e-10, 1e-6, 1e-8)[t % 3]


def test_random_spectra_with_a_block_as_large_as_the_multiplicity():
    """Includes tiny operators where a random block meets an eigenspace exactly
    (block + multiplicity > P) and spaces that fill up only to rounding."""
    for A, which, k, tol in random_spectra(150):
        vals, _ = eigh(A, which)
        m = max(int(((vals - v).abs() < 1e-9 * vals.abs().max()).sum()) for v in vals[:k])
        res = lanczos(DenseOperator(A), k, which=which, tol=tol, block_size=m)
        assert_honest(res, A, which, tol)
