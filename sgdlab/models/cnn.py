"""The "simple CNN": two conv3x3-pool stages and a hidden fully connected layer.

``conv(c1) -> [BN] -> act -> maxpool2 -> conv(c2) -> [BN] -> act -> maxpool2 -> flatten
-> fc(h) -> [BN1d] -> act -> [dropout] -> fc(n_outputs)`` with ``c1, c2, h =
round((32, 64, 128) * width_mult)``; 421,642 parameters on 1x28x28 inputs with 10 classes.

Image inputs ``(C, H, W)`` use 2-D convolutions. Sequence inputs ``(L,)`` (one channel,
e.g. MNIST-1D) or ``(C, L)`` use the same network with 1-D convolutions and pooling.
Spatial sizes must be at least 4 (two halvings). PyTorch's default initialization.
Layers followed by BatchNorm have no bias.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.errors import ConfigError
from sgdlab.models.common import activation, dropout, scaled


class SimpleCNN(nn.Module):
    """``features`` (conv stages, flatten, hidden fc) then ``classifier`` (``nn.Linear``)."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int):
        super().__init__()
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 1:  # a signal of length L: one channel
            shape = (1, *shape)
        if len(shape) not in (2, 3) or min(shape[1:]) < 4:
            raise ConfigError(
                f"model.name: 'cnn' needs inputs (C, H, W), (C, L) or (L,) with spatial sizes "
                f">= 4, got input shape {tuple(input_shape)}"
            )
        self.input_view = shape  # forward reshapes (N, *input_shape) to (N, *input_view)
        conv, bn, pool = {
            2: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
            3: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
        }[len(shape)]
        c1, c2, h = (scaled(c, cfg.width_mult) for c in (32, 64, 128))
        layers: list[nn.Module] = []
        c_in = shape[0]
        for c_out in (c1, c2):
            layers.append(conv(c_in, c_out, 3, padding=1, bias=not cfg.batchnorm))
            if cfg.batchnorm:
                layers.append(bn(c_out))
            layers += [activation(cfg.activation), pool(2)]
            c_in = c_out
        flat = c2 * math.prod(s // 4 for s in shape[1:])
        layers += [nn.Flatten(), nn.Linear(flat, h, bias=not cfg.batchnorm)]
        if cfg.batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers += [activation(cfg.activation), *dropout(cfg.dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(h, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(x.shape[0], *self.input_view)))


def build_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> SimpleCNN:
    return SimpleCNN(cfg, input_shape, n_outputs)
