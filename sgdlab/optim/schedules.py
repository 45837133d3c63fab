"""Learning-rate and batch-size schedules.

Both are pure functions of the position in training, so a resumed run recomputes them
exactly. The cyclic learning rate and the cyclic batch size share one triangular factor
``c(e)`` of the epoch ``e`` (between ``min_factor`` and 1 with period ``P`` epochs)::

    c(e) = min_factor + (1 - min_factor) * |1 - 2 * ((e mod P) / P)|

so that ``eta * c(e)`` at batch size ``S`` and ``eta`` at batch size ``S / c(e)`` follow the
same eta/S schedule (Jastrzębski et al., "Three Factors Influencing Minima in SGD", 2018).
"""

from __future__ import annotations

import bisect
import math

from sgdlab.config import BatchScheduleConfig, LRScheduleConfig


def cyclic_factor(epoch: int, period: int, min_factor: float) -> float:
    """Triangular factor: 1 at the start of each cycle, ``min_factor`` half-way."""
    phase = (epoch % period) / period
    return min_factor + (1.0 - min_factor) * abs(1.0 - 2.0 * phase)


def lr_factor(cfg: LRScheduleConfig, step: int, epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based) in ``epoch``."""
    if cfg.kind == "constant":
        factor = 1.0
    elif cfg.kind == "step":
        factor = cfg.gamma ** bisect.bisect_right(cfg.milestones, epoch)
    elif cfg.kind == "cosine":
        t = min(step / max(total_steps, 1), 1.0)
        factor = cfg.min_factor + (1.0 - cfg.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif cfg.kind == "cyclic":
        factor = cyclic_factor(epoch, cfg.period, cfg.min_factor)
    else:  # pragma: no cover - config.check rejects it
        raise ValueError(cfg.kind)
    if cfg.warmup > 0:
        factor *= min(1.0, (step + 1) / cfg.warmup)
    return factor


def batch_size_at(cfg: BatchScheduleConfig, base: int, epoch: int, n_train: int) -> int:
    """Batch size used throughout ``epoch``, clipped to ``[1, n_train]``."""
    if cfg.kind == "constant":
        size = base
    elif cfg.kind == "step":
        size = base * cfg.factor ** bisect.bisect_right(cfg.milestones, epoch)
    elif cfg.kind == "cyclic":
        size = base / cyclic_factor(epoch, cfg.period, cfg.min_factor)
    else:  # pragma: no cover
        raise ValueError(cfg.kind)
    return int(min(max(round(size), 1), n_train))
