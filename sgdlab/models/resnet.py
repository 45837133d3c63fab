"""CIFAR-style pre-activation ResNets (He et al. 2016a, with the block of 2016b).

``conv3x3(16w)`` stem, three stages of ``n = (depth - 2) / 6`` blocks with widths
``16w, 32w, 64w`` (``w = width_mult``; stride 2 at the first block of stages 2 and 3),
then ``[BN] -> act -> global average pool -> [dropout] -> linear``. ``cfg.depth`` is not
used: the depth is in the name (resnet20/32/56).

Every block computes ``block(h) = s(h) + F(h)`` with the pre-activation branch
``F(h) = conv(act(bn(conv(act(bn(h))))))`` (no ``bn`` without BatchNorm; the first conv
carries the stride). ``s`` is the identity when the shape is kept (``block.is_identity``),
else a strided 1x1 convolution of the raw ``h`` (option B, as in the authors' pre-act code).
For probes of iterative inference, ``model.blocks`` lists the blocks in order and each has
``branch(h) -> F(h)`` and ``shortcut_of(h) -> s(h)``; ``forward`` is literally
``shortcut_of(h) + branch(h)``. In train mode every ``branch`` call updates BatchNorm
running statistics, so probes should evaluate it in eval mode (or restore the buffers).

Shared blocks (``model.options.share_blocks``, Jastrzębski et al. 2018 §5): within each
stage, the blocks that keep the shape (identity shortcut: all blocks of stage 1, blocks
2..n of stages 2 and 3) use one block's parameters, so such a stage computes
``h -> h + F(h)`` with the same ``F`` applied n (or n - 1) times. ``"naive"`` shares
everything, BatchNorm included (its running statistics then pool every application);
``"unshared-bn"`` shares the convolutions and gives every block its own BatchNorm (the
fix the paper takes from Liao & Poggio 2016); ``"none"`` (default) shares nothing. The
blocks stay separate modules in ``model.blocks`` whose ``conv`` (and, naive, ``bn``)
submodules are one object, so ``model.parameters()`` lists each shared tensor once.

Initialization: convolutions are He-normal (fan-in, gain of the activation; the 1x1
shortcut uses gain 1), BatchNorm weight 1 / bias 0, the linear layer PyTorch's default.
With BatchNorm, convolutions have no bias. Without BatchNorm, convolutions have a bias
(zero at init), and the last conv of every branch is scaled by ``1 / sqrt(n_blocks)``
(Fixup-style, Zhang et al. 2019, but not zero so that ``F(h) != 0`` at step 0): each block
then grows the second moment of ``h`` by about ``1 + 1/n_blocks``, hence by about ``e``
over the whole network at any depth, instead of ``2 ** n_blocks``.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.errors import ConfigError
from sgdlab.models.common import activation, dropout, image_shape, kaiming_, scaled

SHARING = ("none", "naive", "unshared-bn")  # model.options.share_blocks
OPTIONS = {"share_blocks": SHARING}  # the options a built-in ResNet takes


def _norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


class PreActBlock(nn.Module):
    """Basic pre-activation residual block ``h -> s(h) + F(h)``."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: str, batchnorm: bool):
        super().__init__()
        self.is_identity = stride == 1 and c_in == c_out
        self.bn1 = _norm(c_in, batchnorm)
        self.act1 = activation(act)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=not batchnorm)
        self.bn2 = _norm(c_out, batchnorm)
        self.act2 = activation(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batchnorm)
        self.shortcut = (nn.Identity() if self.is_identity
                         else nn.Conv2d(c_in, c_out, 1, stride, bias=not batchnorm))
        kaiming_(self.conv1, act)
        kaiming_(self.conv2, act)  # input of conv2 is act(...): gain of the activation
        if not self.is_identity:
            kaiming_(self.shortcut, None)

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        """The residual branch ``F(h)``."""
        return self.conv2(self.act2(self.bn2(self.conv1(self.act1(self.bn1(h))))))

    def shortcut_of(self, h: torch.Tensor) -> torch.Tensor:
        """The shortcut ``s(h)``: ``h`` itself for identity blocks, else a 1x1 projection."""
        return self.shortcut(h)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.shortcut_of(h) + self.branch(h)

    def share_with(self, leader: PreActBlock, batchnorm: bool) -> None:
        """Use ``leader``'s convolutions (and, if ``batchnorm``, its BatchNorm modules)."""
        self.conv1, self.conv2 = leader.conv1, leader.conv2
        if batchnorm:
            self.bn1, self.bn2 = leader.bn1, leader.bn2


def check_options(cfg: ModelConfig) -> str:
    """The ``share_blocks`` mode of ``cfg.options`` (ConfigError naming a bad option)."""
    for key in cfg.options:
        if key not in OPTIONS:
            raise ConfigError(f"model.options.{key}: not an option of {cfg.name!r} (options: "
                              f"{', '.join(OPTIONS)})")
    mode = cfg.options.get("share_blocks", "none")
    if not isinstance(mode, str) or mode not in SHARING:
        raise ConfigError(f"model.options.share_blocks: {mode!r} is not one of "
                          f"{', '.join(SHARING)}")
    if mode == "unshared-bn" and not cfg.batchnorm:
        raise ConfigError("model.options.share_blocks: 'unshared-bn' needs model.batchnorm = "
                          "true (without BatchNorm use 'naive')")
    return mode


class PreActResNet(nn.Module):
    """``stem -> blocks -> head_norm -> head_act -> pool -> classifier``."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int,
                 depth: int):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        c_in = image_shape(cfg.name, input_shape)[0]
        n = (depth - 2) // 6
        widths = [scaled(c, cfg.width_mult) for c in (16, 32, 64)]
        self.stem = nn.Conv2d(c_in, widths[0], 3, padding=1, bias=not cfg.batchnorm)
        kaiming_(self.stem, None)
        mode = check_options(cfg)
        blocks, c = [], widths[0]
        for stage, c_out in enumerate(widths):
            leader = None
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                block = PreActBlock(c, c_out, stride, cfg.activation, cfg.batchnorm)
                if mode != "none" and block.is_identity:
                    if leader is None:
                        leader = block
                    else:
                        block.share_with(leader, batchnorm=mode == "naive")
                blocks.append(block)
                c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.share_blocks = mode
        if not cfg.batchnorm:
            with torch.no_grad():  # each (possibly shared) conv scaled once
                for conv in {id(b.conv2): b.conv2 for b in self.blocks}.values():
                    conv.weight.mul_(1 / math.sqrt(len(self.blocks)))
        self.head_norm = _norm(c, cfg.batchnorm)
        self.head_act = activation(cfg.activation)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *dropout(cfg.dropout))
        self.classifier = nn.Linear(c, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.classifier(self.pool(self.head_act(self.head_norm(h))))


def build_resnet(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int,
                 depth: int = 20) -> PreActResNet:
    return PreActResNet(cfg, input_shape, n_outputs, depth)


RESNETS = {f"resnet{d}": partial(build_resnet, depth=d) for d in (20, 32, 56)}
