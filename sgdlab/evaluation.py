"""Evaluation on train, test, and the clean and corrupted training examples (used by the
trainer and by probes, so it sits below both)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from sgdlab.losses import accuracy_counts, per_example_loss


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore each submodule's previous mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module, loss: str, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) on ``(x, y)``."""
    if len(x) == 0:
        return float("nan"), float("nan")
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size])
            yb = y[i : i + batch_size]
            total += per_example_loss(loss, out, yb).sum(dtype=torch.float64)
            correct += accuracy_counts(out, yb)
    return (total / len(x)).item(), (correct / len(x)).item()


def default_eval_batch(device: torch.device) -> int:
    """Examples per evaluation forward pass: large on a GPU; small on a CPU, where a conv
    net's forward runs about twice as fast per example at 128 as at 4096 (cache-bound)."""
    return 4096 if device.type == "cuda" else 128


def evaluate(model: nn.Module, loss: str, data, batch_size: int = 0,
             splits: tuple[str, ...] | list[str] = ("train", "test")) -> dict[str, float]:
    """Loss and accuracy on train and test (those of ``splits``); with corruption and
    ``"train"`` in ``splits``, also on the clean and the corrupted training examples
    (accuracy on the corrupted ones against their noisy labels, i.e. memorization, and
    ``corrupted/acc_true`` against the original labels).
    ``batch_size`` 0: :func:`default_eval_batch` for the data's device."""
    batch_size = batch_size or default_eval_batch(data.x_train.device)
    out: dict[str, float] = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if split in splits:
            out[f"{split}/loss"], out[f"{split}/acc"] = loss_and_accuracy(model, loss, x, y,
                                                                          batch_size)
    if data.task == "regression":
        for key in ("train/acc", "test/acc"):
            out.pop(key, None)
        return out
    bad = data.corrupted
    if "train" in splits and bool(bad.any()):
        good = ~bad
        out["clean/loss"], out["clean/acc"] = loss_and_accuracy(
            model, loss, data.x_train[good], data.y_train[good], batch_size
        )
        out["corrupted/loss"], out["corrupted/acc"] = loss_and_accuracy(
            model, loss, data.x_train[bad], data.y_train[bad], batch_size
        )
        _, out["corrupted/acc_true"] = loss_and_accuracy(
            model, loss, data.x_train[bad], data.y_train_clean[bad], batch_size
        )
    return out
