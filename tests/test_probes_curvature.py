"""Curvature probes and NSGD against exact references; no interference; resume with probes."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file
from torch import nn

from sgdlab.optim.nsgd import NSGD
from sgdlab.optim.sgd_step import planned_update
from sgdlab.probes import Probe, ProbeContext, Schedule, build_probes
from sgdlab.probes.hessian import HessianDensityProbe, HessianProbe
from sgdlab.probes.noise import GradientNoiseProbe
from sgdlab.probes.sharpest import SharpestProbe, loss_along
from sgdlab.testing.reference import dense_hessian, eigh, exact_covariance
from sgdlab.train import make_loss, resume, train


def tiny_context(loss="cross_entropy", lr=0.1, momentum=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y, task="classification",
                           n_classes=3)
    ctx = ProbeContext(model, loss, make_loss(loss), data, seed=0, lr=lr, momentum=momentum,
                       generator=torch.Generator().manual_seed(1))
    return model, ctx


def test_hessian_probe_matches_the_dense_hessian():
    model, ctx = tiny_context(lr=0.1, momentum=0.9)
    probe = HessianProbe(k=3, n=40, tol=1e-10, trace=True, trace_rtol=1e-4, trace_products=300)
    out = probe.measure(ctx)
    H = dense_hessian(model, ctx.loss_fn, ctx.subset(40))
    vals, _ = eigh(H)
    assert out["lambda_max"] == pytest.approx(vals[0].item(), rel=1e-8)
    assert np.allclose(out["eigenvalues"], vals[:3].numpy(), rtol=1e-8)
    assert out["eig_2"] == pytest.approx(vals[2].item(), rel=1e-8)
    assert out["stability"] == pytest.approx((2 + 2 * 0.9) / 0.1)
    exact = torch.trace(H).item()
    assert 0 < out["trace_se"] < 0.05 * abs(exact)
    assert abs(out["trace"] - exact) <= 4 * out["trace_se"]
    # the warm start is kept and reused: a second measurement needs fewer products
    ctx.new_step()
    again = probe.measure(ctx)
    assert again["products"] < out["products"]


def test_hessian_probe_error_bar_holds_at_a_loose_tolerance():
    """lambda_max_err = ‖Hv − θv‖: some eigenvalue lies within it of θ; here the top one,
    from below (θ is a Rayleigh quotient)."""
    model, ctx = tiny_context()
    vals, _ = eigh(dense_hessian(model, ctx.loss_fn, ctx.subset(40)))
    for tol in (0.3, 0.1, 0.03):
        ctx.new_step()
        out = HessianProbe(k=1, n=40, tol=tol, warm_start=False).measure(ctx)
        assert 0 < out["lambda_max_err"] <= tol * out["lambda_max"] * (1 + 1e-9)
        assert out["lambda_max"] <= vals[0].item() + 1e-12
        assert vals[0].item() - out["lambda_max"] <= out["lambda_max_err"]


def test_gradient_noise_probe_matches_a_per_example_loop():
    model, ctx = tiny_context(loss="mse")
    out = GradientNoiseProbe(n=50, tol=1e-10).measure(ctx)
    x, y = ctx.subset(50)
    K = exact_covariance(model, ctx.loss_fn, (x, y))
    assert out["trace_K"] == pytest.approx(torch.trace(K).item(), rel=1e-10)
    assert out["lambda_max_K"] == pytest.approx(torch.linalg.eigvalsh(K)[-1].item(), rel=1e-8)
    grads = torch.autograd.grad(ctx.loss_fn(model(x), y), list(model.parameters()))
    gnorm = torch.cat([g.reshape(-1) for g in grads]).norm().item()
    assert out["grad_norm"] == pytest.approx(gnorm, rel=1e-10)
    assert out["noise_scale"] == pytest.approx(out["trace_K"] / gnorm**2, rel=1e-10)


def test_sharpest_probe_bowl_and_update_projection():
    model, ctx = tiny_context(lr=0.5)
    x, y = ctx.subset(40)
    ctx.batch_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        ctx.loss_fn(model(x[:10]), y[:10]), list(model.parameters()))])
    probe = SharpestProbe(k=2, n=40, tol=1e-10, span=2.0, points=5)
    out = probe.measure(ctx)
    loss0 = ctx.loss_fn(model(x), y).item()
    assert np.allclose(out["bowl"][:, 2], loss0, rtol=1e-12)  # offset 0 is the current point
    V = ctx.top_eigs(2, 40).vectors
    proj = (V @ (-0.5 * ctx.batch_grad)).numpy()
    assert np.allclose(out["step_projection"], proj, rtol=1e-10)
    direct = loss_along(model, ctx.loss_fn, x, y, V[0] * abs(proj[0]), [1.0]).item()
    assert out["bowl"][0, 3] == pytest.approx(direct, rel=1e-12)
    ctx.update = torch.randn(len(ctx.batch_grad), dtype=torch.float64)
    after = probe.after_step(ctx)
    expected = (V @ ctx.update).norm() / ctx.update.norm()
    assert after["update_in_subspace"] == pytest.approx(expected.item(), rel=1e-10)
    ctx.new_step()
    assert probe.measure(ctx)["overlap"] == pytest.approx(1.0, abs=1e-8)  # same point


def test_bowl_is_the_exact_parabola_for_a_quadratic_loss():
    """Linear least squares: L(θ + t v) = L + t gᵀv + ½ λ t² along an eigenvector v."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, generator=g, dtype=torch.float64), torch.randn(30, 1, generator=g,
                                                                            dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    loss_fn = make_loss("mse")
    H = dense_hessian(model, loss_fn, (x, y))
    vals, vecs = eigh(H)
    grad = torch.autograd.grad(loss_fn(model(x), y), [model.weight])[0].reshape(-1)
    ts = [-2.0, 0.5, 3.0]
    got = loss_along(model, loss_fn, x, y, vecs[0], ts)
    base = loss_fn(model(x), y).item()
    want = [base + t * (grad @ vecs[0]).item() + 0.5 * vals[0].item() * t * t for t in ts]
    assert np.allclose(got.numpy(), want, rtol=1e-12)


def test_density_probe_integrates_to_one():
    _, ctx = tiny_context()
    out = HessianDensityProbe(n=40, steps=20, vectors=3, points=2000).measure(ctx)
    assert np.trapezoid(out["density"], out["grid"]) == pytest.approx(1.0, abs=1e-3)


def test_nsgd_nudges_the_gradient_inside_the_subspace():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5, dtype=torch.float64))
    g = torch.randn(5, dtype=torch.float64)
    V = torch.linalg.qr(torch.randn(5, 2, dtype=torch.float64))[0].T
    opt = NSGD([p], gamma=0.25, k=2, lr=0.1)
    opt.set_basis(V)
    before = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    expected = before - 0.1 * (g + (0.25 - 1) * V.T @ (V @ g))
    assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-15)



@pytest.mark.parametrize("nesterov", [False, True])
def test_nsgd_with_momentum_rescales_the_velocity_under_the_current_subspace(nesterov):
    """Reference: plain SGD velocity b (weight decay in it), step s = b or g + β b, and
    θ ← θ − η (s + (γ − 1) Vᵀ V s), with the basis changed between steps."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6, dtype=torch.float64))
    unused = nn.Parameter(torch.randn(2, dtype=torch.float64))
    opt = NSGD([p, unused], gamma=4.0, k=2, lr=0.1, momentum=0.9, nesterov=nesterov,
               weight_decay=0.01)
    theta, b = p.detach().clone(), None
    for t in range(4):
        V = torch.linalg.qr(torch.randn(8, 2, dtype=torch.float64))[0].T
        opt.set_basis(V)
        g = torch.randn(6, dtype=torch.float64)
        p.grad = g.clone()
        preview = planned_update(opt, [p, unused])
        before = p.detach().clone()
        opt.step()
        d = g + 0.01 * theta
        b = d.clone() if b is None else 0.9 * b + d
        s = torch.cat([d + 0.9 * b if nesterov else b, torch.zeros(2, dtype=torch.float64)])
        theta = theta - 0.1 * (s + 3.0 * V.T @ (V @ s))[:6]
        assert torch.allclose(p.detach(), theta, rtol=0, atol=1e-13), t
        assert torch.allclose(preview[:6], p.detach() - before, rtol=0, atol=1e-13)
        assert torch.equal(preview[6:], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-3),
                                                  (0.9, True, 1e-3)])
def test_planned_update_is_the_step_sgd_takes(momentum, nesterov, wd):
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=momentum, nesterov=nesterov,
                          weight_decay=wd, foreach=False)
    params = list(model.parameters())
    for _ in range(3):
        model.zero_grad()
        model(torch.randn(4, 5, dtype=torch.float64)).square().sum().backward()
        preview = planned_update(opt, params)
        before = torch.cat([p.detach().reshape(-1) for p in params])
        opt.step()
        after = torch.cat([p.detach().reshape(-1) for p in params])
        assert torch.allclose(preview, after - before, rtol=0, atol=1e-15)


CURVATURE_PROBES = [
    {"name": "hessian", "every": 7, "k": 2, "n": 200, "trace": True, "trace_products": 30},
    {"name": "gradient_noise", "every": 11, "n": 100},
    {"name": "sharpest", "every": 9, "k": 2, "n": 150, "points": 5},
    {"name": "hessian_density", "every": "end", "n": 100, "steps": 10},
    {"name": "weights", "every": 5},
]


def params_of(run):
    return load_file(run.path / "final.safetensors")


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_probes_do_not_change_the_trajectory(store):
    base = {"train.epochs": 2, "model.dropout": 0.2}
    plain = train(small_config(**base), store)
    probed = train(small_config(**base, probes=CURVATURE_PROBES), store)
    assert same(params_of(plain), params_of(probed))
    names = set(store.metrics(runs=[probed.id])["name"])
    assert {"hessian/lambda_max", "hessian/trace", "gradient_noise/trace_K",
            "sharpest/update_in_subspace", "weights/dist_init"} <= names
    assert "hessian_density" in probed.array_names()


def test_nsgd_gamma_one_is_sgd_and_probes_do_not_change_nsgd(store):
    nsgd = {"optim.name": "nsgd", "optim.nsgd_k": 2, "optim.nsgd_subset": 200,
            "optim.nsgd_every": 10, "train.epochs": 2}
    sgd = train(small_config(**{"train.epochs": 2}), store)
    one = train(small_config(**nsgd, **{"optim.nsgd_gamma": 1.0}), store)
    assert same(params_of(sgd), params_of(one))
    nudged = train(small_config(**nsgd, **{"optim.nsgd_gamma": 0.2}), store)
    assert not same(params_of(sgd), params_of(nudged))
    nudged_probed = train(small_config(**nsgd, **{"optim.nsgd_gamma": 0.2},
                                       probes=CURVATURE_PROBES[:3]), store)
    assert same(params_of(nudged), params_of(nudged_probed))


class Interrupt(Probe):
    """Simulates a kill: raises at a given step (after the checkpoint before it)."""

    name = "interrupt"

    def __init__(self, at):
        super().__init__(Schedule(every=1))
        self.at = at

    def measure(self, ctx):
        if ctx.step == self.at:
            raise KeyboardInterrupt


def test_resume_with_probes_measures_the_same(store):
    cfg = small_config(**{"train.epochs": 3, "train.checkpoint_every": 20,
                          "optim.name": "nsgd", "optim.nsgd_gamma": 3.0, "optim.nsgd_k": 2,
                          "optim.nsgd_subset": 200, "optim.nsgd_every": 15},
                       probes=CURVATURE_PROBES[:3])
    ref = train(cfg, store)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, probes=[*build_probes(cfg.probes), Interrupt(at=47)])
    killed = store.find_runs(status="failed")[0]
    assert killed.checkpoint_steps()[-1] == 40
    resume(store, killed.id)
    assert same(params_of(ref), params_of(killed))
    cols = ["step", "name", "value"]
    a = store.metrics(runs=[ref.id]).sort_values(["name", "step"])[cols]
    b = store.metrics(runs=[killed.id]).sort_values(["name", "step"])[cols]
    timing = a["name"].str.endswith("seconds")
    assert a[~timing].to_numpy().tolist() == b[~timing.to_numpy()].to_numpy().tolist()


@pytest.mark.parametrize("optim", [{"optim.momentum": 0.9},
                                   {"optim.momentum": 0.9, "optim.name": "nsgd",
                                    "optim.nsgd_gamma": 5.0, "optim.nsgd_k": 2,
                                    "optim.nsgd_subset": 200}])
def test_bowl_unit_is_the_step_actually_taken(store, optim):
    """With momentum and NSGD the bowl's unit (the step's projection on each direction) is
    the projection of the update the optimizer then makes, not of −η g."""
    probes = [{"name": "sharpest", "every": 9, "k": 2, "n": 150, "points": 5}]
    run = train(small_config(**{"train.epochs": 1}, **optim, probes=probes), store)
    by_step: dict[int, dict] = {}
    for name in ("sharpest", "sharpest.after_step"):
        for step, arrays in run.load_arrays(name):
            by_step.setdefault(step, {}).update(arrays)
    measured = [(s, a) for s, a in sorted(by_step.items()) if "update_projection" in a
                and "step_projection" in a]
    assert len(measured) >= 3
    for step, arrays in measured[1:]:  # from step 9 on, the velocity differs from −η g
        np.testing.assert_allclose(arrays["step_projection"], arrays["update_projection"],
                                   rtol=1e-4, atol=1e-7, err_msg=f"step {step}")
