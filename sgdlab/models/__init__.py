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
  ``model.blocks`` with ``block.branch``, ``block.shortcut_of`` and ``block.is_identity``;
  ``model.options.share_blocks = "naive"`` or ``"unshared-bn"`` shares the parameters of
  the blocks within a stage (:mod:`sgdlab.models.resnet`).

``cfg.depth``/``cfg.width`` are used by the MLP only; the other families use
``width_mult``. Dropout ``cfg.dropout`` sits after hidden activations (MLP, CNN) or before
the classifier (VGG, ResNet); ``0`` adds no module.

A model of one's own: ``model.name = "package.module:function"`` (imported as
:mod:`sgdlab.imports` says), called as ``function(cfg, input_shape, n_outputs,
**cfg.options)`` under the run's seed; it returns a :class:`torch.nn.Module` mapping a
batch ``(N, *input_shape)`` (the run's float dtype; integer inputs such as token ids come
as exact floats) to ``(N, n_outputs)`` (logits, or regression outputs). The trainer checks
both on two training examples before the run is created. Probes that need
``model.classifier`` or ``model.blocks`` say so when the model lacks them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sgdlab.config import ModelConfig
from sgdlab.errors import ConfigError, first_line
from sgdlab.imports import check_signature, is_import_path, resolve
from sgdlab.models.cnn import SimpleCNN, build_cnn
from sgdlab.models.mlp import MLP, build_mlp
from sgdlab.models.resnet import RESNETS, PreActBlock, PreActResNet
from sgdlab.models.resnet import check_options as check_resnet_options
from sgdlab.models.vgg import VGG, build_vgg11

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]

MODELS: dict[str, Builder] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "vgg11": build_vgg11,
    **RESNETS,
}


def check_model(cfg: ModelConfig) -> Builder:
    """The builder of ``cfg.name`` once ``cfg`` is valid; ConfigError names the field. An
    import path is imported here (so in every process that trains the run)."""
    if is_import_path(cfg.name):
        cfg.check()
        fn = resolve("model.name", cfg.name)
        check_signature("model.name", fn, 3, cfg.options, "model.options")
        return _user_builder(cfg.name, fn)
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name: {cfg.name!r} is not one of {', '.join(MODELS)}")
    cfg.check()
    if cfg.name in RESNETS:
        check_resnet_options(cfg)
    elif cfg.options:
        raise ConfigError(f"model.options: only for a model given by import path or a ResNet "
                          f"(share_blocks), not {cfg.name!r}")
    return MODELS[cfg.name]


def _user_builder(path: str, fn: Callable) -> Builder:
    def build(cfg: ModelConfig, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
        try:
            model = fn(cfg, input_shape, n_outputs, **cfg.options)
        except ConfigError:
            raise
        except Exception as exc:
            first = first_line(exc)
            raise ConfigError(f"model.name: {path!r} raised {type(exc).__name__}: {first}"
                              ) from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model.name: {path!r} returned a {type(model).__name__}, "
                              "expected a torch.nn.Module")
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"model.name: {path!r} returned a model with no trainable "
                              "parameters")
        return model

    return build


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
