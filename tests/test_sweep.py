"""Sweeps: grid expansion and validation, skip / resume / failure handling, executors, queries."""

import argparse
import itertools

import pytest
import torch
from conftest import as_killed

from sgdlab.errors import ConfigError
from sgdlab.sweep import (
    add_sweep_commands,
    expand_grid,
    load_grid,
    make_sweep,
    plan_sweep,
    run_sweep,
    sweep_curves,
    sweep_table,
)
from sgdlab.train import loop

TINY = {
    "data": {"name": "digits", "download": False},
    "model": {"name": "mlp", "depth": 1, "width": 16},
    "train": {"epochs": 1},
}


def tiny_sweep(name="s", product=None, seeds=None, **base):
    grid = {"name": name, "base": {**TINY, **base}, "product": product or {}}
    if seeds is not None:
        grid["seeds"] = seeds
    return make_sweep(grid)


def cli(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--store")
    parser.add_argument("-q", "--quiet", action="store_true")
    add_sweep_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def final_metrics(store, group):
    """{run name: {metric: [values by step]}} of a group."""
    runs = store.runs(group=group).set_index("id")["name"]
    m = store.metrics(group=group).sort_values(["run", "name", "step"])
    return {runs[r]: {n: g["value"].tolist() for n, g in df.groupby("name")}
            for r, df in m.groupby("run")}


def assert_same_final_weights(a, b, group):
    """Every run of ``group`` ends with bit-identical final weights in stores a and b."""
    ids_a, ids_b = (s.runs(group=group).set_index("name")["id"] for s in (a, b))
    assert sorted(ids_a.index) == sorted(ids_b.index)
    for name in ids_a.index:
        wa = a.get_run(ids_a[name]).load_tensors("final")
        wb = b.get_run(ids_b[name]).load_tensors("final")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def kill_after_checkpoint(store, pattern, killed, timeout=300):
    """Wait for a run matching ``pattern`` to have a checkpoint, SIGKILL the process of its
    last session and append its pid to ``killed`` (run in a thread beside a sweep)."""
    import json
    import os
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and not killed:
        for env in store.root.glob(f"runs/{pattern}/environment.json"):
            if list(env.parent.glob("checkpoints/step_*.pt")):
                pid = json.loads(env.read_text())["sessions"][-1]["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.02)


def test_product_zip_and_seeds_expand_to_every_combination(tmp_path):
    (tmp_path / "base.toml").write_text('[data]\nname = "digits"\ndownload = false\n'
                                        '[train]\nepochs = 3\n')
    (tmp_path / "grid.toml").write_text("""
name = "g"
seeds = [0, 1, 2]
[base]
include = "base.toml"
train.keep_checkpoints = 3
[product]
"optim.lr" = [0.05, 0.1]
model.width = [16, 32]
[[zip]]
"optim.batch_size" = [32, 64]
"optim.momentum" = [0.0, 0.9]
""")
    sweep = load_grid(tmp_path / "grid.toml")
    assert sweep.swept == ["optim.lr", "model.width", "optim.batch_size", "optim.momentum", "seed"]
    got = [(c.optim.lr, c.model.width, c.optim.batch_size, c.optim.momentum, c.seed)
           for c in sweep.configs]
    want = [(lr, w, b, m, s) for lr, w, (b, m), s in itertools.product(
        [0.05, 0.1], [16, 32], [(32, 0.0), (64, 0.9)], [0, 1, 2])]
    assert got == want  # 24 points, seeds innermost
    c = sweep.configs[5]
    assert (c.group, c.data.name, c.train.epochs, c.train.keep_checkpoints) == ("g", "digits", 3, 3)
    assert c.name == "g_lr-0.05_width-16_batch_size-64_momentum-0.9_seed-2"
    assert len({c.name for c in sweep.configs}) == 24
    # --set: a grid key, and a base field
    sweep = load_grid(tmp_path / "grid.toml", ["seeds=[7]", "train.epochs=1"])
    assert len(sweep.configs) == 8
    assert {(c.seed, c.train.epochs) for c in sweep.configs} == {(7, 1)}


def test_long_run_names_are_cut_to_80_safe_characters():
    configs = expand_grid({"name": "long", "base": TINY, "product": {
        "data": {"normalize": ["unit", "center"], "label_noise": [0.1]},
        "optim": {"lr_schedule": {"kind": ["cosine"], "milestones": [[10, 20]]},
                  "batch_schedule": {"kind": ["step"], "milestones": [[5]]},
                  "weight_decay": [1e-4]}}})
    names = [c.name for c in configs]
    assert all(len(n) <= 80 for n in names) and len(set(names)) == 2
    assert "lr_schedule.kind-cosine" in names[0]  # "kind" alone would be ambiguous


@pytest.mark.parametrize("table, message", [
    ('[product]\n"optim.lr" = [0.1, 0.2, -1]', r"grid\.toml: product\.optim\.lr\[2\]: must be > 0"),
    ('seeds = [0, -1]', r"grid\.toml: seeds\[1\]: must be >= 0"),
    ('[product]\n"optim.lrr" = [0.1]', r"grid\.toml: product\.optim\.lrr: unknown config field"),
    ('[[zip]]\n"optim.lr" = [0.1, 0.2]\n"seed" = [1]', r"grid\.toml: zip\[0\]: .*equal lengths"),
    ('[[zip]]\n"model.width" = [16, "x"]', r"grid\.toml: zip\[0\]\.model\.width\[1\]: expected an"),
    ('[product]\n"seed" = [1, 1]', r"grid\.toml: points 0 and 1 are the same run"),
])
def test_bad_grid_is_one_config_error_naming_the_field_and_writes_nothing(tmp_path, table,
                                                                           message):
    grid = tmp_path / "grid.toml"
    grid.write_text('name = "bad"\n' + table + "\n[base]\ndata.name = 'digits'\n")
    with pytest.raises(ConfigError, match=message):
        cli("--store", str(tmp_path / "store"), "sweep", str(grid))
    assert not (tmp_path / "store").exists()


def test_cli_dry_run_writes_nothing_then_sweep_then_dry_run_shows_skips(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('seeds = [0, 1]\n[base]\ndata.name = "digits"\ndata.download = false\n'
                    'model.depth = 1\nmodel.width = 16\ntrain.epochs = 3\n')
    store = ("--store", str(tmp_path / "store"))
    assert cli(*store, "sweep", str(grid), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "sweep grid: 2 points" in out and "new     seed=1" in out
    assert not (tmp_path / "store").exists()
    assert cli(*store, "-q", "sweep", str(grid), "--set", "train.epochs=1") == 0
    assert capsys.readouterr().out.strip() == ("sweep grid: 2 points: 2 finished, 0 diverged, "
                                               "0 failed, 0 skipped")
    assert cli(*store, "sweep", str(grid), "--set", "train.epochs=1", "--dry-run") == 0
    assert capsys.readouterr().out.count("skip ") == 2


def test_rerunning_a_finished_sweep_skips_every_point(store):
    sweep = tiny_sweep(product={"optim.lr": [0.05, 0.1]})
    first = run_sweep(sweep, store, progress=False)
    assert (first.finished, first.skipped) == (2, 0)
    second = run_sweep(sweep, store, progress=False)
    assert (second.finished, second.skipped, second.failed) == (0, 2, 0)
    assert second.run_ids == first.run_ids
    assert len(store.runs(group="s")) == 2


def test_a_diverging_point_is_recorded_and_the_others_finish(store, capsys):
    sweep = tiny_sweep(product={"optim.lr": [1e4, 0.05]}, train={**TINY["train"], "loss": "mse"})
    result = run_sweep(sweep, store)
    assert (result.diverged, result.finished, result.failed) == (1, 1, 0)
    status = store.runs(group="s").set_index("id")["status"]
    assert status[result.run_ids[0]] == "diverged" and status[result.run_ids[1]] == "finished"
    out = capsys.readouterr().out
    assert "diverged" in out and "test/acc=" in out
    assert run_sweep(sweep, store, progress=False).skipped == 2  # diverged is done, too


def test_a_failing_point_is_marked_failed_and_retried_on_rerun(store, monkeypatch):
    real_loop = loop.Trainer._loop

    def flaky(self, *args, **kwargs):
        if self.cfg.optim.lr == 0.2:
            raise RuntimeError("boom")
        return real_loop(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "_loop", flaky)
    sweep = tiny_sweep(product={"optim.lr": [0.1, 0.2, 0.3]})
    result = run_sweep(sweep, store, progress=False)
    assert result.statuses == ["finished", "failed", "finished"]
    assert "boom" in result.messages[1]
    failed = store.get_run(result.run_ids[1])
    assert failed.status == "failed" and "boom" in failed.message

    monkeypatch.setattr(loop.Trainer, "_loop", real_loop)
    again = run_sweep(sweep, store, progress=False)
    assert (again.skipped, again.finished, again.resumed) == (2, 1, 1)
    assert again.run_ids == result.run_ids
    assert store.get_run(result.run_ids[1]).status == "finished"


def test_worker_processes_match_in_process_bit_for_bit(tmp_path):
    from sgdlab.store import Store

    sweep = tiny_sweep(product={"optim.lr": [0.05, 0.1]}, seeds=[0, 1])
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    assert torch.get_num_threads() == 1  # conftest; the workers get threads=1 below
    run_sweep(sweep, a, workers=0, progress=False)
    result = run_sweep(sweep, b, workers=2, threads=1, progress=False)
    assert result.finished == 4
    ma, mb = final_metrics(a, "s"), final_metrics(b, "s")
    assert ma == mb, [(r, n) for r in ma for n in ma[r] if ma[r][n] != mb[r].get(n)]
    ids_a, ids_b = (s.runs(group="s").set_index("name")["id"] for s in (a, b))
    for name in ids_a.index:
        wa = a.get_run(ids_a[name]).load_tensors("final")
        wb = b.get_run(ids_b[name]).load_tensors("final")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_killed_sweep_resumes_its_runs_instead_of_duplicating_them(store):
    sweep = tiny_sweep(product={"optim.lr": [0.05, 0.1]}, train={**TINY["train"], "epochs": 2})
    first = run_sweep(sweep, store, progress=False)
    before = final_metrics(store, "s")
    # simulate a kill during the second epoch: status running, no final weights, and only
    # the first epoch's checkpoint left
    run = store.get_run(first.run_ids[1])
    as_killed(run)
    (run.path / "final.safetensors").unlink()
    steps = run.checkpoint_steps()
    assert len(steps) == 2
    (run.path / "checkpoints" / f"step_{steps[-1]:09d}.pt").unlink()
    assert [t.action for t in plan_sweep(sweep, store)] == ["skip", "resume"]

    again = run_sweep(sweep, store, progress=False)
    assert (again.skipped, again.finished, again.resumed) == (1, 1, 1)
    assert again.run_ids == first.run_ids
    assert len(store.runs(group="s")) == 2
    assert run.status == "finished" and (run.path / "final.safetensors").exists()
    assert final_metrics(store, "s") == before  # the same trajectory, continued


def test_sweep_table_and_curves(store, capsys):
    sweep = tiny_sweep(product={"optim.lr": [0.1, 0.05]}, seeds=[0, 1])
    result = run_sweep(sweep, store, progress=False)
    table = sweep_table(store, "s")
    assert list(table.columns) == ["run", "name", "status", "optim.lr", "seed",
                                   "train/loss", "test/acc"]
    assert table[["optim.lr", "seed"]].values.tolist() == [[0.05, 0], [0.05, 1], [0.1, 0],
                                                           [0.1, 1]]
    assert table["test/acc"].between(0, 1).all()
    best = sweep_table(store, "s", metrics=["train/batch_loss"], at="min")
    last = sweep_table(store, "s", metrics=["train/batch_loss"])
    assert (best["train/batch_loss"] <= last["train/batch_loss"]).all()
    assert best["train/batch_loss"].notna().all()

    curves = sweep_curves(store, "s", "train/batch_loss")
    assert sorted(curves.columns) == sorted(result.run_ids)
    assert list(curves.index) == list(range(1437 // 128))

    assert cli("--store", str(store.root), "sweep-table", "s", "--metric", "test/acc") == 0
    out = capsys.readouterr().out
    assert "optim.lr" in out and "test/acc" in out and "train/loss" not in out


def test_a_sweep_killed_with_sigkill_resumes_to_the_same_results(tmp_path, store):
    """A real SIGKILL of `sgdlab sweep` in its second run; the rerun skips the first run,
    resumes the second from its checkpoint, trains the third, and every run ends as in an
    uninterrupted in-process sweep."""
    import os
    import signal
    import subprocess
    import sys
    import time

    grid = tmp_path / "grid.toml"
    grid.write_text('name = "k"\n[base]\nseed = 1\n[base.data]\nname = "digits"\n'
                    'download = false\n[base.model]\nname = "mlp"\ndepth = 2\nwidth = 128\n'
                    '[base.optim]\nbatch_size = 8\nmomentum = 0.9\n[base.train]\nepochs = 6\n'
                    'checkpoint_every = 100\neval_every = 300\n'
                    '[product]\n"optim.lr" = [0.01, 0.02, 0.03]\n')
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sgdlab.cli", "--store", str(killed), "-q", "sweep", str(grid)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:  # the second run (lr 0.02) has a checkpoint at step >= 200
        steps = [int(p.stem.split("_")[1])
                 for p in killed.glob("runs/*lr-0.02*/checkpoints/step_*.pt")]
        if any(s >= 200 for s in steps):
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from sgdlab.store import Store

    left = Store(killed).runs(group="k").sort_values("name")
    assert left["status"].tolist() == ["finished", "running"]  # lr 0.01 done, 0.02 cut
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    run_sweep(load_grid(grid), store, progress=False)  # the uninterrupted reference
    done = Store(killed)
    assert done.runs(group="k")["status"].tolist() == ["finished"] * 3
    assert final_metrics(done, "k") == final_metrics(store, "k")
    assert_same_final_weights(store, done, "k")
