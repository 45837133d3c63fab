"""Trajectory probe: the stored history is the flat trainable parameters, in the layout of
sgdlab.landscape, on the probe's schedule, compressed, without changing the trajectory."""

import zipfile

import numpy as np
import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file
from torch import nn

from sgdlab.errors import ConfigError
from sgdlab.landscape import Layout, trajectory_pca
from sgdlab.probes import build_probes
from sgdlab.probes.base import ProbeContext, Schedule
from sgdlab.probes.trajectory import Trajectory
from sgdlab.train import train


def test_the_vector_is_the_trainable_parameters_in_named_parameters_order():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)).double()
    model[0].bias.requires_grad_(False)  # frozen: not part of a point
    ctx = ProbeContext(model, "mse", None, None, seed=0)
    out = Trajectory(dtype="float64").measure(ctx)["theta"]
    expect = torch.cat([model[0].weight.reshape(-1), model[1].weight.reshape(-1),
                        model[1].bias]).detach()
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    assert torch.equal(out, expect) and len(out) == Layout.of(model).dim
    half = Trajectory(dtype="float16").measure(ctx)["theta"]
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), expect, rtol=2**-11, atol=1e-7)
    with pytest.raises(ConfigError, match=r"probes\[0\]\.dtype: must be one of float16"):
        build_probes([{"name": "trajectory", "dtype": "int8"}])


def test_inside_the_trainer_the_history_is_stored_compressed_and_changes_nothing(store):
    cfg = small_config(**{"train.epochs": 2})
    with_probe = train(cfg, store, probes=[Trajectory(Schedule(every=7))])
    without = train(cfg, store, probes=[])
    final = load_file(with_probe.path / "final.safetensors")
    assert all(torch.equal(final[k], load_file(without.path / "final.safetensors")[k])
               for k in final)
    history = with_probe.load_arrays("trajectory")
    steps = [s for s, _ in history]
    total = 2 * (1437 // 64)
    assert steps == sorted({*range(0, total, 7), total})  # every 7 steps and the end
    block = np.stack([a["theta"] for _, a in history])
    assert block.dtype == np.float32
    torch.manual_seed(cfg.seed)
    from sgdlab.models import build_model

    model = build_model(cfg.model, (64,), 10)
    layout = Layout.of(model)
    assert block.shape == (len(steps), layout.dim)
    init = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert np.array_equal(block[0], init.numpy())  # step 0: the initialization
    model.load_state_dict(final)
    assert np.array_equal(block[-1], layout.vector(model).numpy())  # the end: final weights
    path = with_probe.path / "arrays" / "trajectory" / f"{total:09d}.npz"
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    pca = trajectory_pca(torch.from_numpy(block), layout, k=2)
    assert pca.coordinates.shape == (len(steps), 2) and np.all(pca.coordinates[-1] == 0)
    assert 0 < pca.explained.sum() <= 1 + 1e-12
