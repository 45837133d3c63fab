"""A sweep killed with SIGKILL in the middle of a run, then rerun, ends with the same runs
and metrics as an uninterrupted sweep, for every executor (Ray: when it is installed)."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
from test_ensemble import metrics_close
from test_sweep import assert_same_final_weights, final_metrics

from sgdlab.store import Store
from sgdlab.sweep import InProcess, load_grid, run_sweep

GRID = '''name = "k"
[base]
seed = 1
device = "cpu"
[base.data]
name = "digits"
download = false
[base.model]
name = "mlp"
depth = 2
width = 64
[base.optim]
batch_size = 8
momentum = 0.9
[base.train]
epochs = 4
checkpoint_every = 100
eval_every = 300
[product]
"optim.lr" = [0.01, 0.02]
'''

EXECUTORS = {
    "processes": ["--workers", "1", "--threads", "1"],
    "ensemble": ["--executor", "ensemble"],
    "ray": ["--executor", "ray", "--threads", "1"],
}


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_a_sigkilled_sweep_reruns_to_the_same_runs_and_metrics(tmp_path, executor):
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'sgdlab[ray]')")
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sgdlab.cli", "--store", str(killed), "-q", "sweep", str(grid),
           *EXECUTORS[executor]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # a run has a checkpoint at step >= 200 of its 716
        steps = [int(p.stem.split("_")[1]) for p in killed.glob("runs/*/checkpoints/step_*.pt")]
        if any(s >= 200 for s in steps):
            break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and everything it started
    proc.wait()
    left = Store(killed).runs(group="k")
    assert "running" in left["status"].tolist()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr
    reference = Store(tmp_path / "reference")
    run_sweep(load_grid(grid), reference, progress=False, executor=InProcess(progress=False))
    done = Store(killed)
    assert done.runs(group="k")["status"].tolist() == ["finished"] * 2  # none lost or doubled
    if executor == "ensemble":  # stacked products: equal to rounding, not bit for bit
        metrics_close(final_metrics(done, "k"), final_metrics(reference, "k"), rtol=1e-4)
        return
    assert final_metrics(done, "k") == final_metrics(reference, "k")
    assert_same_final_weights(reference, done, "k")
