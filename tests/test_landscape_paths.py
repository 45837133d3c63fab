"""Interpolation, barriers, trained curves and connectors against closed forms."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from landscape_cases import linear_regression, relu_mlp, vec
from test_landscape_slices import mean_out, quadratic
from torch import nn

from sgdlab.landscape import (
    Connector,
    Curve,
    LandscapeError,
    PathValues,
    connector_values,
    curve_values,
    evaluate_points,
    interpolate,
    train_connector,
    train_curve,
)


def test_interpolation_ends_are_the_two_models_losses():
    model, loss_fn, (x, y) = relu_mlp()
    other, _, _ = relu_mlp(seed=2)
    line = interpolate(model, loss_fn, (x, y), model, other.state_dict(), ts=np.linspace(0, 1, 9))
    with torch.no_grad():
        la, lb = float(loss_fn(model(x), y)), float(loss_fn(other(x), y))
    assert line.loss[0] == pytest.approx(la, rel=1e-14)
    assert line.loss[-1] == pytest.approx(lb, rel=1e-14)
    assert line.ts[0] == 0 and line.ts[-1] == 1 and len(line.ts) == 9
    # 0 and 1 are added to any grid
    assert list(interpolate(model, loss_fn, (x, y), model, other, ts=[0.5]).ts) == [0, 0.5, 1]


@pytest.mark.parametrize("indefinite", [False, True])
def test_the_barrier_of_a_line_on_a_quadratic_is_minus_dAd_over_8(indefinite):
    model, data, A, c, _, q = quadratic(indefinite=indefinite)
    a = vec(model)
    # along the negative-curvature eigenvector the chord is beaten by ½ t(1−t)|ΔᵀAΔ|
    b = a + 2.0 * q[:, 0] if indefinite else a + torch.randn(5, dtype=torch.float64,
                                                              generator=torch.Generator())
    line = interpolate(model, mean_out, data, a, b, ts=np.linspace(0, 1, 11))
    dAd = float((b - a) @ A @ (b - a))
    t = line.ts
    La, Lb = line.endpoint_loss
    np.testing.assert_allclose(line.loss, (1 - t) * La + t * Lb - 0.5 * t * (1 - t) * dAd,
                               rtol=1e-12)
    assert line.barrier == pytest.approx(max(0.0, -dAd / 8), abs=1e-12)
    if indefinite:
        assert line.barrier_t == 0.5 and line.barrier > 0
        assert line.peak_excess == pytest.approx(float(line.loss.max()) - max(La, Lb))
    else:
        assert line.barrier == 0.0 and line.peak_excess <= 1e-12


def test_saved_paths_load_back(tmp_path):
    model, loss_fn, data = relu_mlp()
    other, _, _ = relu_mlp(seed=2)
    line = interpolate(model, loss_fn, data, model, other)
    line.save(tmp_path / "line.npz")
    back = PathValues.load(tmp_path / "line.npz")
    assert back.summary() == line.summary() and torch.equal(back.nodes, line.nodes)


def test_interpolating_to_a_different_architecture_is_refused():
    model, loss_fn, data = relu_mlp()
    wider = nn.Sequential(nn.Linear(5, 9), nn.ReLU(), nn.Linear(9, 3)).double()
    with pytest.raises(LandscapeError, match=r"end: parameter '0.weight' has shape \(9, 5\)"):
        interpolate(model, loss_fn, data, model, wider)
    with pytest.raises(LandscapeError, match="end: has no parameter"):
        interpolate(model, loss_fn, data, model, {"0.weight": model[0].weight})


def _two_ends(seed=0):
    model, loss_fn, data, H, w_star, exact = linear_regression(seed)
    g = torch.Generator().manual_seed(9)
    w1 = w_star + torch.randn(6, generator=g, dtype=torch.float64)
    w2 = w_star + torch.randn(6, generator=g, dtype=torch.float64)
    return model, loss_fn, data, H, w_star, exact, w1, w2


@pytest.mark.parametrize("kind", ["bezier", "chain"])
def test_curve_endpoints_are_the_fixed_solutions(kind):
    model, loss_fn, data, _, _, exact, w1, w2 = _two_ends()
    curve = train_curve(model, loss_fn, data, w1, w2, kind=kind, bends=2, steps=5, lr=0.05,
                        batch_size=16)
    ends = curve.points([0.0, 1.0])
    assert torch.equal(ends[0], w1) and torch.equal(ends[1], w2)
    vals = curve_values(model, loss_fn, data, curve, ts=np.linspace(0, 1, 5))
    assert vals.loss[0] == pytest.approx(exact(w1), rel=1e-13)
    assert vals.loss[-1] == pytest.approx(exact(w2), rel=1e-13)
    assert len(curve.history) == 5


# For a quadratic L with minimum w*, the expected loss along the curve is a quadratic in
# the bend whose minimizer is known: Bézier E[b]=1/3, E[b²]=2/15, E[ab]=E[bc]=1/10 give
# 2.5 w* − 0.75 (w1 + w2); the two-segment chain gives 1.5 w* − 0.25 (w1 + w2); a hub
# joined to n solutions 1.5 w* − Σ w_i / (2n).
@pytest.mark.parametrize("kind,closed", [
    ("bezier", lambda w, w1, w2: 2.5 * w - 0.75 * (w1 + w2)),
    ("chain", lambda w, w1, w2: 1.5 * w - 0.25 * (w1 + w2)),
])
def test_the_trained_bend_reaches_the_closed_form_optimum(kind, closed):
    model, loss_fn, data, _, w_star, _, w1, w2 = _two_ends()
    curve = train_curve(model, loss_fn, data, w1, w2, kind=kind, steps=1500, lr=0.3,
                        momentum=0.5, batch_size=None, sampling="quadrature", quadrature_nodes=3)
    torch.testing.assert_close(curve.nodes[1], closed(w_star, w1, w2), rtol=0, atol=1e-9)
    assert curve.history[-1] <= curve.history[0]


def test_a_connector_through_two_solutions_is_the_two_segment_chain():
    model, loss_fn, data, _, _, _, w1, w2 = _two_ends()
    opts = dict(steps=40, lr=0.2, momentum=0.9, batch_size=None, sampling="quadrature",
                quadrature_nodes=3)
    chain = train_curve(model, loss_fn, data, w1, w2, kind="chain", **opts)
    hub = train_connector(model, loss_fn, data, [w1, w2], **opts)
    torch.testing.assert_close(hub.hub, chain.nodes[1], rtol=0, atol=1e-10)


def test_a_connector_through_three_solutions_reaches_its_closed_form():
    model, loss_fn, data, _, w_star, _, w1, w2 = _two_ends()
    w3 = w_star - 0.5 * (w1 - w_star)
    hub = train_connector(model, loss_fn, data, [w1, w2, w3], steps=1500, lr=0.3,
                          momentum=0.5, batch_size=None, sampling="quadrature",
                          quadrature_nodes=2)
    torch.testing.assert_close(hub.hub, 1.5 * w_star - (w1 + w2 + w3) / 6, rtol=0, atol=1e-9)
    vals = connector_values(model, loss_fn, data, hub, ts=np.linspace(0, 1, 5))
    assert sorted(vals) == [(0, 1), (0, 2), (1, 2)]
    for (i, j), pair in vals.items():
        assert torch.equal(pair["connector"].nodes[1], hub.hub)
        assert torch.equal(pair["line"].nodes, hub.solutions[[i, j]])
        np.testing.assert_allclose(pair["connector"].endpoint_loss, pair["line"].endpoint_loss,
                                   rtol=1e-13)


def _trained(seed, x, y, steps=400):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_a_trained_curve_between_two_networks_lowers_the_barrier_of_the_line():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    y = ((x[:, 0] * x[:, 1]) > 0).long()  # XOR-like: two independent nets differ
    a, b = _trained(1, x, y), _trained(2, x, y)
    line = interpolate(a, F.cross_entropy, (x, y), a, b, ts=np.linspace(0, 1, 21))
    curve = train_curve(a, F.cross_entropy, (x, y), a, b, kind="bezier", steps=600, lr=0.05,
                        momentum=0.9, batch_size=50, seed=0)
    along = curve_values(a, F.cross_entropy, (x, y), curve, ts=np.linspace(0, 1, 21))
    assert line.barrier > 0.1  # the straight line crosses a ridge; the curve goes round it
    assert along.barrier < 0.5 * line.barrier


def test_curves_and_connectors_save_and_bad_options_fail(tmp_path):
    model, loss_fn, data, _, _, _, w1, w2 = _two_ends()
    curve = train_curve(model, loss_fn, data, w1, w2, steps=3, batch_size=8)
    curve.save(tmp_path / "c.npz")
    back = Curve.load(tmp_path / "c.npz")
    assert torch.equal(back.nodes, curve.nodes) and back.meta == curve.meta
    hub = train_connector(model, loss_fn, data, [w1, w2, w1 + w2], steps=3, batch_size=8)
    hub.save(tmp_path / "h.npz")
    assert torch.equal(Connector.load(tmp_path / "h.npz").hub, hub.hub)
    with pytest.raises(LandscapeError, match="holds a 'connector', not a curve"):
        Curve.load(tmp_path / "h.npz")
    with pytest.raises(LandscapeError, match="kind: must be one of"):
        train_curve(model, loss_fn, data, w1, w2, kind="spline")
    with pytest.raises(LandscapeError, match="solutions: need at least 2"):
        train_connector(model, loss_fn, data, [w1])
    with pytest.raises(LandscapeError, match="sampling: must be one of"):
        train_curve(model, loss_fn, data, w1, w2, sampling="sobol")
    before = copy.deepcopy(model.state_dict())
    evaluate_points(model, loss_fn, data, [w1])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_line_drawn_beyond_its_ends_keeps_the_barrier_of_the_segment():
    model, data, A, _, _, q = quadratic(indefinite=True)
    a = vec(model)
    b = a + 2.0 * q[:, 0]
    inner = interpolate(model, mean_out, data, a, b, ts=np.linspace(0, 1, 11))
    wide = interpolate(model, mean_out, data, a, b, ts=np.linspace(-0.5, 1.5, 21))
    dAd = float((b - a) @ A @ (b - a))
    t, (La, Lb) = wide.ts, wide.endpoint_loss
    np.testing.assert_allclose(wide.loss, (1 - t) * La + t * Lb - 0.5 * t * (1 - t) * dAd,
                               rtol=1e-12)
    assert wide.barrier == pytest.approx(inner.barrier, rel=1e-12) and wide.ts[0] == -0.5
    assert wide.endpoint_loss == pytest.approx(inner.endpoint_loss, rel=1e-13)
    with pytest.raises(LandscapeError, match="a curve's parameters must lie in"):
        curve_values(model, mean_out, data,
                     Curve("bezier", torch.stack([a, a, b]), inner.layout, np.zeros(0)),
                     ts=[1.2])
