"""Iterative inference: hooks + autograd against explicit intermediate tensors (float64)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sgdlab.errors import ConfigError
from sgdlab.losses import make_loss
from sgdlab.probes.base import ProbeContext
from sgdlab.probes.residual import ResidualInference, iterative_inference


class Block(nn.Module):
    """h -> s(h) + F(h) with F = lin2(tanh(lin1(h))), s = identity or a projection."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.is_identity = d_in == d_out
        self.lin1, self.lin2 = nn.Linear(d_in, 5), nn.Linear(5, d_out)
        self.proj = nn.Identity() if self.is_identity else nn.Linear(d_in, d_out, bias=False)

    def branch(self, h):
        return self.lin2(torch.tanh(self.lin1(h)))

    def shortcut_of(self, h):
        return self.proj(h)

    def forward(self, h):
        return self.shortcut_of(h) + self.branch(h)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([Block(4, 4), Block(4, 6), Block(6, 6)])
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


def manual(model, loss_fn, x, y):
    """Reference: explicit tensors, one backward, per-example cosine and norms."""
    h = model.stem(x) if hasattr(model, "stem") else x
    saved = []
    for b in model.blocks:
        f, s = b.branch(h), b.shortcut_of(h)
        o = s + f
        saved.append((h, f, s, o, b.is_identity))
        h = o
    head = model.head if hasattr(model, "head") else None
    out = head(h) if head is not None else model.classifier(
        model.pool(model.head_act(model.head_norm(h))))
    loss = loss_fn(out, y)
    grads = torch.autograd.grad(loss, [hh if ident else o for hh, _, _, o, ident in saved])
    cos, ratio = [], []
    for (hh, f, s, _, ident), g in zip(saved, grads):
        f, g = f.reshape(len(x), -1), g.reshape(len(x), -1)
        ref = (hh if ident else s).reshape(len(x), -1)
        cos.append(torch.nn.functional.cosine_similarity(f, g, dim=1).mean())
        ratio.append((f.norm(dim=1) / ref.norm(dim=1)).mean())
    return torch.stack(cos).detach(), torch.stack(ratio).detach()


def test_tiny_resnet_matches_explicit_intermediates():
    torch.manual_seed(0)
    model = TinyResNet().double()
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    loss_fn = make_loss("cross_entropy")
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    out = iterative_inference(model, loss_fn, x, y, chunk=4)
    cos, ratio = manual(model, loss_fn, x, y)
    torch.testing.assert_close(out["cos"], cos, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["ratio"], ratio, rtol=1e-10, atol=1e-12)
    assert out["identity"].tolist() == [True, False, True]
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in model.parameters())


def test_preact_resnet_with_batchnorm_in_eval_mode():
    from sgdlab.config import ModelConfig
    from sgdlab.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet20", width_mult=0.25, batchnorm=True),
                        (3, 8, 8), 4).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    loss_fn = make_loss("mse")
    out = iterative_inference(model, loss_fn, x, y, chunk=4)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
    cos, ratio = manual(model, loss_fn, x, y)
    torch.testing.assert_close(out["cos"], cos, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out["ratio"], ratio, rtol=1e-9, atol=1e-12)
    assert out["identity"].tolist() == [b.is_identity for b in model.blocks]
    assert not out["identity"].all()


class Quadratic(nn.Module):
    """One block F(h) = eps * Q h feeding the loss L = mean_i h_out_i^T Q h_out_i / 2."""

    def __init__(self, q, eps):
        super().__init__()
        self.q, self.eps, self.is_identity = q, eps, True
        self.blocks = [self]

    def branch(self, h):
        return self.eps * h @ self.q

    def shortcut_of(self, h):
        return h

    def forward(self, h):
        return self.shortcut_of(h) + self.branch(h)


def quadratic_loss(q):
    return lambda out, _: 0.5 * ((out @ q) * out).sum(dim=1).mean()


@pytest.mark.parametrize("eps, expected", [(-0.01, -1.0), (0.01, 1.0)])
def test_branch_along_minus_the_gradient_has_cosine_minus_one(eps, expected):
    """dL/dh = (I + eps Q) Q (I + eps Q) h / n is Q h up to O(eps): F = eps Q h points
    against it for eps < 0 (a gradient-descent step), along it for eps > 0."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    q = a @ a.T / 5 + torch.eye(5, dtype=torch.float64)
    h = torch.randn(20, 5, generator=g, dtype=torch.float64)
    out = iterative_inference(Quadratic(q, eps), quadratic_loss(q), h, torch.zeros(20))
    assert out["cos"].item() == pytest.approx(expected, abs=2e-3)
    qh = h @ q
    ratio = (abs(eps) * qh.norm(dim=1) / h.norm(dim=1)).mean()
    assert out["ratio"].item() == pytest.approx(ratio.item(), rel=1e-12)
    eye = torch.eye(5, dtype=torch.float64)  # Q = I: exactly -1
    exact = iterative_inference(Quadratic(eye, -0.3), quadratic_loss(eye), h, torch.zeros(20))
    assert exact["cos"].item() == pytest.approx(-1.0, abs=1e-12)
    assert exact["ratio"].item() == pytest.approx(0.3, rel=1e-12)


def test_probe_requires_a_resnet_and_reports_means():
    torch.manual_seed(0)
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y)
    loss_fn = make_loss("cross_entropy")
    mlp = nn.Sequential(nn.Linear(3, 3)).double()
    probe = ResidualInference(n=20)
    with pytest.raises(ConfigError, match="probe residual needs a ResNet model"):
        probe.check(mlp, data)
    model = TinyResNet().double()
    ctx = ProbeContext(model, "cross_entropy", loss_fn, data, seed=0)
    probe.check(model, data)
    out = probe.measure(ctx)
    assert out["cos"].shape == (3,) and out["ratio"].shape == (3,)
    assert out["cos_mean"] == pytest.approx(out["cos"][[0, 2]].mean().item())
    assert out["ratio_mean_all"] == pytest.approx(out["ratio"].mean().item())
    with pytest.raises(ConfigError, match="split"):
        ResidualInference(split="validation")


def test_inside_the_trainer_without_changing_the_trajectory(store):
    from conftest import small_config
    from safetensors.torch import load_file

    from sgdlab.probes.base import Schedule
    from sgdlab.train import train

    cfg = small_config(**{"train.epochs": 1, "model.name": "resnet20", "model.width_mult": 0.25,
                          "model.batchnorm": True, "train.max_steps": 12})
    run = train(cfg, store, probes=[ResidualInference(Schedule(every=5), n=64)])
    plain = train(cfg, store, probes=[])
    a, b = (load_file(r.path / "final.safetensors") for r in (run, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = store.metrics(runs=[run.id])
    assert len(m[m["name"] == "residual/cos_mean"]) == 4  # steps 0, 5, 10 and the end
    steps = run.array_steps("residual")
    arrays = dict(run.load_arrays("residual"))[steps[-1]]
    assert arrays["cos"].shape == (9,) and arrays["identity"].sum() == 7
    with pytest.raises(ConfigError, match="probe residual needs a ResNet"):
        train(small_config(), store, probes=[ResidualInference()])
