"""ResNets with the blocks of a stage sharing their parameters (model.options.share_blocks)."""

import pytest
import torch
from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.errors import ConfigError
from sgdlab.models import build_model, count_parameters
from sgdlab.train.validate import validate


def make(share, batchnorm=True, name="resnet20", width_mult=0.5, seed=0):
    torch.manual_seed(seed)
    opts = {} if share is None else {"share_blocks": share}
    cfg = ModelConfig(name=name, batchnorm=batchnorm, width_mult=width_mult, options=opts)
    return build_model(cfg, (3, 16, 16), 10)


def block_params(block, bn=True):
    convs = [block.conv1, block.conv2]
    norms = [block.bn1, block.bn2] if bn else []
    return sum(p.numel() for m in convs + norms for p in m.parameters())


def _followers(model, n):
    """Stage 1: blocks 2..n reuse block 1; stages 2, 3: blocks 3..n reuse block 2 (block 1
    of those stages downsamples)."""
    b = model.blocks
    return ([b[i] for i in range(1, n)] + [b[n + i] for i in range(2, n)]
            + [b[2 * n + i] for i in range(2, n)])


@pytest.mark.parametrize("name,n", [("resnet20", 3), ("resnet32", 5)])
def test_parameter_count_drops_by_the_shared_blocks(name, n):
    plain = make("none", name=name)
    naive, unshared_bn = make("naive", name=name), make("unshared-bn", name=name)
    followers = _followers(plain, n)
    saved = sum(block_params(b) for b in followers)
    saved_convs = sum(block_params(b, bn=False) for b in followers)
    assert count_parameters(naive) == count_parameters(plain) - saved
    assert count_parameters(unshared_bn) == count_parameters(plain) - saved_convs
    assert count_parameters(make(None, name=name)) == count_parameters(plain)  # default
    # the no-BatchNorm net shares its (biased) convolutions the same way
    plain = make("none", batchnorm=False, name=name)
    saved = sum(block_params(b, bn=False) for b in _followers(plain, n))
    assert count_parameters(make("naive", batchnorm=False, name=name)) == (
        count_parameters(plain) - saved)


def _tie_copy(shared, plain):
    """Give ``plain`` (unshared) the weights of ``shared``: every block the shared net's
    module of that block (the leader's for followers), stem, head and classifier alike."""
    with torch.no_grad():
        for (n1, m1), (n2, m2) in zip(shared.named_modules(remove_duplicate=False),
                                      plain.named_modules(remove_duplicate=False)):
            assert n1 == n2
            if isinstance(m1, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                m2.load_state_dict(m1.state_dict())


@pytest.mark.parametrize("mode", ["naive", "unshared-bn"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_outputs_equal_an_unshared_net_whose_blocks_hold_the_same_weights(mode, train_mode):
    shared = make(mode, seed=1)
    plain = make("none", seed=2)
    with torch.no_grad():  # non-trivial BatchNorm parameters and running statistics
        for m in shared.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.8, 1.2)
    _tie_copy(shared, plain)
    x = torch.randn(6, 3, 16, 16)
    shared.train(train_mode), plain.train(train_mode)
    assert torch.allclose(shared(x), plain(x), atol=1e-6)
    # the followers really are the leader's modules, and gradients add up over the uses
    b = shared.blocks
    assert b[1].conv1 is b[0].conv1 and b[2].conv2 is b[0].conv2
    assert (b[1].bn1 is b[0].bn1) == (mode == "naive")
    assert b[3].conv1 is not b[4].conv1 and b[4].conv1 is b[5].conv1  # downsampling block 4
    shared.zero_grad(), plain.zero_grad()
    shared(x).square().sum().backward()
    plain(x).square().sum().backward()
    expected = sum(plain.blocks[i].conv1.weight.grad for i in range(3))
    assert torch.allclose(b[0].conv1.weight.grad, expected, rtol=1e-4, atol=1e-6)


def test_an_unshared_net_copied_block_by_block_is_no_longer_equal_when_a_follower_differs():
    shared, plain = make("naive", seed=1), make("none", seed=2)
    _tie_copy(shared, plain)
    with torch.no_grad():
        plain.blocks[1].conv1.weight.add_(0.1)
    x = torch.randn(2, 3, 16, 16)
    shared.eval(), plain.eval()
    assert not torch.allclose(shared(x), plain(x), atol=1e-4)  # the test above can fail


def test_a_shared_resnet_trains_and_checkpoints_through_the_store(tmp_path):
    from conftest import small_config

    from sgdlab.store import Store
    from sgdlab.train import train

    cfg = small_config(**{"model.name": "resnet20", "model.width_mult": 0.25,
                          "model.batchnorm": True, "data.flatten": False,
                          "model.options": {"share_blocks": "naive"}, "train.epochs": 1})
    run = train(cfg, Store(tmp_path / "s"))
    assert run.status == "finished"
    final = run.load_tensors("final")
    assert torch.equal(final["blocks.0.conv1.weight"], final["blocks.1.conv1.weight"])


@pytest.mark.parametrize("options,message", [
    ({"share_blocks": "some"}, r"^model\.options\.share_blocks: 'some' is not one of"),
    ({"share_blocks": True}, r"^model\.options\.share_blocks: True is not one of"),
    ({"share": "naive"}, r"^model\.options\.share: not an option of 'resnet20'"),
])
def test_bad_sharing_options_are_one_line_errors_naming_the_field(options, message):
    with pytest.raises(ConfigError, match=message):
        build_model(ModelConfig(name="resnet20", options=options), (3, 8, 8), 10)


def test_unshared_bn_needs_batchnorm_and_other_models_take_no_options():
    with pytest.raises(ConfigError, match=r"^model\.options\.share_blocks: 'unshared-bn' needs"):
        make("unshared-bn", batchnorm=False)
    from conftest import small_config

    with pytest.raises(ConfigError, match=r"^model\.options: only for a model given by import"):
        validate(small_config(**{"model.options": {"share_blocks": "naive"}}))
