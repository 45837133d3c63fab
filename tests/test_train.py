"""The trainer: determinism, schedules, evaluation subsets, divergence, resume."""

import math

import pytest
import torch
from conftest import as_killed, small_config
from safetensors.torch import load_file

from sgdlab.config import BatchScheduleConfig, LRScheduleConfig
from sgdlab.optim.schedules import batch_size_at, cyclic_factor, lr_factor
from sgdlab.train import per_example_loss, train


def final_params(run):
    return load_file(run.path / "final.safetensors")


def test_same_seed_same_trajectory_different_seed_differs(store):
    a = train(small_config(), store)
    b = train(small_config(), store)
    c = train(small_config(seed=1), store)
    pa, pb, pc = final_params(a), final_params(b), final_params(c)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    assert a.status == "finished"


def test_training_reduces_loss_and_logs_metrics(store):
    run = train(small_config(**{"train.epochs": 5}), store)
    m = store.metrics(runs=[run.id])
    loss = m[m["name"] == "train/loss"].sort_values("step")["value"].to_numpy()
    assert loss[-1] < 0.5 * loss[0]
    steps_per_epoch = 1437 // 64  # digits: 1,437 training images, last partial batch dropped
    batch = m[m["name"] == "train/batch_loss"]
    assert len(batch) == 5 * steps_per_epoch
    assert sorted(batch["step"]) == list(range(5 * steps_per_epoch))
    acc = m[m["name"] == "test/acc"]["value"].iloc[-1]
    assert acc > 0.8


def test_label_noise_reports_clean_and_corrupted_subsets(store):
    run = train(small_config(**{"data.label_noise": 0.3}), store)
    names = set(store.metrics(runs=[run.id])["name"])
    assert {"clean/acc", "corrupted/acc", "corrupted/acc_true", "clean/loss"} <= names


@pytest.mark.parametrize("eval_every", [0, 1, 3])
def test_non_finite_loss_is_recorded_as_diverged(store, eval_every):
    cfg = small_config(**{"optim.lr": 1e4, "optim.momentum": 0.0, "train.loss": "mse",
                          "train.epochs": 20, "train.eval_every": eval_every})
    run = train(cfg, store)
    assert run.status == "diverged"
    row = store.runs().set_index("id").loc[run.id]
    assert row["status"] == "diverged"
    step = int(row["diverged_step"])
    losses = store.metrics(runs=[run.id], names=["train/batch_loss"]).set_index("step")["value"]
    assert all(math.isfinite(v) for v in losses[losses.index < step])
    assert not math.isfinite(losses[step])
    assert not (run.path / "final.safetensors").exists()


def test_full_batch_is_one_step_per_epoch(store):
    run = train(small_config(**{"optim.batch_size": 0, "train.epochs": 4}), store)
    steps = store.metrics(runs=[run.id], names=["train/batch_loss"])["step"].tolist()
    assert sorted(steps) == [0, 1, 2, 3]


def test_batch_larger_than_dataset_is_a_config_error(store):
    from sgdlab.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.batch_size"):
        train(small_config(**{"optim.batch_size": 5000}), store)
    assert store.runs().empty


def test_mse_is_half_squared_error_to_one_hot():
    out = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([1, 2])
    expected = torch.tensor([0.5 * (1 + 1 + 0), 0.5 * 1.0])
    assert torch.allclose(per_example_loss("mse", out, y), expected)


def test_lr_schedules():
    step = LRScheduleConfig(kind="step", milestones=[2, 4], gamma=0.1)
    assert [lr_factor(step, 0, e, 100) for e in range(6)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = LRScheduleConfig(kind="cosine", min_factor=0.1)
    assert lr_factor(cos, 0, 0, 100) == pytest.approx(1.0)
    assert lr_factor(cos, 50, 0, 100) == pytest.approx(0.55)
    assert lr_factor(cos, 100, 0, 100) == pytest.approx(0.1)
    warm = LRScheduleConfig(kind="constant", warmup=10)
    assert lr_factor(warm, 0, 0, 100) == pytest.approx(0.1)
    assert lr_factor(warm, 9, 0, 100) == pytest.approx(1.0)
    assert cyclic_factor(0, 4, 0.2) == pytest.approx(1.0)
    assert cyclic_factor(2, 4, 0.2) == pytest.approx(0.2)
    assert cyclic_factor(1, 4, 0.2) == pytest.approx(0.6)


def test_cyclic_batch_size_matches_cyclic_lr_ratio():
    """eta*c(e)/S == eta/(S/c(e)) up to the rounding of the batch size."""
    lr = LRScheduleConfig(kind="cyclic", period=4, min_factor=0.25)
    bs = BatchScheduleConfig(kind="cyclic", period=4, min_factor=0.25)
    for e in range(8):
        ratio_lr = 0.1 * lr_factor(lr, 0, e, 100) / 64
        ratio_bs = 0.1 / batch_size_at(bs, 64, e, 10_000)
        assert ratio_lr == pytest.approx(ratio_bs, rel=0.02)
    grow = BatchScheduleConfig(kind="step", milestones=[1, 3], factor=2.0)
    assert [batch_size_at(grow, 32, e, 100) for e in range(5)] == [32, 64, 64, 100, 100]


def test_evaluation_batch_defaults_to_the_device():
    """eval_batch_size = 0: 4096 examples per pass on CUDA, 128 on a CPU."""
    from types import SimpleNamespace

    from sgdlab.evaluation import default_eval_batch, evaluate

    assert default_eval_batch(torch.device("cuda")) == 4096
    assert default_eval_batch(torch.device("cpu")) == 128
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=g), torch.randint(0, 3, (300,), generator=g)
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x[:50], y_test=y[:50],
                           task="classification", corrupted=torch.zeros(300, dtype=torch.bool))
    model = torch.nn.Linear(5, 3)
    assert evaluate(model, "cross_entropy", data) == evaluate(model, "cross_entropy", data, 128)


def test_session_liveness_from_host_pid_and_start_time():
    import os
    import socket
    import subprocess
    import sys

    from sgdlab.train.environment import environment, session_alive

    me = environment(torch.device("cpu"), 0)
    assert me["pid"] == os.getpid() and session_alive(me) is True
    assert session_alive({**me, "host": me["host"] + "-elsewhere"}) is None
    assert session_alive({"host": socket.gethostname()}) is None  # no process recorded
    if me["pid_start"] is not None:  # Linux: a recycled pid is not the run's process
        assert session_alive({**me, "pid_start": me["pid_start"] - 1}) is False
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert session_alive({**me, "pid": int(done.stdout)}) is False


def test_resume_refuses_a_run_whose_process_is_alive(store):
    from sgdlab.errors import SgdlabError
    from sgdlab.train import resume
    from sgdlab.train.environment import environment

    run = train(small_config(), store)
    sessions = run.read_json("environment")["sessions"]
    assert len(sessions) == 1 and sessions[0]["pid"] is not None
    run.set_status("running")  # as if this process were still training it
    run.write_json("environment", {"sessions": [environment(torch.device("cpu"), 0)]})
    with pytest.raises(SgdlabError, match=r"still running \(pid \d+\)"):
        resume(store, run.id)
    run.write_json("environment", {"sessions": sessions})
    as_killed(run)
    assert resume(store, run.id).status == "finished"  # a gone process: resumed
