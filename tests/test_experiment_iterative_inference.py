"""Experiment "iterative-inference": the network variants against hand-written forwards,
and the smoke scale end to end."""

import json
import time

import torch

from sgdlab.config import ModelConfig
from sgdlab.experiments.iterative_inference import UNROLL, forward_variant
from sgdlab.models import build_model

CLAIMS = ("Every block moves its representation against", "‖F(h)‖/‖h‖ falls with depth",
          "Dropping single blocks hurts early blocks most", "Applying the last block once more",
          "Naive sharing of the blocks", "naively shared network overfits",
          "Unshared BatchNorm alleviates")


def _model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet20", width_mult=0.25, batchnorm=True),
                        (1, 8, 8), 10).double().eval()
    return model, torch.randn(5, 1, 8, 8, dtype=torch.float64)


def test_forward_variants_match_hand_written_forwards():
    model, x = _model()
    with torch.no_grad():
        assert torch.allclose(forward_variant(model, x), model(x))

        def head(h):
            return model.classifier(model.pool(model.head_act(model.head_norm(h))))

        blocks = list(model.blocks)
        h = model.stem(x)
        for i, b in enumerate(blocks):
            h = h if i == 1 else b(h)  # block 1 is an identity block: removing F leaves h
        assert blocks[1].is_identity
        assert torch.allclose(forward_variant(model, x, drop=1), head(h))
        h = model.stem(x)
        for b in blocks:
            h = b(h)
        h2 = blocks[-1](blocks[-1](h))
        assert torch.allclose(forward_variant(model, x, extra=2), head(h2))
        # a downsampling block without its branch keeps its projection shortcut
        k = next(i for i, b in enumerate(blocks) if not b.is_identity)
        out = forward_variant(model, x, drop=k)
        assert out.shape == (5, 10) and not torch.allclose(out, model(x))


def test_smoke_scale_end_to_end(tmp_path):
    from sgdlab.experiments import run_experiment
    from sgdlab.store import Store

    store = Store(tmp_path / "store")
    start = time.perf_counter()
    result = run_experiment("iterative-inference", store, scale="smoke", quiet=True)
    print(f"\niterative-inference smoke: {time.perf_counter() - start:.1f} s")
    runs = store.runs(group="iterative-inference-smoke")
    assert len(runs) == 3 and set(runs["status"]) == {"finished"}
    assert sorted(runs["model.options.share_blocks"].fillna("none")) == [
        "naive", "none", "unshared-bn"]
    for claim, check in zip(CLAIMS, result.checks, strict=True):
        assert claim in check.claim and check.measured
    assert f"{UNROLL} extra" in result.checks[3].measured
    html = result.html_path.read_text()
    assert html.count("data:image/png;base64,") == len(result.figure_paths) == 3
    assert "parameters" in result.checks[4].measured
    assert "Jastrzębski" in html
    assert len(json.loads(result.json_path.read_text())["checks"]) == len(CLAIMS)


def test_stream_norms_follow_the_blocks_by_hand():
    from sgdlab.experiments.iterative_inference import stream_norms

    model, x = _model()
    norms = stream_norms(model, x)
    with torch.no_grad():
        h = model.stem(x)
        expected = [h.flatten(1).norm(dim=1).mean()]
        for b in model.blocks:
            h = b(h)
            expected.append(h.flatten(1).norm(dim=1).mean())
    assert len(norms) == len(model.blocks) + 1
    assert torch.allclose(torch.tensor(norms), torch.stack(expected).double())
