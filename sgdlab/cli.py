"""sgdlab: train networks with SGD, measure the trajectory, reproduce published results.

Every user error (config, data file, run id) is one line on stderr and exit status 2, with
nothing written to the store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sgdlab.errors import SgdlabError


def _store(args):
    from sgdlab.store import Store

    return Store(args.store)


def cmd_run(args) -> int:
    from sgdlab.config import load_config
    from sgdlab.train import train

    cfg = load_config(args.config, args.set)
    cfg.trackers.extend(_tracks(args))
    run = train(cfg, _store(args), progress=False if args.quiet else None)
    print(f"{run.id}\t{run.status}\t{run.path}")
    return 0 if run.status == "finished" else 1


def cmd_resume(args) -> int:
    from sgdlab.train import resume

    run = resume(_store(args), args.run, progress=False if args.quiet else None)
    print(f"{run.id}\t{run.status}\t{run.path}")
    return 0 if run.status == "finished" else 1


def _tracks(args) -> list:
    from sgdlab.sinks.trackers import parse_track

    return [parse_track(text) for text in args.track]


def cmd_ls(args) -> int:
    store = _store(args)
    records = store.run_records(status=args.status, group=args.group)
    if not records:
        print(f"no runs in {store.root}")
        return 0
    keys = [k for k in ("data.name", "model.name", "optim.lr", "optim.batch_size")
            if any(k in r["config"] for r in records)]
    table = [["id", "status", "created", *keys, "diverged_step"]]
    for r in records:
        created = r["created"].replace("T", " ")[:19]
        table.append([r["id"], r["status"], created, *(_cell(r["config"].get(k)) for k in keys),
                      _cell(r["diverged_step"])])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _cell(value) -> str:
    return "<NA>" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def cmd_show(args) -> int:
    store = _store(args)
    run = store.get_run(args.run)
    last = store.last_metrics(run.id)
    print(f"run     {run.id}\nstatus  {run.status}\nfolder  {run.path}")
    if run.status == "diverged":
        print(f"diverged at step {run.diverged_step}" + (f": {run.message}" if run.message
                                                         else ""))
    elif run.status == "failed" and run.message:
        print(f"failed: {run.message}")
    if run.status == "running":
        from sgdlab.train.environment import last_session, session_alive

        session = last_session(run)
        if session is not None and "pid" in session:
            where = f"pid {session['pid']} on {session.get('host')}"
            print("process " + {True: f"{where}, alive", None: f"{where} (another host)",
                                False: f"{where} is gone: killed; `sgdlab resume {run.id}` "
                                       "continues it"}[session_alive(session)])
    if not last:
        return 0
    width = max(len(n) for n in last)
    for name in sorted(last):
        step, value = last[name]
        print(f"  {name:<{width}}  {value:.6g}  (step {step})")
    return 0


def cmd_report(args) -> int:
    from sgdlab.report import write_report

    store = _store(args)
    store.get_run(args.run)  # an unknown run is reported as such, before any folder is made
    try:
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
        path = write_report(store, args.run, args.output)
    except OSError as exc:
        raise SgdlabError(f"{args.output or exc.filename}: cannot write the report "
                          f"({exc.strerror or exc})") from None
    print(path)
    return 0


def cmd_export(args) -> int:
    from sgdlab.config import TrackerConfig
    from sgdlab.sinks.replay import replay
    from sgdlab.sinks.trackers import build_trackers, check_trackers

    kind, dest = args.to
    tracker = TrackerConfig(kind=kind, dest=dest)
    check_trackers([tracker], where="--to")
    store = _store(args)
    runs = [store.get_run(r) for r in args.runs]  # every id checked before anything is sent
    for run in runs:
        sent = replay(store, run, build_trackers([tracker]))
        print(f"{run.id}\t{kind}\t{sent} values\t{dest}")
    return 0


def cmd_demo(args) -> int:
    from sgdlab.demo import run_demo

    path = run_demo(_store(args), quiet=args.quiet)
    print(f"report: {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in one line (exit status 2, as every user error)."""

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(2, f"sgdlab: error: {self.prog}: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sgdlab", description=__doc__.splitlines()[0])
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train one configuration")
    p.add_argument("config", nargs="?", help="TOML config file (defaults if omitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=0.05 (repeatable)")
    _track_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a killed run from its last checkpoint")
    p.add_argument("run", help="run id or unique prefix")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("ls", help="list runs")
    p.add_argument("--status", choices=["running", "finished", "diverged", "failed"],
                   help="only runs with this status")
    p.add_argument("--group", help="only the runs of this group (a sweep's or an "
                   "experiment's name)")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="a run's status and latest metrics")
    p.add_argument("run", help="run id or unique prefix (see sgdlab ls)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run")
    p.add_argument("run", help="run id or unique prefix (see sgdlab ls)")
    p.add_argument("-o", "--output", type=Path, help="output file (default: in the run folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="send stored runs to TensorBoard, MLflow or W&B",
                       description="Replay stored runs (config, every scalar, probe arrays, "
                       "the end) into a tracker: TensorBoard event files in DEST/<run id>, "
                       "an MLflow tracking URI or folder (sqlite:///DEST/mlflow.db), or W&B "
                       "offline files in DEST/wandb.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids or unique prefixes")
    p.add_argument("--to", nargs=2, required=True, metavar=("KIND", "DEST"),
                   help="tensorboard | mlflow | wandb, and the destination folder "
                   "(MLflow: or a tracking URI)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="train an MLP on MNIST-1D (no download) and write its report")
    p.set_defaults(func=cmd_demo)

    from sgdlab.analysis.cli import add_landscape_commands
    from sgdlab.experiments.cli import add_experiment_commands
    from sgdlab.sweep.cli import add_sweep_commands

    add_sweep_commands(sub)
    add_experiment_commands(sub)
    add_landscape_commands(sub)
    for command in sub.choices.values():  # also accepted after the command; unset if absent
        _global_options(command, default=argparse.SUPPRESS)
    return parser


def _track_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track", action="append", default=[], metavar="KIND[=DEST]",
                        help="also send the run live to a tracker: tensorboard, mlflow or "
                        "wandb (offline), optionally to DEST (repeatable)")


def _global_options(parser: argparse.ArgumentParser, **defaults) -> None:
    parser.add_argument("--store", help="store folder (default $SGDLAB_STORE or ./sgdlab-runs)",
                        **defaults)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar", **defaults)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import warnings

    from sgdlab.store import StoreError

    def one_line(message, category, *_args, **_kwargs) -> None:
        text = " ".join(str(message).split())
        print(f"sgdlab: warning: {text}", file=sys.stderr)

    warnings.showwarning = one_line
    try:
        return args.func(args)
    except (SgdlabError, StoreError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"sgdlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sgdlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sgdlab ls | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
