"""Experiment "sharp-minima-escape": the rescaling keeps the function, configs validate, the
verdict logic on synthetic rows, the smoke scale end to end."""

import time

import torch

from sgdlab.experiments import sharp_minima_escape as sme
from sgdlab.experiments.base import build_configs

CLAIMS = ("S/η", "sharper minima", "equal η/S", "2/η")


def test_rescaling_keeps_the_function_and_sharpens_the_hessian():
    from sgdlab.config import ModelConfig
    from sgdlab.curvature import hessian_eigs
    from sgdlab.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(**sme.MODEL), (10,), 1)
    x, y = torch.randn(64, 10), torch.randn(64, 1)
    loss = torch.nn.functional.mse_loss
    before = model(x).detach()
    lam1 = float(hessian_eigs(model, loss, (x, y), k=1).values[0])
    model.load_state_dict(sme.rescale(model.state_dict(), 3.0))
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-5, atol=1e-6)
    assert float(hessian_eigs(model, loss, (x, y), k=1).values[0]) > 3 * lam1


def test_configs_validate_at_every_scale():
    for scale in sme.EXPERIMENT.scales:
        cfgs = build_configs(sme.EXPERIMENT, scale)
        assert len(cfgs) == len(sme.GRIDS[scale]["train"])
        assert all(c.train.loss == "mse" and c.data.name == "teacher-student" for c in cfgs)


def _rows():
    rows = []
    for name, lam in (("flat", 2.0), ("middle", 4.0), ("sharp", 8.0)):
        for lr, sizes in ((0.05, (1, 2, 3)), (0.1, (2, 4, 6))):
            for s in sizes:
                tau = 0.1 * 2.718 ** (s / lr * 0.1 / lam)
                rows.append({"minimum": name, "lambda_max": lam, "alpha": 1.0, "eta": lr, "S": s,
                             "s_over_eta": round(s / lr, 9), "tau": tau, "tau_se": 0.01 * tau})
    return rows


def test_checks_on_synthetic_exponential_escape():
    rows = _rows()
    assert sme.ratio_check(rows).verdict == "held"
    assert sme.sharpness_check(rows).verdict == "held"
    assert sme.equal_ratio_check(rows).verdict == "held"  # tau depends on S/eta only
    flipped = [dict(r, lambda_max=10 - r["lambda_max"]) for r in rows]
    assert sme.sharpness_check(flipped).verdict == "not held"
    gd = [{"product": p, "escape_step": s, "minimum": "m", "eta": 0.1, "lambda_max": p * 10}
          for p, s in ((0.5, -1), (1.5, -1), (3.0, 12))]
    assert sme.stability_check(gd).verdict == "held"
    gd[0]["escape_step"] = 40
    assert sme.stability_check(gd).verdict == "not held"


def test_smoke_scale_end_to_end(tmp_path):
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("sharp-minima-escape", store, scale="smoke", quiet=True)
    print(f"\nsharp-minima-escape smoke: {time.perf_counter() - start:.1f} s")
    assert len(result.run_ids) == len(sme.GRIDS["smoke"]["train"])
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    assert len(result.figure_paths) == 2


def test_every_scale_sets_the_same_parameters():
    keys = set(sme.GRIDS["smoke"])
    assert all(set(g) == keys for g in sme.GRIDS.values())
