"""Pieces shared by the model families: activations, widths, dropout, init, shape checks."""

from __future__ import annotations

from torch import nn

from sgdlab.errors import ConfigError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def activation(name: str) -> nn.Module:
    """A fresh activation module (never in-place, so forward hooks see intact tensors)."""
    if name not in _ACTIVATIONS:
        raise ConfigError(f"model.activation: {name!r} is not one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def scaled(n: int, mult: float) -> int:
    """``int(round(n * mult))``, at least 1."""
    return max(1, int(round(n * mult)))


def dropout(p: float) -> list[nn.Module]:
    """``[nn.Dropout(p)]``, or no module at all when ``p == 0``."""
    return [nn.Dropout(p)] if p > 0 else []


def kaiming_(layer: nn.Conv2d | nn.Linear, act: str | None) -> None:
    """He-normal weights (fan-in) for a layer followed by ``act`` (``None``: linear), zero bias.

    ELU uses the ReLU gain; tanh uses PyTorch's tanh gain 5/3.
    """
    gain = {None: "linear", "tanh": "tanh"}.get(act, "relu")
    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity=gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def image_shape(name: str, input_shape: tuple[int, ...], min_size: int = 1) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``input_shape``, or a ConfigError naming the model."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < min_size:
        raise ConfigError(
            f"model.name: {name!r} needs image inputs (C, H, W) with H, W >= {min_size}, "
            f"got input shape {shape} (set data.flatten = false, or use model.name = 'mlp')"
        )
    return shape  # type: ignore[return-value]
