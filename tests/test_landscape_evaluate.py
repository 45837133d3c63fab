"""The batched point evaluator against the per-point state-dict loop, in float64."""

import copy

import numpy as np
import pytest
import torch
from landscape_cases import conv_bn, relu_mlp, vec
from torch import nn

from sgdlab.errors import SgdlabError
from sgdlab.landscape import LandscapeError, Layout, PointEvaluator, evaluate_points
from sgdlab.testing import make_case
from sgdlab.testing.landscape import evaluate_by_loading

CASES = ["mlp_ce", "mlp_mse", "cnn_ce", "cnn_bn_ce", "linear_regression"]


def _points(model, m=7, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = vec(model)
    return c + scale * torch.randn(m, c.numel(), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("bn", ["eval", "recompute"])
@pytest.mark.parametrize("chunks", [dict(), dict(point_chunk=1, example_chunk=5),
                                    dict(point_chunk=3, example_chunk=7), dict(batched=False)])
def test_batched_evaluation_equals_loading_each_point(name, bn, chunks):
    case = make_case(name, 0)
    pts = _points(case.model)
    ev = PointEvaluator(case.model, case.loss_fn, case.data, bn=bn, **chunks)
    loss, acc = ev(pts)
    ref_loss, ref_acc = evaluate_by_loading(case.model, case.loss_fn, case.data, pts,
                                            ev.layout.names, bn=bn)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(acc, ref_acc)


def test_tiny_memory_budget_gives_one_point_per_pass_and_the_same_values():
    case = make_case("cnn_ce", 0)
    pts = _points(case.model, m=5)
    ev = PointEvaluator(case.model, case.loss_fn, case.data, memory_budget=1)
    assert ev.chunks(5) == (1, 1)
    big = PointEvaluator(case.model, case.loss_fn, case.data, memory_budget=1 << 30)
    assert big.chunks(5) == (5, 24)
    np.testing.assert_allclose(ev(pts)[0], big(pts)[0], rtol=1e-12)


def test_recompute_matches_swa_update_bn_and_differs_from_eval():
    model, loss_fn, (x, y) = conv_bn()
    pts = _points(model, m=4, scale=0.2)
    layout = Layout.of(model)
    bn_x = x[:20]
    rec, _ = evaluate_points(model, loss_fn, (x, y), pts, bn="recompute", bn_data=(bn_x, y[:20]),
                             bn_batch_size=8)
    ref = []
    for row in pts:  # torch's own BatchNorm update as the independent reference
        m = copy.deepcopy(model)
        for n, t in layout.tensors(row).items():
            dict(m.named_parameters())[n].data.copy_(t)
        torch.optim.swa_utils.update_bn([xb for xb in bn_x.split(8)], m)
        m.eval()
        with torch.no_grad():
            ref.append(float(loss_fn(m(x), y)))
    np.testing.assert_allclose(rec, ref, rtol=1e-12)
    ev_loss, _ = evaluate_points(model, loss_fn, (x, y), pts, bn="eval")
    assert np.abs(ev_loss - rec).min() > 1e-3


def test_model_flags_buffers_gradients_and_rng_untouched():
    model, loss_fn, data = conv_bn()
    model[1].train()  # a mixed-mode model
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    momentum = model[1].momentum
    rng = torch.random.get_rng_state()
    for bn in ["eval", "recompute"]:
        evaluate_points(model, loss_fn, data, _points(model, m=3), bn=bn)
    assert [m.training for m in model.modules()] == flags and model[1].momentum == momentum
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_iterable_of_batches_equals_one_batch_and_float64_of_a_float32_model():
    model, loss_fn, (x, y) = relu_mlp()
    pts = _points(model, m=4)
    one = evaluate_points(model, loss_fn, (x, y), pts)
    many = evaluate_points(model, loss_fn, [(x[:11], y[:11]), (x[11:], y[11:])], pts)
    np.testing.assert_allclose(one[0], many[0], rtol=1e-13)
    np.testing.assert_array_equal(one[1], many[1])
    m32 = copy.deepcopy(model).float()
    up = evaluate_points(m32, loss_fn, (x.float(), y), pts.float().double(), dtype=torch.float64)
    ref = evaluate_points(model, loss_fn, (x, y), pts.float().double())
    np.testing.assert_allclose(up[0], ref[0], rtol=1e-6)
    assert up[0].dtype == np.float64


def test_points_as_state_dicts_and_modules():
    model, loss_fn, data = relu_mlp()
    other, _, _ = relu_mlp(seed=3)
    loss, _ = evaluate_points(model, loss_fn, data, [other, other.state_dict(), vec(other)])
    assert loss[0] == loss[1] == loss[2]


def test_bad_input_is_one_line_naming_the_argument():
    model, loss_fn, data = relu_mlp()
    P = Layout.of(model).dim
    with pytest.raises(LandscapeError, match=rf"points: expected shape \(m, {P}\)"):
        evaluate_points(model, loss_fn, data, torch.zeros(2, P + 1, dtype=torch.float64))
    wrong = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with pytest.raises(LandscapeError, match=r"points\[0\]: parameter '0.weight' has shape"):
        evaluate_points(model, loss_fn, data, [wrong.state_dict()])
    with pytest.raises(LandscapeError, match="has no parameter '2.bias'"):
        evaluate_points(model, loss_fn, data, [{k: v for k, v in model.state_dict().items()
                                                if k != "2.bias"}])
    with pytest.raises(LandscapeError, match="bn: must be one of"):
        PointEvaluator(model, loss_fn, data, bn="train")
    with pytest.raises(LandscapeError, match="data: a batch has 3 inputs but 2 targets"):
        PointEvaluator(model, loss_fn, (data[0][:3], data[1][:2]))
    assert issubclass(LandscapeError, SgdlabError) and issubclass(LandscapeError, ValueError)
