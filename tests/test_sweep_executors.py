"""Executors: the interface fits one that takes every point at once; a worker process that
dies leaves its run killed, a new worker takes the rest, and the rerun resumes it."""

import os
import threading

from test_sweep import TINY, final_metrics, kill_after_checkpoint, tiny_sweep

from sgdlab.sweep import Executor, InProcess, WorkerProcesses, run_sweep
from sgdlab.sweep.executors import run_task


class AllAtOnce(Executor):
    """Takes every task before training any, and reports them last to first: an ensemble
    executor's shape (several points at once, outcomes in any order)."""

    name = "all-at-once"

    def __init__(self):
        self.seen, self.closed = [], False

    def run(self, tasks, store):
        self.seen = [t.index for t in tasks]
        outcomes = [(t, run_task(t, store)) for t in tasks]
        yield from reversed(outcomes)

    def close(self):
        self.closed = True


def test_an_executor_taking_every_point_at_once_fits_the_interface(store, tmp_path):
    from sgdlab.store import Store

    sweep = tiny_sweep(product={"optim.lr": [0.05, 0.1, 0.2]})
    executor = AllAtOnce()
    result = run_sweep(sweep, store, progress=False, executor=executor)
    assert executor.seen == [0, 1, 2] and executor.closed
    assert result.statuses == ["finished"] * 3
    names = store.runs(group="s").set_index("id")["name"]
    assert [names[r] for r in result.run_ids] == [c.name for c in sweep.configs]  # grid order
    reference = Store(tmp_path / "ref")
    run_sweep(sweep, reference, progress=False, executor=InProcess(progress=False))
    assert final_metrics(store, "s") == final_metrics(reference, "s")


def test_a_worker_killed_mid_run_is_reported_killed_and_its_run_resumes(store, tmp_path):
    from sgdlab.store import Store

    sweep = tiny_sweep(product={"optim.lr": [0.01, 0.02]}, optim={"batch_size": 8},
                       train={**TINY["train"], "epochs": 4, "checkpoint_every": 100})
    killed = []
    killer = threading.Thread(target=kill_after_checkpoint, args=(store, "*lr-0.01*", killed))
    killer.start()
    result = run_sweep(sweep, store, progress=False, executor=WorkerProcesses(1, threads=1))
    killer.join()
    assert killed and killed[0] != os.getpid()
    assert result.statuses == ["killed", "finished"]  # a new worker trained the second point
    assert "worker process died" in result.messages[0] and result.run_ids[0]
    assert store.get_run(result.run_ids[0]).status == "running"

    again = run_sweep(sweep, store, progress=False)
    assert (again.resumed, again.finished, again.skipped) == (1, 1, 1)
    assert again.run_ids == result.run_ids
    reference = Store(tmp_path / "ref")
    run_sweep(sweep, reference, progress=False)
    assert final_metrics(store, "s") == final_metrics(reference, "s")



MAIN_WITHOUT_TORCH = """
import sys
from sgdlab.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    print("torch imported here:", "torch" in sys.modules)
    sys.exit(code)
"""


def test_a_sweep_on_workers_never_imports_torch_in_its_own_process(tmp_path):
    import subprocess
    import sys

    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "s"\n[base]\n{_toml_tables(TINY)}[product]\n'
                    '"optim.lr" = [0.05, 0.1]\n')
    script = tmp_path / "sweep_main.py"
    script.write_text(MAIN_WITHOUT_TORCH)
    out = subprocess.run([sys.executable, str(script), "-q", "--store", str(tmp_path / "st"),
                          "sweep", str(grid), "--workers", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "2 finished" in out.stdout and "torch imported here: False" in out.stdout
    from sgdlab.store import Store

    runs = Store(tmp_path / "st").run_records(group="s")
    assert [r["status"] for r in runs] == ["finished"] * 2
    assert [r["config"]["optim.lr"] for r in runs] == [0.05, 0.1]


def _toml_tables(base: dict) -> str:
    import json

    return "".join(f"[base.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                                for k, v in table.items())
                   for name, table in base.items())


def test_a_worker_validates_a_grid_as_this_process_would(store, tmp_path):
    """The same configs, or the same one-line error, as validation here, for errors in a
    swept field, in a registry name and in the base alone; a point that is fine comes back
    validated (not checked again where it trains)."""
    import pytest

    from sgdlab.errors import ConfigError
    from sgdlab.sweep.grid import make_sweep

    grids = [
        {"product": {"optim.lr": [0.1, -1.0]}},
        {"product": {"model.name": ["mlp", "nosuch"]}},
        {"product": {"optim.lr": [0.1, 0.2]}, "probes": [{"name": "nosuch"}]},
        {"product": {"optim.lr": [0.1, 0.2]}, "train": {"epochs": 0}},
    ]
    workers = WorkerProcesses(1, threads=1)
    workers.start(store)
    try:
        for grid in grids:
            base = {**TINY, **{k: v for k, v in grid.items() if k != "product"}}
            full = {"name": "s", "base": base, "product": grid["product"]}
            with pytest.raises(ConfigError) as here:
                make_sweep(full)
            with pytest.raises(ConfigError) as there:
                make_sweep(full, validate=workers.validate)
            assert str(there.value) == str(here.value)
        good = make_sweep({"name": "s", "base": TINY, "product": {"optim.lr": [0.1, 0.2]}},
                          validate=workers.validate)
        assert [c.optim.lr for c in good.configs] == [0.1, 0.2]
        assert all(c.__dict__.get("_validated") == c.to_json() for c in good.configs)
        workers._pool[0].process.kill()  # a worker that died: validated here, then replaced
        workers._pool[0].process.join()
        again = make_sweep({"name": "s", "base": TINY, "product": {"optim.lr": [0.1, 0.2]}},
                           validate=workers.validate)
        assert [c.to_json() for c in again.configs] == [c.to_json() for c in good.configs]
        assert workers._pool == []
        result = run_sweep(again, store, progress=False, executor=workers)
        assert result.statuses == ["finished", "finished"]
    finally:
        workers.close()


def test_runs_of_one_process_share_a_loaded_dataset(store):
    from conftest import small_config

    from sgdlab.data import DATA_CACHE
    from sgdlab.train import train

    DATA_CACHE.clear()
    misses = DATA_CACHE.misses
    first = train(small_config(**{"optim.lr": 0.05, "train.epochs": 1}), store)
    second = train(small_config(**{"optim.lr": 0.1, "train.epochs": 1}), store)
    assert DATA_CACHE.misses == misses + 1  # the second run found the first one's data
    train(small_config(**{"seed": 1, "train.epochs": 1}), store)  # another seed: a subset
    assert DATA_CACHE.misses == misses + 2
    assert first.status == second.status == "finished"


def test_eval_epochs_zero_evaluates_once_at_the_end_on_the_asked_splits(store):
    from conftest import small_config

    from sgdlab.train import train

    run = train(small_config(**{"train.epochs": 3, "train.eval_epochs": 0,
                                "train.eval_splits": ["test"]}), store)
    m = store.metrics(runs=[run.id])
    evaluated = m[m["name"].str.contains("/acc")]
    assert set(evaluated["name"]) == {"test/acc"}
    assert evaluated["step"].tolist() == [3 * (1437 // 64)]  # only the end
    every_other = train(small_config(**{"train.epochs": 4, "train.eval_epochs": 2}), store)
    m = store.metrics(runs=[every_other.id], names=["train/acc"])
    assert m["step"].tolist() == [0, 2 * (1437 // 64), 4 * (1437 // 64)]


def test_make_executor_names_every_executor():
    from sgdlab.sweep import Ensemble, make_executor

    assert isinstance(make_executor(None, workers=0), InProcess)
    assert isinstance(make_executor(None, workers=2), WorkerProcesses)
    assert isinstance(make_executor("ensemble"), Ensemble)
    with __import__("pytest").raises(ValueError, match="executor must be one of"):
        make_executor("threads")
