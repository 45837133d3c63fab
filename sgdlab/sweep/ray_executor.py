"""The Ray executor: each point is a Ray task (a trial) on a Ray cluster.

``RayExecutor(address=None)`` joins the cluster at ``address`` (``"auto"``, ``ray://...``,
``host:port``) or, without one, starts a local cluster for the sweep and shuts it down
after. Each trial asks for ``cpus`` CPUs and ``gpus`` GPUs and trains with
``threads`` (default: ``cpus``) torch threads.

How results reach the store: **the driver alone writes the store.** A store actor, pinned
to the driver's node, holds the :class:`~sgdlab.store.Store`; a trial, wherever it runs,
trains into a :class:`RemoteRun` that forwards every write (metrics, arrays, status,
checkpoints as bytes, final weights as safetensors bytes, JSON) to that actor and reads its
checkpoints back from it. Nothing of a run lives on a worker node, no shared filesystem is
needed, and the SQLite index (WAL mode, which network filesystems do not support) is only
ever opened on the driver's machine.

Data: a trial loads its dataset on its own node, from a path that every node has
(``data.file``, or ``$SGDLAB_DATA``, passed to the trials' environment) or by the
checksummed download into that node's data root. sgdlab must be installed on every node.
User code named by import path (``model.name = "pkg.module:fn"``): Ray's workers are not
children of the driver, so each trial adds the driver's search folders (the folders of the
config and grid files it read, and its working directory) to its own ``sys.path``; on other
machines the package must be installed or sit at the same path.

Faults: the driver creates each new point's run before submitting its trial, and a trial
always continues its run from the newest checkpoint the store has (a fresh start when there
is none), so a trial whose worker process dies is retried by Ray (``retries`` times) and
resumes; a run is neither lost nor duplicated. A trial still failing after its retries is
reported ``killed``: its run stays "running" and the next sweep resumes it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgdlab.errors import SgdlabError
from sgdlab.sweep.executors import Executor, Outcome, Task, failure_message

if TYPE_CHECKING:
    from sgdlab.store import Store


def _ray():
    try:
        import ray
    except ImportError:
        raise SgdlabError("--executor ray: Ray is not installed "
                          "(pip install 'sgdlab[ray]')") from None
    return ray


class StoreService:
    """The store on the driver's node, as a Ray actor: every method names the run by id."""

    def __init__(self, root: str) -> None:
        from sgdlab.store import Store

        self.store = Store(root)

    def run_info(self, run_id: str) -> dict:
        run = self.store.get_run(run_id)
        return {"id": run.id, "name": run.name, "group": run.group, "config": run.config,
                "path": str(run.path)}

    def call(self, run_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.store.get_run(run_id), method)(*args, **kwargs)

    def get(self, run_id: str, attribute: str) -> Any:
        return getattr(self.store.get_run(run_id), attribute)

    def read_checkpoint(self, run_id: str, step: int) -> bytes:
        return self.store.get_run(run_id)._checkpoint_path(step).read_bytes()

    def write_file(self, run_id: str, name: str, data: bytes) -> None:
        from sgdlab.store import files

        run = self.store.get_run(run_id)
        files.write_bytes(run.path / files.check_name(name, "file", run.id), data,
                          durable=True)


class RemoteRun:
    """A :class:`~sgdlab.store.Run` whose reads and writes go to the driver's store actor
    (the methods the trainer and :class:`~sgdlab.sinks.StoreSink` use)."""

    def __init__(self, service, run_id: str) -> None:
        self._service = service
        info = self._get(service.run_info.remote(run_id))
        self.id, self.name, self.group = info["id"], info["name"], info["group"]
        self.config, self.path = info["config"], Path(info["path"])

    @staticmethod
    def _get(ref):
        return _ray().get(ref)

    def _call(self, method: str, *args, **kwargs):
        return self._get(self._service.call.remote(self.id, method, *args, **kwargs))

    status = property(lambda self: self._get(self._service.get.remote(self.id, "status")))
    message = property(lambda self: self._get(self._service.get.remote(self.id, "message")))

    def set_status(self, status, *, message=None, diverged_step=None) -> None:
        self._call("set_status", status, message=message, diverged_step=diverged_step)

    def log_many(self, records) -> None:
        self._call("log_many", records)

    def truncate_metrics(self, after_step: int) -> int:
        return self._call("truncate_metrics", after_step)

    def truncate_arrays(self, after_step: int) -> int:
        return self._call("truncate_arrays", after_step)

    def save_arrays(self, name, step, arrays) -> None:
        import numpy as np

        self._call("save_arrays", name, step, {k: np.asarray(v) for k, v in arrays.items()})

    def checkpoint_steps(self) -> list[int]:
        return self._call("checkpoint_steps")

    def save_checkpoint(self, step: int, state, keep: int | None = 2) -> None:
        from sgdlab.store.files import checkpoint_bytes

        data = state if isinstance(state, bytes) else checkpoint_bytes(state)
        self._call("save_checkpoint", step, data, keep=keep)

    def load_checkpoint(self, step: int | None = None) -> dict | None:
        """The newest readable checkpoint (as :meth:`Run.load_checkpoint`), read through
        the actor and loaded here with ``weights_only=True``."""
        import torch

        steps = [step] if step is not None else list(reversed(self.checkpoint_steps()))
        for s in steps:
            data = self._get(self._service.read_checkpoint.remote(self.id, s))
            try:
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception as exc:
                warnings.warn(f"unreadable checkpoint {s} of run {self.id}: {exc}; falling "
                              "back to an older checkpoint", RuntimeWarning, stacklevel=2)
        if steps:
            raise SgdlabError(f"run '{self.id}' has no readable checkpoint")
        return None

    def save_tensors(self, name: str, tensors: dict, metadata: dict | None = None) -> None:
        from safetensors.torch import save

        cpu = {str(k): v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        self._get(self._service.write_file.remote(self.id, f"{name}.safetensors",
                                                  save(cpu, metadata=metadata)))

    def write_json(self, name: str, obj) -> None:
        self._call("write_json", name, obj)

    def read_json(self, name: str):
        return self._call("read_json", name)


def ray_trial(task: Task, run_id: str, service, threads: int,
              search_folders: Sequence[str] = ()) -> Outcome:
    """One trial: continue ``run_id`` from its newest checkpoint (a fresh start if none);
    never raises an Exception (a failure is an Outcome, the run marked failed)."""
    import torch

    from sgdlab.imports import add_search_folder
    from sgdlab.train.loop import Trainer

    for folder in search_folders:
        add_search_folder(folder)
    torch.set_num_threads(threads)
    run = RemoteRun(service, run_id)
    try:
        trainer = Trainer(task.config, progress=False)
    except Exception as exc:  # nothing trained: the run says why
        message = failure_message(exc)
        run.set_status("failed", message=message)
        return Outcome(run_id, "failed", message)
    try:
        status = trainer.fit(run, resume=True)
    except Exception as exc:  # the trainer marked the run failed
        message = failure_message(exc)
        return Outcome(run_id, "failed", message)
    return Outcome(run_id, status, None if status == "finished" else run.message)


class RayExecutor(Executor):
    """Points as Ray tasks with ``cpus`` CPUs and ``gpus`` GPUs each, retried ``retries``
    times if their worker process dies (see the module docstring)."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
                 retries: int = 3, threads: int | None = None,
                 init_options: dict | None = None) -> None:
        if cpus <= 0 or gpus < 0 or retries < 0:
            raise ValueError("cpus must be > 0, gpus and retries >= 0")
        self.address, self.cpus, self.gpus, self.retries = address, cpus, gpus, retries
        self.threads = threads or max(1, int(cpus))
        self.init_options = dict(init_options or {})
        self._started = False
        self._pending: list = []
        self._service = None

    def _connect(self):
        ray = _ray()
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in ("SGDLAB_DATA",) if k in os.environ}
            options = {"runtime_env": {"env_vars": env}} if env else {}
            options.update(log_to_driver=False, configure_logging=False)
            if self.address is None:
                options.update(include_dashboard=False)
            options.update(self.init_options)
            ray.init(address=self.address, **options)
            self._started = True
        return ray

    def run(self, tasks: Sequence[Task], store: Store) -> Iterator[tuple[Task, Outcome]]:
        from sgdlab.train.loop import resumable

        ray = self._connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        service_cls = ray.remote(num_cpus=0)(StoreService)
        self._service = service_cls.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
        ).remote(str(store.root))
        trial = ray.remote(ray_trial).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
            retry_exceptions=False)
        from sgdlab.imports import SEARCH_FOLDERS

        folders = [*SEARCH_FOLDERS, os.getcwd()]
        by_ref = {}
        for task in tasks:
            try:
                if task.action == "resume":
                    run = resumable(store, task.run_id)[0]
                else:
                    cfg = task.config
                    run = store.create_run(cfg.to_dict(), name=cfg.name,
                                           group=cfg.group or None)
            except Exception as exc:
                message = failure_message(exc)
                yield task, Outcome(task.run_id, "failed", message)
                continue
            ref = trial.remote(task, run.id, self._service, self.threads, folders)
            by_ref[ref] = (task, run.id)
        self._pending = list(by_ref)
        while self._pending:
            done, self._pending = ray.wait(self._pending, num_returns=1)
            task, run_id = by_ref[done[0]]
            try:
                outcome = ray.get(done[0])
            except Exception as exc:  # the worker died more often than retried
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                outcome = Outcome(run_id, "killed", f"ray trial lost: {first}")
            yield task, outcome
        self.close()

    def close(self) -> None:
        ray = _ray() if (self._started or self._pending or self._service) else None
        if ray is None:
            return
        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending = []
        if self._service is not None:
            ray.kill(self._service)
            self._service = None
        if self._started:
            ray.shutdown()
            self._started = False
