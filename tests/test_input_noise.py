"""train.input_noise: Gaussian noise on the training inputs, fresh every step, reproducible."""

import pytest
import torch
from conftest import small_config
from safetensors.torch import load_file

from sgdlab.data import step_seed
from sgdlab.errors import ConfigError
from sgdlab.sinks import Sink
from sgdlab.store import config_hash
from sgdlab.train import resume, train
from sgdlab.train.loop import Trainer


def final_params(run):
    return load_file(run.path / "final.safetensors")


class SeenInputs:
    """Keeps every batch the trainer's model is called on in train mode."""

    def __init__(self, trainer):
        self.seen = []
        trainer.model.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        if module.training:
            self.seen.append(args[0].detach().clone())


def _batches(cfg, store, steps=3):
    trainer = Trainer(cfg)
    seen = SeenInputs(trainer)
    run = store.create_run(cfg.to_dict(), name=cfg.name)
    trainer.fit(run)
    return trainer, seen.seen[:steps], trainer.data.x_train


def test_noise_is_added_to_each_training_batch_with_the_asked_std_and_fresh_each_step(store):
    from sgdlab.data import epoch_permutation

    sigma = 0.7
    cfg = small_config(**{"train.input_noise": sigma, "train.epochs": 1})
    trainer, seen, x_all = _batches(cfg, store)
    perm = epoch_permutation(trainer.data.n_train, cfg.seed, 0)
    size = cfg.optim.batch_size
    eps = [(x - x_all[perm[i * size:(i + 1) * size]]) / sigma for i, x in enumerate(seen)]
    for step, e in enumerate(eps):  # exactly the (seed, step) generator's draw
        g = torch.Generator().manual_seed(step_seed(cfg.seed, step))
        expected = torch.randn(e.shape, generator=g, dtype=e.dtype)
        assert torch.allclose(e, expected, atol=1e-5)
    e = torch.cat([v.flatten() for v in eps])
    assert abs(float(e.mean())) < 0.02 and abs(float(e.std()) - 1) < 0.02  # N(0, 1) ε
    assert not torch.allclose(eps[0], eps[1])  # fresh noise every step
    # evaluation is not noised: the logged train/acc is that of the clean inputs
    m = store.metrics(runs=[trainer.run.id])
    logged = m[m["name"] == "train/loss"].sort_values("step")["value"].iloc[-1]
    with torch.no_grad():
        trainer.model.eval()
        clean = float(trainer.loss_fn(trainer.model(x_all), trainer.data.y_train))
    assert logged == pytest.approx(clean, rel=1e-5)


def test_zero_noise_is_the_trajectory_and_identity_of_a_config_without_the_key(store):
    plain = small_config()
    zero = small_config(**{"train.input_noise": 0.0})
    a, b = train(plain, store), train(zero, store)
    pa, pb = final_params(a), final_params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)  # byte-identical weights
    older = plain.to_dict()
    older["train"] = {k: v for k, v in older["train"].items() if k != "input_noise"}
    assert config_hash(older) == config_hash(zero.to_dict())  # an older store still matches
    noisy = small_config(**{"train.input_noise": 0.1})
    assert config_hash(noisy.to_dict()) != config_hash(older)
    c = train(noisy, store)
    pc = final_params(c)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)


class StopAt(Sink):
    """Interrupts training once a record of ``step`` is logged (after a checkpoint)."""

    def __init__(self, step):
        self.step = step

    def log(self, records):
        if any(s >= self.step for s, _, _ in records):
            raise KeyboardInterrupt


def test_a_resumed_noisy_run_repeats_the_uninterrupted_trajectory(store):
    cfg = small_config(**{"train.input_noise": 0.5, "model.dropout": 0.2})
    whole = train(cfg, store)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, sinks=[StopAt(30)])  # epoch 1 of 3; last checkpoint at step 22
    killed = store.runs(status="failed")["id"].tolist()
    assert len(killed) == 1
    done = resume(store, killed[0])
    assert done.status == "finished"
    pw, pd = final_params(whole), final_params(done)
    assert all(torch.equal(pw[k], pd[k]) for k in pw)


@pytest.mark.parametrize("value", [-0.1, float("nan"), "a lot", True])
def test_a_bad_input_noise_is_a_one_line_error_naming_the_field(value):
    with pytest.raises(ConfigError, match=r"^train\.input_noise: ") as err:
        small_config(**{"train.input_noise": value}).check()
    assert "\n" not in str(err.value)
