"""The rough edges a new user met, each fixed and kept fixed: what `show` and `sweep-table`
say of a diverged run, help texts, a refused checkpoint in one line, progress while a probe
runs and without a terminal."""

from __future__ import annotations

import os

import torch
from conftest import as_killed, small_config

from sgdlab import cli
from sgdlab.store import Store
from sgdlab.train import train
from sgdlab.train.progress import Progress


def main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_and_sweep_table_name_a_diverged_run(store, capsys):
    from sgdlab.sweep import make_sweep, run_sweep

    sweep = make_sweep({"name": "lrs", "base": {"data": {"name": "digits"},
                                                "train": {"epochs": 1, "loss": "mse"}},
                        "product": {"optim.lr": [0.05, 1e4]}})
    run_sweep(sweep, store, progress=False)
    bad = store.find_runs(status="diverged")[0]
    code, out, _ = main(["--store", str(store.root), "show", bad.id], capsys)
    assert code == 0 and f"diverged at step {bad.diverged_step}: non-finite loss" in out
    code, out, _ = main(["--store", str(store.root), "sweep-table", "lrs"], capsys)
    assert code == 0 and f"diverged@{bad.diverged_step}" in out and "finished" in out


def test_help_texts_for_run_arguments_and_ls_filters(capsys):
    for command, wanted in (("show", "run id or unique prefix"), ("report", "run id"),
                            ("ls", "only runs with this status"), ("export", "--to KIND DEST")):
        code, out, _ = main([command, "--help"], capsys)
        assert code == 0 and wanted in out, (command, out)
    code, out, _ = main(["ls", "--help"], capsys)
    assert "only the runs of this group" in " ".join(out.split())


def test_a_malicious_checkpoint_is_refused_in_one_line(store, capsys, tmp_path):
    run = train(small_config(**{"train.epochs": 1}), store, progress=False)
    as_killed(run)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (path,) = (run.path / "checkpoints").glob("step_*.pt")
    torch.save({"model": Evil()}, path)
    code, _, err = main(["--store", str(store.root), "resume", run.id], capsys)
    assert code == 2 and not marker.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "never runs code" in lines[0], err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    assert len(lines[0]) < 400 and Store(store.root).get_run(run.id).status == "running"


def test_progress_says_what_runs_and_prints_without_a_terminal(capsys, monkeypatch):
    import sgdlab.train.progress as progress

    clock = iter(range(0, 1000, 11))
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    bar = Progress(78, "demo")  # stderr is captured: not a terminal
    bar.doing("measuring hessian")
    bar.done("hessian 2.1 s")
    bar.update(20, torch.tensor(0.5))
    bar.close()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "demo: training 78 steps"
    assert any("step 0/78" in line and "measuring hessian" in line for line in err)
    assert any("step 20/78, loss 0.5000" in line for line in err) and err[-1].endswith("done")
    assert any("step 20/78" in line and "last: hessian 2.1 s" in line for line in err)
    assert Progress(5, "quiet", enabled=False) and capsys.readouterr().err == ""
