"""Slow, obviously-correct references for the landscape layer (float64 friendly).

``evaluate_by_loading`` is the loop users write by hand: for every point, copy the model,
load the point into it (``load_state_dict``), optionally recompute the BatchNorm running
statistics, and evaluate it in eval mode under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def _pairs(data):
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        return [tuple(data)]
    return [tuple(b) for b in data]


def recompute_bn_statistics(model: nn.Module, inputs: list[Tensor]) -> None:
    """Reset every BatchNorm layer's running statistics and recompute them as a cumulative
    average over ``inputs`` (BatchNorm layers in train mode, the rest in eval mode)."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = []
    for m in bns:
        m.reset_running_stats()
        saved.append(m.momentum)
        m.momentum = None
        m.train()
    with torch.no_grad():
        for x in inputs:
            model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def evaluate_by_loading(model, loss_fn, data, points: Tensor, names, bn="eval", bn_inputs=None):
    """(loss, accuracy) at each row of ``points`` (flat in the order of ``names``)."""
    pairs = _pairs(data)
    n_total = sum(len(y) for _, y in pairs)
    losses, accs = [], []
    for row in points:
        m = copy.deepcopy(model)
        state = m.state_dict()
        i = 0
        for n in names:
            t = state[n]
            state[n] = row[i : i + t.numel()].reshape(t.shape).to(t.dtype)
            i += t.numel()
        m.load_state_dict(state)
        if bn == "recompute":
            inputs = bn_inputs if bn_inputs is not None else [x for x, _ in pairs]
            recompute_bn_statistics(m, inputs)
        m.eval()
        loss, correct = 0.0, 0.0
        with torch.no_grad():
            for x, y in pairs:
                out = m(x)
                loss += float(loss_fn(out, y)) * len(y) / n_total
                if out.ndim != 2 or out.shape[1] < 2:
                    correct = float("nan")  # no classes: accuracy undefined
                    continue
                labels = y if y.ndim == 1 else y.argmax(1)
                correct += float((out.argmax(1) == labels).sum())
        losses.append(loss)
        accs.append(correct / n_total)
    return np.array(losses), np.array(accs)
