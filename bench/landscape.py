"""Benchmark: a 2-D filter-normalized slice by sgdlab.landscape beside the per-point
state-dict loop users write and the ``loss-landscapes`` package, on the same points.

Model: the CNN of ``bench/curvature.py`` (``--model cnn``, width ``--width``) or an MLP
(``--model mlp``: 784 → ``--width`` → ``--width`` → 10, ReLU), trained for ``--steps`` SGD
steps (batch 128, lr 0.05) on standardized Fashion-MNIST, then evaluated in eval mode on
``--n`` fixed training examples (a seeded permutation). Two random directions from
``sgdlab.landscape.random_directions`` (filter-normalized, seed 0) span the plane.

The points are those ``loss_landscapes.planar_interpolation(start, start + s·δ1,
start + s·δ2, Loss(...), steps=s)`` evaluates for s = ``--grid``: the package walks the
grid in place and evaluates rows i = 0..s−1 at offsets 1..s along δ2 when i is even and
0..s−1 when i is odd (its serpentine order), so sgdlab and the loop are given exactly
those points (coordinates (i, j + [i even]) in units of δ = 2 D / (s − 1), starting at
the corner −D1 − D2). Methods, interleaved in one process, ``--reps`` times:

* ``sgdlab``: ``PointEvaluator(model, F.cross_entropy, (x, y))(points)`` (defaults);
* ``state-dict loop``: per point ``model.load_state_dict(...)`` then ``F.cross_entropy(model(x),
  y)`` under ``torch.no_grad()``, all n examples in one batch;
* ``loss-landscapes``: ``planar_interpolation`` on deep copies (it edits and freezes the
  model it is given), if the package is installed (``pip install -e '.[bench]'``).

Prints a markdown table (seconds, ms per point, ratios to sgdlab, max |Δ loss| against
sgdlab) and the grid's loss range; ``--out`` writes JSON. CPU example::

    python bench/landscape.py --model cnn --width 16 --n 1024 --grid 31 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curvature import DATA, cnn, load, log, sgd, sync  # noqa: E402 (the benchmark CNN)

from sgdlab.curvature import flatten  # noqa: E402
from sgdlab.landscape import Layout, PointEvaluator, points_along, random_directions  # noqa: E402


def mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def serpentine_coordinates(s: int) -> np.ndarray:
    """(s², 2) offsets, in steps, of the points planar_interpolation evaluates, row-major."""
    rows = []
    for i in range(s):
        shift = 1 if i % 2 == 0 else 0
        rows += [(i, j + shift) for j in range(s)]
    return np.asarray(rows, dtype=np.float64)


def state_dict_loop(model: nn.Module, layout: Layout, points: torch.Tensor, x, y) -> np.ndarray:
    """What users write by hand: load each point, evaluate under no_grad in eval mode."""
    m = copy.deepcopy(model).eval()
    base = {k: v.clone() for k, v in m.state_dict().items()}
    out = []
    for row in points:
        state = dict(base)
        state.update(layout.tensors(row))
        m.load_state_dict(state)
        with torch.no_grad():
            out.append(float(F.cross_entropy(m(x), y)))
    return np.asarray(out)


def loss_landscapes_plane(model, layout, corner, d1, d2, s, x, y) -> np.ndarray:
    import loss_landscapes
    import loss_landscapes.metrics

    def at(vec):
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            for n, t in layout.tensors(vec).items():
                dict(m.named_parameters())[n].copy_(t)
        return m

    metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
    grid = loss_landscapes.planar_interpolation(at(corner), at(corner + s * d1),
                                                at(corner + s * d2), metric, steps=s)
    return np.asarray(grid, dtype=np.float64).reshape(-1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--grid", type=int, default=31)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--methods", default="sgdlab,loop,loss-landscapes",
                   help="also: 'sgdlab no vmap' (one point per pass)")
    p.add_argument("--budgets", default="",
                   help="extra sgdlab rows at these memory budgets in MB, e.g. 8,128,1024")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = (cnn(args.width) if args.model == "cnn" else mlp(args.width)).to(device)
    x_all, y_all = load(args.data, device)
    gen = torch.Generator().manual_seed(0)
    log(f"training {args.model} width {args.width} for {args.steps} steps")
    sgd(model, x_all, y_all, args.steps, gen)
    idx = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(1))[: args.n]
    x, y = x_all[idx.to(device)], y_all[idx.to(device)]
    layout = Layout.of(model)
    center = flatten([q.detach() for q in model.parameters()])
    dirs = random_directions(center, layout, 2, seed=0).vectors
    s = args.grid
    step = 2.0 / (s - 1)
    corner = center - dirs[0] - dirs[1]
    d1, d2 = step * dirs[0], step * dirs[1]
    points = points_along(corner, torch.stack([d1, d2]), serpentine_coordinates(s))
    methods = [m for m in args.methods.split(",") if m]
    methods[1:1] = [f"sgdlab {mb} MB" for mb in args.budgets.split(",") if mb]
    if "loss-landscapes" in methods:
        try:
            import loss_landscapes  # noqa: F401
        except ImportError:
            log("loss-landscapes is not installed: skipped (pip install -e '.[bench]')")
            methods.remove("loss-landscapes")
    ev = PointEvaluator(model, F.cross_entropy, (x, y))
    chunks = ev.chunks(len(points))
    log(f"{len(points)} points, P = {layout.dim}, sgdlab chunks (points, examples) = {chunks}")
    budgeted = {mb: PointEvaluator(model, F.cross_entropy, (x, y), memory_budget=int(mb) << 20)
                for mb in args.budgets.split(",") if mb}
    unbatched = PointEvaluator(model, F.cross_entropy, (x, y), batched=False)
    for mb, e in budgeted.items():
        log(f"  at {mb} MB: chunks {e.chunks(len(points))}")
    run = {
        "sgdlab": lambda: ev(points)[0],
        **{f"sgdlab {mb} MB": (lambda e=budgeted[mb]: e(points)[0]) for mb in budgeted},
        "loop": lambda: state_dict_loop(model, layout, points, x, y),
        "loss-landscapes": lambda: loss_landscapes_plane(model, layout, corner, d1, d2, s, x, y),
        "sgdlab no vmap": lambda: unbatched(points)[0],
    }
    warm = {  # untimed first calls (vmap set-up, allocator, caches) on a few points
        "sgdlab": lambda: ev(points[:4]),
        "loop": lambda: state_dict_loop(model, layout, points[:4], x, y),
        "loss-landscapes": lambda: loss_landscapes_plane(model, layout, corner, d1, d2, 2, x, y),
        **{f"sgdlab {mb} MB": (lambda e=budgeted[mb]: e(points[:4])) for mb in budgeted},
        "sgdlab no vmap": lambda: unbatched(points[:4]),
    }
    for m in methods:
        warm[m]()
    seconds = {m: [] for m in methods}
    values = {}
    for rep in range(args.reps):
        for m in methods:
            sync(device)
            t0 = time.perf_counter()
            values[m] = run[m]()
            sync(device)
            seconds[m].append(time.perf_counter() - t0)
            log(f"rep {rep} {m}: {seconds[m][-1]:.1f} s")
    ref = values[methods[0]]
    best = {m: min(v) for m, v in seconds.items()}
    rows = [{"method": m, "seconds": seconds[m], "best_s": best[m],
             "ms_per_point": 1000 * best[m] / len(points),
             "ratio_to_first": best[m] / best[methods[0]],
             "max_abs_diff": float(np.max(np.abs(values[m] - ref)))} for m in methods]
    print(f"\n{args.model} width {args.width}, P = {layout.dim}, n = {args.n}, {s}×{s} = "
          f"{len(points)} points, {args.threads} thread(s), torch {torch.__version__}, "
          f"{platform.machine()}; loss in [{ref.min():.3f}, {ref.max():.3f}]\n")
    print(f"| method | best of {args.reps} (s) | all (s) | ms / point | time / {methods[0]}"
          f" | max abs diff of loss vs {methods[0]} |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        all_s = ", ".join(f"{v:.1f}" for v in r["seconds"])
        print(f"| {r['method']} | {r['best_s']:.1f} | {all_s} | {r['ms_per_point']:.1f} | "
              f"{r['ratio_to_first']:.2f} | {r['max_abs_diff']:.1e} |")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "P": layout.dim,
              "chunks": chunks, "rows": rows, "torch": torch.__version__}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
