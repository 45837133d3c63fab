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
    run = train(cfg, _store(args), progress=False if args.quiet else None)
    print(f"{run.id}\t{run.status}\t{run.path}")
    return 0 if run.status == "finished" else 1


def cmd_resume(args) -> int:
    from sgdlab.train import resume

    run = resume(_store(args), args.run, progress=False if args.quiet else None)
    print(f"{run.id}\t{run.status}\t{run.path}")
    return 0 if run.status == "finished" else 1


def cmd_ls(args) -> int:
    store = _store(args)
    runs = store.runs(status=args.status, group=args.group)
    if runs.empty:
        print(f"no runs in {store.root}")
        return 0
    cols = [c for c in ("id", "status", "created", "data.name", "model.name", "optim.lr",
                        "optim.batch_size", "diverged_step") if c in runs.columns]
    print(runs[cols].to_string(index=False))
    return 0


def cmd_show(args) -> int:
    store = _store(args)
    run = store.get_run(args.run)
    m = store.metrics(runs=[run.id])
    print(f"run     {run.id}\nstatus  {run.status}\nfolder  {run.path}")
    if run.status == "running":
        from sgdlab.train.environment import last_session, session_alive

        last = last_session(run)
        if last is not None and "pid" in last:
            where = f"pid {last['pid']} on {last.get('host')}"
            print("process " + {True: f"{where}, alive", None: f"{where} (another host)",
                                False: f"{where} is gone: killed; `sgdlab resume {run.id}` "
                                       "continues it"}[session_alive(last)])
    if m.empty:
        return 0
    last = m.sort_values("step").groupby("name").tail(1).set_index("name")
    width = max(len(n) for n in last.index)
    for name, row in last.iterrows():
        print(f"  {name:<{width}}  {row['value']:.6g}  (step {int(row['step'])})")
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


def cmd_demo(args) -> int:
    from sgdlab.demo import run_demo

    path = run_demo(_store(args), quiet=args.quiet)
    print(f"report: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgdlab", description=__doc__.splitlines()[0])
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train one configuration")
    p.add_argument("config", nargs="?", help="TOML config file (defaults if omitted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=0.05 (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a killed run from its last checkpoint")
    p.add_argument("run", help="run id or unique prefix")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("ls", help="list runs")
    p.add_argument("--status", choices=["running", "finished", "diverged", "failed"])
    p.add_argument("--group")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("show", help="a run's status and latest metrics")
    p.add_argument("run")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run")
    p.add_argument("run")
    p.add_argument("-o", "--output", type=Path, help="output file (default: in the run folder)")
    p.set_defaults(func=cmd_report)

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


def _global_options(parser: argparse.ArgumentParser, **defaults) -> None:
    parser.add_argument("--store", help="store folder (default $SGDLAB_STORE or ./sgdlab-runs)",
                        **defaults)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar", **defaults)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sgdlab.store import StoreError

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
