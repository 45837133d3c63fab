"""The run folder: arrays, checkpoints, final weights, JSON results, resume truncation."""

import random
import re

import numpy as np
import pytest
import torch

from sgdlab.store import StoreError


@pytest.fixture
def run(store):
    return store.create_run({"optim": {"lr": 0.1}}, name="files")


def _no_temporaries(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_arrays_round_trip(run):
    for step in (20, 3, 100):
        run.save_arrays("spectrum", step, {"eig": np.arange(step, dtype=np.float32),
                                           "file": torch.ones(2, 3) * step})
    run.save_arrays("grid", 0, {"loss": np.eye(3)})
    assert run.array_names() == ["grid", "spectrum"] and run.array_steps("spectrum") == [3, 20, 100]
    loaded = run.load_arrays("spectrum")
    assert [s for s, _ in loaded] == [3, 20, 100]
    step, arrays = loaded[1]
    assert arrays["eig"].dtype == np.float32 and np.array_equal(arrays["eig"], np.arange(20))
    assert np.array_equal(arrays["file"], np.full((2, 3), 20.0))
    assert [s for s, _ in run.load_arrays("spectrum", steps=[100])] == [100]
    assert (run.path / "arrays" / "spectrum" / "000000020.npz").is_file()
    assert _no_temporaries(run.path)
    with pytest.raises(StoreError, match="no arrays 'nope'.*grid, spectrum"):
        run.load_arrays("nope")
    with pytest.raises(StoreError, match="invalid array name"):
        run.save_arrays("../escape", 0, {"x": np.zeros(1)})
    with pytest.raises(StoreError, match="dtype object"):
        run.save_arrays("bad", 0, {"x": np.array([{}], dtype=object)})


def _state(seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"step": seed, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "rng_cpu": torch.get_rng_state(), "py_random": random.getstate(),
            "probes": {"eigvecs": [torch.randn(5)], "name": "hessian", "shape": torch.Size([5]),
                       "dtype": torch.float64, "ok": True, "none": None}}


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_checkpoint_round_trip_and_keep(run):
    assert run.load_checkpoint() is None and run.checkpoint_steps() == []
    for step in range(1, 6):
        run.save_checkpoint(step, _state(step), keep=2)
    assert run.checkpoint_steps() == [4, 5]
    assert (run.path / "checkpoints" / "step_000000005.pt").is_file()
    _assert_same(run.load_checkpoint(), _state(5))
    _assert_same(run.load_checkpoint(4), _state(4))
    run.save_checkpoint(6, _state(6), keep=None)
    run.save_checkpoint(7, _state(7), keep=None)
    assert run.checkpoint_steps() == [4, 5, 6, 7] and _no_temporaries(run.path)
    with pytest.raises(StoreError, match="step_000000001.pt"):
        run.load_checkpoint(1)
    with pytest.raises(ValueError, match="keep"):
        run.save_checkpoint(8, {}, keep=0)


@pytest.mark.parametrize("value, kind", [(np.zeros(3), "numpy.ndarray"),
                                         (b"\x00", "builtins.bytes"), ({1, 2}, "builtins.set"),
                                         (frozenset({1}), "builtins.frozenset"),
                                         (1j, "builtins.complex")])
def test_checkpoint_refuses_what_some_torch_would_not_load(run, value, kind):
    """torch 2.4's weights_only unpickler refuses bytes, sets and complex (2.13 takes some):
    a checkpoint must load on every torch >= 2.4, so saving them fails before writing."""
    with pytest.raises(TypeError, match=rf"state\['rng'\]\[0\] is a {re.escape(kind)},"):
        run.save_checkpoint(1, {"rng": [value]})
    assert run.checkpoint_steps() == []


def test_checkpoint_is_loaded_with_weights_only(run):
    with pytest.raises(TypeError, match=r"state\['rng'\].*numpy.ndarray"):
        run.save_checkpoint(1, {"rng": np.zeros(3)})
    assert run.checkpoint_steps() == []
    path = run.path / "checkpoints" / "step_000000002.pt"
    path.parent.mkdir()
    torch.save({"fn": np.zeros(3)}, path)  # written behind the store's back
    with pytest.raises(StoreError, match="unreadable checkpoint .*step_000000002.pt"):
        run.load_checkpoint(2)


def test_corrupt_newest_checkpoint_falls_back(run):
    run.save_checkpoint(10, _state(10))
    run.save_checkpoint(20, _state(20))
    newest = run.path / "checkpoints" / "step_000000020.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="step_000000020.pt"):
        state = run.load_checkpoint()
    assert state["step"] == 10
    (run.path / "checkpoints" / "step_000000010.pt").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning), pytest.raises(StoreError, match="no readable checkpoint"):
        run.load_checkpoint()


def test_truncate_on_resume(run, store):
    for step in range(10):
        run.log(step, {"loss": float(step), "acc": 0.5})
        if step % 3 == 0:
            run.save_arrays("probe", step, {"x": np.full(2, step)})
    assert run.truncate_metrics(after_step=4) == 10
    assert run.truncate_arrays(after_step=4) == 2
    assert run.array_steps("probe") == [0, 3]
    for step in range(5, 8):  # the resumed trajectory
        run.log(step, {"loss": -float(step)})
    loss = run.metrics("loss")
    assert loss["step"].tolist() == list(range(8)) and loss["value"].iloc[-1] == -7.0
    assert run.metrics("acc")["step"].tolist() == list(range(5))


def test_tensors_round_trip(run):
    w = torch.randn(4, 3)
    tensors = {"layer.weight": w, "tied.weight": w, "view": w.t(), "bias": torch.zeros(3)}
    run.save_tensors("final", tensors, metadata={"step": "7"})
    loaded = run.load_tensors("final")
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert (run.path / "final.safetensors").is_file() and _no_temporaries(run.path)
    with pytest.raises(StoreError, match="no file missing.safetensors"):
        run.load_tensors("missing")


def test_json_round_trip(run):
    result = {"lambda_max": np.float64(2.5), "curve": np.arange(3), "ok": True,
              "nan": float("nan")}
    run.write_json("result", result)
    back = run.read_json("result.json")
    assert back["lambda_max"] == 2.5 and back["curve"] == [0, 1, 2] and back["nan"] != back["nan"]
    assert run.read_json("config") == {"optim": {"lr": 0.1}}
    with pytest.raises(StoreError, match="config.json"):
        run.write_json("config", {})
    with pytest.raises(StoreError, match=f"run '{run.id}' has no file absent.json"):
        run.read_json("absent")


def test_arrays_are_compressed(run):
    """Array files are deflated (np.savez_compressed's format): a compressible array takes
    a fraction of its bytes, and np.load reads it back exactly."""
    import zipfile

    values = np.repeat(np.arange(100, dtype=np.float32), 1000)  # 400 kB, highly redundant
    run.save_arrays("history", 7, {"theta": values})
    path = run.path / "arrays" / "history" / "000000007.npz"
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    assert path.stat().st_size < values.nbytes / 20
    with np.load(path, allow_pickle=False) as f:
        assert np.array_equal(f["theta"], values)
