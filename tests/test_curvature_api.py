"""Model-level functions: results against references, state left untouched, errors."""

import pytest
import torch
import torch.nn.functional as F

from sgdlab.curvature import (
    covariance_density,
    covariance_eigs,
    covariance_trace,
    hessian_density,
    hessian_eigs,
    hessian_trace,
)
from sgdlab.testing import dense_ggn, dense_hessian, eigh, exact_covariance, make_case


def rel(a, b):
    return float(((a - b).abs() / b.abs()).max())


def test_hessian_eigs_result_fields_and_values():
    c = make_case("cnn_bn_ce")
    H = dense_hessian(c.model, c.loss_fn, c.data)
    vals, _ = eigh(H)
    res = hessian_eigs(c.model, c.loss_fn, c.data, k=3, tol=1e-9)
    assert res.values.dtype == torch.float64 and res.vectors.shape == (3, vals.numel())
    assert rel(res.values, vals[:3]) < 1e-8 and res.all_converged
    assert res.products > 0 and res.seconds > 0 and res.method == "lanczos"
    chunked = hessian_eigs(
        c.model, c.loss_fn, c.data, k=3, tol=1e-9, chunk_size=5, backend="recompute"
    )
    assert rel(chunked.values, vals[:3]) < 1e-8
    warm = hessian_eigs(c.model, c.loss_fn, c.data, k=3, tol=1e-9, init=res)
    assert rel(warm.values, vals[:3]) < 1e-8 and warm.products < res.products
    power = hessian_eigs(c.model, c.loss_fn, c.data, k=2, tol=1e-9, method="power", which="LM")
    lm, _ = eigh(H, "LM")
    assert rel(power.values, lm[:2]) < 1e-8 and power.method == "power"


def test_ggn_and_covariance_eigs():
    c = make_case("mlp_ce")
    g_vals, _ = eigh(dense_ggn(c.model, c.loss_fn, c.data))
    ggn = hessian_eigs(c.model, c.loss_fn, c.data, k=3, tol=1e-9, matrix="ggn")
    assert rel(ggn.values, g_vals[:3]) < 1e-8
    k_vals, _ = eigh(exact_covariance(c.model, c.loss_fn, c.data))
    for route in ("materialize", "matrix_free"):
        res = covariance_eigs(c.model, c.loss_fn, c.data, k=3, tol=1e-9, backend=route)
        assert rel(res.values, k_vals[:3]) < 1e-8


def test_traces():
    c = make_case("mlp_wide_ce")
    exact = float(dense_hessian(c.model, c.loss_fn, c.data).trace())
    for method in ("hutch++", "hutchinson"):
        res = hessian_trace(c.model, c.loss_fn, c.data, rtol=0.03, max_products=600, method=method)
        assert res.method == method and res.converged
        assert abs(res.estimate - exact) <= 4 * res.stderr
    tr_k = float(exact_covariance(c.model, c.loss_fn, c.data).trace())
    exact_k = covariance_trace(c.model, c.loss_fn, c.data)
    assert exact_k.method == "exact" and exact_k.stderr == 0 and exact_k.products == 0
    assert abs(exact_k.estimate - tr_k) < 1e-10 * tr_k
    est_k = covariance_trace(c.model, c.loss_fn, c.data, method="hutch++", rtol=0.03)
    assert abs(est_k.estimate - tr_k) <= 4 * est_k.stderr


def test_densities_integrate_to_one():
    c = make_case("cnn_ce")
    for res in (
        hessian_density(c.model, c.loss_fn, c.data, num_steps=30, num_vectors=2),
        hessian_density(c.model, c.loss_fn, c.data, num_steps=30, num_vectors=2, matrix="ggn"),
        covariance_density(c.model, c.loss_fn, c.data, num_steps=30, num_vectors=2),
    ):
        assert abs(float(torch.trapezoid(res.density, res.grid)) - 1) < 1e-4
        assert 0 < res.products <= 60  # K has rank <= 23: its runs stop at an invariant subspace


def test_calls_leave_model_rng_and_grads_untouched():
    c = make_case("cnn_bn_ce")
    model = c.model.train()
    F.cross_entropy(model(c.x), c.y).backward()
    model.eval()
    model[1].train()  # mixed flags must come back exactly
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    for train in (False, True):
        hessian_eigs(model, c.loss_fn, c.data, k=2, train=train, max_products=20)
        hessian_trace(model, c.loss_fn, c.data, train=train, max_products=30, sketch_size=5)
        hessian_density(model, c.loss_fn, c.data, train=train, num_steps=5, num_vectors=2)
        covariance_eigs(model, c.loss_fn, c.data, k=2, train=train, max_products=20)
        covariance_trace(model, c.loss_fn, c.data, train=train, max_products=30, sketch_size=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_same_seed_same_numbers():
    c = make_case("mlp_ce")
    a = hessian_trace(c.model, c.loss_fn, c.data, seed=3, max_products=40, rtol=0)
    b = hessian_trace(c.model, c.loss_fn, c.data, seed=3, max_products=40, rtol=0)
    d = hessian_trace(c.model, c.loss_fn, c.data, seed=4, max_products=40, rtol=0)
    assert a.estimate == b.estimate != d.estimate


def test_api_errors():
    c = make_case("mlp_ce")
    with pytest.raises(ValueError, match="matrix must be one of"):
        hessian_eigs(c.model, c.loss_fn, c.data, matrix="nope")
    with pytest.raises(TypeError, match="unexpected keyword argument 'chunksize'"):
        hessian_eigs(c.model, c.loss_fn, c.data, chunksize=3)
    with pytest.raises(ValueError, match="which='LM'"):
        hessian_eigs(c.model, c.loss_fn, c.data, method="power")
    with pytest.raises(ValueError, match="method"):
        hessian_trace(c.model, c.loss_fn, c.data, method="exact")
    with pytest.raises(ValueError, match="dimension 136"):
        hessian_eigs(c.model, c.loss_fn, c.data, k=137)
    with pytest.raises(ValueError, match="train mode"):
        covariance_trace(c.model, c.loss_fn, c.data, method="exact", train=True)
    with pytest.raises(ValueError, match="no vectors"):
        res = hessian_eigs(c.model, c.loss_fn, c.data, k=2, return_vectors=False)
        hessian_eigs(c.model, c.loss_fn, c.data, k=2, init=res)
