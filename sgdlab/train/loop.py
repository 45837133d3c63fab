"""The training loop: SGD on device-resident data, probes, checkpoints, resume, divergence.

Readable top to bottom: :func:`train` validates everything (config, data, model) before
creating the run in the store, then :class:`Trainer` runs epochs of mini-batches sliced from
a permutation seeded by ``(seed, epoch)``. The whole state needed to continue the same
trajectory (parameters, optimizer buffers, position, global RNG state for dropout, probe
state) is checkpointed, so a run killed at any moment resumes bit-identically on CPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sgdlab.config import RunConfig, from_dict
from sgdlab.data import DataBundle, cached_load_data, epoch_permutation, step_seed
from sgdlab.errors import ConfigError, SgdlabError
from sgdlab.evaluation import evaluate
from sgdlab.losses import make_loss
from sgdlab.models import build_model, count_parameters
from sgdlab.optim import build_optimizer
from sgdlab.optim.schedules import batch_size_at, lr_factor
from sgdlab.optim.sgd_step import planned_update
from sgdlab.probes import ProbeContext, ProbeRunner, build_probes
from sgdlab.probes.runner import isolated, split_results
from sgdlab.sinks import RunInfo, Sink, Sinks, StoreSink
from sgdlab.sinks.trackers import build_trackers
from sgdlab.store import Run, Store
from sgdlab.train.checkpoints import CheckpointWriter
from sgdlab.train.environment import environment, last_session, session_alive, sessions_of
from sgdlab.train.progress import Progress
from sgdlab.train.validate import check_user_code, validate

FLUSH_EVERY = 64  # steps between metric flushes (and divergence checks on GPU)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available")
    return torch.device(name)


@dataclass
class Plan:
    """Batch sizes and step counts of every epoch, fixed before training starts."""

    batch_sizes: list[int]
    total_steps: int

    @classmethod
    def make(cls, cfg: RunConfig, n_train: int) -> Plan:
        base = cfg.optim.batch_size or n_train
        if base > n_train:
            raise ConfigError(
                f"optim.batch_size: {base} is larger than the {n_train} training examples"
            )
        sizes = [batch_size_at(cfg.optim.batch_schedule, base, e, n_train)
                 for e in range(cfg.train.epochs)]
        total = sum(n_train // s for s in sizes)
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        return cls(sizes, total)


class Trainer:
    """One run's model, optimizer, data and probes; :meth:`fit` trains to the end."""

    def __init__(self, cfg: RunConfig, probes=None, progress: bool | None = None,
                 sinks: list[Sink] | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = getattr(torch, cfg.dtype)
        self.data: DataBundle = cached_load_data(cfg.data, cfg.seed, self.device, self.dtype)
        self.plan = Plan.make(cfg, self.data.n_train)
        if cfg.train.loss == "cross_entropy" and self.data.task == "regression":
            raise ConfigError(f"train.loss: cross_entropy needs class labels; {cfg.data.name} "
                              "is a regression task (use mse)")
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.data.input_shape, self.data.n_classes)
        self.model.to(self.device, self.dtype)
        self.n_params = count_parameters(self.model)
        self.loss_fn = make_loss(cfg.train.loss)
        check_user_code(cfg, self.model, self.data)
        probes = build_probes(cfg.probes) if probes is None else probes
        for probe in probes:
            probe.check(self.model, self.data)
        self.probes = ProbeRunner(probes, cfg.seed, self.plan.total_steps)
        self.optimizer = build_optimizer(cfg.optim, self.model)
        self.nsgd = cfg.optim.name == "nsgd"
        self.ctx = ProbeContext(self.model, cfg.train.loss, self.loss_fn, self.data, cfg.seed,
                                momentum=cfg.optim.momentum)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.progress = progress
        self.extra_sinks = [*build_trackers(cfg.trackers), *(sinks or [])]
        self.run: Run | None = None
        self.sinks = Sinks([])
        self._pending: list[tuple[int, int, torch.Tensor, float]] = []
        self.diverged_at: int | None = None
        self.bar = Progress(0, cfg.name, enabled=False)
        self._perm: torch.Tensor | None = None
        self._perm_epoch = -1
        self.writer = CheckpointWriter()
        # the CPU generator state this run checkpoints: None = the global one; an ensemble
        # member keeps its own (the global one is shared by every member)
        self.rng_cpu: torch.Tensor | None = None

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict:
        # copies: a parameter may be a view into a larger tensor (an ensemble's stack), whose
        # whole storage torch.save would write
        state = {
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "rng_cpu": torch.get_rng_state() if self.rng_cpu is None else self.rng_cpu,
            "probes": self.probes.state_dict(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        if self.rng_cpu is None:
            torch.set_rng_state(state["rng_cpu"])
        else:
            self.rng_cpu = state["rng_cpu"]
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.probes.load_state_dict(state["probes"])

    def checkpoint(self) -> None:
        self.flush()
        self.sinks.flush()
        self.writer.save(self.run, self.step, self.state_dict(), self.cfg.train.keep_checkpoints)

    # -- logging -------------------------------------------------------------------------
    def log(self, metrics: dict[str, float]) -> None:
        self.flush()
        self.sinks.log([(self.step, self.epoch, metrics)])

    def flush(self) -> None:
        """Emit buffered batch losses (one GPU sync); remember the first non-finite one."""
        if not self._pending:
            return
        losses = torch.stack([loss for _, _, loss, _ in self._pending]).double().cpu().tolist()
        records = []
        for (step, epoch, _, lr), value in zip(self._pending, losses):
            records.append((step, epoch, {"train/batch_loss": value, "lr": lr}))
            if self.diverged_at is None and not math.isfinite(value):
                self.diverged_at = step
        self._pending.clear()
        self.sinks.log(records)

    def record(self, hook: str, probes) -> None:
        for probe, result in self.probes.call(hook, probes, self.ctx):
            scalars, arrays = split_results(result)
            if scalars:
                self.log({f"{probe.name}/{k}": v for k, v in scalars.items()})
            if arrays:  # one array file per probe, hook and step
                name = probe.name if hook == "measure" else f"{probe.name}.{hook}"
                self.sinks.log_arrays(name, self.step, arrays)

    def evaluate(self) -> dict[str, float]:
        cfg = self.cfg.train
        metrics = evaluate(self.model, cfg.loss, self.data, cfg.eval_batch_size, cfg.eval_splits)
        self.log(metrics)
        self.record("on_evaluate", self.probes.probes)
        return metrics

    # -- training ------------------------------------------------------------------------
    def fit(self, run: Run, resume: bool = False) -> str:
        """Train until the plan's last step; return the final status."""
        with self.session(run, resume):
            self.bar = bar = Progress(self.plan.total_steps, self.cfg.name, enabled=self.progress)
            bar.update(self.step)
            try:
                return self._loop(bar)
            finally:
                bar.close()

    @contextlib.contextmanager
    def session(self, run: Run, resume: bool = False) -> Iterator[None]:
        """One training session of ``run``: load its checkpoint (``resume``), start the
        sinks, log the start (a fresh run: its size, probes' start, first evaluation) and
        the environment; on an exception inside, end the run as failed; close the sinks."""
        self.run = run
        state = run.load_checkpoint() if resume else None
        if state is not None:
            self.load_state_dict(state)
        self.sinks = Sinks([StoreSink(run), *self.extra_sinks])
        try:
            self.sinks.start(RunInfo(run.id, run.name, run.group, run.config, run.path),
                             self.step)
            if state is None:  # a fresh start, also for a run killed before its first checkpoint
                self.log({"n_params": self.n_params, "n_train": self.data.n_train})
                self.record("on_train_start", self.probes.probes)
                if self.cfg.train.eval_every or self.cfg.train.eval_epochs:
                    self.evaluate()
            sessions = sessions_of(run) if state is not None else []
            run.write_json("environment", {"sessions": [*sessions,
                                                        environment(self.device, self.step)]})
            self.model.train()
            yield
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            self.writer.wait()
            self.sinks.close()

    def fail(self, exc: BaseException) -> None:
        """End the run as failed (interrupted, or the exception's first line)."""
        self.flush()
        reason = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                  else f"{type(exc).__name__}: {exc}")
        self.sinks.end("failed", self.step, reason.splitlines()[0][:500])

    def _loop(self, bar: Progress) -> str:
        x_all, y_all, model, opt = self.data.x_train, self.data.y_train, self.model, self.optimizer
        if self.step >= self.plan.total_steps:  # killed after its last checkpoint
            return self._finish()
        while True:
            idx, lr = self.next_batch()
            x, y = self.batch(x_all, y_all, idx)
            opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(model(x), y)
            loss.backward()
            status = self.finish_step(loss, lr, x, y, bar)
            if status is not None:
                return status

    def next_batch(self) -> tuple[torch.Tensor, float]:
        """The indices of the next mini-batch (a slice of the epoch's permutation, seeded
        by ``(seed, epoch)``) and the learning rate of the step, set on the optimizer."""
        size = self.plan.batch_sizes[self.epoch]
        if self.batch_in_epoch == 0:
            self.log({"batch_size": size})
        if self._perm_epoch != self.epoch:
            self._perm = epoch_permutation(self.data.n_train, self.cfg.seed, self.epoch,
                                           self.device)
            self._perm_epoch = self.epoch
        start = self.batch_in_epoch * size
        optim = self.cfg.optim
        lr = optim.lr * lr_factor(optim.lr_schedule, self.step, self.epoch,
                                  self.plan.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.ctx.lr = lr
        return self._perm[start:start + size], lr

    def batch(self, x_all: torch.Tensor, y_all: torch.Tensor,
              idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's mini-batch ``(x_all[idx], y_all[idx])``; with ``train.input_noise`` = σ
        > 0 its inputs become ``x + σ ε``, ε ~ N(0, I) drawn by a generator seeded from
        ``(seed, step)`` only: fresh every step, the same after a resume, untouched by
        dropout or probes (which use the global generator)."""
        x, y = x_all[idx], y_all[idx]
        sigma = self.cfg.train.input_noise
        if sigma > 0:
            g = torch.Generator(device="cpu").manual_seed(step_seed(self.cfg.seed, self.step))
            eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
            x = x + sigma * eps.to(x.device)
        return x, y

    def finish_step(self, loss: torch.Tensor, lr: float, x: torch.Tensor, y: torch.Tensor,
                    bar: Progress | None = None) -> str | None:
        """After the backward pass of a step (``.grad`` holds the batch gradient): probes
        and Nudged SGD's refresh when due, the optimizer step, then the evaluation,
        checkpoint and flush that fall after it. Returns the run's final status when it
        ended (finished or diverged), else None."""
        cfg, plan = self.cfg.train, self.plan
        self._pending.append((self.step, self.epoch, loss.detach(), lr))
        epoch_start = self.batch_in_epoch == 0
        due = self.probes.due(self.step, epoch_start) if self.probes else []
        refresh = self.nsgd and self.optimizer.wants_refresh(self.step, epoch_start)
        if due or refresh:
            if not math.isfinite(loss.item()):  # never measure a diverged model
                return self._diverged()
            self._before_update(due, refresh, x, y)
        self.optimizer.step()
        if due:
            self._after_update(due)
        self.step += 1
        self.batch_in_epoch += 1
        if bar is not None:
            bar.update(self.step, loss)
        last = self.step == plan.total_steps
        epoch_end = self.batch_in_epoch == plan_len(self.data.n_train,
                                                    plan.batch_sizes[self.epoch])
        if epoch_end:
            self.epoch += 1
            self.batch_in_epoch = 0
        eval_every, ckpt_every = cfg.eval_every, cfg.checkpoint_every
        eval_due = last or (eval_every and self.step % eval_every == 0) or (
            not eval_every and epoch_end and cfg.eval_epochs
            and self.epoch % cfg.eval_epochs == 0)
        ckpt_due = last or (ckpt_every and self.step % ckpt_every == 0) or (
            not ckpt_every and epoch_end and self.epoch % cfg.checkpoint_epochs == 0)
        if eval_due or ckpt_due or epoch_end or len(self._pending) >= FLUSH_EVERY:
            self.flush()  # checks for divergence before evaluating or saving
            if self.diverged_at is not None:
                return self._diverged()
        if eval_due:
            self.evaluate()
        if ckpt_due:
            self.checkpoint()
        return self._finish() if last else None

    def _before_update(self, due, refresh, x, y) -> None:
        ctx = self.ctx
        ctx.step, ctx.epoch, ctx.batch = self.step, self.epoch, (x, y)
        ctx.new_step()
        if refresh:  # NSGD first, with exactly its own request and generator, so that probes
            # cannot change its trajectory; probes then reuse its eigenpairs where they can
            with isolated(self.model):
                self.optimizer.refresh(ctx.eigs)
        if due:
            params = [p for p in self.model.parameters() if p.requires_grad]
            ctx.batch_grad = torch.cat([
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
            ]).detach().clone()
            self._theta = torch.cat([p.detach().reshape(-1) for p in params]).clone()
            ctx.planned_update = planned_update(self.optimizer, params)
            self.bar.doing("measuring " + ", ".join(p.name for p in due))
            self.record("measure", due)
            self.bar.done(self.probes.took(due))

    def _after_update(self, due) -> None:
        theta = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()
                           if p.requires_grad])
        self.ctx.update = theta - self._theta
        self.record("after_step", due)
        self.ctx.update = self.ctx.batch_grad = self.ctx.planned_update = None

    def _diverged(self) -> str:
        self.flush()
        step = self.diverged_at
        self.sinks.end("diverged", step, f"non-finite loss at step {step}")
        return "diverged"

    def _finish(self) -> str:
        ctx = self.ctx
        ctx.step, ctx.epoch, ctx.batch = self.step, self.epoch, None
        ctx.batch_grad = ctx.planned_update = None
        ctx.new_step()
        self.record("measure", self.probes.due(self.step, True))  # at the final parameters
        self.record("on_train_end", self.probes.probes)
        self.flush()
        self.run.save_tensors("final", {k: v.detach().cpu().contiguous()
                                        for k, v in self.model.state_dict().items()})
        self.writer.wait()  # every checkpoint on disk before the run says finished
        self.sinks.flush()
        self.sinks.end("finished", self.step)
        return "finished"


def plan_len(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: the last partial batch is dropped."""
    return n_train // batch_size


def train(cfg: RunConfig, store: Store, probes=None, progress: bool | None = None,
          sinks: list[Sink] | None = None) -> Run:
    """Validate, create the run in ``store``, train it; returns the run (status set).
    ``sinks`` receive everything the store does (:mod:`sgdlab.sinks`)."""
    validate(cfg)
    trainer = Trainer(cfg, probes, progress, sinks)  # raises SgdlabError before anything is written
    run = store.create_run(cfg.to_dict(), name=cfg.name, group=cfg.group or None)
    trainer.fit(run)
    return run


def resume(store: Store, run_id: str, probes=None, progress: bool | None = None,
           sinks: list[Sink] | None = None) -> Run:
    """Continue a killed or failed run from its last checkpoint, on the same trajectory."""
    run, cfg = resumable(store, run_id)
    trainer = Trainer(cfg, probes, progress, sinks)
    trainer.fit(run, resume=True)
    return run


def resumable(store: Store, run_id: str) -> tuple[Run, RunConfig]:
    """The run and its validated config, if it may be resumed (SgdlabError if it is done or
    its process is still alive)."""
    run = store.get_run(run_id)
    if run.status in ("finished", "diverged"):
        raise SgdlabError(f"run {run.id} is already {run.status}; nothing to resume")
    if run.status == "running" and (last := last_session(run)) and session_alive(last):
        raise SgdlabError(f"run {run.id} is still running (pid {last['pid']}); "
                          "resume it after that process ends")
    return run, validate(from_dict(run.config))
