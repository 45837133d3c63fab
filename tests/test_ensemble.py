"""The ensemble executor: each member of a stack follows the trajectory it follows alone
(float64, 200 steps, 1e-6 relative), diverges alone, keeps its probes, falls back when it
cannot be stacked, and a killed ensemble resumes to the same runs."""

import pytest
import torch
from safetensors.torch import load_file
from test_sweep import final_metrics

from sgdlab.store import Store
from sgdlab.sweep import InProcess, make_sweep, plan_sweep, run_sweep
from sgdlab.sweep.ensemble import Ensemble, group_key
from sgdlab.train.ensemble import StackedModel

BASE = {
    "dtype": "float64", "device": "cpu",
    "data": {"name": "digits", "download": False},
    "model": {"name": "mlp", "depth": 2, "width": 24},
    "optim": {"batch_size": 32},
    "train": {"epochs": 5, "max_steps": 200},
}


def sweep_of(name="e", base=None, product=None, zip_=None, seeds=None):
    grid = {"name": name, "base": {**BASE, **(base or {})}, "product": product or {}}
    if zip_:
        grid["zip"] = [zip_]
    if seeds is not None:
        grid["seeds"] = seeds
    return make_sweep(grid)


def finals(store, group):
    ids = store.runs(group=group).set_index("name")["id"]
    return {name: load_file(store.get_run(i).path / "final.safetensors")
            for name, i in ids.items()}


def max_relative(a: dict, b: dict) -> float:
    worst = 0.0
    for name in b:
        for k in b[name]:
            diff = (a[name][k] - b[name][k]).norm() / b[name][k].norm()
            worst = max(worst, float(diff))
    return worst


def metrics_close(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for run in b:
        assert a[run].keys() == b[run].keys(), run
        for name in b[run]:
            if name.endswith("seconds"):  # wall time, not a measurement of the run
                continue
            x, y = torch.tensor(a[run][name]), torch.tensor(b[run][name])
            assert x.shape == y.shape, (run, name)
            assert torch.allclose(x, y, rtol=rtol, atol=1e-12, equal_nan=True), (run, name)


@pytest.mark.parametrize("backend", ["bmm", "vmap"])
def test_members_follow_their_lone_trajectories_for_200_steps_in_float64(tmp_path, backend):
    """Learning rate, momentum, weight decay, seed (init, batch order, subset), label-noise
    draw and NSGD's gamma differ between members of one stack."""
    sweep = sweep_of(zip_={
        "optim.lr": [0.05, 0.1, 0.2, 0.1, 0.05, 0.1],
        "optim.momentum": [0.0, 0.9, 0.0, 0.5, 0.0, 0.0],
        "optim.weight_decay": [0.0, 0.0, 1e-3, 0.0, 0.0, 0.0],
        "seed": [0, 0, 1, 2, 0, 0],
        "data.label_noise": [0.0, 0.0, 0.0, 0.2, 0.2, 0.0],
        "optim.name": ["sgd", "sgd", "sgd", "sgd", "sgd", "nsgd"],
        "optim.nsgd_gamma": [1.0, 1.0, 1.0, 1.0, 1.0, 0.5],
    }, base={"optim": {**BASE["optim"], "nsgd_k": 2, "nsgd_subset": 128, "nsgd_every": 50}})
    assert len({group_key(c) for c in sweep.configs}) == 1  # one stack
    stacked, alone = Store(tmp_path / "stacked"), Store(tmp_path / "alone")
    result = run_sweep(sweep, stacked, progress=False, executor=Ensemble(backend=backend))
    assert result.statuses == ["finished"] * 6
    run_sweep(sweep, alone, progress=False, executor=InProcess(progress=False))
    for run in stacked.find_runs():
        assert run.checkpoint_steps()[-1] == 200
    assert max_relative(finals(stacked, "e"), finals(alone, "e")) < 1e-6
    metrics_close(final_metrics(stacked, "e"), final_metrics(alone, "e"), rtol=1e-6)


def test_backends_compute_the_same_losses_and_gradients():
    torch.manual_seed(0)
    from sgdlab.config import ModelConfig
    from sgdlab.models import build_model

    models = [build_model(ModelConfig(depth=2, width=8), (1, 4, 4), 3).double() for _ in range(3)]
    x, y = torch.randn(3, 5, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (3, 5))
    grads = {}
    for backend in ("bmm", "vmap"):
        stack = StackedModel(models, "cross_entropy", backend)
        for shared in (False, True):
            xb, yb = (x[0], y[0]) if shared else (x, y)
            losses = stack.losses(xb, yb, shared)
            losses.sum().backward()
            grads[backend, shared] = (losses.detach(), {n: w.grad.clone() for n, w in
                                                        stack.params.items()})
            for w in stack.params.values():
                w.grad = None
    for shared in (False, True):
        (la, ga), (lb, gb) = grads["bmm", shared], grads["vmap", shared]
        assert torch.allclose(la, lb, rtol=1e-12)
        assert all(torch.allclose(ga[n], gb[n], rtol=1e-10, atol=1e-14) for n in ga)
    # member 1 alone, by autograd on its own module
    loss = torch.nn.functional.cross_entropy(models[1](x[1]), y[1])
    loss.backward()
    _, g = grads["bmm", False]
    assert all(torch.allclose(p.grad, g[n][1], rtol=1e-10, atol=1e-14)
               for n, p in models[1].named_parameters())


def test_a_diverging_member_stops_alone_at_its_step_and_the_others_go_on(tmp_path):
    sweep = sweep_of(base={"train": {"epochs": 3, "loss": "mse"}},
                     product={"optim.lr": [0.05, 1e4, 0.1]})
    stacked, alone = Store(tmp_path / "stacked"), Store(tmp_path / "alone")
    result = run_sweep(sweep, stacked, progress=False, executor=Ensemble())
    reference = run_sweep(sweep, alone, progress=False, executor=InProcess(progress=False))
    assert result.statuses == reference.statuses == ["finished", "diverged", "finished"]
    steps = [s.get_run(r).diverged_step for s, r in ((stacked, result.run_ids[1]),
                                                     (alone, reference.run_ids[1]))]
    assert steps[0] == steps[1] is not None
    assert "non-finite loss" in result.messages[1]
    metrics_close(final_metrics(stacked, "e"), final_metrics(alone, "e"), rtol=1e-6)


def test_members_keep_their_own_probes(tmp_path):
    probes = [{"name": "hessian", "every": 40, "k": 1, "n": 128, "tol": 1e-6},
              {"name": "weights", "every": 25}]
    sweep = sweep_of(base={"probes": probes, "train": {"epochs": 2}},
                     product={"optim.lr": [0.05, 0.1]})
    stacked, alone = Store(tmp_path / "stacked"), Store(tmp_path / "alone")
    run_sweep(sweep, stacked, progress=False, executor=Ensemble())
    run_sweep(sweep, alone, progress=False, executor=InProcess(progress=False))
    got, want = final_metrics(stacked, "e"), final_metrics(alone, "e")
    assert any(n.startswith("hessian/") for n in next(iter(want.values())))
    metrics_close(got, want, rtol=1e-5)


def test_points_that_cannot_be_stacked_fall_back_in_one_line(tmp_path, capsys):
    sweep = sweep_of(base={"train": {"epochs": 1}, "dtype": "float32"},
                     product={"model.dropout": [0.0, 0.2], "optim.lr": [0.05, 0.1]})
    stacked, alone = Store(tmp_path / "stacked"), Store(tmp_path / "alone")
    result = run_sweep(sweep, stacked, progress=False,
                       executor=Ensemble(fallback=InProcess(progress=False)))
    assert result.statuses == ["finished"] * 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sgdlab: ensemble: 2 of 4 points cannot be stacked (dropout); "
                   "the worker executor trains them"]
    run_sweep(sweep, alone, progress=False, executor=InProcess(progress=False))
    got, want = final_metrics(stacked, "e"), final_metrics(alone, "e")
    fallen = [n for n in want if "dropout-0.2" in n]
    assert len(fallen) == 2 and all(got[n] == want[n] for n in fallen)  # trained alone: exact


def test_a_killed_ensemble_resumes_its_members_from_their_checkpoints(tmp_path):
    """Members left running with only an older checkpoint (as a kill leaves them) are
    resumed in one stack; every run ends as in an uninterrupted sweep."""
    from conftest import as_killed

    sweep = sweep_of(base={"train": {"epochs": 3}}, product={"optim.lr": [0.05, 0.1, 0.2]})
    killed, reference = Store(tmp_path / "killed"), Store(tmp_path / "reference")
    first = run_sweep(sweep, killed, progress=False, executor=Ensemble())
    run_sweep(sweep, reference, progress=False, executor=InProcess(progress=False))
    for run_id in first.run_ids[1:]:  # two members cut in their third epoch
        run = killed.get_run(run_id)
        as_killed(run)
        (run.path / "final.safetensors").unlink()
        newest = run.checkpoint_steps()[-1]
        (run.path / "checkpoints" / f"step_{newest:09d}.pt").unlink()
    assert [t.action for t in plan_sweep(sweep, killed)] == ["skip", "resume", "resume"]
    again = run_sweep(sweep, killed, progress=False, executor=Ensemble())
    assert (again.skipped, again.finished, again.resumed) == (1, 2, 2)
    assert again.run_ids == first.run_ids and len(killed.runs(group="e")) == 3
    metrics_close(final_metrics(killed, "e"), final_metrics(reference, "e"), rtol=1e-6)


def test_a_member_that_raises_fails_alone(tmp_path, monkeypatch):
    from sgdlab.train import loop

    real = loop.Trainer.finish_step

    def flaky(self, loss, lr, x, y, bar=None):
        if self.cfg.optim.lr == 0.1 and self.step == 30:
            raise RuntimeError("boom")
        return real(self, loss, lr, x, y, bar)

    monkeypatch.setattr(loop.Trainer, "finish_step", flaky)
    sweep = sweep_of(base={"train": {"epochs": 2}}, product={"optim.lr": [0.05, 0.1, 0.2]})
    store = Store(tmp_path / "s")
    result = run_sweep(sweep, store, progress=False, executor=Ensemble())
    assert result.statuses == ["finished", "failed", "finished"]
    assert "boom" in result.messages[1] and "boom" in store.get_run(result.run_ids[1]).message
    monkeypatch.setattr(loop.Trainer, "finish_step", real)
    again = run_sweep(sweep, store, progress=False, executor=Ensemble())  # resumed, alone
    assert (again.skipped, again.finished, again.resumed) == (2, 1, 1)
