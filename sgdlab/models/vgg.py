"""VGG-11 for small images (CIFAR-style head).

Convolutions 3x3 / padding 1 with channels ``[64, M, 128, M, 256, 256, M, 512, 512, M,
512, 512, M]`` times ``width_mult`` (``M`` = 2x2 max-pool), each ``conv -> [BN] -> act``.
A max-pool is skipped when the feature map is already 1 pixel high or wide, so 28x28 and
8x8 inputs work too. Then global average pooling, ``[dropout]``, and one linear layer
``512 * width_mult -> n_outputs``.

Initialization: convolutions are He-normal (fan-in, gain of the activation) with zero
bias, so the network trains without BatchNorm; the classifier keeps PyTorch's default.
Convolutions followed by BatchNorm have no bias.
"""

from __future__ import annotations

import torch
from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.models.common import activation, dropout, image_shape, kaiming_, scaled

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """``features`` (convolutions, pooling, dropout) then ``classifier`` (``nn.Linear``)."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int,
                 plan: tuple[int | str, ...] = VGG11):
        super().__init__()
        c_in, h, w = image_shape(cfg.name, input_shape)
        layers: list[nn.Module] = []
        for item in plan:
            if item == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            c_out = scaled(int(item), cfg.width_mult)
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not cfg.batchnorm)
            kaiming_(conv, cfg.activation)
            layers.append(conv)
            if cfg.batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(activation(cfg.activation))
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), *dropout(cfg.dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_vgg11(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> VGG:
    return VGG(cfg, input_shape, n_outputs, VGG11)
