"""`sgdlab landscape RUN ...`: a stored run rebuilt, its slices, lines and trajectory plane
equal to sgdlab.landscape on the same model and data, stored as arrays, drawn in its
report; bad input is one line, exit 2, nothing written."""

import numpy as np
import pytest
import torch
from conftest import small_config

from sgdlab.cli import main
from sgdlab.landscape import PathValues, Slice, evaluate_points, fixed_subset, loss_slice
from sgdlab.probes.base import Schedule
from sgdlab.probes.trajectory import Trajectory
from sgdlab.train import train
from sgdlab.train.restore import restore


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs of one architecture (one with a parameter history), one of
    another architecture and one that never finished."""
    from sgdlab.store import Store

    store = Store(tmp_path_factory.mktemp("landscape") / "store")
    a = train(small_config(name="a", **{"train.epochs": 2}), store,
              probes=[Trajectory(Schedule(every=9), dtype="float16")])
    b = train(small_config(name="b", seed=1, **{"train.epochs": 2}), store, probes=[])
    wide = train(small_config(name="wide", **{"train.epochs": 1, "model.width": 48}), store,
                 probes=[])
    broken = store.create_run(small_config(name="broken").to_dict(), name="broken")
    broken.set_status("failed", message="killed before the end")
    return store, a, b, wide, broken


def cli(store, *args):
    return main(["--store", str(store.root), "-q", "landscape", *args])


def tree(run):
    return sorted(str(p.relative_to(run.path)) for p in run.path.rglob("*"))


def test_a_plane_equals_the_landscape_layer_on_the_rebuilt_run(runs, capsys):
    store, a, *_ = runs
    assert cli(store, a.id, "slice", "--num", "7", "--subset", "300") == 0
    out = capsys.readouterr().out
    assert "landscape-plane-random: 49 points" in out and "report:" in out
    (step, arrays), = a.load_arrays("landscape-plane-random")
    s = Slice.from_arrays(arrays)
    model, data, loss_fn = restore(a)
    assert step == 2 * (1437 // 64)
    subset = fixed_subset((data.x_train, data.y_train), 300, 0)
    ref = loss_slice(model, loss_fn, subset, [np.linspace(-1, 1, 7)] * 2, seed=0)
    np.testing.assert_array_equal(s.loss, ref.loss)
    torch.testing.assert_close(s.directions.vectors, ref.directions.vectors)
    assert s.meta["num_examples"] == 300 and s.meta["run"] == a.id
    html = (a.path / "report.html").read_text()
    assert "Landscape plane (plane-random): filter-normalized random directions (seed 0)" in html


def test_a_second_run_on_the_same_directions_and_a_hessian_line(runs, capsys):
    store, a, b, *_ = runs
    assert cli(store, a.id, "slice", "--dims", "1", "--num", "5", "--name", "first") == 0
    stored = a.path / "arrays" / "landscape-first" / f"{2 * (1437 // 64):09d}.npz"
    assert cli(store, b.id, "slice", "--dims", "1", "--num", "5", "--directions", str(stored),
               "--name", "same") == 0
    (_, first), = a.load_arrays("landscape-first")
    (_, same), = b.load_arrays("landscape-same")
    np.testing.assert_array_equal(first["directions"], same["directions"])
    assert Slice.from_arrays(same).directions.recipes == [{"kind": "given", "name": None}]
    assert cli(store, a.id, "slice", "--dims", "1", "--directions", "hessian", "--num", "5",
               "--subset", "200") == 0
    (_, line), = a.load_arrays("landscape-line-hessian")
    rec = Slice.from_arrays(line).directions.recipes[0]
    assert rec["kind"] == "hessian" and rec["eigenvalue"] > 0
    assert np.argmin(line["loss"]) == 2  # the final point is a minimum along its sharpest line


def test_the_line_to_another_run_has_their_losses_at_its_ends(runs, capsys):
    store, a, b, *_ = runs
    assert cli(store, a.id, "interpolate", "--to", b.id, "--num", "5", "--extend", "0.25",
               "--subset", "0") == 0
    assert "barrier" in capsys.readouterr().out
    (_, arrays), = a.load_arrays(f"landscape-line-to-{b.id}")
    p = PathValues.from_arrays(arrays)
    assert p.ts.min() == -0.25 and p.ts.max() == 1.25 and p.meta["other"] == b.id
    ends = []
    for run in (a, b):
        model, data, loss_fn = restore(run)
        ends.append(evaluate_points(model, loss_fn, (data.x_train, data.y_train), [model])[0][0])
    model, data, loss_fn = restore(a)
    assert p.endpoint_loss == pytest.approx(ends, rel=1e-6)
    assert "Landscape path" in (a.path / "report.html").read_text()


def test_the_trajectory_plane_holds_the_path_and_the_history_size(runs, capsys):
    store, a, *_ = runs
    assert cli(store, a.id, "trajectory", "--num", "6", "--subset", "256") == 0
    out = capsys.readouterr().out
    assert "points × 2,410 parameters (float16)" in out and "on disk" in out
    (_, arrays), = a.load_arrays("landscape-trajectory")
    steps = [s for s, _ in a.load_arrays("trajectory")]
    assert arrays["path_coordinates"].shape == (len(steps), 2)
    assert list(arrays["path_steps"]) == steps and np.all(arrays["path_coordinates"][-1] == 0)
    s = Slice.from_arrays(arrays)
    assert s.loss.shape == (6, 6) and s.meta["history"]["points"] == len(steps)
    c = arrays["path_coordinates"]
    assert s.axes[0][0] < c[:, 0].min() and s.axes[0][-1] > c[:, 0].max()  # covers the path
    assert "history" in (a.path / "report.html").read_text()


@pytest.mark.parametrize("case, match", [
    ("no weights", "has no stored weights (final.safetensors): it is failed"),
    ("wrong shape", "directions: expected shape (m, 2410), got (2, 2409)"),
    ("architectures", "parameter 'features.1.weight' has shape (48, 64), the model's is (32, 64)"),
    ("no history", "has no parameter history: train it with a trajectory probe"),
    ("misplaced", "--to: only for"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(runs, capsys, tmp_path, case, match):
    store, a, b, wide, broken = runs
    bad = tmp_path / "dirs.npy"
    np.save(bad, np.zeros((2, 2409), np.float32))
    run, args = {"no weights": (broken, ["slice"]),
                 "wrong shape": (a, ["slice", "--directions", str(bad)]),
                 "architectures": (a, ["interpolate", "--to", wide.id]),
                 "no history": (b, ["trajectory"]),
                 "misplaced": (a, ["slice", "--to", b.id])}[case]
    before = tree(run)
    assert cli(store, run.id, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgdlab: error: ") and err.count("\n") == 1
    assert match in err
    assert tree(run) == before


def test_restore_from_a_checkpoint_and_its_errors(runs):
    store, a, *_ = runs
    step = a.checkpoint_steps()[0]
    r = restore(a, weights=step)
    assert r.step == step and not r.model.training
    assert not torch.equal(next(r.model.parameters()), next(restore(a).model.parameters()))
    from sgdlab.errors import SgdlabError

    with pytest.raises(SgdlabError, match="no checkpoint at step 3"):
        restore(a, weights=3)


def test_restore_at_init_is_the_trainers_initialization(runs):
    store, *_ = runs
    run = train(small_config(name="init", seed=3, **{"train.epochs": 1}), store,
                probes=[Trajectory(Schedule(every=10_000))])  # step 0 and the end
    state = torch.get_rng_state()
    r = restore(run, weights="init")
    assert torch.equal(torch.get_rng_state(), state) and r.step == 0
    step, first = run.load_arrays("trajectory")[0]
    theta0 = torch.cat([p.detach().reshape(-1) for p in r.model.parameters()])
    assert step == 0 and torch.equal(theta0, torch.from_numpy(first["theta"]))
