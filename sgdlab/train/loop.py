"""The training loop: SGD on device-resident data, probes, checkpoints, resume, divergence.

Readable top to bottom: :func:`train` validates everything (config, data, model) before
creating the run in the store, then :class:`Trainer` runs epochs of mini-batches sliced from
a permutation seeded by ``(seed, epoch)``. The whole state needed to continue the same
trajectory (parameters, optimizer buffers, position, global RNG state for dropout, probe
state) is checkpointed, so a run killed at any moment resumes bit-identically on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sgdlab.config import RunConfig, from_dict
from sgdlab.data import DataBundle, iterate_batches, load_data
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
        self.data: DataBundle = load_data(cfg.data, cfg.seed, self.device, self.dtype)
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

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "rng_cpu": torch.get_rng_state(),
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
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.probes.load_state_dict(state["probes"])

    def checkpoint(self) -> None:
        self.flush()
        self.sinks.flush()
        self.run.save_checkpoint(self.step, self.state_dict(), keep=self.cfg.train.keep_checkpoints)

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
        metrics = evaluate(self.model, cfg.loss, self.data, cfg.eval_batch_size)
        self.log(metrics)
        self.record("on_evaluate", self.probes.probes)
        return metrics

    # -- training ------------------------------------------------------------------------
    def fit(self, run: Run, resume: bool = False) -> str:
        """Train until the plan's last step; return the final status."""
        self.run = run
        cfg, plan = self.cfg, self.plan
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
                self.evaluate()
            sessions = sessions_of(run) if state is not None else []
            run.write_json("environment", {"sessions": [*sessions,
                                                        environment(self.device, self.step)]})
            self.bar = bar = Progress(plan.total_steps, cfg.name, enabled=self.progress)
            bar.update(self.step)
            self.model.train()
            try:
                status = self._loop(bar)
            finally:
                bar.close()
        except BaseException as exc:
            self.flush()
            reason = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                      else f"{type(exc).__name__}: {exc}")
            self.sinks.end("failed", self.step, reason.splitlines()[0][:500])
            raise
        finally:
            self.sinks.close()
        return status

    def _loop(self, bar: Progress) -> str:
        cfg, plan, opt = self.cfg, self.plan, self.optimizer
        x_all, y_all = self.data.x_train, self.data.y_train
        eval_every, ckpt_every = cfg.train.eval_every, cfg.train.checkpoint_every
        while self.step < plan.total_steps:
            size = plan.batch_sizes[self.epoch]
            if self.batch_in_epoch == 0:
                self.log({"batch_size": size})
            batches = iterate_batches(self.data.n_train, size, cfg.seed, self.epoch, self.device,
                                      start=self.batch_in_epoch)
            for idx in batches:
                epoch_start = self.batch_in_epoch == 0
                lr = cfg.optim.lr * lr_factor(cfg.optim.lr_schedule, self.step, self.epoch,
                                              plan.total_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                self.ctx.lr = lr
                x, y = x_all[idx], y_all[idx]
                opt.zero_grad(set_to_none=True)
                loss = self.loss_fn(self.model(x), y)
                loss.backward()
                self._pending.append((self.step, self.epoch, loss.detach(), lr))
                due = self.probes.due(self.step, epoch_start) if self.probes else []
                refresh = self.nsgd and opt.wants_refresh(self.step, epoch_start)
                if due or refresh:
                    if not math.isfinite(loss.item()):  # never measure a diverged model
                        return self._diverged()
                    self._before_update(due, refresh, x, y)
                opt.step()
                if due:
                    self._after_update(due)
                self.step += 1
                self.batch_in_epoch += 1
                bar.update(self.step, loss)
                last = self.step == plan.total_steps
                epoch_end = self.batch_in_epoch == plan_len(self.data.n_train, size)
                if epoch_end:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                eval_due = last or (eval_every and self.step % eval_every == 0) or (
                    not eval_every and epoch_end)
                ckpt_due = last or (ckpt_every and self.step % ckpt_every == 0) or (
                    not ckpt_every and epoch_end
                    and self.epoch % cfg.train.checkpoint_epochs == 0)
                if eval_due or ckpt_due or epoch_end or len(self._pending) >= FLUSH_EVERY:
                    self.flush()  # checks for divergence before evaluating or saving
                    if self.diverged_at is not None:
                        return self._diverged()
                if eval_due:
                    self.evaluate()
                if ckpt_due:
                    self.checkpoint()
                if last or epoch_end:
                    break
        return self._finish()

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
            self.bar.doing("")

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
    run = store.get_run(run_id)
    if run.status in ("finished", "diverged"):
        raise SgdlabError(f"run {run.id} is already {run.status}; nothing to resume")
    if run.status == "running" and (last := last_session(run)) and session_alive(last):
        raise SgdlabError(f"run {run.id} is still running (pid {last['pid']}); "
                          "resume it after that process ends")
    cfg = validate(from_dict(run.config))
    trainer = Trainer(cfg, probes, progress, sinks)
    trainer.fit(run, resume=True)
    return run

