"""Curvature operators against the dense float64 references of sgdlab.testing."""

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.curvature import (
    OPERATORS,
    CovarianceOperator,
    CurvatureOptions,
    DenseOperator,
    GGNOperator,
    HessianOperator,
    curvature_operator,
    eigs,
    flatten,
    hessian_eigs,
    register_operator,
    trace,
    unflatten,
)
from sgdlab.testing import (
    CASES,
    dense_ggn,
    dense_hessian,
    eigh,
    exact_covariance,
    make_case,
    mean_loss_function,
    per_sample_gradients,
)

TOL = 1e-10  # relative to the largest entry, float64
HESSIAN_CASES = sorted(CASES)


@cache
def reference(name: str, kind: str = "hessian") -> torch.Tensor:
    c = make_case(name)
    fn = {"hessian": dense_hessian, "ggn": dense_ggn, "covariance": exact_covariance}[kind]
    return fn(c.model, c.loss_fn, c.data, **c.reference_options)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def probe_block(dim: int, m: int = 3) -> torch.Tensor:
    return torch.randn(m, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.filterwarnings("ignore::sgdlab.curvature.model_function.CurvatureMemoryWarning")
@pytest.mark.parametrize("name", HESSIAN_CASES)
@pytest.mark.parametrize("backend", ["graph", "recompute", "func"])
def test_hvp_backends_equal_dense_hessian(name, backend):
    c = make_case(name)
    H = reference(name)
    V = probe_block(H.shape[0])
    for batched in (False, True):
        op = HessianOperator(c.model, c.loss_fn, c.data, backend=backend, batched=batched,
                             **c.options)
        assert rel_err(op.matmat(V), V @ H) < TOL
        assert op.products == 3


@pytest.mark.parametrize("backend", ["graph", "recompute", "func"])
def test_products_written_into_a_given_block_equal_new_ones(backend):
    """``matmat(V, out=)`` (what Lanczos uses to write A q straight into its stored
    products) fills ``out`` with the same numbers, for every backend, a user's subclass
    (its own ``_matmat``) and a dense matrix; a block of the wrong shape is refused."""

    class Shifted(HessianOperator):
        def _matmat(self, V):
            return super()._matmat(V) + 2 * V

    c = make_case("mlp_ce")
    H = reference("mlp_ce")
    V = probe_block(H.shape[0])
    eye = torch.eye(H.shape[0], dtype=H.dtype)
    for op, want in [(HessianOperator(c.model, c.loss_fn, c.data, backend=backend,
                                      **c.options), V @ H),
                     (Shifted(c.model, c.loss_fn, c.data, backend=backend, **c.options),
                      V @ (H + 2 * eye)),
                     (DenseOperator(H), V @ H)]:
        out = torch.full_like(V, float("nan"))
        assert op.matmat(V, out=out) is out
        assert torch.equal(out, op.matmat(V)) and rel_err(out, want) < TOL
        with pytest.raises(ValueError, match="out has shape"):
            op.matmat(V, out=out[:2])


def test_auto_backend_picks_graph_when_it_fits_and_recompute_when_not():
    c = make_case("cnn_ce")
    assert HessianOperator(c.model, c.loss_fn, c.data).backend == "graph"
    op = HessianOperator(c.model, c.loss_fn, c.data, memory_budget=200_000)
    assert op.backend == "recompute"
    assert len(op.fn.batches) > 1  # chunked to fit the budget
    V = probe_block(op.dim, 2)
    assert rel_err(op.matmat(V), V @ reference("cnn_ce")) < TOL


@pytest.mark.parametrize("name", ["mlp_ce", "cnn_bn_ce", "mlp_mse"])
def test_chunked_and_iterable_data_equal_one_batch(name):
    c = make_case(name)
    H = reference(name)
    V = probe_block(H.shape[0])
    chunked = HessianOperator(c.model, c.loss_fn, c.data, chunk_size=5, backend="recompute")
    assert len(chunked.fn.batches) > 2
    assert rel_err(chunked.matmat(V), V @ H) < TOL
    batches = [(c.x[:7], c.y[:7]), (c.x[7:10], c.y[7:10]), (c.x[10:], c.y[10:])]  # unequal sizes
    for matrix in ("hessian", "ggn"):
        op = curvature_operator(c.model, c.loss_fn, iter(batches), matrix=matrix)
        assert rel_err(op.matmat(V), V @ reference(name, matrix)) < TOL


def test_linear_regression_closed_form():
    c = make_case("linear_regression")
    expected = c.x.T @ c.x / len(c.x)  # loss 0.5 mean (xw - y)^2
    for matrix in ("hessian", "ggn"):
        op = curvature_operator(c.model, c.loss_fn, c.data, matrix=matrix)
        assert rel_err(op.to_dense(), expected) < TOL


@pytest.mark.parametrize("name", ["mlp_ce", "cnn_mse", "cnn_bn_ce", "mlp_unused"])
def test_ggn_equals_dense_reference(name):
    c = make_case(name)
    G = reference(name, "ggn")
    V = probe_block(G.shape[0])
    for batched in (False, True):
        op = GGNOperator(c.model, c.loss_fn, c.data, chunk_size=10, batched=batched)
        assert rel_err(op.matmat(V), V @ G) < TOL
    assert torch.linalg.eigvalsh(G).min() > -1e-10  # convex losses: PSD


@pytest.mark.parametrize("name", ["mlp_ce", "cnn_bn_ce", "mlp_mse", "mlp_unused"])
@pytest.mark.parametrize("route", ["materialize", "matrix_free"])
def test_covariance_equals_per_sample_loop(name, route):
    c = make_case(name)
    K = reference(name, "covariance")
    V = probe_block(K.shape[0])
    op = CovarianceOperator(
        c.model, c.loss_fn, c.data, backend=route, chunk_size=7, batched=route == "matrix_free"
    )
    assert op.route == route
    assert rel_err(op.matmat(V), V @ K) < TOL
    g = per_sample_gradients(c.model, c.loss_fn, c.data)
    assert rel_err(op.mean_gradient, g.mean(0)) < TOL
    assert abs(op.exact_trace() - float(K.trace())) < 1e-10 * float(K.trace())


@pytest.mark.parametrize("name", ["mlp_ce", "cnn_bn_ce", "mlp_unused"])
@pytest.mark.parametrize("backend", ["materialize", "matrix_free"])
def test_empirical_fisher_equals_per_sample_second_moment(name, backend):
    """The worked example of a new operator: F = (1/N) Σ g_i g_iᵀ against the per-sample loop."""
    c = make_case(name)
    g = per_sample_gradients(c.model, c.loss_fn, c.data)
    fisher = g.T @ g / len(g)
    op = curvature_operator(c.model, c.loss_fn, c.data, "fisher", backend=backend, chunk_size=7)
    V = probe_block(fisher.shape[0])
    exact = float(fisher.trace())
    assert rel_err(op.matmat(V), V @ fisher) < TOL
    assert abs(op.exact_trace() - exact) < 1e-10 * exact
    assert abs(trace(op).estimate - exact) < 1e-10 * exact
    vals, _ = eigh(fisher)
    assert rel_err(eigs(op, 2, tol=1e-10).values, vals[:2]) < 1e-8


def test_options_object_and_keywords_build_the_same_operator():
    c = make_case("cnn_bn_ce")
    opts = CurvatureOptions(chunk_size=5, backend="recompute", dtype=torch.float64)
    a = HessianOperator(c.model, c.loss_fn, c.data, opts)
    b = HessianOperator(c.model, c.loss_fn, c.data, chunk_size=5, backend="recompute",
                        dtype=torch.float64)
    d = HessianOperator(c.model, c.loss_fn, c.data, opts, chunk_size=8)  # keywords win
    assert a.options == b.options and len(a.fn.batches) == len(b.fn.batches) > 2
    assert d.options.chunk_size == 8 and d.options.backend == "recompute"
    V = probe_block(a.dim)
    assert torch.equal(a.matmat(V), b.matmat(V))
    with pytest.raises(TypeError, match="unknown curvature option 'chunk'"):
        CurvatureOptions.build(chunk=3)
    with pytest.warns(DeprecationWarning, match="backend="):
        old = CovarianceOperator(c.model, c.loss_fn, c.data, route="matrix_free")
    assert old.route == "matrix_free"


def test_a_registered_operator_is_reachable_by_name():
    """A new curvature matrix: one ModelOperator subclass and one registry line."""

    class Damped(HessianOperator):  # H + I, e.g. for a damped Newton step
        def _matmat(self, V):
            return super()._matmat(V) + V

    c = make_case("mlp_ce")
    register_operator("damped", Damped)
    try:
        H = reference("mlp_ce")
        op = curvature_operator(c.model, c.loss_fn, c.data, "damped")
        V = probe_block(H.shape[0])
        assert rel_err(op.matmat(V), V @ (H + torch.eye(H.shape[0], dtype=H.dtype))) < TOL
        res = hessian_eigs(c.model, c.loss_fn, c.data, k=1, matrix="damped", tol=1e-10)
        assert abs(float(res.values[0]) - (float(eigh(H)[0][0]) + 1)) < 1e-8
    finally:
        OPERATORS.pop("damped")
    with pytest.raises(TypeError, match="ModelOperator"):
        register_operator("bad", dict)


def test_covariance_auto_route_follows_memory_budget():
    c = make_case("mlp_ce")
    assert CovarianceOperator(c.model, c.loss_fn, c.data).route == "materialize"
    assert (
        CovarianceOperator(c.model, c.loss_fn, c.data, memory_budget=50_000).route == "matrix_free"
    )
    with pytest.raises(ValueError, match="matrix_free"):
        CovarianceOperator(c.model, c.loss_fn, c.data, backend="materialize", train=True)


def test_parameter_filter_gives_the_diagonal_block():
    c = make_case("cnn_bn_ce")
    H = reference("cnn_bn_ce")
    names = [n for n, _ in c.model.named_parameters()]
    sizes = [p.numel() for p in c.model.parameters()]
    start = sum(sizes[: names.index("5.weight")])
    stop = start + sizes[names.index("5.weight")] + sizes[names.index("5.bias")]
    block = H[start:stop, start:stop]
    by_name = HessianOperator(c.model, c.loss_fn, c.data, params=lambda n: n.startswith("5."))
    by_tensor = HessianOperator(c.model, c.loss_fn, c.data, params=list(c.model[5].parameters()))
    assert by_name.dim == block.shape[0]
    assert rel_err(by_name.to_dense(), block) < TOL
    assert rel_err(by_tensor.to_dense(), block) < TOL
    with pytest.raises(ValueError, match="no parameter named"):
        HessianOperator(c.model, c.loss_fn, c.data, params=["nope"])
    with pytest.raises(ValueError, match="no parameter"):
        HessianOperator(c.model, c.loss_fn, c.data, params=lambda n: False)


def test_train_mode_matches_train_reference_and_leaves_buffers_alone():
    c = make_case("mlp_bn_ce")
    bn = c.model[1]
    before = {k: v.clone() for k, v in c.model.state_dict().items()}
    H_train = dense_hessian(c.model, c.loss_fn, c.data, train=True)
    assert rel_err(H_train, reference("mlp_bn_ce")) > 1e-3  # the modes really differ
    # the reference itself against central differences of the train-mode gradient
    loss, theta = mean_loss_function(c.model, c.loss_fn, c.data, train=True)
    v = torch.randn(len(theta), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def grad_at(t):
        t = t.clone().requires_grad_()
        return torch.autograd.grad(loss(t), t)[0]

    fd = (grad_at(theta + 1e-5 * v) - grad_at(theta - 1e-5 * v)) / 2e-5
    assert rel_err(H_train @ v, fd) < 1e-7
    for backend in ("graph", "recompute", "func"):
        op = HessianOperator(c.model, c.loss_fn, c.data, train=True, backend=backend)
        assert rel_err(op.to_dense(), H_train) < TOL
    K = CovarianceOperator(c.model, c.loss_fn, c.data, train=True)
    assert K.route == "matrix_free"
    K.matvec(torch.ones(K.dim, dtype=torch.float64))
    GGNOperator(c.model, c.loss_fn, c.data, train=True).matvec(
        torch.ones(K.dim, dtype=torch.float64)
    )
    assert not c.model.training and not bn.training and bn.track_running_stats
    for k, v in c.model.state_dict().items():
        assert torch.equal(v, before[k]), k


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, x):
        return self.body(x)


def test_state_rng_and_grads_untouched():
    torch.manual_seed(123)
    model = DropoutNet().double()
    model.train()
    x = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    v = torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    outs = []
    for matrix in ("hessian", "ggn", "covariance"):
        for train in (False, True):
            op = curvature_operator(
                model, F.cross_entropy, (x, y), matrix=matrix, train=train, chunk_size=5, seed=7
            )
            outs.append(op.matvec(v))
            if train:  # dropout masks are fixed by the seed: the operator is deterministic
                assert torch.equal(op.matvec(v), outs[-1])
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))


def test_batched_products_with_dropout_equal_unbatched():
    """Train mode with dropout: a block's products share the chunk's mask whether the block
    is vmapped (the CUDA default) or looped (vmap's randomness must be "same")."""
    torch.manual_seed(0)
    model = DropoutNet().double()
    x = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    V = probe_block(sum(p.numel() for p in model.parameters()))
    kinds = [(HessianOperator, {"backend": b}) for b in ("graph", "recompute", "func")]
    kinds += [(GGNOperator, {}), (CovarianceOperator, {"backend": "matrix_free"})]
    for cls, kw in kinds:
        looped, batched = (
            cls(model, F.cross_entropy, (x, y), train=True, chunk_size=5, seed=3, batched=b, **kw)
            .matmat(V) for b in (False, True)
        )
        assert rel_err(batched, looped) < 1e-12, (cls.__name__, kw)


def test_float64_operator_of_a_float32_model():
    c = make_case("mlp_ce")
    model32 = c.model.float()
    op = HessianOperator(model32, c.loss_fn, (c.x.float(), c.y), dtype=torch.float64)
    assert op.dtype == torch.float64
    assert next(model32.parameters()).dtype == torch.float32
    H = dense_hessian(model32, c.loss_fn, (c.x.float(), c.y))  # both promote to float64
    assert rel_err(op.to_dense(), H) < TOL
    op32 = HessianOperator(model32, c.loss_fn, (c.x.float(), c.y))
    assert op32.dtype == torch.float32 and rel_err(op32.to_dense().double(), H) < 1e-4


def test_flatten_unflatten_roundtrip_and_errors():
    ts = [torch.randn(2, 3), torch.randn(4), torch.randn(1, 1, 2)]
    v = flatten(ts)
    assert v.shape == (12,)
    assert all(torch.equal(a, b) for a, b in zip(unflatten(v, ts), ts))
    block = torch.stack([v, 2 * v])
    parts = unflatten(block, [t.shape for t in ts])
    assert parts[0].shape == (2, 2, 3) and torch.equal(parts[2][1], 2 * ts[2])
    with pytest.raises(ValueError, match="need 12"):
        unflatten(torch.zeros(11), ts)


def test_bad_arguments():
    c = make_case("mlp_ce")
    with pytest.raises(ValueError, match="backend"):
        HessianOperator(c.model, c.loss_fn, c.data, backend="magic")
    with pytest.raises(ValueError, match="chunk_size"):
        HessianOperator(c.model, c.loss_fn, c.data, chunk_size=0)
    with pytest.raises(ValueError, match="pair"):
        HessianOperator(c.model, c.loss_fn, [c.x])
    with pytest.raises(ValueError, match="matrix"):
        curvature_operator(c.model, c.loss_fn, c.data, matrix="nope")
    op = HessianOperator(c.model, c.loss_fn, c.data)
    with pytest.raises(ValueError, match="matmat"):
        op.matmat(torch.zeros(2, op.dim + 1, dtype=torch.float64))


def test_tf32_is_off_inside_curvature_products_on_cuda_only():
    """cuDNN convolutions default to TF32 (~1e-3 relative) on CUDA; curvature products
    switch it off for their duration and restore the flags, even after an error. The
    flags exist on CPU builds too, so the switching is tested here; CPU runs leave them."""
    from sgdlab.curvature.linop import ieee_float32

    flags = (torch.backends.cudnn, torch.backends.cuda.matmul)
    saved = [f.allow_tf32 for f in flags]
    try:
        for f in flags:
            f.allow_tf32 = True
        with ieee_float32(torch.device("cpu")):
            assert all(f.allow_tf32 for f in flags)
        with pytest.raises(KeyError), ieee_float32(torch.device("cuda", 0)):
            assert not any(f.allow_tf32 for f in flags)
            raise KeyError
        assert all(f.allow_tf32 for f in flags)
    finally:
        for f, flag in zip(flags, saved):
            f.allow_tf32 = flag


def test_cpu_default_chunks_by_graph_bytes_in_eval_mode_only(monkeypatch):
    """Without a chunk_size the CPU splits data into chunks of about CPU_CHUNK_BYTES of
    graph (the same operator in eval mode, faster convolutions); train mode, where chunks
    would change BatchNorm statistics, and an explicit chunk_size are left alone."""
    from sgdlab.curvature import model_function

    c = make_case("cnn_bn_ce")
    per_example = HessianOperator(c.model, c.loss_fn, c.data).fn.graph_bytes_per_example()
    monkeypatch.setattr(model_function, "CPU_CHUNK_BYTES", int(4.5 * per_example))
    H, V = reference("cnn_bn_ce"), probe_block(reference("cnn_bn_ce").shape[0])
    for cls in (HessianOperator, GGNOperator):
        op = cls(c.model, c.loss_fn, c.data)
        assert max(op.fn.sizes) == 4 and sum(op.fn.sizes) == len(c.y)
        if cls is HessianOperator:
            assert rel_err(op.matmat(V), V @ H) < TOL
    assert HessianOperator(c.model, c.loss_fn, c.data, train=True).fn.sizes == [len(c.y)]
    assert HessianOperator(c.model, c.loss_fn, c.data, chunk_size=7).fn.sizes[0] == 7
