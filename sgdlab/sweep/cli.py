"""``sgdlab sweep GRID`` and ``sgdlab sweep-table NAME``.

``sgdlab/cli.py`` calls :func:`add_sweep_commands` on its subparsers; each command
receives ``args`` with ``args.store`` (store folder or None) and ``args.quiet``. Heavy
imports (torch, pandas) happen inside the commands.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path


def cmd_sweep(args) -> int:
    from sgdlab.imports import add_search_folder
    from sgdlab.store import Store

    add_search_folder(Path(args.grid).parent)  # before workers start: they inherit sys.path
    store = Store(args.store)
    executor = None if args.dry_run else executor_from_args(args)
    if hasattr(executor, "start"):  # worker processes import torch while the grid loads
        executor.start(store)
    try:
        return _sweep(args, store, executor)
    finally:
        if executor is not None:
            executor.close()


def _sweep(args, store, executor) -> int:
    from sgdlab.sinks.trackers import parse_track
    from sgdlab.sweep.execute import plan_sweep, run_sweep
    from sgdlab.sweep.grid import load_grid

    tracks = [dataclasses.asdict(parse_track(t)) for t in args.track]
    sweep = load_grid(args.grid, [*args.set, *([("trackers", tracks)] if tracks else [])],
                      validate=getattr(executor, "validate", None))  # workers: not here
    if args.dry_run:
        tasks = plan_sweep(sweep, store)
        print(f"sweep {sweep.name}: {len(tasks)} points (group {sweep.name!r} in {store.root})")
        for task, point in zip(tasks, sweep.points):
            values = " ".join(f"{k}={v}" for k, v in point.items())
            note = f" {task.run_id} ({task.status})" if task.run_id else ""
            print(f"{task.index:>4}  {task.action:<6}  {values or task.config.name}{note}")
        return 0
    result = run_sweep(sweep, store, progress=not args.quiet, executor=executor)
    print(result)
    return 0 if result.failed + result.killed == 0 else 1


def executor_from_args(args):
    """The executor that ``--executor``, ``--workers``, ``--threads`` and the Ray options
    ask for (shared by ``sgdlab sweep`` and ``sgdlab experiment``)."""
    from sgdlab.sweep.execute import make_executor

    options = {}
    if args.executor == "ray":
        options = {"address": args.address, "cpus": args.cpus, "gpus": args.gpus}
    elif args.address is not None:
        from sgdlab.errors import SgdlabError

        raise SgdlabError("--address: only with --executor ray")
    return make_executor(args.executor, args.workers, args.threads,
                         progress=not args.quiet, **options)


def add_executor_options(p) -> None:
    """``--executor``, ``--workers``, ``--threads``, ``--address``, ``--cpus``, ``--gpus``."""
    p.add_argument("--executor", choices=["inline", "processes", "ensemble", "ray"],
                   default=None, help="how points are trained: inline (this process), "
                   "processes (--workers N), ensemble (stackable points as one vectorized "
                   "model), ray (a Ray cluster); default inline, or processes with --workers")
    p.add_argument("--workers", type=_at_least(0), default=0, metavar="N",
                   help="worker processes (default 0: train in this process)")
    p.add_argument("--threads", type=_at_least(1), default=None, metavar="T",
                   help="torch threads per worker (default: CPUs / workers)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="ray: the cluster to join (default: start a local one for the sweep)")
    p.add_argument("--cpus", type=_positive_float, default=1.0, metavar="C",
                   help="ray: CPUs per trial (default 1)")
    p.add_argument("--gpus", type=_nonnegative_float, default=0.0, metavar="G",
                   help="ray: GPUs per trial (default 0)")


def _positive_float(text: str) -> float:
    return _float_at_least(text, 0.0, strict=True)


def _nonnegative_float(text: str) -> float:
    return _float_at_least(text, 0.0, strict=False)


def _float_at_least(text: str, low: float, strict: bool) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > low if strict else value >= low):
        raise argparse.ArgumentTypeError(
            f"expected a number {'>' if strict else '>='} {low:g}, got {text!r}")
    return value


def cmd_sweep_table(args) -> int:
    import pandas as pd

    from sgdlab.store import Store
    from sgdlab.sweep.query import sweep_table

    metrics = args.metric or ["train/loss", "test/acc"]
    store = Store(args.store)
    table = sweep_table(store, args.name, metrics=metrics, at=args.at)
    diverged = table["status"] == "diverged"
    if diverged.any():  # their last values are from before the non-finite loss: say where
        steps = {r.id: r.diverged_step for r in store.find_runs(group=args.name,
                                                                 status="diverged")}
        table.loc[diverged, "status"] = [f"diverged@{steps.get(r)}"
                                         for r in table.loc[diverged, "run"]]
    for metric in metrics:
        if table[metric].isna().all():
            print(f"sgdlab: warning: no run of {args.name!r} logged {metric!r}", file=sys.stderr)
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(table.to_string(index=False))
    return 0


def _at_least(low: int):
    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


def add_sweep_commands(subparsers) -> None:
    """Add ``sweep`` and ``sweep-table`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "sweep", help="train every point of a grid of configs (skips finished runs, "
        "resumes killed ones)")
    p.add_argument("grid", help="TOML grid file (name, base, seeds, [product], [[zip]])")
    add_executor_options(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the expanded points and what would be done; train nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config field (train.epochs=5) or a grid key "
                   "(seeds=[0,1], product.optim.lr=[0.1,0.2]); repeatable")
    p.add_argument("--track", action="append", default=[], metavar="KIND[=DEST]",
                   help="send every run live to a tracker: tensorboard, mlflow or wandb "
                   "(offline), optionally to DEST (repeatable)")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("sweep-table", help="a sweep's swept parameters and metrics, "
                              "one row per run")
    p.add_argument("name", help="sweep name (the runs' group)")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="metric column (repeatable; default train/loss and test/acc)")
    p.add_argument("--at", choices=["last", "min", "max"], default="last",
                   help="value at the last step, or the min / max over training")
    p.add_argument("--csv", action="store_true", help="write CSV instead of a text table")
    p.set_defaults(func=cmd_sweep_table)
