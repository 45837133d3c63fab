"""Network chains: per-chain gradients against a per-chain autograd loop (float64), the SGD
and SVAG updates as formulas, escape bookkeeping, and recording over time."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.dynamics.networks import NetworkChains, escape_steps, record, stack_states


def _tiny(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (40,))
    return model, nn.functional.cross_entropy, x, y


def _states(model, n):
    """n perturbed copies of the model's state (distinct chains)."""
    g = torch.Generator().manual_seed(100)
    return [{k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype)
             for k, v in model.state_dict().items()} for _ in range(n)]


def test_minibatch_gradients_equal_a_per_chain_autograd_loop():
    model, loss, x, y = _tiny()
    states = _states(model, 4)
    chains = NetworkChains(model, loss, x, y, stack_states(model, states))
    idx = torch.randint(0, 40, (4, 7), generator=torch.Generator().manual_seed(1))
    got = chains.minibatch_gradients(idx)
    full = chains.full_gradients(chunk=16)  # chunked: weighted by chunk sizes
    for c, s in enumerate(states):
        model.load_state_dict(s)
        model.zero_grad()
        loss(model(x[idx[c]]), y[idx[c]]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(got[name][c], p.grad, rtol=1e-12, atol=1e-12)
        model.zero_grad()
        loss(model(x), y).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(full[name][c], p.grad, rtol=1e-10, atol=1e-12)
    losses = chains.losses(chunk=16)
    for c, s in enumerate(states):
        model.load_state_dict(s)
        with torch.no_grad():
            assert float(losses[c]) == pytest.approx(float(loss(model(x), y)), rel=1e-12)


def test_sgd_and_svag_steps_are_their_formulas():
    """Same generator state, same indices: SGD moves by -eta g_B; SVAG by
    -(eta/l)(c1 g_B1 + c2 g_B2) with the first n rows of the index draw as B1."""
    model, loss, x, y = _tiny()
    start = stack_states(model, _states(model, 3))
    lr, size, ell = 0.1, 5, 4

    a = NetworkChains(model, loss, x, y, start, seed=3)
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(40, (3, size), generator=gen)
    g = a.minibatch_gradients(idx)
    a.sgd_step(lr, size)
    for k in g:
        torch.testing.assert_close(a.params[k], start[k] - lr * g[k])

    b = NetworkChains(model, loss, x, y, start, seed=3)
    idx2 = torch.randint(40, (6, size), generator=torch.Generator().manual_seed(3))
    g1, g2 = b.minibatch_gradients(idx2[:3]), b.minibatch_gradients(idx2[3:])
    r = math.sqrt(2 * ell - 1)
    b.svag_step(lr, size, ell)
    for k in g1:
        expected = start[k] - lr / ell * ((1 + r) / 2 * g1[k] + (1 - r) / 2 * g2[k])
        torch.testing.assert_close(b.params[k], expected)
    c = NetworkChains(model, loss, x, y, start, seed=3)
    c.svag_step(lr, size, 1)  # l = 1 is SGD
    for k in g:
        torch.testing.assert_close(c.params[k], a.params[k])


def test_white_noise_step_adds_isotropic_noise_to_gd():
    model, loss, x, y = _tiny()
    start = stack_states(model, n_chains=2000)
    chains = NetworkChains(model, loss, x, y, start, seed=0)
    g = chains.full_gradients()
    chains.white_noise_step(0.1, 2.0)
    for k in g:
        noise = (start[k] - 0.1 * g[k] - chains.params[k]) / (0.1 * 2.0)
        assert float(noise.mean()) == pytest.approx(0.0, abs=4 / math.sqrt(noise.numel()))
        assert float(noise.std()) == pytest.approx(1.0, abs=0.05)


def test_escape_steps_records_the_first_checked_crossing_and_drops_chains():
    """A statistic that grows by one per step, started at the chains' ids: chain i crosses
    threshold 10 at step 10 - i, seen at the next multiple of check_every."""
    model, loss, x, y = _tiny()
    chains = NetworkChains(model, loss, x, y, stack_states(model, n_chains=5))
    counter = {"t": 0}

    def step(c):
        counter["t"] += 1

    def stat(c):
        return c.ids.to(torch.float64) + counter["t"]

    esc = escape_steps(chains, step, stat, 10.0, max_steps=9, check_every=3, time_step=0.5)
    # chain 0 needs 10 steps: censored at 9; chain 1 crosses at 9; 2 at 8 -> seen at 9; ...
    np.testing.assert_array_equal(esc.steps, [-1, 9, 9, 9, 6])
    assert chains.n_chains == 1 and list(chains.ids) == [0]
    mean, se = esc.mean_steps()
    assert mean == pytest.approx((9 + 9 + 9 + 6 + 9) / 4)  # exposure / escapes
    per_chain = escape_steps(NetworkChains(model, loss, x, y, stack_states(model, n_chains=2)),
                             step, lambda c: torch.zeros(c.n_chains), torch.tensor([1.0, -1.0]),
                             max_steps=4)
    np.testing.assert_array_equal(per_chain.steps, [-1, 1])  # thresholds per original chain


def test_record_evaluates_metrics_at_the_marks():
    model, loss, x, _ = _tiny()
    y = (x[:, 0] > 0).long()  # learnable
    chains = NetworkChains(model, loss, x, y, stack_states(model, n_chains=3), seed=1)
    out = record(chains, lambda c: c.sgd_step(0.5, 8), 20, [0, 5, 20, 50],
                 lambda c: {"loss": c.losses(), "acc": c.accuracies(x, y)})
    assert list(out["step"]) == [0, 5, 20] and out["loss"].shape == (3, 3)
    assert np.allclose(out["loss"][0], out["loss"][0, 0])  # identical chains at the start
    assert out["loss"][-1].mean() < out["loss"][0].mean()
    assert len(set(out["loss"][-1].round(12))) == 3  # each chain its own minibatches
