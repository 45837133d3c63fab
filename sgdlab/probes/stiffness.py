"""Stiffness (Fort, Nowak, Jastrzebski, Narayanan 2019, "Stiffness: A New Perspective on
Generalization in Neural Networks").

With ``g_i = grad_theta l(f(x_i), y_i)`` the gradient of example i's loss, the stiffness of a
pair is how much a gradient step on one example helps the other:

    cosine stiffness  S_cos(i, j)  = g_i . g_j / (||g_i|| ||g_j||)      (0 if a gradient is 0)
    sign stiffness    S_sign(i, j) = sign(g_i . g_j)

Class stiffness ``C(c, c') = mean over pairs i != j with y_i = c, y_j = c'`` of S (NaN for a
class pair without pairs); within-class stiffness is the mean of the diagonal of C, between-
class stiffness the mean of its off-diagonal entries (each class pair weighted equally, as in
the paper). Stiffness against distance: the pairs i < j are sorted by ``||x_i - x_j||`` (the
inputs as the network sees them) and cut into ``bins`` equal-count (quantile) bins; each bin
gives its mean distance and mean stiffness. The dynamical critical length is the distance
where the binned cosine stiffness first falls from > 0 to <= 0, by linear interpolation
between the two bins (NaN if it never does); ``critical_length_sign`` the same for sign
stiffness.

Per-example gradients come from ``torch.func`` (``vmap(grad(functional_call))``) in chunks,
in eval mode (modes restored); only their Gram matrix ``G = [g_i . g_j]`` is kept. When the
gradients of all examples do not fit in ``max_bytes``, rows are processed in blocks and the
other gradients recomputed per block, so memory stays ``O(block * P + n^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from sgdlab.evaluation import eval_mode
from sgdlab.probes.base import OptionError, Probe, ProbeContext, Schedule, check_int

LossFn = Callable[[Tensor, Tensor], Tensor]


def per_example_gradients(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, *,
                          chunk: int = 64) -> Iterator[Tensor]:
    """Yield the flat gradients ``(m, P)`` of each example's loss, ``chunk`` rows at a time,
    over the trainable parameters in ``named_parameters`` order, at the model's current
    train/eval flags (call it under :func:`~sgdlab.evaluation.eval_mode` for BatchNorm).

    ``loss_fn(outputs, targets)`` is a mean of per-example losses, so that
    ``c_i = m * d loss_fn / d f_i`` is example i's output cotangent; then
    ``g_i = J_i^T c_i = grad_theta (f(x_i) . c_i)``, vmapped over the chunk. The loss itself
    never runs under vmap (any loss works, e.g. ``one_hot`` targets).
    """
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def output_dot(p: dict[str, Tensor], xi: Tensor, ci: Tensor) -> Tensor:
        return (functional_call(model, (p, buffers), (xi.unsqueeze(0),)) * ci).sum()

    grad_fn = vmap(grad(output_dot), in_dims=(None, 0, 0))
    for start in range(0, len(x), chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        with torch.no_grad():
            out = functional_call(model, (params, buffers), (xb,))
        out.requires_grad_(True)
        with torch.enable_grad():
            (cot,) = torch.autograd.grad(loss_fn(out, yb) * len(xb), out)
        g = grad_fn(params, xb, cot.unsqueeze(1))
        yield torch.cat([g[k].reshape(len(xb), -1) for k in params], dim=1)


def gradient_gram(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, *, chunk: int = 64,
                  max_bytes: int = 1 << 30) -> Tensor:
    """``G[i, j] = g_i . g_j`` (n x n) for the per-example loss gradients, in eval mode."""
    n = len(x)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_row = max(n_params * x.element_size(), 1)
    block = max(chunk, (max_bytes // per_row) // chunk * chunk)
    gram = torch.zeros(n, n, dtype=x.dtype, device=x.device)
    with eval_mode(model):
        for b0 in range(0, n, block):
            b1 = min(b0 + block, n)
            rows = torch.cat(list(per_example_gradients(model, loss_fn, x[b0:b1], y[b0:b1],
                                                        chunk=chunk)))
            gram[b0:b1, b0:b1] = rows @ rows.T
            for c0, cols in zip(range(b1, n, chunk),
                                per_example_gradients(model, loss_fn, x[b1:], y[b1:], chunk=chunk)):
                c1 = c0 + len(cols)
                part = rows @ cols.T
                gram[b0:b1, c0:c1] = part
                gram[c0:c1, b0:b1] = part.T
    return gram


def stiffness_from_gram(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine and sign stiffness matrices from a Gram matrix of gradients."""
    norm = gram.diagonal().clamp_min(0).sqrt()
    denom = norm[:, None] * norm[None, :]
    cos = torch.where(denom > 0, gram / denom.clamp_min(torch.finfo(gram.dtype).tiny),
                      torch.zeros_like(gram))
    return cos.clamp(-1, 1), torch.sign(gram)


def class_stiffness(s: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """``C[c, c']`` = mean of ``s[i, j]`` over pairs i != j with labels (c, c'); NaN if none."""
    onehot = torch.nn.functional.one_hot(labels, n_classes).to(s.dtype)
    off = s - torch.diag_embed(s.diagonal())
    sums = onehot.T @ off @ onehot
    counts = onehot.sum(0)
    pairs = counts[:, None] * counts[None, :] - torch.diag(counts)
    return torch.where(pairs > 0, sums / pairs.clamp_min(1), torch.full_like(sums, math.nan))


def within_between(c: Tensor) -> tuple[float, float]:
    """Mean of the diagonal and of the off-diagonal entries of a class matrix (NaN ignored)."""
    eye = torch.eye(len(c), dtype=torch.bool, device=c.device)
    between = c[~eye].nanmean().item() if len(c) > 1 else math.nan
    return c[eye].nanmean().item(), between


def distance_binned(values: list[Tensor], x: Tensor, bins: int = 20
                    ) -> tuple[Tensor, list[Tensor]]:
    """Bin the pairs i < j by ``||x_i - x_j||`` into ``bins`` equal-count bins; returns the mean
    distance of each bin and, for each (n x n) matrix in ``values``, its mean per bin."""
    flat = x.reshape(len(x), -1)
    dist = torch.cdist(flat[None], flat[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
    iu = torch.triu_indices(len(x), len(x), 1, device=x.device)
    d = dist[iu[0], iu[1]]
    m = len(d)
    bins = max(1, min(bins, m))
    d, order = d.sort()
    which = torch.arange(m, device=x.device) * bins // m
    count = torch.bincount(which, minlength=bins).to(d.dtype)

    def mean(v: Tensor) -> Tensor:
        return torch.zeros(bins, dtype=v.dtype, device=v.device).index_add_(0, which, v) / count

    return mean(d), [mean(v[iu[0], iu[1]][order].to(d.dtype)) for v in values]


def critical_length(centers, values) -> float:
    """First distance where ``values`` falls from > 0 to <= 0 (linear interpolation between
    the two points around the crossing; non-finite points are skipped); NaN if none."""
    c, v = np.asarray(centers, dtype=float), np.asarray(values, dtype=float)
    ok = np.isfinite(c) & np.isfinite(v)
    c, v = c[ok], v[ok]
    for k in range(len(v) - 1):
        if v[k] > 0 >= v[k + 1]:
            return float(c[k] + (c[k + 1] - c[k]) * v[k] / (v[k] - v[k + 1]))
    return math.nan


def stiffness(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, *, n_classes: int | None
              = None, bins: int = 20, chunk: int = 64, max_bytes: int = 1 << 30) -> dict:
    """Every stiffness measurement on ``(x, y)``: scalars ``cos_mean``, ``sign_mean`` (over
    pairs i != j), ``critical_length``, ``critical_length_sign``, and with ``n_classes``
    (integer labels) ``cos_within``, ``cos_between``, ``sign_within``, ``sign_between``; arrays
    ``bin_centers``, ``stiffness_cos``, ``stiffness_sign`` and ``class_cos``, ``class_sign``
    (``n_classes x n_classes``)."""
    if len(x) < 2:
        raise ValueError("stiffness needs at least two examples")
    cos, sign = stiffness_from_gram(gradient_gram(model, loss_fn, x, y, chunk=chunk,
                                                  max_bytes=max_bytes))
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    centers, (s_cos, s_sign) = distance_binned([cos, sign], x, bins)
    out: dict = {
        "cos_mean": cos[off].mean().item(), "sign_mean": sign[off].mean().item(),
        "critical_length": critical_length(centers.cpu(), s_cos.cpu()),
        "critical_length_sign": critical_length(centers.cpu(), s_sign.cpu()),
        "bin_centers": centers, "stiffness_cos": s_cos, "stiffness_sign": s_sign,
    }
    if n_classes is not None:
        for key, s in (("cos", cos), ("sign", sign)):
            c = class_stiffness(s, y, n_classes)
            out[f"class_{key}"] = c
            out[f"{key}_within"], out[f"{key}_between"] = within_between(c)
    return out


class Stiffness(Probe):
    """Stiffness on a fixed subset of ``n`` examples of ``split``; keys as :func:`stiffness`
    (class matrices for classification tasks only)."""

    name = "stiffness"

    def __init__(self, schedule: Schedule | None = None, *, n: int = 500, split: str = "train",
                 bins: int = 20, chunk: int = 64, max_memory_mb: int = 1024) -> None:
        super().__init__(schedule)
        if split not in ("train", "test"):
            raise OptionError(self.name, "split", split, "'train' or 'test'")
        for key, value, low in (("n", n, 2), ("bins", bins, 1), ("chunk", chunk, 1),
                                ("max_memory_mb", max_memory_mb, 1)):
            check_int(self.name, key, value, low)
        self.n, self.split, self.bins, self.chunk = n, split, bins, chunk
        self.max_bytes = max_memory_mb << 20

    def measure(self, ctx: ProbeContext) -> dict:
        x, y = ctx.subset(self.n, self.split)
        classes = ctx.data.n_classes if ctx.data.task == "classification" else None
        return stiffness(ctx.model, ctx.loss_fn, x, y, n_classes=classes, bins=self.bins,
                         chunk=self.chunk, max_bytes=self.max_bytes)
