"""Critical sample ratio: LASS against the exact critical set of known decision boundaries."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sgdlab.errors import ConfigError
from sgdlab.probes.base import ProbeContext
from sgdlab.probes.csr import CriticalSampleRatio, critical_sample_ratio, lass

R = 0.1  # box radius of the toy problems; alpha and beta keep the paper's ratios to r
OPTS = {"radius": R, "alpha": R * 0.25 / 0.3, "beta": R * 0.2 / 0.3, "max_iter": 100}


def linear_2d() -> nn.Linear:
    """Two classes in the plane; margin m(x) = w.x + c with w = (1.0, -2.0), c = 0.2."""
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -2.0]]))
        model.bias.copy_(torch.tensor([0.0, 0.2]))
    return model


def points(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1


def test_lass_finds_exactly_the_critical_points_of_a_linear_classifier():
    model, x = linear_2d(), points()
    w, c = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.2
    # the box around x contains the other class iff |m(x)| <= r ||w||_1 (a corner reaches it)
    margin = (x @ w + c).abs() / (R * w.abs().sum())
    res = lass(model, x, generator=torch.Generator().manual_seed(1), **OPTS)
    clear = (margin - 1).abs() > 0.02  # leave out points on the edge of the criterion
    assert clear.sum() > 350
    assert torch.equal(res.critical[clear], (margin < 1)[clear])
    assert 20 < int(res.critical.sum()) < 380  # both kinds are present
    assert not res.critical[margin > 1].any()  # never a false positive
    # adversarial samples lie in the box and have the other class
    assert ((res.x_adv - x).abs() <= R + 1e-12).all()
    k = model(x).argmax(-1)
    assert (model(res.x_adv).argmax(-1)[res.critical] != k[res.critical]).all()
    assert (res.iterations[res.critical] >= 1).all() and (res.iterations[~res.critical] == 0).all()


def test_lass_without_noise_is_iterated_fgsm():
    """beta = 0, alpha = r/2: points with |m| < r ||w||_1 / 2 flip at the first step, the
    others of the critical set at the second (the corner), the rest never."""
    model, x = linear_2d(), points()
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)
    margin = (x @ w + 0.2).abs() / (R * w.abs().sum())
    res = lass(model, x, radius=R, alpha=R / 2, beta=0.0, max_iter=5)
    expected = torch.where(margin < 0.5, 1, torch.where(margin < 1, 2, 0))
    clear = ((margin - 0.5).abs() > 1e-6) & ((margin - 1).abs() > 1e-6)
    assert torch.equal(res.iterations[clear], expected[clear])
    assert set(expected.tolist()) == {0, 1, 2}


def test_lass_on_a_nonlinear_net_matches_a_dense_grid_search():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    with torch.no_grad():
        model[0].weight.mul_(4)
    x = points(150, seed=3)
    res = lass(model, x, generator=torch.Generator().manual_seed(0), batch_size=64, **OPTS)
    t = torch.linspace(-R, R, 41, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        k = model(x).argmax(-1)
        other = model(x[:, None, :] + grid[None]).argmax(-1) != k[:, None]
    truth = other.any(dim=1)
    assert 10 < int(truth.sum()) < 140
    found = res.critical
    assert found[truth].float().mean() >= 0.95  # recall
    # precision: anything flagged outside the grid's set must still be a true find
    assert (model(res.x_adv).argmax(-1)[found] != k[found]).all()
    assert ((res.x_adv - x).abs() <= R + 1e-12).all()


def test_lass_is_deterministic_and_leaves_rng_grads_and_modes_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(8, 2)).double()
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = points(100)
    state = torch.get_rng_state()
    a = lass(model, x, generator=torch.Generator().manual_seed(5), **OPTS)
    b = lass(model, x, generator=torch.Generator().manual_seed(5), **OPTS)
    c = lass(model, x, generator=torch.Generator().manual_seed(6), **OPTS)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.critical, b.critical) and torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())


def test_radii_are_scaled_by_the_normalization():
    """LASS on normalized inputs z = (u - mu) / sigma with scale 1/sigma retraces the search
    on the raw inputs u: same critical samples, same iterations, z_adv = (u_adv - mu) / sigma."""
    raw = linear_2d()
    mu = torch.tensor([0.3, -0.1], dtype=torch.float64)
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    normalized = nn.Linear(2, 2).double()
    with torch.no_grad():  # f_z(z) = W (sigma z + mu) + b
        normalized.weight.copy_(raw.weight * sigma)
        normalized.bias.copy_(raw.bias + raw.weight @ mu)
    u = points(300, seed=4)
    z = (u - mu) / sigma
    ru = lass(raw, u, generator=torch.Generator().manual_seed(2), **OPTS)
    rz = lass(normalized, z, scale=1 / sigma, generator=torch.Generator().manual_seed(2), **OPTS)
    assert ru.critical.any()
    assert torch.equal(ru.critical, rz.critical)
    assert torch.equal(ru.iterations, rz.iterations)
    torch.testing.assert_close(rz.x_adv, (ru.x_adv - mu) / sigma)
    unscaled = critical_sample_ratio(normalized, z, generator=torch.Generator().manual_seed(2),
                                     **OPTS)
    assert unscaled != ru.critical.double().mean().item()


def test_probe_reports_csr_on_the_test_subset():
    model = linear_2d()
    x, y = points(500, seed=7), torch.zeros(500, dtype=torch.long)
    scale = torch.full((2,), 255 * R / 0.3, dtype=torch.float64)
    data = SimpleNamespace(x_train=x[:10], y_train=y[:10], x_test=x, y_test=y,
                           task="classification", name="toy", input_scale=scale)
    ctx = ProbeContext(model, "cross_entropy", None, data, seed=0,
                       generator=torch.Generator().manual_seed(0))
    probe = CriticalSampleRatio(n=300)  # default radius 0.3/255 scaled to R
    out = probe.measure(ctx)
    xs, _ = ctx.subset(300, "test")
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)
    truth = ((xs @ w + 0.2).abs() < R * 3).double().mean().item()
    assert out["csr"] == pytest.approx(truth, abs=0.01)
    assert 1 <= out["mean_iter"] <= 100
    probe.check(model, data)
    data.task = "regression"
    with pytest.raises(ConfigError, match="csr"):
        probe.check(model, data)
    with pytest.raises(ConfigError, match="split"):
        CriticalSampleRatio(split="val")


def test_inside_the_trainer_without_changing_the_trajectory(store):
    from conftest import small_config
    from safetensors.torch import load_file

    from sgdlab.probes.base import Schedule
    from sgdlab.train import train

    cfg = small_config(**{"train.epochs": 1})
    probe = CriticalSampleRatio(Schedule(every=10), n=64, max_iter=5, radius=8 / 255)
    run = train(cfg, store, probes=[probe])
    plain = train(cfg, store, probes=[])
    a, b = (load_file(r.path / "final.safetensors") for r in (run, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = store.metrics(runs=[run.id])
    values = m[m["name"] == 'csr/csr']["value"]
    assert len(values) >= 2 and values.notna().all()


def test_defaults_are_the_authors_values_in_pixel_units():
    """r = 0.3, alpha = 0.25, beta = 0.2 grey levels (of 255), at most 100 iterations."""
    probe = CriticalSampleRatio()
    assert probe.radius * 255 == pytest.approx(0.3) and probe.alpha * 255 == pytest.approx(0.25)
    assert probe.beta * 255 == pytest.approx(0.2) and probe.max_iter == 100


def test_defaults_separate_a_random_label_network_from_a_real_label_one():
    """At the defaults, a network that memorized random labels has many more critical test
    samples than one trained on real labels (digits, both fitted to 100%)."""
    import torch.nn.functional as F

    from sgdlab.config import DataConfig, ModelConfig
    from sgdlab.data import load_data
    from sgdlab.models import build_model

    csr = {}
    for noise in (0.0, 1.0):
        torch.manual_seed(0)
        data = load_data(DataConfig(name="digits", download=False, label_noise=noise), seed=0)
        model = build_model(ModelConfig(name="mlp", depth=2, width=128), data.input_shape, 10)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        for _ in range(150):
            perm = torch.randperm(data.n_train, generator=g)
            for i in range(0, data.n_train - 63, 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
                opt.step()
            with torch.no_grad():
                if (model(data.x_train).argmax(1) == data.y_train).all():
                    break
        with torch.no_grad():
            assert (model(data.x_train).argmax(1) == data.y_train).all()
        csr[noise] = critical_sample_ratio(model, data.x_test, scale=data.input_scale,
                                           generator=torch.Generator().manual_seed(1))
    assert csr[0.0] < 0.05 and csr[1.0] > 0.1
