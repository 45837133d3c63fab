"""Model zoo: shapes, parameter counts, BN/dropout options, residual decomposition, training."""

import math

import pytest
import torch
from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.errors import ConfigError
from sgdlab.models import MODELS, build_model, count_parameters

RESNETS = ("resnet20", "resnet32", "resnet56")
IMAGE_MODELS = ("vgg11", *RESNETS)


def make(name, shape=(3, 32, 32), n_out=10, **kw):
    return build_model(ModelConfig(name=name, **kw), shape, n_out)


def has(model, kind):
    return any(isinstance(m, kind) for m in model.modules())


def test_registry_names():
    assert set(MODELS) == {"mlp", "cnn", "vgg11", *RESNETS}
    ModelConfig(name="resnet56").check()  # config validation reads the registry


def test_unknown_name_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"model\.name.*'resnet18'"):
        make("resnet18")


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_models_reject_vectors(name):
    with pytest.raises(ConfigError, match=rf"model\.name.*'{name}'"):
        make(name, (40,))


def test_cnn_rejects_inputs_too_small_to_pool_twice():
    with pytest.raises(ConfigError, match=r"model\.name"):
        make("cnn", (1, 3, 3))


SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]
CASES = [(n, s) for n in ("mlp", "cnn") for s in [*SHAPES, (40,)]]
CASES += [(n, s) for n in IMAGE_MODELS for s in SHAPES]


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("name,shape", CASES)
def test_output_shape(name, shape, batchnorm):
    model = make(name, shape, 7, batchnorm=batchnorm, width_mult=0.25, width=16)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_cnn_on_sequences_uses_1d_convolutions():
    model = make("cnn", (40,))
    assert has(model, nn.Conv1d) and not has(model, nn.Conv2d)
    # 1*32*3+32 + 32*64*3+64 + (64*10)*128+128 + 128*10+10
    assert count_parameters(model) == 128 + 6208 + 82048 + 1290


def test_cnn_parameter_count():
    # conv 1->32: 320, conv 32->64: 18,496, fc 64*7*7 -> 128: 401,536, fc 128 -> 10: 1,290
    assert count_parameters(make("cnn", (1, 28, 28))) == 421_642
    # width 0.5 (16, 32, 64): 160 + 4,640 + 100,416 + 650
    assert count_parameters(make("cnn", (1, 28, 28), width_mult=0.5)) == 105_866
    # BN: conv/fc biases go (32 + 64 + 128), BN adds weight and bias (2 * 224)
    assert count_parameters(make("cnn", (1, 28, 28), batchnorm=True)) == 421_642 + 224


@pytest.mark.parametrize("depth,width,mult", [(0, 64, 1.0), (1, 64, 1.0), (3, 100, 0.5)])
def test_mlp_parameter_count(depth, width, mult):
    d, k, h = 3 * 32 * 32, 10, int(round(width * mult))
    expected = d * k + k if depth == 0 else (d + 1) * h + (depth - 1) * (h + 1) * h + (h + 1) * k
    model = make("mlp", (3, 32, 32), depth=depth, width=width, width_mult=mult)
    assert count_parameters(model) == expected
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == depth + 1


def test_resnet20_parameter_count():
    # BN, convs without bias, 10 classes. stem 3*16*9 = 432;
    # stage 1: 3 * (2*16*16*9 + 2*2*16) = 14,016;
    # stage 2: first 16*32*9 + 32*32*9 + 16*32 (1x1 shortcut) + 2*16 + 2*32 = 14,432,
    #          then 2 * (2*32*32*9 + 4*32) = 37,120;
    # stage 3: first 32*64*9 + 64*64*9 + 32*64 + 2*32 + 2*64 = 57,536,
    #          then 2 * (2*64*64*9 + 4*64) = 147,968;
    # head BN 2*64 = 128, linear 64*10 + 10 = 650.  Total 272,282 (~0.27M).
    assert count_parameters(make("resnet20", batchnorm=True)) == 272_282
    # no BN: the BatchNorms go (weight + bias on 16*7 + 32*6 + 64*6 channels, head included)
    # and every conv gets a bias (stem 16, then 16*6, 32*7, 64*7 with the two 1x1 shortcuts)
    bn = 2 * (16 * 7 + 32 * 6 + 64 * 6)
    biases = 16 + 16 * 6 + 32 * 7 + 64 * 7
    assert count_parameters(make("resnet20")) == 272_282 - bn + biases


@pytest.mark.parametrize("name,blocks", [("resnet20", 9), ("resnet32", 15), ("resnet56", 27)])
def test_resnet_structure(name, blocks):
    model = make(name, width_mult=0.25)
    assert len(model.blocks) == blocks
    assert sum(not b.is_identity for b in model.blocks) == 2  # two stage transitions
    assert count_parameters(make(name, batchnorm=True)) == pytest.approx(
        {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet56": 0.85e6}[name], rel=0.03)


def test_vgg11_parameter_count():
    convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512)] + [(512, 512)] * 3
    no_bn = sum(9 * a * b + b for a, b in convs) + 512 * 10 + 10
    assert count_parameters(make("vgg11")) == no_bn == 9_225_610
    channels = sum(b for _, b in convs)  # BN: conv biases go, BN weight and bias come
    assert count_parameters(make("vgg11", batchnorm=True)) == no_bn + channels == 9_228_362


@pytest.mark.parametrize("name", ["mlp", "cnn", *IMAGE_MODELS])
def test_width_mult_scales_parameter_count(name):
    small, large = (count_parameters(make(name, width_mult=m)) for m in (1.0, 2.0))
    low = 1.9 if name == "mlp" else 3.5  # the MLP input layer grows linearly
    assert low < large / small < 4.05


@pytest.mark.parametrize("name", ["mlp", "cnn", *IMAGE_MODELS])
def test_batchnorm_on_off(name):
    for bn in (False, True):
        model = make(name, (1, 8, 8), batchnorm=bn, width_mult=0.25, width=8)
        assert has(model, nn.modules.batchnorm._BatchNorm) == bn


@pytest.mark.parametrize("name", ["mlp", "cnn", *IMAGE_MODELS])
def test_dropout_present_and_inactive_in_eval(name):
    torch.manual_seed(0)
    assert not has(make(name, (1, 8, 8), width_mult=0.5, width=64, dropout=0.0), nn.Dropout)
    model = make(name, (1, 8, 8), width_mult=0.5, width=64, dropout=0.5)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.modules())
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_construction_uses_the_global_rng():
    torch.manual_seed(3)
    a = make("resnet20", width_mult=0.25)
    torch.manual_seed(3)
    b = make("resnet20", width_mult=0.25)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("train_mode", [False, True])
def test_resnet_blocks_decompose_exactly(batchnorm, train_mode):
    model = make("resnet20", (3, 16, 16), batchnorm=batchnorm, width_mult=0.5)
    model.train(train_mode)
    h = model.stem(torch.randn(4, 3, 16, 16))
    for block in model.blocks:
        out = block(h)
        assert torch.equal(block.shortcut_of(h) + block.branch(h), out)
        if block.is_identity:
            assert torch.equal(block.shortcut_of(h), h)
            assert torch.equal(h + block.branch(h), out)
        else:
            assert out.shape != h.shape
        h = out


def test_resnet56_without_batchnorm_is_stable_at_init():
    torch.manual_seed(0)
    model = make("resnet56", (3, 16, 16))
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    h = model.stem(x)
    rms0 = h.pow(2).mean().sqrt()
    ratios = []
    for block in model.blocks:
        ratios.append((block.branch(h).norm() / h.norm()).item())
        h = block(h)
    assert h.pow(2).mean().sqrt() / rms0 < 3  # unscaled He init: about 2 ** 13
    assert min(ratios) > 0.02 and max(ratios) < 1  # branches are nonzero but small
    out = model(x)
    assert torch.isfinite(out).all() and out.std() < 3
    nn.functional.cross_entropy(out, y).backward()
    grad = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
    assert torch.isfinite(grad) and 1e-2 < grad < 50


@pytest.mark.parametrize("name", ["mlp", "cnn", *IMAGE_MODELS])
def test_sgd_reduces_loss_without_batchnorm(name):
    torch.manual_seed(0)
    shape = (1, 8, 8) if name in ("mlp", "cnn") else (3, 16, 16)
    model = make(name, shape, width_mult=0.5, width=32)
    x, y = torch.randn(16, *shape), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    losses = []
    for _ in range(6):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.01
