"""A registry of tiny curvature test cases (at most a few thousand parameters, float64).

Each case is built from a seed by ``make_case(name, seed)``: the model's parameters and
the data are drawn from a local ``torch.Generator`` (the global RNG is left as it was), so
the same seed gives the same case. ``loss_fn(outputs, targets)`` returns the mean loss,
unless the case's ``options`` say otherwise.

Besides plain models, the hard cases of a curvature library (tag ``hard``): a parameter
tied under two names, one layer applied to several input slices, batches of one example,
train-mode BatchNorm with a memory budget too small for a batch, sum- and mean-reduced
losses over unequal batches, 3-d outputs, frozen and unused parameters, and a small
Transformer encoder (``scaled_dot_product_attention``) on dict batches with its own
``forward`` and ``loss``. ``case.options`` holds the
:class:`~sgdlab.curvature.CurvatureOptions` fields the case needs and
``case.reference_options`` the matching keywords of :mod:`sgdlab.testing.reference`.

>>> case = make_case("mlp_ce", seed=0)
>>> case.num_params, tuple(case.x.shape), case.x.dtype
(136, (32, 6), torch.float64)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Case:
    """A model, a loss and a dataset in float64: one batch (x, y), or ``batches``."""

    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None
    x: Tensor | None
    y: Tensor | None
    notes: str = ""
    tags: set[str] = field(default_factory=set)
    batches: list[Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        return self.batches if self.batches is not None else (self.x, self.y)

    @property
    def reference_options(self) -> dict[str, Any]:
        """Keywords of the dense references that define the same function."""
        keys = ("params", "train", "reduction", "forward", "loss")
        return {k: self.options[k] for k in keys if k in self.options}

    @property
    def matrices(self) -> tuple[str, ...]:
        """The curvature matrices defined for this case (the GGN and the per-example
        matrices need a tensor output that the loss takes per example)."""
        if "object_output" in self.tags:
            return ("hessian",)
        return ("hessian", "ggn", "covariance", "fisher")

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def num_examples(self) -> int:
        if self.batches is None:
            return len(self.y)
        return sum(_leading(b) for b in self.batches)


def _leading(batch: Any) -> int:
    if isinstance(batch, dict):
        batch = list(batch.values())
    return next(len(t) for t in batch if isinstance(t, Tensor) and t.ndim)


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


# ---------------------------------------------------------------- hard cases


def _split(x: Tensor, y: Tensor, sizes: list[int]) -> list[tuple[Tensor, Tensor]]:
    return list(zip(x.split(sizes), y.split(sizes)))


class _Tied(nn.Module):
    """``linear2.weight`` is ``linear1.weight``: one parameter under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.linear1, self.linear2, self.head = nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.linear2.weight = self.linear1.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.linear2(torch.tanh(self.linear1(x)))))


@register("tied_weights")
def _tied_weights(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(_Tied, g, 1.5)
    return Case(
        "tied_weights",
        model,
        F.cross_entropy,
        _x(g, 24, 5),
        _labels(g, 24, 3),
        "a weight tied under two names, selected by its second name (params=)",
        {"ce", "tied", "hard"},
        options={"params": ["linear2.weight", "linear2.bias", "head.weight"]},
    )


class _Shared(nn.Module):
    """One linear map applied to three slices of the input, then a head on their tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.cell, self.head = nn.Linear(3, 4), nn.Linear(12, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.cell(x.reshape(len(x), 3, 3)))
        return self.head(h.reshape(len(x), 12))


@register("shared_weights")
def _shared_weights(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(_Shared, g, 1.5)
    return Case("shared_weights", model, _mse, _x(g, 20, 9), _x(g, 20, 2),
                "weight sharing: one layer used three times per example", {"mse", "shared", "hard"})


@register("one_datum_batches")
def _one_datum_batches(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), g, 1.5)
    x, y = _x(g, 6, 4), _labels(g, 6, 3)
    return Case("one_datum_batches", model, F.cross_entropy, x, y,
                "six batches of one example each (mean over them)", {"ce", "one_datum", "hard"},
                batches=_split(x, y, [1] * 6))


def _bn_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))


@register("bn_train_budget")
def _bn_train_budget(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(_bn_mlp, g, 1.5)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    x, y = _x(g, 40, 5), _labels(g, 40, 3)
    return Case("bn_train_budget", model, F.cross_entropy, x, y,
                "train-mode BatchNorm, unequal batches (28, 12), a memory budget smaller than "
                "one batch's graph: the batches must stay whole", {"ce", "batchnorm", "train",
                                                                   "budget", "hard"},
                batches=_split(x, y, [28, 12]), options={"train": True, "memory_budget": 2000})


@register("cnn_bn_train_budget")
def _cnn_bn_train_budget(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: _small_cnn(True), g, 1.5)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    return Case("cnn_bn_train_budget", model, F.cross_entropy, _x(g, 12, 1, 8, 8),
                _labels(g, 12, 3), "train-mode BatchNorm2d, one batch over a tiny budget",
                {"ce", "cnn", "batchnorm", "train", "budget", "hard"},
                options={"train": True, "memory_budget": 1000})


@register("ce_sum_unequal")
def _ce_sum_unequal(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 3)), g, 1.5)
    x, y = _x(g, 16, 4), _labels(g, 16, 3)
    return Case("ce_sum_unequal", model, nn.CrossEntropyLoss(reduction="sum"), x, y,
                "a sum-reduced loss module over batches of 9, 5 and 2 (reduction read from "
                "loss_fn.reduction)", {"ce", "sum", "hard"}, batches=_split(x, y, [9, 5, 2]),
                options={"reduction": "sum"})


def _mse_sum(out: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(out, y, reduction="sum")


@register("mse_sum_3d")
def _mse_sum_3d(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4),
                                         nn.Unflatten(1, (2, 2))), g, 1.5)
    x, y = _x(g, 13, 3), _x(g, 13, 2, 2)
    return Case("mse_sum_3d", model, _mse_sum, x, y,
                "sum-reduced MSE (a plain function: reduction='sum' given) on 3-d outputs "
                "(n, 2, 2), batches of 8, 4 and 1", {"mse", "sum", "hard"},
                batches=_split(x, y, [8, 4, 1]), options={"reduction": "sum"})


@register("ce_mean_unequal")
def _ce_mean_unequal(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(lambda: nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 3)), g, 1.5)
    x, y = _x(g, 15, 4), _labels(g, 15, 3)
    return Case("ce_mean_unequal", model, F.cross_entropy, x, y,
                "mean cross-entropy over batches of 11, 3 and 1", {"ce", "hard"},
                batches=_split(x, y, [11, 3, 1]))


class _FrozenUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen, self.body = nn.Linear(4, 5), nn.Sequential(nn.Tanh(), nn.Linear(5, 3))
        self.unused = nn.Linear(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.frozen(x))


@register("frozen_unused")
def _frozen_unused(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(_FrozenUnused, g, 1.5)
    model.frozen.requires_grad_(False)
    return Case("frozen_unused", model, F.cross_entropy, _x(g, 14, 4), _labels(g, 14, 3),
                "a frozen first layer (requires_grad False: not a variable) and an unused one "
                "(zero rows and columns)", {"ce", "frozen", "unused", "hard"})


class TinyEncoder(nn.Module):
    """A one-layer Transformer encoder on token ids with a key-padding mask:
    embedding + positions, two-head self-attention by ``F.scaled_dot_product_attention``,
    LayerNorm, a feed-forward block, masked mean pooling and a linear head.
    ``forward(input_ids, attention_mask, labels=None)`` returns the logits, or, with
    ``labels``, an object with ``.logits`` and ``.loss`` (as Hugging Face models do)."""

    def __init__(self, vocab: int = 7, d: int = 4, heads: int = 2, length: int = 5,
                 classes: int = 3) -> None:
        super().__init__()
        self.heads = heads
        self.embed, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(length, d))
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None):
        n, t = input_ids.shape
        h = self.embed(input_ids) + self.pos[:t]
        q, k, v = self.qkv(h).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        keep = attention_mask[:, None, None, :].to(torch.bool)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        h = self.norm1(h + self.proj(a.transpose(1, 2).reshape(n, t, -1)))
        h = self.norm2(h + self.ff(h))
        w = attention_mask.to(h.dtype)[..., None]
        logits = self.head((h * w).sum(1) / w.sum(1))
        if labels is None:
            return logits
        return _Output(logits=logits, loss=F.cross_entropy(logits, labels))


@dataclass
class _Output:
    logits: Tensor
    loss: Tensor


def _token_batches(g: torch.Generator, sizes: list[int], length: int = 5) -> list[dict]:
    out = []
    for n in sizes:
        ids = torch.randint(0, 7, (n, length), generator=g)
        lengths = torch.randint(2, length + 1, (n,), generator=g)
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": torch.randint(0, 3, (n,), generator=g)})
    return out


def call_with_inputs(model: nn.Module, batch: dict) -> Tensor:
    """``model(**inputs)``: the batch without its labels (the logits)."""
    return model(**{k: v for k, v in batch.items() if k != "labels"})


def cross_entropy_of_labels(logits: Tensor, batch: dict) -> Tensor:
    return F.cross_entropy(logits, batch["labels"])


@register("transformer_dict")
def _transformer_dict(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(TinyEncoder, g, 1.5)
    return Case("transformer_dict", model, None, None, None,
                "a Transformer encoder (scaled_dot_product_attention, padding masks) on dict "
                "batches of 6 and 4 sequences: forward=model(**inputs), loss=cross-entropy "
                "of batch['labels']", {"ce", "attention", "dict", "hard"},
                batches=_token_batches(g, [6, 4]),
                options={"forward": call_with_inputs, "loss": cross_entropy_of_labels})


@register("transformer_object")
def _transformer_object(seed: int) -> Case:
    g = torch.Generator().manual_seed(seed)
    model = _build(TinyEncoder, g, 1.5)
    return Case("transformer_object", model, None, None, None,
                "the encoder called as model(**batch), returning an object whose .loss is "
                "the loss (the Hessian only: the other matrices need a tensor output)",
                {"ce", "attention", "dict", "object_output", "hard"},
                batches=_token_batches(g, [5, 3]),
                options={"forward": lambda m, b: m(**b), "loss": lambda out, b: out.loss})
