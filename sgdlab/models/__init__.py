"""Model zoo: a registry of architectures built from a :class:`~sgdlab.config.ModelConfig`.

>>> model = build_model(ModelConfig(name="cnn"), (1, 28, 28), 10)
>>> count_parameters(model)
421642

Every builder takes ``(cfg, input_shape, n_outputs)`` and returns a module mapping a batch
``(N, *input_shape)`` to logits ``(N, n_outputs)``, with its last linear layer as
``model.classifier``. Parameters are drawn from the global torch RNG at construction.

- ``mlp``: flattened input, ``cfg.depth`` hidden layers of ``cfg.width * width_mult`` units.
- ``cnn``: two conv-pool stages and a hidden fc layer (also 1-D inputs such as MNIST-1D).
- ``vgg11``: VGG-11 with global average pooling and a linear head; images only.
- ``resnet20``, ``resnet32``, ``resnet56``: pre-activation CIFAR ResNets exposing
  ``model.blocks`` with ``block.branch``, ``block.shortcut_of`` and ``block.is_identity``.

``cfg.depth``/``cfg.width`` are used by the MLP only; the other families use
``width_mult``. Dropout ``cfg.dropout`` sits after hidden activations (MLP, CNN) or before
the classifier (VGG, ResNet); ``0`` adds no module.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.errors import ConfigError
from sgdlab.models.cnn import SimpleCNN, build_cnn
from sgdlab.models.mlp import MLP, build_mlp
from sgdlab.models.resnet import RESNETS, PreActBlock, PreActResNet
from sgdlab.models.vgg import VGG, build_vgg11

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]

MODELS: dict[str, Builder] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "vgg11": build_vgg11,
    **RESNETS,
}


def check_model(cfg: ModelConfig) -> Builder:
    """The builder of ``cfg.name`` once ``cfg`` is valid; ConfigError names the field."""
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name: {cfg.name!r} is not one of {', '.join(MODELS)}")
    cfg.check()
    return MODELS[cfg.name]


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """Validate ``cfg`` and build the named model; ConfigError names the offending field."""
    builder = check_model(cfg)
    if n_outputs < 1:
        raise ConfigError(f"model: needs at least one output, got {n_outputs}")
    return builder(cfg, tuple(int(s) for s in input_shape), int(n_outputs))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "MLP", "MODELS", "VGG", "Builder", "PreActBlock", "PreActResNet", "SimpleCNN",
    "build_model", "check_model", "count_parameters",
]
