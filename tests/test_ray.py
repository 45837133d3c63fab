"""The Ray executor on a local Ray cluster: the same runs as in-process; a trial whose
worker process is killed mid-run is retried and resumes from its last checkpoint, and no
run is lost or duplicated. Skipped when Ray is not installed."""

import os
import threading

import pytest

pytest.importorskip("ray")

from test_sweep import TINY, final_metrics, kill_after_checkpoint, tiny_sweep  # noqa: E402

from sgdlab.store import Store  # noqa: E402
from sgdlab.sweep import InProcess, run_sweep  # noqa: E402
from sgdlab.sweep.ray_executor import RayExecutor  # noqa: E402

LOCAL = {"num_cpus": 2, "object_store_memory": 100 * 2**20}


def test_a_trial_whose_worker_is_killed_is_retried_and_resumes(store, tmp_path):
    sweep = tiny_sweep(product={"optim.lr": [0.01, 0.02]}, optim={"batch_size": 8},
                       train={**TINY["train"], "epochs": 4, "checkpoint_every": 100})
    killed = []
    killer = threading.Thread(target=kill_after_checkpoint, args=(store, "*lr-0.01*", killed))
    killer.start()
    result = run_sweep(sweep, store, progress=False,
                       executor=RayExecutor(threads=1, init_options=LOCAL))
    killer.join()
    assert killed and killed[0] != os.getpid()
    assert result.statuses == ["finished", "finished"]
    assert len(store.runs(group="s")) == 2  # the retried trial continued its run
    run = store.get_run(result.run_ids[0])
    sessions = run.read_json("environment")["sessions"]
    assert len(sessions) == 2 and sessions[1]["from_step"] >= 100  # resumed, not restarted
    reference = Store(tmp_path / "ref")
    run_sweep(sweep, reference, progress=False, executor=InProcess(progress=False))
    assert final_metrics(store, "s") == final_metrics(reference, "s")


def test_a_point_that_fails_on_its_node_is_recorded_failed(store):
    sweep = tiny_sweep(product={"optim.lr": [0.05]}, data={"name": "fashion-mnist",
                                                           "download": False})
    result = run_sweep(sweep, store, progress=False,
                       executor=RayExecutor(threads=1, init_options=LOCAL))
    assert result.statuses == ["failed"]
    assert "fashion-mnist" in result.messages[0]
    assert store.get_run(result.run_ids[0]).status == "failed"
