"""Dispatches trainer events to probes, isolating them from the training trajectory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from sgdlab.probes.base import Probe, ProbeContext


@contextmanager
def isolated(model: nn.Module) -> Iterator[None]:
    """Run probe code without side effects on the training state: the global RNGs,
    train/eval modes, parameters' ``.grad`` (set aside; a probe's own backward writes to
    fresh tensors that are dropped) and buffers (BatchNorm statistics, restored)."""
    modes = {m: m.training for m in model.modules()}
    grads = [(p, p.grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    for p, _ in grads:
        p.grad = None
    devices = sorted({p.device.index if p.device.index is not None else torch.cuda.current_device()
                      for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):  # the CPU's and the model's GPU's RNGs
        try:
            yield
        finally:
            for m, training in modes.items():
                m.training = training
            for p, g in grads:
                p.grad = g
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)


def split_results(result: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Scalars (numbers, 0-d tensors) and arrays (everything with a dimension)."""
    scalars: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, value in (result or {}).items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) and value.ndim > 0:
            arrays[key] = value
        elif value is not None:
            scalars[key] = float(value)
    return scalars, arrays


class ProbeRunner:
    """Holds the probes of one run, their generators and schedules."""

    def __init__(self, probes: list[Probe], seed: int, total_steps: int) -> None:
        names = [p.name for p in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probe names must be unique, got {names}")
        self.probes = probes
        self.total_steps = total_steps
        self.generators = {
            p.name: torch.Generator().manual_seed(seed * 7919 + 1 + i) for i, p in enumerate(probes)
        }
        self.log_steps = {p.name: p.schedule.steps(total_steps) for p in probes}
        self.seconds: dict[str, float] = {}  # wall time of each probe's latest hook call

    def __bool__(self) -> bool:
        return bool(self.probes)

    def due(self, step: int, epoch_start: bool) -> list[Probe]:
        return [
            p for p in self.probes
            if p.schedule.due(step, epoch_start, self.total_steps, self.log_steps[p.name])
        ]

    def call(self, hook: str, probes: list[Probe], ctx: ProbeContext) -> list[tuple[Probe, dict]]:
        """Call ``hook`` on each probe under isolation; returns (probe, result) pairs.
        Before ``measure``, the probes' eigen-decomposition requests are planned together."""
        if hook == "measure":
            ctx.eigs.plan(p.eig_request() for p in probes)
        out = []
        for probe in probes:
            ctx.generator = self.generators[probe.name]
            t0 = time.perf_counter()
            with isolated(ctx.model):
                result = getattr(probe, hook)(ctx)
            self.seconds[probe.name] = time.perf_counter() - t0
            if result:
                out.append((probe, result))
        ctx.generator = None
        return out

    def took(self, probes: list[Probe]) -> str:
        """What the last calls of ``probes`` cost, for a progress display:
        "hessian 2.1 s, sharpest 0.4 s"."""
        return ", ".join(f"{p.name} {self.seconds[p.name]:.1f} s" for p in probes
                         if p.name in self.seconds)

    def state_dict(self) -> dict:
        return {
            "probes": {p.name: p.state_dict() for p in self.probes},
            "generators": {k: g.get_state() for k, g in self.generators.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        for p in self.probes:
            p.load_state_dict(state["probes"].get(p.name, {}))
            if p.name in state["generators"]:
                self.generators[p.name].set_state(state["generators"][p.name])
