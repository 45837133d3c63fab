"""Stiffness: torch.func Gram matrix against per-example gradients from an autograd loop."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.losses import make_loss
from sgdlab.probes.base import ProbeContext
from sgdlab.probes.stiffness import (
    Stiffness,
    class_stiffness,
    critical_length,
    distance_binned,
    gradient_gram,
    stiffness,
    stiffness_from_gram,
)


def case(loss="cross_entropy", n=30, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.3),
                          nn.Linear(6, 3)).double()
    with torch.no_grad():  # non-trivial running statistics, so eval mode matters
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0] * 14 + [1] * 10 + [2] * (n - 24))[torch.randperm(n, generator=g)]
    return model, make_loss(loss), x, y


def loop_gradients(model, loss_fn, x, y):
    """Reference: one autograd call per example, eval mode."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for xi, yi in zip(x, y):
        loss = loss_fn(model(xi[None]), yi[None])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    model.train()
    return torch.stack(rows)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gram_and_stiffness_match_explicit_per_example_gradients(loss):
    model, loss_fn, x, y = case(loss)
    model.train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gram = gradient_gram(model, loss_fn, x, y, chunk=7)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    g = loop_gradients(model, loss_fn, x, y)
    torch.testing.assert_close(gram, g @ g.T, rtol=1e-10, atol=1e-12)
    # blocks smaller than the data: rows of 2 chunks at a time, the rest recomputed
    small = gradient_gram(model, loss_fn, x, y, chunk=4, max_bytes=8 * 8 * g.shape[1])
    torch.testing.assert_close(small, gram, rtol=1e-12, atol=1e-14)
    cos, sign = stiffness_from_gram(gram)
    ref_cos = torch.nn.functional.cosine_similarity(g[:, None], g[None], dim=-1)
    torch.testing.assert_close(cos, ref_cos, rtol=1e-10, atol=1e-12)
    assert torch.equal(sign, torch.sign(g @ g.T))
    assert (cos < 0).any() and (cos > 0).any()


def test_class_matrix_and_within_between_from_pairs():
    model, loss_fn, x, y = case()
    out = stiffness(model, loss_fn, x, y, n_classes=4, bins=5)  # class 3 absent: NaN row
    g = loop_gradients(model, loss_fn, x, y)
    n = len(x)
    ref = {}
    for key in ("cos", "sign"):
        sums, counts = np.zeros((4, 4)), np.zeros((4, 4))
        for i in range(n):
            for j in range(n):
                if i != j:
                    s = (g[i] @ g[j]).item()
                    s = s / (g[i].norm() * g[j].norm()).item() if key == "cos" else np.sign(s)
                    sums[y[i], y[j]] += s
                    counts[y[i], y[j]] += 1
        with np.errstate(invalid="ignore"):
            ref[key] = sums / counts
        np.testing.assert_allclose(out[f"class_{key}"].numpy(), ref[key], rtol=1e-9, atol=1e-12)
        assert np.isnan(ref[key][3]).all()
        diag = [ref[key][c, c] for c in range(3)]
        offd = [ref[key][a, b] for a in range(3) for b in range(3) if a != b]
        assert out[f"{key}_within"] == pytest.approx(np.mean(diag), rel=1e-9)
        assert out[f"{key}_between"] == pytest.approx(np.mean(offd), rel=1e-9)
    all_pairs = [(g[i] @ g[j] / (g[i].norm() * g[j].norm())).item()
                 for i in range(n) for j in range(n) if i != j]
    assert out["cos_mean"] == pytest.approx(np.mean(all_pairs), rel=1e-9)


def test_class_stiffness_of_a_known_matrix():
    s = torch.tensor([[9.0, 1, 2], [1, 9, 3], [2, 3, 9]])
    c = class_stiffness(s, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(c, torch.tensor([[1.0, 2.5], [2.5, math.nan]]), equal_nan=True)


def test_distance_bins_are_equal_count_and_average_the_pairs():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)  # distances 1,2,3,4,6,7
    v = -(x - x.T).abs()  # value of a pair = minus its distance
    centers, (means,) = distance_binned([v], x, bins=3)
    torch.testing.assert_close(centers, torch.tensor([1.5, 3.5, 6.5], dtype=torch.float64))
    torch.testing.assert_close(means, -centers)


def test_critical_length_interpolates_the_first_downward_crossing():
    d = np.linspace(0.5, 10, 20)
    assert critical_length(d, 3.0 - d) == pytest.approx(3.0)  # linear: exact
    assert critical_length(d, np.cos(d)) == pytest.approx(np.pi / 2, abs=0.05)
    assert critical_length([1, 2, 3, 4], [0.5, np.nan, -0.5, 0.2]) == pytest.approx(2.0)
    assert critical_length([1, 2, 3], [-1.0, 1.0, -1.0]) == pytest.approx(2.5)  # first fall
    assert math.isnan(critical_length(d, np.exp(-d)))
    assert math.isnan(critical_length(d, -np.exp(-d)))


def test_probe_measure_on_a_subset():
    model, loss_fn, x, y = case(n=40)
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y, n_classes=3,
                           task="classification")
    ctx = ProbeContext(model, "cross_entropy", loss_fn, data, seed=0,
                       generator=torch.Generator().manual_seed(0))
    out = Stiffness(n=25, bins=4).measure(ctx)
    xs, ys = ctx.subset(25)
    ref = stiffness(model, loss_fn, xs, ys, n_classes=3, bins=4)
    assert out["class_cos"].shape == (3, 3) and out["stiffness_cos"].shape == (4,)
    for key in ("cos_mean", "cos_within", "sign_between"):
        assert out[key] == pytest.approx(ref[key])
    torch.testing.assert_close(out["stiffness_cos"], ref["stiffness_cos"])
    for key, curve in (("critical_length", "stiffness_cos"),
                       ("critical_length_sign", "stiffness_sign")):
        expected = critical_length(ref["bin_centers"], ref[curve])
        assert out[key] == pytest.approx(expected, nan_ok=True)
    assert ctx.subset(25)[0].shape == (25, 4)


def test_inside_the_trainer_without_changing_the_trajectory(store):
    from conftest import small_config
    from safetensors.torch import load_file

    from sgdlab.probes.base import Schedule
    from sgdlab.train import train

    cfg = small_config(**{"train.epochs": 1})
    run = train(cfg, store, probes=[Stiffness(Schedule(every=10), n=40, bins=5)])
    plain = train(cfg, store, probes=[])
    a, b = (load_file(r.path / "final.safetensors") for r in (run, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = store.metrics(runs=[run.id])
    values = m[m["name"] == 'stiffness/cos_within']["value"]
    assert len(values) >= 2 and values.notna().all()
