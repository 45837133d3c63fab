"""``sgdlab experiment NAME [--scale smoke|cpu|paper] [--set key=value ...] [--executor E]
[--workers N]`` and ``sgdlab experiment --list``.

``sgdlab/cli.py`` calls :func:`add_experiment_commands` on its subparsers; the command
receives ``args`` with ``args.store`` (store folder or None) and ``args.quiet``. Heavy
imports happen inside the command.
"""

from __future__ import annotations


def cmd_experiment(args) -> int:
    from sgdlab.errors import SgdlabError
    from sgdlab.experiments import EXPERIMENTS, format_checks, run_experiment

    if args.list or not args.name:
        if not args.list:
            raise SgdlabError("experiment: give an experiment NAME or --list")
        width = max((len(n) for n in EXPERIMENTS), default=0)
        for name, exp in sorted(EXPERIMENTS.items()):
            print(f"{name:<{width}}  {exp.title}  [{', '.join(exp.scales)}]")
        return 0
    from sgdlab.store import Store
    from sgdlab.sweep.cli import executor_from_args

    result = run_experiment(args.name, Store(args.store), scale=args.scale,
                            overrides=args.set, quiet=args.quiet,
                            executor=executor_from_args(args))
    print(format_checks(result.checks))
    print(f"report: {result.html_path}\nchecks: {result.json_path}\n"
          f"{len(result.run_ids)} runs, {result.seconds:.1f} s")
    return 0


def add_experiment_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment", help="reproduce a published result: train its grid, check its claims",
        description="Train an experiment's runs (skipping finished ones), analyze them and "
                    "write report.html, checks.json and figures under <store>/experiments/.")
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments")
    p.add_argument("--scale", default="smoke", choices=["smoke", "cpu", "paper"],
                   help="smoke: seconds, every code path; cpu: at most 15 minutes on a 2-core "
                   "CPU, where the claims hold; paper: the published setting, for a GPU")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every run, e.g. --set device=cuda")
    from sgdlab.sweep.cli import add_executor_options

    add_executor_options(p)
    p.set_defaults(func=cmd_experiment)
