"""A registry of tiny curvature test cases (at most a few thousand parameters, float64).

Each case is built from a seed by ``make_case(name, seed)``: the model's parameters and
the data are drawn from a local ``torch.Generator`` (the global RNG is left as it was), so
the same seed gives the same case. ``loss_fn(outputs, targets)`` returns the mean loss.

>>> case = make_case("mlp_ce", seed=0)
>>> case.num_params, tuple(case.x.shape), case.x.dtype
(136, (32, 6), torch.float64)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Case:
    """A model, a mean loss and a dataset (x, y) in float64."""

    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    x: Tensor
    y: Tensor
    notes: str = ""
    tags: set[str] = field(default_factory=set)

    @property
    def data(self) -> tuple[Tensor, Tensor]:
        return self.x, self.y

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


CASES: dict[str, Callable[[int], Case]] = {}


def register(name: str) -> Callable[[Callable[[int], Case]], Callable[[int], Case]]:
    def deco(fn: Callable[[int], Case]) -> Callable[[int], Case]:
        CASES[name] = fn
        return fn

    return deco


def make_case(name: str, seed: int = 0) -> Case:
    """Build the case ``name`` from ``seed`` (model in eval mode, float64)."""
    if name not in CASES:
        raise ValueError(f"unknown case {name!r}; known: {sorted(CASES)}")
    return CASES[name](seed)


def _build(factory: Callable[[], nn.Module], gen: torch.Generator, scale: float = 1.0) -> nn.Module:
    """Construct without touching the global RNG, then draw every parameter from ``gen``."""
    with torch.random.fork_rng(devices=[]):
        model = factory().double()
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 10
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale / fan_in**0.5)
    return model.eval()


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(out, y)


def _half_mse(out: Tensor, y: Tensor) -> Tensor:
    return 0.5 * F.mse_loss(out, y)


def _x(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _labels(gen: torch.Generator, n: int, classes: int) -> Tensor:
    return torch.randint(0, classes, (n,), generator=gen)


@register("linear_regression")
def _linear_regression(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Linear(6, 1, bias=False), g)
    x = _x(g, 40, 6) * torch.linspace(0.3, 2.0, 6, dtype=torch.float64)
    y = _x(g, 40, 1)
    return Case(
        "linear_regression",
        model,
        _half_mse,
        x,
        y,
        "loss 0.5·mean((xw − y)²): H = GGN = XᵀX/n exactly",
        {"mse", "closed_form"},
    )


@register("mlp_mse")
def _mlp_mse(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(4, 10), nn.Tanh(), nn.Linear(10, 3)), g, 1.5)
    return Case("mlp_mse", model, _mse, _x(g, 20, 4), _x(g, 20, 3), "tanh MLP, MSE", {"mse", "mlp"})


@register("mlp_ce")
def _mlp_ce(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4)), g, 1.5)
    return Case(
        "mlp_ce",
        model,
        F.cross_entropy,
        _x(g, 32, 6),
        _labels(g, 32, 4),
        "tanh MLP, cross-entropy",
        {"ce", "mlp"},
    )


@register("mlp_wide_ce")
def _mlp_wide_ce(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(20, 48), nn.Tanh(), nn.Linear(48, 10)), g, 2.0)
    x = _x(g, 96, 20)
    y = (x[:, :10] + 0.5 * _x(g, 96, 10)).argmax(1)
    return Case(
        "mlp_wide_ce",
        model,
        F.cross_entropy,
        x,
        y,
        "1498 parameters: big enough that Lanczos does not exhaust the space",
        {"ce", "mlp"},
    )


def _small_cnn(bn: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)]
    return nn.Sequential(*layers)


@register("cnn_ce")
def _cnn_ce(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: _small_cnn(False), g, 1.5)
    return Case(
        "cnn_ce",
        model,
        F.cross_entropy,
        _x(g, 24, 1, 8, 8),
        _labels(g, 24, 3),
        "conv-tanh-maxpool-linear, cross-entropy",
        {"ce", "cnn"},
    )


@register("cnn_mse")
def _cnn_mse(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: _small_cnn(False), g, 1.5)
    return Case(
        "cnn_mse",
        model,
        _mse,
        _x(g, 24, 1, 8, 8),
        _x(g, 24, 3),
        "conv-tanh-maxpool-linear, MSE",
        {"mse", "cnn"},
    )


@register("cnn_bn_ce")
def _cnn_bn_ce(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: _small_cnn(True), g, 1.5)
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(0.3 * _x(g, 4))
        bn.running_var.copy_(0.5 + torch.rand(4, generator=g, dtype=torch.float64))
        bn.weight.add_(1.0)
    return Case(
        "cnn_bn_ce",
        model,
        F.cross_entropy,
        _x(g, 24, 1, 8, 8),
        _labels(g, 24, 3),
        "conv-BatchNorm-tanh-maxpool-linear (BatchNorm with non-trivial running stats)",
        {"ce", "cnn", "batchnorm"},
    )


@register("mlp_bn_ce")
def _mlp_bn_ce(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(
        lambda: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)),
        g,
        1.5,
    )
    with torch.no_grad():
        model[1].running_mean.copy_(0.2 * _x(g, 8))
        model[1].running_var.copy_(0.5 + torch.rand(8, generator=g, dtype=torch.float64))
        model[1].weight.add_(1.0)
    return Case(
        "mlp_bn_ce",
        model,
        F.cross_entropy,
        _x(g, 16, 5),
        _labels(g, 16, 3),
        "MLP with BatchNorm1d: eval and train mode differ",
        {"ce", "mlp", "batchnorm"},
    )


class _WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.unused = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


@register("mlp_unused")
def _mlp_unused(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(_WithUnused, g, 1.5)
    return Case(
        "mlp_unused",
        model,
        _mse,
        _x(g, 16, 4),
        _x(g, 16, 2),
        "a parameter the loss does not use: zero rows and columns",
        {"mse", "mlp", "unused"},
    )


@register("saddle")
def _saddle(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)), g)
    x = _x(g, 16, 3)
    y = 8.0 * torch.tanh(x[:, :2] @ _x(g, 2, 2))
    return Case(
        "saddle",
        model,
        _mse,
        x,
        y,
        "far from a fit (large targets): the Hessian is indefinite; for seed 0 its "
        "largest-magnitude eigenvalue is negative (−9.33, then 8.39, −7.78)",
        {"mse", "mlp", "indefinite"},
    )
