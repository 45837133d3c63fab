"""Many small runs: sgdlab's executors against a plain PyTorch script, and the loop's
per-step overhead.

The grid: an MLP 784-256-256-10 on a 5,000-example Fashion-MNIST subset, 4 learning rates
x batch sizes 64 and 128, 2 epochs, plain SGD; each run ends with its test accuracy on the
10,000 test images. sgdlab evaluates no more than the plain script does: the grid sets
``train.eval_epochs = 0`` (only the final evaluation) and ``train.eval_splits = ["test"]``.

Sections (``--only``):

- ``process``: whole processes, one torch thread each (OMP_NUM_THREADS=1, ``--threads
  1``), interleaved over ``--repeats`` rounds: the plain script (imports torch, loads the
  data, trains the 8 runs one after another), ``sgdlab sweep`` with 1 and 2 worker
  processes, and ``sgdlab sweep --executor ensemble``. Each sgdlab sweep writes a fresh
  store. Throughput ratio = plain seconds / sgdlab seconds (> 1: sgdlab is faster).
- ``loop``: in this process, one run's training steps through the trainer against the
  plain loop (same model, data, batches, optimizer), per step, evaluation and
  checkpoints excluded; interleaved, median of ``--repeats``.
- ``stack``: the ensemble's stacked step (``vmap`` and ``bmm``) against the 4 members'
  plain steps one after another, per member-step, batch 64.

    python bench/sweep.py --data ../shared/datasets/fashion_mnist.npz [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

LRS = [0.01, 0.02, 0.05, 0.1]
BATCHES = [64, 128]
EPOCHS = 2
N_TRAIN = 5000

PLAIN = textwrap.dedent('''
    import sys, time
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(1)
    z = np.load(sys.argv[1])
    perm = np.random.default_rng(0).permutation(len(z["y_train"]))[:{n_train}]
    x = z["x_train"][perm].reshape({n_train}, -1).astype(np.float32) / 255
    xt = z["x_test"].reshape(len(z["x_test"]), -1).astype(np.float32) / 255
    mean, std = x.mean(0), x.std(0) + 1e-8
    x, xt = torch.from_numpy((x - mean) / std), torch.from_numpy((xt - mean) / std)
    y = torch.from_numpy(z["y_train"][perm].astype(np.int64))
    yt = torch.from_numpy(z["y_test"].astype(np.int64))
    for lr in {lrs}:
        for batch in {batches}:
            torch.manual_seed(0)
            model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(),
                                  nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
            opt = torch.optim.SGD(model.parameters(), lr=lr)
            for epoch in range({epochs}):
                order = torch.randperm(len(x))
                for i in range(len(x) // batch):
                    idx = order[i * batch:(i + 1) * batch]
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                    opt.step()
            with torch.no_grad():
                acc = (model(xt).argmax(1) == yt).float().mean().item()
            print(f"lr={{lr}} batch={{batch}} test/acc={{acc:.4f}}")
''')


def grid_toml(data: str) -> str:
    return textwrap.dedent(f'''
        name = "bench"
        [base]
        seed = 0
        device = "cpu"
        [base.data]
        name = "fashion-mnist"
        file = "{data}"
        n_train = {N_TRAIN}
        flatten = true
        [base.model]
        name = "mlp"
        depth = 2
        width = 256
        [base.optim]
        momentum = 0.0
        [base.train]
        epochs = {EPOCHS}
        eval_epochs = 0
        eval_splits = ["test"]
        [product]
        "optim.lr" = {LRS}
        "optim.batch_size" = {BATCHES}
    ''')


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return seconds


def bench_process(data: str, repeats: int, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    plain = work / "plain.py"
    plain.write_text(PLAIN.format(n_train=N_TRAIN, lrs=LRS, batches=BATCHES, epochs=EPOCHS))
    grid = work / "grid.toml"
    grid.write_text(grid_toml(data))
    sgdlab = [sys.executable, "-m", "sgdlab.cli", "-q"]
    variants = {
        "plain script": lambda i: [sys.executable, str(plain), data],
        "sweep --workers 1": lambda i: [*sgdlab, "--store", str(work / f"w1-{i}"), "sweep",
                                        str(grid), "--workers", "1", "--threads", "1"],
        "sweep --workers 2": lambda i: [*sgdlab, "--store", str(work / f"w2-{i}"), "sweep",
                                        str(grid), "--workers", "2", "--threads", "1"],
        "sweep --executor ensemble": lambda i: [*sgdlab, "--store", str(work / f"e-{i}"),
                                                "sweep", str(grid), "--executor", "ensemble"],
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(repeats):
        for name, cmd in variants.items():
            times[name].append(timed(cmd(i), env))
            print(f"  round {i}: {name:<28} {times[name][-1]:6.2f} s", flush=True)
    base = statistics.median(times["plain script"])
    rows = {}
    for name, ts in times.items():
        ratios = [p / t for p, t in zip(times["plain script"], ts)]
        rows[name] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                      "throughput_vs_plain": statistics.median(ratios)}
    rows["plain script"]["median_s"] = base
    return rows


def _setup_loop(data: str, batch: int):
    import torch

    from sgdlab.config import load_config
    from sgdlab.store import Store
    from sgdlab.train.loop import Trainer

    cfg = load_config(None, {
        "name": "loop", "device": "cpu",
        "data": {"name": "fashion-mnist", "file": data, "n_train": N_TRAIN, "flatten": True},
        "model": {"name": "mlp", "depth": 2, "width": 256},
        "optim": {"lr": 0.05, "batch_size": batch},
        "train": {"epochs": 4, "eval_epochs": 0, "eval_splits": ["test"],
                  "checkpoint_every": 10**9}})
    store = Store(tempfile.mkdtemp(prefix="bench-loop-"))
    trainer = Trainer(cfg, progress=False)
    return torch, cfg, store, trainer


def plain_loop(x_all, y_all, batch: int, steps: int) -> float:
    """Seconds for ``steps`` steps of a hand-written loop over sgdlab's batches."""
    import torch

    from sgdlab.data import epoch_permutation

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    start = time.perf_counter()
    n, done, epoch = len(x_all), 0, 0
    while done < steps:
        perm = epoch_permutation(n, 0, epoch)
        for i in range(n // batch):
            idx = perm[i * batch:(i + 1) * batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            opt.step()
            done += 1
            if done == steps:
                break
        epoch += 1
    return time.perf_counter() - start


def trainer_loop(cfg, store) -> float:
    """Seconds of the trainer's loop, its end's evaluation, checkpoint and files excluded."""
    from sgdlab.train.loop import Trainer

    t = Trainer(cfg, progress=False)
    run = store.create_run(cfg.to_dict(), name="loop")
    excluded = [0.0]

    def excluding(fn):
        def timed_out(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                excluded[0] += time.perf_counter() - start
        return timed_out

    t.evaluate, t.checkpoint, t._finish = map(excluding, (t.evaluate, t.checkpoint, t._finish))
    with t.session(run):
        start = time.perf_counter()
        t._loop(_NoBar())
        return time.perf_counter() - start - excluded[0]


def bench_loop(data: str, repeats: int) -> dict:
    """Milliseconds per step of the trainer's loop and of a plain loop, same batches."""
    out = {}
    for batch in BATCHES:
        _, cfg, store, trainer = _setup_loop(data, batch)
        x_all, y_all = trainer.data.x_train, trainer.data.y_train
        steps = trainer.plan.total_steps
        plain_loop(x_all, y_all, batch, steps)
        trainer_loop(cfg, store)  # warm-up
        a, b = [], []
        for _ in range(repeats):
            a.append(trainer_loop(cfg, store))
            b.append(plain_loop(x_all, y_all, batch, steps))
        out[f"batch {batch}"] = {
            "steps": steps, "sgdlab_ms_per_step": 1e3 * statistics.median(a) / steps,
            "plain_ms_per_step": 1e3 * statistics.median(b) / steps,
            "ratio": statistics.median(x / y for x, y in zip(a, b))}
    return out


class _NoBar:
    def update(self, *args) -> None:
        pass


def bench_stack(data: str, repeats: int) -> dict:
    """Per member-step seconds: 4 members (the 4 learning rates, batch 64) stacked with each
    backend against their 4 plain steps in turn."""
    import torch

    from sgdlab.config import load_config
    from sgdlab.train.ensemble import StackedModel
    from sgdlab.train.loop import Trainer

    batch, members, steps = 64, len(LRS), 60
    trainers = [Trainer(load_config(None, {
        "device": "cpu", "optim": {"lr": lr, "batch_size": batch},
        "data": {"name": "fashion-mnist", "file": data, "n_train": N_TRAIN, "flatten": True},
        "model": {"name": "mlp", "depth": 2, "width": 256}}), progress=False) for lr in LRS]
    x_all, y_all = trainers[0].data.x_train, trainers[0].data.y_train
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(x_all), (batch,), generator=g) for _ in range(steps)]

    def sequential():
        start = time.perf_counter()
        for idx in batches:
            for tr in trainers:
                tr.optimizer.zero_grad(set_to_none=True)
                tr.loss_fn(tr.model(x_all[idx]), y_all[idx]).backward()
                tr.optimizer.step()
        return time.perf_counter() - start

    def stacked(backend):
        stack = StackedModel([tr.model for tr in trainers], "cross_entropy", backend)
        start = time.perf_counter()
        for idx in batches:
            for w in stack.params.values():
                w.grad = None
            stack.losses(x_all[idx], y_all[idx], shared=True).sum().backward()
            stack.point_grads()
            for tr in trainers:
                tr.optimizer.step()
        return time.perf_counter() - start

    fns = {"sequential": sequential, "vmap": lambda: stacked("vmap"),
           "bmm": lambda: stacked("bmm")}
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(fn())
    per = {k: 1e3 * statistics.median(v) / (steps * members) for k, v in times.items()}
    return {k: {"ms_per_member_step": per[k],
                "speedup_vs_sequential": statistics.median(
                    s / t for s, t in zip(times["sequential"], times[k]))}
            for k in fns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent
                                              / "shared" / "datasets" / "fashion_mnist.npz"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["process", "loop", "stack"], action="append")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    data = str(Path(args.data).resolve())
    sections = args.only or ["loop", "stack", "process"]
    results = {"threads": 1, "cpus": os.cpu_count(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for section in sections:
            print(f"== {section}", flush=True)
            if section == "process":
                results[section] = bench_process(data, args.repeats, Path(tmp))
            elif section == "loop":
                results[section] = bench_loop(data, args.repeats)
            else:
                results[section] = bench_stack(data, args.repeats)
            print(json.dumps(results[section], indent=2), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
