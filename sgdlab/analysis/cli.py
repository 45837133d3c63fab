"""``sgdlab landscape RUN {slice,interpolate,trajectory} [options]``: the loss landscape of a
stored run, written into its folder and drawn in its report.

``sgdlab/cli.py`` calls :func:`add_landscape_commands` on its subparsers; the command
receives ``args`` with ``args.store`` and ``args.quiet``. Heavy imports happen inside the
command. Every bad input (a run without weights or history, directions of the wrong
shape, two runs of different architectures) is one error line and exit status 2, with
nothing written.
"""

from __future__ import annotations

KINDS = ("slice", "interpolate", "trajectory")


def cmd_landscape(args) -> int:
    from sgdlab.analysis import landscape as la
    from sgdlab.errors import SgdlabError
    from sgdlab.store import Store

    if args.kind != "interpolate" and args.to:
        raise SgdlabError("--to: only for `sgdlab landscape RUN interpolate`")
    if args.kind != "slice" and (args.dims != 2 or args.directions != "random"):
        raise SgdlabError("--dims, --directions: only for `sgdlab landscape RUN slice`")
    common = dict(split=args.split, subset=args.subset or None, subset_seed=args.subset_seed,
                  bn=args.bn, name=args.name)
    store = Store(args.store)
    if args.kind == "slice":
        w = la.slice_run(store, args.run, dims=args.dims, directions=args.directions,
                         seed=args.seed, span=args.span, num=args.num, **common)
        s = w.result
        center = s.loss[tuple(len(a) // 2 for a in s.axes)]
        what = f"{s.meta['num_points']} points; loss at the center {center:.4g}, " \
               f"range [{s.loss.min():.4g}, {s.loss.max():.4g}]"
    elif args.kind == "interpolate":
        if not args.to:
            raise SgdlabError("interpolate: give the other run with --to RUN")
        w = la.interpolate_runs(store, args.run, args.to, num=args.num or 25,
                                extend=args.extend, **common)
        p = w.result
        what = (f"{len(p.ts)} points; barrier {p.barrier:.4g} at t = {p.barrier_t:.3g}, "
                f"peak above the higher end {p.peak_excess:.4g}, "
                f"accuracy drop {p.accuracy_drop:.4g}")
    else:
        w = la.trajectory_run(store, args.run, num=args.num or 21, margin=args.margin,
                              **common)
        h = w.result.meta["history"]
        what = (f"{w.result.meta['num_points']} points; history {la.HistorySize(**h)}; "
                f"explained variance {w.result.directions.recipes[0]['explained']:.3f}, "
                f"{w.result.directions.recipes[1]['explained']:.3f}")
    examples = w.result.meta["num_examples"]
    print(f"{w.name}: {what} ({examples} {args.split} examples, {w.seconds:.1f} s)")
    print(f"arrays: {w.path}")
    if not args.no_report:
        from sgdlab.report import write_report

        print(f"report: {write_report(store, w.result.meta['run'])}")
    return 0


def add_landscape_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "landscape", help="loss landscape of a stored run: slices, lines between runs, trajectory",
        description="Slice a finished run's loss along filter-normalized random or Hessian "
                    "directions (1-D or 2-D), along the straight line to another run, or on "
                    "the principal plane of its parameter history (a trajectory probe). "
                    "Writes arrays/landscape-*/ in the run folder and redraws its report.")
    p.add_argument("run", help="run id or unique prefix")
    p.add_argument("kind", choices=KINDS, help="slice | interpolate | trajectory")
    p.add_argument("--dims", type=int, choices=(1, 2), default=2, help="slice: a line or a plane")
    p.add_argument("--directions", default="random",
                   help="slice: random (filter-normalized, --seed), hessian (top eigenvectors) "
                        "or a .npy/.npz file of (k, P) directions, e.g. another slice's arrays")
    p.add_argument("--seed", type=int, default=0, help="slice: seed of the random directions")
    p.add_argument("--span", type=float, default=1.0,
                   help="slice: coordinates in [-span, span] (default 1)")
    p.add_argument("--num", type=int, default=None,
                   help="points per axis (line 51, plane 21, interpolate 25, trajectory 21)")
    p.add_argument("--to", metavar="RUN", help="interpolate: the run at t = 1")
    p.add_argument("--extend", type=float, default=0.0,
                   help="interpolate: draw t in [-extend, 1 + extend] (default 0)")
    p.add_argument("--margin", type=float, default=0.2,
                   help="trajectory: margin around the path, a fraction of its range")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--subset", type=int, default=2048,
                   help="examples of the split, fixed by --subset-seed (0: all; default 2048)")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--bn", choices=("eval", "recompute"), default="eval",
                   help="BatchNorm: the model's running statistics, or recomputed at each point")
    p.add_argument("--name", help="store as arrays/landscape-NAME (default from the kind)")
    p.add_argument("--no-report", action="store_true", help="do not redraw the run's report")
    p.set_defaults(func=cmd_landscape)
