"""Fully connected network on flattened inputs.

``depth`` hidden layers of ``round(width * width_mult)`` units, each
``Linear -> [BatchNorm1d] -> activation -> [Dropout]``, then a linear read-out;
``depth = 0`` is a linear model. PyTorch's default ``nn.Linear`` initialization.
A hidden ``Linear`` followed by BatchNorm has no bias (BatchNorm's shift replaces it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.models.common import activation, dropout, scaled


class MLP(nn.Module):
    """``features`` (hidden layers, an ``nn.Sequential``) then ``classifier`` (``nn.Linear``)."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int):
        super().__init__()
        d_in = math.prod(input_shape)
        hidden = scaled(cfg.width, cfg.width_mult)
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(cfg.depth):
            layers.append(nn.Linear(d_in, hidden, bias=not cfg.batchnorm))
            if cfg.batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers += [activation(cfg.activation), *dropout(cfg.dropout)]
            d_in = hidden
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(d_in, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> MLP:
    return MLP(cfg, input_shape, n_outputs)
