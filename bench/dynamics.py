"""Speed of the dynamics layer: finite-sum minibatch SGD on a 1-D double well, float64,
many chains, first passage checked at every step.

    python bench/dynamics.py                          # 10,000 chains x 10^5 steps, S = 1 and 4
    python bench/dynamics.py --steps 20000 --repeats 3 --batch-sizes 1 4 16

Goal (issue 14): 10,000 chains x 10^5 steps in at most 60 s on a 2-core CPU. The full load
is timed (``drop_passed=False``: every chain runs every step, passage still recorded), and
so is the usual mode that drops chains once they have passed.

Side by side (interleaved, repeated, as ratios, one torch thread): the loop a user would
write without the layer, one torch step at a time (``torch.randint`` minibatch indices,
gather, update, ``torch.where`` bookkeeping of the first passage), on ``--compare-steps``
steps. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sgdlab.dynamics import DoubleWell, FiniteSum, Halfspace, first_passage, sgd

LR, TEMP = 0.01, 0.125  # barrier / T = 8: a few percent of the chains escape in 10^5 steps


def problem(batch_size: int) -> FiniteSum:
    """Per-example noise C with T = lr C / (2S) = 0.125 on V = (x^2 - 1)^2 (k = 8)."""
    return FiniteSum.designed(DoubleWell(1.0, 8.0), 2 * TEMP * batch_size / LR, n=1000, seed=0)


def layer(batch_size: int, chains: int, steps: int, drop_passed: bool) -> tuple[float, int]:
    run = first_passage(sgd(problem(batch_size), LR, batch_size), [-1.0], Halfspace(1.0, 1.0),
                        chains, max_time=LR * steps, seed=0, block=64, drop_passed=drop_passed)
    return run.seconds, run.n_passed


def plain_loop(batch_size: int, chains: int, steps: int) -> tuple[float, int]:
    """The straightforward torch loop: one step at a time."""
    p = problem(batch_size)
    a = p.offsets[:, 0]
    gen = torch.Generator().manual_seed(0)
    x = torch.full((chains,), -1.0, dtype=torch.float64)
    first = torch.full((chains,), -1, dtype=torch.int64)
    t0 = time.perf_counter()
    for k in range(steps):
        idx = torch.randint(p.n, (chains, batch_size), generator=gen)
        g = 8.0 * 0.5 * x * (x * x - 1.0) + a[idx].mean(1)  # V' = 4 x (x^2 - 1)
        x = x - LR * g
        first = torch.where((first < 0) & (x >= 1.0), k + 1, first)
    return time.perf_counter() - t0, int((first >= 0).sum())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--compare-steps", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"chains": args.chains, "steps": args.steps, "threads": args.threads,
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "full": {}, "comparison": {}}
    for s in args.batch_sizes:
        # the headline: the full load, then the usual mode
        sec, passed = layer(s, args.chains, args.steps, drop_passed=False)
        sec_drop, _ = layer(s, args.chains, args.steps, drop_passed=True)
        report["full"][s] = {"seconds": round(sec, 2), "passed": passed,
                             "seconds_dropping_passed": round(sec_drop, 2),
                             "ns_per_chain_step": round(sec / (args.chains * args.steps) * 1e9,
                                                        2)}
        print(f"S={s}: {args.chains} chains x {args.steps} steps: {sec:.1f} s full load "
              f"({passed} passed), {sec_drop:.1f} s dropping passed chains", flush=True)
        ratios = []
        for _ in range(args.repeats):  # interleaved: layer, plain, layer, plain, ...
            t_layer, _ = layer(s, args.chains, args.compare_steps, drop_passed=False)
            t_plain, _ = plain_loop(s, args.chains, args.compare_steps)
            ratios.append(t_plain / t_layer)
        report["comparison"][s] = {"steps": args.compare_steps,
                                   "plain_over_layer": [round(r, 2) for r in ratios]}
        print(f"   plain torch loop / layer on {args.compare_steps} steps: "
              f"{', '.join(f'{r:.2f}' for r in ratios)}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
