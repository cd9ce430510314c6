"""The forward split into prologue / blocks / epilogue computes exactly what the model's forward computes."""
import torch

from pipeline.dualparal.attention import install_feature_cache
from pipeline.model.split import epilogue, prologue, rotary, run_blocks
from pipeline.model.random_wan import build_tiny_components


def _inputs(model, frames=3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, frames, 8, 8, generator=g)
    t = torch.tensor([700.0, 700.0])
    text = torch.randn(2, 5, model.config.text_dim, generator=g)
    return x, t, text


@torch.inference_mode()
def test_split_forward_equals_model_forward():
    model = build_tiny_components(0)["transformer"]
    x, t, text = _inputs(model)
    ref = model(x, t, text, return_dict=False)[0]
    carry = prologue(model, x, t, text)
    rot = rotary(model, x.shape[2], x.shape[3], x.shape[4])
    # two slices in a row, as two ranks would run them
    n = len(model.blocks)
    carry = run_blocks(model.blocks[: n // 2], carry, rot)
    carry = run_blocks(model.blocks[n // 2:], carry, rot)
    out = epilogue(model, carry)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)


@torch.inference_mode()
def test_feature_cache_processor_without_cache_is_the_stock_processor():
    model = build_tiny_components(0)["transformer"]
    x, t, text = _inputs(model)
    ref = model(x, t, text, return_dict=False)[0]
    install_feature_cache(model.blocks)
    out = model(x, t, text, return_dict=False)[0]
    assert torch.equal(out, ref)


@torch.inference_mode()
def test_cached_keys_change_the_output_and_are_stored():
    model = build_tiny_components(0)["transformer"]
    cache = install_feature_cache(model.blocks)
    x, t, text = _inputs(model, frames=3)
    tpf = 16  # 8x8 latent, patch 2x2
    cache.request.store = (tpf, 2 * tpf)
    model(x, t, text)
    assert all(w is not None and w[0].shape[1] == tpf for w in cache.kv)
    cache.request.store = None
    base = model(x, t, text, return_dict=False)[0]
    cache.request.use_read = True
    cos, sin = rotary(model, 4, 8, 8)
    cache.request.extra_rope = (cos[:, 3 * tpf:], sin[:, 3 * tpf:])
    with_ctx = model(x, t, text, return_dict=False)[0]
    assert not torch.allclose(base, with_ctx)
