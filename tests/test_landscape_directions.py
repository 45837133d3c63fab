"""Filter-normalized, Hessian, step and given directions, and their recipes."""

import copy

import numpy as np
import pytest
import torch
from landscape_cases import conv_bn, linear_regression, relu_mlp, vec

from sgdlab.landscape import (
    LandscapeError,
    Layout,
    hessian_directions,
    normalize,
    random_directions,
    slice_1d,
    slice_2d,
    step_direction,
)


def test_each_filter_gets_the_norm_of_the_weights_filter_and_biases_zero():
    model, _, _ = conv_bn()
    layout = Layout.of(model)
    d = random_directions(model, layout, 1, seed=4).vectors[0]
    parts, weights = layout.tensors(d), dict(model.named_parameters())
    for name, p in parts.items():
        w = weights[name].detach()
        if w.ndim <= 1:
            assert torch.count_nonzero(p) == 0, name
            continue
        for j in range(w.shape[0]):
            torch.testing.assert_close(p[j].norm(), w[j].norm(), rtol=1e-13, atol=0)
    same = random_directions(model, layout, 1, seed=4, bias="weights").vectors[0]
    for name, p in layout.tensors(same).items():
        if p.ndim <= 1:
            assert torch.equal(p, weights[name].detach()), name
    layer = layout.tensors(normalize(d, vec(model), layout, "layer"))
    torch.testing.assert_close(layer["0.weight"].norm(), weights["0.weight"].norm())
    assert float(normalize(d, vec(model), layout, "unit").norm()) == pytest.approx(1.0)


def test_zero_filters_stay_zero():
    model, _, _ = relu_mlp()
    with torch.no_grad():
        model[0].weight[2].zero_()
    layout = Layout.of(model)
    d = layout.tensors(random_directions(model, layout, 1, seed=0).vectors[0])
    assert torch.count_nonzero(d["0.weight"][2]) == 0
    assert torch.isfinite(torch.cat([t.reshape(-1) for t in d.values()])).all()


def _rescaled_relu(model, alpha):
    """First layer ×α (weights and bias), second layer's weights ×1/α: the same function."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m[0].weight.mul_(alpha)
        m[0].bias.mul_(alpha)
        m[2].weight.div_(alpha)
    return m


@pytest.mark.parametrize("bias", ["zero", "weights"])
def test_filter_normalized_slices_are_invariant_to_relu_rescaling(bias):
    model, loss_fn, data = relu_mlp()
    scaled = _rescaled_relu(model, 7.5)
    torch.testing.assert_close(scaled(data[0]), model(data[0]), rtol=1e-12, atol=1e-12)
    xs = np.linspace(-1, 1, 9)
    a = slice_2d(model, loss_fn, data, xs, directions="random", seed=3, bias=bias)
    b = slice_2d(scaled, loss_fn, data, xs, directions="random", seed=3, bias=bias)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-11)
    # without normalization the picture depends on the scale: the test can fail
    c = slice_1d(model, loss_fn, data, xs, directions="random", seed=3, normalization="none")
    d = slice_1d(scaled, loss_fn, data, xs, directions="random", seed=3, normalization="none")
    assert np.abs(c.loss - d.loss).max() > 1e-2


def test_filter_normalized_slices_are_invariant_to_per_filter_scales_before_batchnorm():
    model, loss_fn, data = conv_bn(eps=1e-300)  # eps ≈ 0: BatchNorm is scale-free
    c = torch.tensor([0.3, 4.0, 1.7], dtype=torch.float64)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[0].weight.mul_(c[:, None, None, None])
        scaled[0].bias.mul_(c)
        scaled[1].running_mean.mul_(c)
        scaled[1].running_var.mul_(c**2)
    torch.testing.assert_close(scaled(data[0]), model(data[0]), rtol=1e-10, atol=1e-10)
    xs = np.linspace(-0.8, 0.8, 7)
    for bn in ["eval", "recompute"]:
        a = slice_1d(model, loss_fn, data, xs, seed=1, bn=bn)
        b = slice_1d(scaled, loss_fn, data, xs, seed=1, bn=bn)
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-9)


def test_recipes_redraw_the_same_vectors_and_renormalize_at_another_center():
    model, _, _ = conv_bn()
    layout = Layout.of(model)
    two = random_directions(model, layout, 2, seed=11)
    assert two.recipes[1] == {"kind": "random", "seed": 11, "index": 1,
                              "normalization": "filter", "bias": "zero"}
    second = random_directions(model, layout, 1, seed=11, start=1)
    assert torch.equal(second.vectors[0], two.vectors[1])
    other, _, _ = conv_bn(seed=5)
    moved = two.renormalized(vec(other))
    assert torch.equal(moved.vectors, random_directions(other, layout, 2, seed=11).vectors)
    assert not torch.equal(moved.vectors, two.vectors)
    hess = hessian_directions(model, torch.nn.functional.cross_entropy, conv_bn()[2], 1)
    with pytest.raises(LandscapeError, match="has no seed"):
        hess.renormalized(vec(other))


def test_hessian_directions_of_linear_regression_are_the_eigenvectors_of_xtx():
    model, loss_fn, data, H, _, _ = linear_regression()
    dirs = hessian_directions(model, loss_fn, data, 2, tol=1e-10)
    vals, vecs = np.linalg.eigh(H.numpy())
    np.testing.assert_allclose([r["eigenvalue"] for r in dirs.recipes], vals[::-1][:2], rtol=1e-9)
    overlap = np.abs(dirs.vectors.numpy() @ vecs[:, ::-1][:, :2])
    np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-8)
    # at another center (the Hessian is constant: same values), model untouched
    before = vec(model).clone()
    moved = hessian_directions(model, loss_fn, data, 1, center=before + 1.0, tol=1e-10)
    assert moved.recipes[0]["eigenvalue"] == pytest.approx(vals[-1], rel=1e-9)
    assert torch.equal(vec(model), before)


def test_step_direction_is_the_difference_and_bad_shapes_fail():
    model, _, _ = relu_mlp()
    layout = Layout.of(model)
    a, b = vec(model), vec(model) + 0.01
    s = step_direction(a, b, layout)
    assert torch.equal(s.vectors[0], b - a) and s.recipes == [{"kind": "step",
                                                               "normalization": "none"}]
    with pytest.raises(LandscapeError, match="current: expected a vector of"):
        step_direction(a, b[:-1], layout)
    with pytest.raises(LandscapeError, match="normalization: must be one of"):
        random_directions(model, layout, 1, normalization="fancy")
