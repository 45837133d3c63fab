"""Weights probe: exact norms on a tiny model, state round trip, inside the trainer."""

import io
import math

import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file
from torch import nn

from sgdlab.models import build_model
from sgdlab.probes.base import ProbeContext, Schedule
from sgdlab.probes.weights import (
    Weights,
    distance,
    flat_parameters,
    layer_distances,
    layer_names,
    parameter_norm,
)
from sgdlab.train import train


def tiny(dtype=torch.float64):
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1, bias=False)).to(dtype)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [2.0, 0.0]]))  # norm 3
        model[0].bias.copy_(torch.tensor([0.0, 4.0]))  # norm 4
        model[1].weight.copy_(torch.tensor([[0.0, 0.0]]))  # norm 0
    return model


def ctx_of(model, step=0, update=None):
    return ProbeContext(model, "mse", None, None, seed=0, step=step, update=update)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_norms_distances_and_update(dtype):
    model = tiny(dtype)
    probe = Weights(per_layer=True)
    probe.on_train_start(ctx_of(model))
    assert probe.theta0.dtype == torch.promote_types(dtype, torch.float32)
    out = probe.measure(ctx_of(model))
    assert out["norm"] == pytest.approx(5.0) and out["dist_init"] == 0.0
    assert out["layer_norms"].tolist() == pytest.approx([3.0, 4.0, 0.0])
    assert layer_names(model) == ["0.weight", "0.bias", "1.weight"]
    before = flat_parameters(model)
    with torch.no_grad():  # a "step": move the bias by (0, -4) and the last layer by (3, 4)
        model[0].bias.copy_(torch.tensor([0.0, 0.0]))
        model[1].weight.copy_(torch.tensor([[3.0, 4.0]]))
    update = flat_parameters(model) - before
    step = probe.after_step(ctx_of(model, update=update))
    assert step["update"] == pytest.approx(math.sqrt(16 + 9 + 16))
    assert step["rel_update"] == pytest.approx(math.sqrt(41) / 5)
    assert step["layer_update"].tolist() == pytest.approx([0.0, 4.0, 5.0])
    out = probe.measure(ctx_of(model, step=1))
    assert out["norm"] == pytest.approx(math.sqrt(9 + 0 + 25))
    assert out["dist_init"] == pytest.approx(math.sqrt(16 + 25))
    assert out["layer_dist_init"].tolist() == pytest.approx([0.0, 4.0, 5.0])
    assert parameter_norm(model) == pytest.approx(out["norm"])
    assert distance(model, probe.theta0) == pytest.approx(out["dist_init"])
    assert "layer_norms" not in Weights().measure(ctx_of(model))


def test_rel_update_without_a_measure_at_that_step_uses_theta_t():
    model = tiny()
    probe = Weights()
    probe.measure(ctx_of(model, step=3))  # an older measurement must not be reused
    with torch.no_grad():
        model[0].bias.add_(torch.tensor([0.0, -4.0]))
    update = torch.tensor([0.0, 0, 0, 0, 0, -4, 0, 0], dtype=torch.float64)
    out = probe.after_step(ctx_of(model, step=7, update=update))
    assert out["rel_update"] == pytest.approx(4 / 5)  # ||theta_7|| = 5, before the step
    assert probe.after_step(ctx_of(model, step=7)) is None


def test_state_dict_round_trip_keeps_theta0():
    model = tiny(torch.float32)
    probe = Weights()
    assert probe.state_dict() == {}
    assert "dist_init" not in probe.measure(ctx_of(model))  # theta_0 unknown: no distance
    probe.on_train_start(ctx_of(model))
    buf = io.BytesIO()
    torch.save(probe.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["theta0"].device.type == "cpu" and state["theta0"].dtype == torch.float32
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    resumed = Weights()
    resumed.load_state_dict(state)
    out = resumed.measure(ctx_of(model))
    assert out["dist_init"] == pytest.approx(math.sqrt(2))
    assert out == probe.measure(ctx_of(model))
    with pytest.raises(ValueError, match="theta0"):
        layer_distances(model, state["theta0"][:-1])


def test_inside_the_trainer_without_changing_the_trajectory(store):
    cfg = small_config(**{"train.epochs": 2, "model.depth": 1})
    probe = Weights(Schedule(every=5), per_layer=True)
    with_probe = train(cfg, store, probes=[probe])
    without = train(cfg, store, probes=[])
    a, b = load_file(with_probe.path / "final.safetensors"), load_file(
        without.path / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = store.metrics(runs=[with_probe.id])
    dist = m[m["name"] == "weights/dist_init"].set_index("step")["value"]
    assert dist[0] == 0.0 and dist.index.max() == 2 * (1437 // 64)  # at the final parameters
    norms = m[m["name"] == "weights/norm"].set_index("step")["value"]
    assert len(norms) == len(dist) >= 5 and (dist.iloc[1:] > 0).all()
    upd = m[m["name"] == "weights/update"]["value"]
    assert len(upd) == len(dist) - 1 and (upd > 0).all()  # no step after the final one
    arrays = with_probe.load_arrays("weights")
    assert len(arrays) == len(dist)
    assert set(arrays[0][1]) == {"layer_norms", "layer_dist_init"}
    assert len(with_probe.load_arrays("weights.after_step")) == len(dist) - 1
    last_step, last = arrays[-1]
    assert norms[last_step] == pytest.approx(math.sqrt((last["layer_norms"] ** 2).sum()))
    # the checkpoint carries theta_0: a resumed probe measures the same distance
    state = with_probe.load_checkpoint()
    resumed = Weights()
    resumed.load_state_dict(state["probes"]["probes"]["weights"])
    torch.manual_seed(cfg.seed)  # the trainer's initialization
    model = build_model(cfg.model, (64,), 10)
    torch.testing.assert_close(resumed.theta0, flat_parameters(model), rtol=0, atol=0)
    model.load_state_dict(state["model"])
    assert resumed.measure(ctx_of(model))["dist_init"] == pytest.approx(dist.iloc[-1], rel=1e-6)
