"""The probe protocol: one shared eigen-decomposition per step, and isolation of probes
from the training state (gradients, buffers, RNG, modes)."""

import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file
from test_probes_curvature import tiny_context

import sgdlab.curvature.shared
from sgdlab.probes import Probe, Schedule
from sgdlab.probes.hessian import HessianProbe
from sgdlab.probes.runner import ProbeRunner
from sgdlab.probes.sharpest import SharpestProbe
from sgdlab.train import train


@pytest.fixture
def eig_calls(monkeypatch):
    calls = []
    real = sgdlab.curvature.shared.hessian_eigs

    def counted(*args, **kwargs):
        calls.append((kwargs["k"], kwargs["tol"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(sgdlab.curvature.shared, "hessian_eigs", counted)
    return calls


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_one_decomposition_per_step_whatever_the_probe_order(eig_calls, order):
    _, ctx = tiny_context()
    probes = [HessianProbe(k=1, n=40, tol=1e-3), SharpestProbe(k=3, n=40, tol=1e-6, points=3)]
    probes = [probes[i] for i in order]
    runner = ProbeRunner(probes, seed=0, total_steps=10)
    ctx.batch_grad = torch.zeros(sum(p.numel() for p in ctx.model.parameters()),
                                 dtype=torch.float64)
    results = dict((p.name, r) for p, r in runner.call("measure", probes, ctx))
    assert eig_calls == [(3, 1e-6)]
    assert results["hessian"]["lambda_max"] == results["sharpest"]["eigenvalues"][0]


def test_a_tighter_request_than_the_cached_one_recomputes(eig_calls):
    _, ctx = tiny_context()
    loose = ctx.top_eigs(2, 40, tol=0.5)
    assert ctx.top_eigs(1, 40, tol=0.9) is loose
    tight = ctx.top_eigs(1, 40, tol=1e-10)
    assert tight is not loose and float(tight.residuals.max()) <= 1e-10
    assert eig_calls == [(2, 0.5), (2, 1e-10)]


class Meddler(Probe):
    """A careless probe: backward into .grad, a train-mode forward (BatchNorm statistics),
    global RNG draws, and a mode switch."""

    name = "meddler"

    def measure(self, ctx):
        ctx.model.train()
        torch.rand(3)
        x, y = ctx.subset(32)
        ctx.loss_fn(ctx.model(x), y).backward()
        return {"touched": 1.0}


def test_a_meddling_probe_does_not_change_the_trajectory(store):
    cfg = small_config(**{"train.epochs": 2, "model.batchnorm": True, "model.dropout": 0.1})
    plain = load_file(train(cfg, store).path / "final.safetensors")
    probed = train(cfg, store, probes=[Meddler(Schedule(every=3))])
    assert store.metrics(runs=[probed.id])["name"].eq("meddler/touched").sum() > 5
    probed = load_file(probed.path / "final.safetensors")
    assert plain.keys() == probed.keys()
    assert all(torch.equal(plain[k], probed[k]) for k in plain)


def test_loss_probe_measures_every_split_on_its_own_schedule(store):
    """On log-spaced steps, with label noise: train/test/clean/corrupted loss and accuracy,
    equal at the end to the trainer's own evaluation of the final parameters."""
    cfg = small_config(**{"train.epochs": 2, "data.label_noise": 0.3,
                          "train.eval_every": 10**6},
                       probes=[{"name": "loss", "log_points": 6}])
    run = train(cfg, store)
    m = store.metrics(runs=[run.id])
    probe = m[m["name"].str.startswith("loss/")]
    assert {"loss/train/loss", "loss/test/acc", "loss/clean/acc", "loss/corrupted/acc",
            "loss/corrupted/acc_true"} <= set(probe["name"])
    steps = sorted(probe["step"].unique())
    assert steps[:3] == [0, 1, 2] and len(steps) >= 5
    last = probe[probe["step"] == steps[-1]].set_index("name")["value"]
    final = m[(m["step"] == steps[-1]) & ~m["name"].str.startswith("loss/")]
    final = final.set_index("name")["value"]
    for key in ("train/loss", "test/acc", "clean/loss", "corrupted/acc"):
        assert last[f"loss/{key}"] == final[key]


def test_probes_asking_for_more_eigenpairs_do_not_change_nsgd(store, eig_calls):
    """NSGD refreshes with exactly its own (k, tol); a probe on the same subset asking for
    more pairs at a tighter tol gets one more decomposition, and NSGD's trajectory stays
    bit-identical."""
    nsgd = {"optim.name": "nsgd", "optim.nsgd_k": 2, "optim.nsgd_subset": 200,
            "optim.nsgd_every": 10, "optim.nsgd_gamma": 0.3, "train.epochs": 1}
    plain = load_file(train(small_config(**nsgd), store).path / "final.safetensors")
    refreshes = list(eig_calls)
    assert refreshes and set(refreshes) == {(2, 1e-3)}
    eig_calls.clear()
    probes = [{"name": "sharpest", "every": 10, "k": 3, "n": 200, "tol": 1e-5, "points": 3}]
    probed = train(small_config(**nsgd, probes=probes), store)
    probed = load_file(probed.path / "final.safetensors")
    assert all(torch.equal(plain[k], probed[k]) for k in plain)
    assert eig_calls.count((2, 1e-3)) == len(refreshes) and (3, 1e-5) in eig_calls
