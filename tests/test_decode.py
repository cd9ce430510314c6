"""StreamingDecoder: block-by-block decoding with a carried causal cache equals vae.decode of the whole video."""
import copy

import numpy as np
import pytest
import torch

from pipeline.decoders.wan_vae import StreamingDecoder
from pipeline.model.random_wan import build_tiny_components
from pipeline.decoders.vae_trace import traceable

TOL = 1e-5  # max abs difference on the [-1, 1] float video


@pytest.fixture(scope="module")
def vae():
    return build_tiny_components(0)["vae"]


@pytest.fixture(scope="module")
def latents():
    return torch.randn(1, 16, 7, 8, 8, generator=torch.Generator().manual_seed(1))


def reference(vae, z):
    std = 1.0 / torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        return vae.decode(z / std + mean).sample


def stream(dec, z, sizes):
    dec.reset()
    outs, i = [], 0
    for s in sizes:
        out = dec.decode_block_float(z[:, :, i : i + s])
        assert out.shape[2] == (4 * s - 3 if i == 0 else 4 * s)
        outs.append(out)
        i += s
    assert i == z.shape[2]
    return torch.cat(outs, dim=2)


@pytest.fixture(scope="module")
def ref(vae, latents):
    out = reference(vae, latents)
    assert out.shape == (1, 3, 25, 64, 64)
    assert out.abs().mean() > 0.05  # not a degenerate (all-zero / saturated) decode
    return out


@pytest.mark.parametrize("sizes", [[2, 3, 2], [1] * 7, [7], [3, 1, 3]])
def test_blocks_equal_whole_decode_per_frame(vae, latents, ref, sizes):
    out = stream(StreamingDecoder(vae), latents, sizes)
    assert torch.equal(out, ref)  # chunk_frames=1 is bit-identical


@pytest.mark.parametrize("sizes", [[2, 3, 2], [1, 6]])
def test_multi_frame_chunks_match(vae, latents, ref, sizes):
    out = stream(StreamingDecoder(vae, chunk_frames=None), latents, sizes)
    assert (out - ref).abs().max().item() < TOL


def test_uint8_frames_and_reset(vae, latents, ref):
    dec = StreamingDecoder(vae)
    first = dec.decode_block(latents[:, :, :2])
    second = dec.decode_block(latents[:, :, 2:4])
    assert first.shape == (5, 64, 64, 3) and first.dtype == np.uint8
    assert second.shape == (8, 64, 64, 3)
    expect = ((ref[0, :, :13] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    np.testing.assert_array_equal(np.concatenate([first, second]), expect)
    dec.reset()  # a new stream: its first block again gives 4F-3 frames, identical to the first time
    np.testing.assert_array_equal(dec.decode_block(latents[:, :, :2]), first)
    dec.decode_block(latents[:, :, 2:4])
    # a new shot (after a cut) mid-stream: decoded like a stream's first block, whatever came before
    np.testing.assert_array_equal(dec.decode_block(latents[:, :, :2], new_shot=True), first)


def test_shared_vae_is_not_disturbed(vae, latents, ref):
    # Our cache is private: using the VAE elsewhere between blocks changes nothing.
    dec = StreamingDecoder(vae)
    a = dec.decode_block_float(latents[:, :, :3])
    reference(vae, torch.randn(1, 16, 2, 8, 8))
    b = dec.decode_block_float(latents[:, :, 3:])
    assert torch.equal(torch.cat([a, b], dim=2), ref)


def test_bad_shape_rejected(vae):
    with pytest.raises(ValueError):
        StreamingDecoder(vae).decode_block(torch.zeros(16, 2, 8, 8))


def test_channels_last_decodes_the_same(vae, latents, ref):
    """Channels-last weights (the default on a GPU) change the layout, not the values; the VAE given keeps them."""
    v = copy.deepcopy(vae)
    dec = StreamingDecoder(v, chunk_frames=None, channels_last=True)
    conv = v.decoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    assert (stream(dec, latents, [3, 2, 2]) - ref).abs().max().item() < TOL
    assert not StreamingDecoder(vae).channels_last  # on the CPU: off


@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_decoder_matches_eager(vae, latents, ref, channels_last):
    """`--compile` compiles the decoder too: dynamo must replay the causal cache's updates between calls, so a
    stream decoded by the compiled graphs (aot_eager here: the tracing, not inductor's kernels) equals the eager one,
    including across a new shot, with row-major and with channels-last weights."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dec = StreamingDecoder(copy.deepcopy(vae), chunk_frames=None, compile_backend="aot_eager",
                           channels_last=channels_last)
    assert dec.compiled
    dec.warm_up(3, 8, 8)  # what the daemon does while the engine fills: leaves no state behind
    out = stream(dec, latents, [3, 2, 2])
    assert (out - ref).abs().max().item() < TOL
    again = stream(dec, latents, [3, 2, 2])  # reset() then the same shapes: the cached graphs, a fresh cache
    assert (again - ref).abs().max().item() < TOL
    assert not torch._dynamo.utils.counters["graph_break"]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dec.reset()
    for i in range(5):  # a stream of 3-frame blocks: no recompilation (the cache's strides are kept canonical)
        dec.decode_block_float(latents[:, :, i : i + 3])
    # one graph per call shape: a stream's first frame, the rest of its first block, a whole block
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 3


@pytest.mark.parametrize("block_frames", [1, 2, 3])
def test_warm_up_leaves_nothing_to_compile(vae, latents, block_frames):
    """The warm-up compiles every graph a stream of its blocks needs: with blocks of one latent frame the causal
    caches reach their steady depth only at the third block, and a graph first traced while streaming stalled the
    daemon for ~17 s on an H200 (RESULTS §9, eleventh follow-up)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    dec = StreamingDecoder(copy.deepcopy(vae), chunk_frames=None, compile_backend="aot_eager")
    dec.warm_up(block_frames, 8, 8)
    warmed = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert warmed >= 2
    for i in range(0, 7 - block_frames + 1, block_frames):
        dec.decode_block_float(latents[:, :, i : i + block_frames])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == warmed
    torch._dynamo.reset()


def test_traceable_upsampler_is_the_same_arithmetic(vae, latents, ref):
    """The temporal upsamplers' traceable forward (swapped in under --compile) decodes bit-identically, eagerly."""
    twin = copy.deepcopy(vae)
    assert traceable(twin.decoder) == 2  # the tiny VAE upsamples twice in time, as Wan's does
    for sizes in ([1] * 7, [3, 1, 3]):
        assert torch.equal(stream(StreamingDecoder(twin), latents, sizes), ref)
