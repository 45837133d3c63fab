"""The command line: bad input, SIGKILL and resume, listing, reports."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sgdlab.probes import Probe, Schedule
from sgdlab.store import Store

GOOD = """
name = "cli"
[data]
name = "digits"
download = false
[model]
name = "mlp"
depth = 1
width = 16
[optim]
lr = 0.05
batch_size = 64
[train]
epochs = 2
"""


def sgdlab(*args, store, env=None, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "sgdlab.cli", "--store", str(store), "-q", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def nothing_written(store: Path) -> bool:
    """The store folder was not even created: no index.sqlite, no runs/."""
    return not store.exists()


@pytest.mark.parametrize("overrides, field", [
    (["data.nope=1"], "data.nope"),
    (["optim.lr='fast'"], "optim.lr"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.lr=-0.1"], "optim.lr"),
    (["optim.batch_size=100000"], "optim.batch_size"),
    (["data.label_noise=1.5"], "data.label_noise"),
    (["data.input_corruption_fraction=-0.1"], "data.input_corruption_fraction"),
    (["model.name='transformer'"], "model.name"),
    (["train.epochs=0"], "train.epochs"),
    (["train.loss='hinge'"], "train.loss"),
    (["train.checkpoint_epochs=0"], "train.checkpoint_epochs"),
    (["probes=[{name='residual'}]"], "residual"),
    (["probes=[{name='hessian', every=0}]"], "probes[0].every"),
    (["probes=[{name='nope'}]"], "probes[0].name"),
    (["probes=[{name='weights'}, {name='hessian', k='a'}]"], "probes[1].k: expected an integer"),
    (["probes=[{name='hessian', k=0}]"], "probes[0].k: must be an integer >= 1, got 0"),
    (["probes=[{name='hessian', tol=1}]"], "probes[0].tol: must be in (0, 1)"),
    (["probes=[{name='hessian', trace='yes'}]"], "probes[0].trace: expected true or false"),
    (["probes=[{name='sharpest', n=0}]"], "probes[0].n: must be an integer >= 1"),
    (["probes=[{name='csr', split='val'}]"], "probes[0].split: must be 'train' or 'test'"),
    (["probes=[{name='stiffness', bins=2.5}]"], "probes[0].bins: expected an integer"),
    (["probes=[{name='gradient_noise', nope=1}]"], "probes[0].nope: unknown option"),
    (["data.n_train=100000"], "data.n_train"),
    (["data.name='fashion-mnist'", "data.file='/nonexistent/fm.npz'"], "/nonexistent/fm.npz"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, overrides, field):
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    store = tmp_path / "store"
    sets = [a for o in overrides for a in ("--set", o)]
    r = sgdlab("run", str(cfg), *sets, store=store)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert nothing_written(store)


def test_corrupted_data_file_and_bad_toml(tmp_path):
    bad = tmp_path / "fm.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    store = tmp_path / "store"
    r = sgdlab("run", str(cfg), "--set", "data.name='fashion-mnist'", "--set", f"data.file='{bad}'",
               store=store)
    assert r.returncode == 2 and str(bad) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken.toml"
    broken.write_text("[data\nname=")
    r = sgdlab("run", str(broken), store=store)
    assert r.returncode == 2 and "broken.toml" in r.stderr
    r = sgdlab("run", str(tmp_path / "missing.toml"), store=store)
    assert r.returncode == 2 and "missing.toml" in r.stderr
    r = sgdlab("resume", "no-such-run", store=store)
    assert r.returncode == 2 and "no-such-run" in r.stderr
    assert nothing_written(store)


def test_run_ls_show_report(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    store = tmp_path / "store"
    r = sgdlab("run", str(cfg), "--set", "data.label_noise=0.2", store=store)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split()[0]
    assert run_id in sgdlab("ls", store=store).stdout
    show = sgdlab("show", run_id[:8], store=store).stdout
    assert "finished" in show and "test/acc" in show
    r = sgdlab("report", run_id, store=store)
    page = Path(r.stdout.strip())
    assert r.returncode == 0 and page.exists()
    text = page.read_text()
    assert text.count("data:image/png;base64") >= 2 and run_id in text  # loss, accuracy
    nested = tmp_path / "new" / "folder" / "r.html"  # missing parent folders are created
    r = sgdlab("report", run_id, "-o", str(nested), store=store)
    assert r.returncode == 0 and r.stdout.strip() == str(nested) and nested.is_file(), r.stderr
    blocked = tmp_path / "a-file" / "r.html"  # a parent that is a file: cannot be written
    blocked.parent.write_text("")
    r = sgdlab("report", run_id, "-o", str(blocked), store=store)
    assert r.returncode == 2 and str(blocked) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_corrupted_cifar_archive_and_non_finite_pixels_are_one_line(tmp_path):
    import numpy as np

    junk = tmp_path / "cifar.tar.gz"
    junk.write_bytes(os.urandom(4096))
    x = np.random.default_rng(0).random((20, 28, 28)).astype(np.float32)
    x[2, 3, 4] = np.nan
    nan = tmp_path / "nan.npz"
    np.savez(nan, x_train=x, y_train=np.arange(20) % 10, x_test=x[:5], y_test=np.arange(5))
    store = tmp_path / "store"
    for name, path in (("cifar10", junk), ("fashion-mnist", nan)):
        r = sgdlab("run", "--set", f"data.name='{name}'", "--set", f"data.file='{path}'",
                   store=store)
        assert r.returncode == 2 and str(path) in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert nothing_written(store)


def test_error_messages_are_collapsed_to_one_line(tmp_path, monkeypatch, capsys):
    from sgdlab import cli
    from sgdlab.errors import SgdlabError

    def fails(args):
        raise SgdlabError("first line\n  second line\n")

    monkeypatch.setattr(cli, "cmd_ls", fails)
    assert cli.main(["--store", str(tmp_path / "s"), "ls"]) == 2
    assert capsys.readouterr().err == "sgdlab: error: first line second line\n"


def test_store_and_quiet_also_after_the_command(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD.replace("epochs = 2", "epochs = 1"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = tmp_path / "after"
    r = subprocess.run([sys.executable, "-m", "sgdlab.cli", "run", str(cfg), "--store", str(store),
                        "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and str(store) in r.stdout and r.stderr == "", r.stderr
    run_id = r.stdout.split()[0]
    assert len(Store(store).find_runs()) == 1
    # after the command it wins over the one before; absent, the one before is kept
    assert run_id in sgdlab("ls", "--store", str(store), store=tmp_path / "other").stdout
    assert run_id in sgdlab("show", run_id, store=store).stdout
    assert not (tmp_path / "other").exists()
    r = sgdlab("ls", "--no-such-option", store=store)  # argparse usage errors exit 2 too
    assert r.returncode == 2 and "--no-such-option" in r.stderr


class Interrupt(Probe):
    """Simulates a kill: a KeyboardInterrupt at step ``at``, inside training."""

    name = "interrupt"

    def __init__(self, at: int) -> None:
        super().__init__(Schedule(every=1))
        self.at = at

    def measure(self, ctx):
        if ctx.step == self.at:
            raise KeyboardInterrupt


def test_checkpoint_every_n_epochs_and_resume(tmp_path):
    from sgdlab.config import load_config
    from sgdlab.train import train

    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    sets = ["train.epochs=5", "train.checkpoint_epochs=2", "train.keep_checkpoints=10"]
    ref_store, store = tmp_path / "ref", tmp_path / "killed"
    r = sgdlab("run", str(cfg), *[a for s in sets for a in ("--set", s)], store=ref_store)
    assert r.returncode == 0, r.stderr
    (ref,) = Store(ref_store).find_runs()
    per_epoch = 1437 // 64  # digits: 1,437 training examples, batches of 64
    assert ref.checkpoint_steps() == [2 * per_epoch, 4 * per_epoch, 5 * per_epoch]

    with pytest.raises(KeyboardInterrupt):  # killed in epoch 4: the last checkpoint is epoch 2's
        train(load_config(cfg, sets), Store(store), probes=[Interrupt(3 * per_epoch + 5)],
              progress=False)
    (run,) = Store(store).find_runs()
    assert run.checkpoint_steps() == [2 * per_epoch]
    r = sgdlab("resume", run.id, store=store)
    assert r.returncode == 0, r.stderr
    assert run.checkpoint_steps() == ref.checkpoint_steps()
    sessions = run.read_json("environment")["sessions"]  # where each session ran
    assert [e["from_step"] for e in sessions] == [0, 2 * per_epoch]
    assert {e["device"] for e in sessions} == {"cpu"} and sessions[0]["torch"] == torch.__version__
    a = load_file(ref.path / "final.safetensors")
    b = load_file(run.path / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


KILL_CFG = """
name = "kill"
seed = 3
[data]
name = "digits"
download = false
[model]
name = "mlp"
depth = 3
width = 256
dropout = 0.1
[optim]
lr = 0.02
momentum = 0.9
batch_size = 8
[train]
epochs = 25
checkpoint_every = 150
eval_every = 400
"""


def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    cfg = tmp_path / "k.toml"
    cfg.write_text(KILL_CFG)
    ref_store, store = tmp_path / "ref", tmp_path / "killed"
    ref = sgdlab("run", str(cfg), store=ref_store, timeout=300)
    assert ref.returncode == 0, ref.stderr
    ref_id = ref.stdout.split()[0]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sgdlab.cli", "--store", str(store), "-q", "run",
                             str(cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        ckpts = list(store.glob("runs/*/checkpoints/step_*.pt"))
        if any(int(p.stem.split("_")[1]) >= 1500 for p in ckpts):
            break
        assert proc.poll() is None, "run finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = Store(store).find_runs()
    assert run.status == "running"
    assert not (run.path / "final.safetensors").exists()
    shown = sgdlab("show", run.id, store=store)
    assert f"pid {proc.pid} on" in shown.stdout and "is gone: killed" in shown.stdout

    r = sgdlab("resume", run.id[:10], store=store, timeout=300)
    assert r.returncode == 0, r.stderr
    a = load_file(Path(ref_store) / "runs" / ref_id / "final.safetensors")
    b = load_file(run.path / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = Store(ref_store).metrics(runs=[ref_id]).sort_values(["name", "step"])
    mb = Store(store).metrics(runs=[run.id]).sort_values(["name", "step"])
    assert ma[["step", "name", "value"]].to_numpy().tolist() == \
        mb[["step", "name", "value"]].to_numpy().tolist()
    assert json.loads(json.dumps(Store(store).get_run(run.id).status)) == "finished"
