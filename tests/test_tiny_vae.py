"""The tiny streaming decoder (`--tiny-vae`, TAEHV checkpoint layout): block-by-block decoding equals a frame-by-
frame evaluation of the network's recurrence, checkpoints in the published layout load (.pth and .safetensors,
encoder weights ignored, a wider time-growth layer cut to the last frame's channels), bad files are refused by
name, and the daemon streams through it."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from common.errors import ConfigError
from conftest import ROOT, DaemonProc
from pipeline.decoders.tiny_vae import random_tiny_decoder, tiny_decoder_checkpoint
from pipeline.decoders.tiny_graph import GraphedTinyDecoder
from pipeline.decoders.tiny_vae import MemoryBlock, StreamingTinyDecoder, TimeGrow, TinyDecoderNet, load_tiny_decoder
from test_daemon_ranks_equal import y4m_frames


@pytest.fixture(scope="module")
def net():
    return random_tiny_decoder(16)


def latents(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(1, 16, frames, 4, 6, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def frame_by_frame(net: TinyDecoderNet, lat: torch.Tensor) -> torch.Tensor:
    """The recurrence written out one frame at a time: a memory block sees its input of the previous frame (zeros
    before the first); time growth turns a frame's channel groups into consecutive frames; the first 3 of the
    stream's frames are dropped."""
    xs = [f[None] for f in lat[0].transpose(0, 1)]  # [1, z, h, w] per latent frame
    for layer in net.decoder:
        if isinstance(layer, MemoryBlock):
            prev, out = torch.zeros_like(xs[0]), []
            for x in xs:
                out.append(layer(x, prev))
                prev = x
            xs = out
        elif isinstance(layer, TimeGrow):
            xs = [g for x in xs for g in layer.conv(x).chunk(layer.stride, dim=1)]
        else:
            xs = [layer(x) for x in xs]
    return torch.cat(xs[3:]).clamp(0, 1)


def stream(dec: StreamingTinyDecoder, blocks) -> torch.Tensor:
    return torch.cat([dec.decode_block_float(b) for b in blocks])


def test_blocks_decode_as_the_frame_by_frame_recurrence(net):
    blocks = [latents(2, i) for i in range(3)]
    ref = frame_by_frame(net, torch.cat(blocks, dim=2))
    out = stream(StreamingTinyDecoder(net), blocks)
    assert out.shape == (4 * 6 - 3, 3, 32, 48)  # 4 frames per latent frame, the stream's first gives 1
    assert 0.9 < ((out > 0) & (out < 1)).float().mean() and out.std() > 0.1  # a picture, not a clamped constant
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the memories matter: the third block decoded without its predecessors differs
    assert (out[-5:] - StreamingTinyDecoder(net).decode_block_float(blocks[2])).abs().mean() > 0.01


def test_uint8_frames_and_new_shot(net):
    a, b = latents(2, 10), latents(2, 11)
    dec = StreamingTinyDecoder(net)
    first = dec.decode_block(a)
    assert first.shape == (5, 32, 48, 3) and first.dtype.name == "uint8"
    cont = dec.decode_block(b)
    assert cont.shape == (8, 32, 48, 3)
    shot = StreamingTinyDecoder(net)
    shot.decode_block(a)
    fresh = shot.decode_block(b, new_shot=True)  # a cut: decoded like a stream's first block
    assert (fresh == StreamingTinyDecoder(net).decode_block(b)).all()
    assert fresh.shape[0] == 5 and not (cont[-5:] == fresh).all()


def test_the_graphed_decoders_static_buffers_give_the_same_frames(net):
    """GraphedTinyDecoder's bookkeeping (static input, memories updated in place, a new shot zeroing them, the
    stream's first frames dropped on the host) without capture on CPU: its frames equal StreamingTinyDecoder's over
    blocks with a cut among them, after a warm-up on zeros, and what it returned earlier is not overwritten."""
    blocks = [latents(2, 20 + i) for i in range(5)]
    ref, graphed = StreamingTinyDecoder(net), GraphedTinyDecoder(net)
    assert not graphed.graphed  # nothing to capture on a CPU
    ref.warm_up(2, 4, 6)
    graphed.warm_up(2, 4, 6)
    outs = []
    for i, b in enumerate(blocks):
        want, got = ref.decode_block(b, new_shot=i == 3), graphed.decode_block(b, new_shot=i == 3)
        assert got.shape == want.shape == ((5 if i in (0, 3) else 8), 32, 48, 3)
        assert (got == want).all(), f"block {i}"
        outs.append((got, got.copy()))
    assert all((kept == copy).all() for kept, copy in outs)
    assert not (outs[1][0] == outs[2][0]).all()  # the memories carry on: blocks differ
    with pytest.raises(NotImplementedError):
        graphed.decode_block_float(blocks[0])


def published_layout(net: TinyDecoderNet) -> dict:
    """The decoder's weights as a TAEHV checkpoint holds them: encoder weights beside them, and the first time-
    growth layer trained with 2 frames per frame (its last 256 rows are the ones a Wan decoder uses)."""
    sd = tiny_decoder_checkpoint(net)
    sd["encoder.0.weight"] = torch.randn(64, 3, 3, 3)
    sd["encoder.0.bias"] = torch.randn(64)
    grow = sd["decoder.7.conv.weight"]
    sd["decoder.7.conv.weight"] = torch.cat([torch.randn_like(grow), grow])
    return sd


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_published_layout_loads(net, tmp_path, suffix):
    path = str(tmp_path / f"taew2_1{suffix}")
    sd = published_layout(net)
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, path)
    loaded = load_tiny_decoder(path, 16)
    blocks = [latents(2, 20), latents(2, 21)]
    assert torch.equal(stream(StreamingTinyDecoder(loaded), blocks), stream(StreamingTinyDecoder(net), blocks))


def test_bad_checkpoints_are_refused_by_name(net, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_tiny_decoder(str(tmp_path / "missing.pth"), 16)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth.*cannot read"):
        load_tiny_decoder(str(junk), 16)
    enc_only = tmp_path / "enc.safetensors"
    save_file({"encoder.0.weight": torch.zeros(1)}, str(enc_only))
    with pytest.raises(ConfigError, match="no decoder weights"):
        load_tiny_decoder(str(enc_only), 16)
    wide = tmp_path / "taew2_2.safetensors"
    save_file(tiny_decoder_checkpoint(TinyDecoderNet(48)), str(wide))
    with pytest.raises(ConfigError, match="48-channel latents, the model's have 16"):
        load_tiny_decoder(str(wide), 16)
    holed = {k: v for k, v in published_layout(net).items() if k != "decoder.10.conv.2.weight"}
    path = tmp_path / "holed.safetensors"
    save_file(holed, str(path))
    with pytest.raises(ConfigError, match=r"missing: 10\.conv\.2\.weight"):
        load_tiny_decoder(str(path), 16)


def test_the_daemon_streams_through_the_tiny_decoder(net, tmp_path):
    """One rank and two (rank 0 then loads no Wan VAE at all): the same frames, and not the Wan decoder's."""
    ckpt = tmp_path / "taew2_1.safetensors"
    save_file(published_layout(net), str(ckpt))
    frames = {}
    runs = (("tiny", ("--tiny-vae", str(ckpt))), ("tiny2", ("--tiny-vae", str(ckpt), "--ranks", "2")), ("wan", ()))
    for name, extra in runs:
        out = tmp_path / f"{name}.y4m"
        with open(out, "wb") as f:
            d = DaemonProc("--stdout", "y4m", *extra, http=False, stdout=f)
            d.wait_streaming()
            d.wait_status(lambda s: s["blocks_published"] >= 3, "3 published blocks")
            assert d.stop() == 0, d.log()
        frames[name] = y4m_frames(out.read_bytes())
    n = min(len(f) for f in frames.values())
    assert n >= 5 + 8  # the tiny model's blocks: 2 latent frames -> 5 video frames, then 8
    assert len(set(frames["tiny"][:n])) > 1
    assert frames["tiny"][:n] == frames["tiny2"][:n]
    assert all(a != b for a, b in zip(frames["tiny"][:n], frames["wan"][:n]))  # decoded by the other decoder


def test_a_missing_tiny_vae_file_fails_fast():
    r = subprocess.run([sys.executable, "-m", "streamer", "serve", "--tiny-vae", "/nonexistent/taew2_1.pth"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tiny-vae '/nonexistent/taew2_1.pth': no such file" in lines[0], r.stderr


def test_a_checkpoint_of_the_wrong_latent_width_ends_the_daemon(tmp_path):
    wide = tmp_path / "taew2_2.safetensors"
    save_file(tiny_decoder_checkpoint(TinyDecoderNet(48)), str(wide))
    d = DaemonProc("--tiny-vae", str(wide), http=False)
    rc = d.proc.wait(timeout=120)
    d.stop()
    assert rc == 2, d.log()
    assert "48-channel latents" in d.log()


def test_a_model_with_its_own_vae_is_refused(net, tmp_path):
    """The default model (toy world) has its own VAE: a decoder for Wan 2.1 latents would decode garbage."""
    ckpt = tmp_path / "taew2_1.safetensors"
    save_file(published_layout(net), str(ckpt))
    d = DaemonProc("--tiny-vae", str(ckpt), http=False, model=None)
    rc = d.proc.wait(timeout=120)
    d.stop()
    assert rc == 2, d.log()
    assert "model 'toyworld' has its own VAE (latents_mean differs" in d.log()


def test_a_narrower_decoder_in_the_same_layout_loads_with_its_widths(tmp_path):
    narrow = TinyDecoderNet(16, (32, 32, 16, 16))
    path = tmp_path / "narrow.safetensors"
    save_file(tiny_decoder_checkpoint(narrow), str(path))
    net = load_tiny_decoder(str(path), 16)
    assert net.channels == (32, 32, 16, 16)
    x = torch.randn(2, 16, 2, 3)
    pasts = [x.new_zeros(s) for s in net.memory_shapes(2, 3)]
    assert torch.equal(net(x, pasts)[0], narrow.eval()(x, pasts)[0])


def test_a_decoder_that_declares_its_latent_space_serves_only_that_model(tmp_path):
    """The toy world's real-time member ships a tiny decoder for the toy world's VAE: `--tiny-vae model` takes it,
    and it is refused for a model of the Wan 2.1 latent space (and the published files for the toy world)."""
    from pipeline.model.components import vae_configs
    from pipeline.resolve import resolve
    from pipeline.decoders.tiny_vae import check_latent_space, latent_space_of

    cfg, values = resolve({"model": "toyworld-rt", "tiny_vae": "model", "http": "off"})
    assert cfg.tiny_vae.endswith("model_rt/tiny_vae.safetensors") and values["tiny_vae"] == cfg.tiny_vae
    declared = latent_space_of(cfg.tiny_vae)
    toy_vae, wan = vae_configs("toyworld-rt")
    assert declared["z_dim"] == 16 and declared["latents_mean"] == pytest.approx(toy_vae["latents_mean"])
    check_latent_space(toy_vae, wan, "toyworld-rt", declared=declared)  # the toy world's own: accepted
    with pytest.raises(ConfigError, match="its own VAE .*the latent space its file declares"):
        check_latent_space(None, wan, "tiny", declared=declared)  # a Wan 2.1 model: refused
    net = load_tiny_decoder(cfg.tiny_vae, 16)
    assert net.channels != (256, 128, 64, 64)  # the toy world's narrower decoder
    with pytest.raises(ConfigError, match="ships no tiny decoder"):
        resolve({"model": "toyworld", "tiny_vae": "model", "http": "off"})


@pytest.mark.parametrize("name, z, patch, seed", [("taew2_1", 16, 1, 11), ("taew2_2", 48, 2, 12)])
def test_streaming_decode_equals_the_original_taehv_code(name, z, patch, seed):
    """tests/fixtures/taehv_reference.safetensors holds what the original TAEHV code (github.com/madebyollin/taehv,
    run by benchmarks/taehv_reference.py) decoded from these latents with these seeded weights, the whole sequence
    at once; ours decodes it block by block. taew2_2: Wan 2.2's 48 channels and 2x2 pixel patch."""
    from safetensors.torch import load_file

    from pipeline.decoders.tiny_vae import random_tiny_decoder

    ref = load_file(os.path.join(ROOT, "tests", "fixtures", "taehv_reference.safetensors"))
    lat, want = ref[f"{name}.latents"], ref[f"{name}.frames"]  # [1, T, z, h, w], [T', 3, H, W]
    net = random_tiny_decoder(z, seed=seed, patch=patch)
    dec = StreamingTinyDecoder(net)
    blocks = lat.transpose(1, 2).split(2, dim=2)  # [1, z, 2, h, w] each
    got = stream(dec, blocks)
    assert got.shape == want.shape == (13, 3, 8 * patch * lat.shape[3], 8 * patch * lat.shape[4])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_taew2_2_checkpoint_loads_for_48_channel_latents(tmp_path):
    from pipeline.decoders.tiny_vae import random_tiny_decoder

    net = random_tiny_decoder(48, seed=3, patch=2)
    path = str(tmp_path / "taew2_2.safetensors")
    save_file(tiny_decoder_checkpoint(net), path)
    loaded = load_tiny_decoder(path, 48)
    assert loaded.patch == 2
    x = torch.randn(2, 48, 2, 3)
    out, _ = loaded(x, [x.new_zeros(s) for s in loaded.memory_shapes(2, 3)])
    assert out.shape == (8, 3, 32, 48)
    with pytest.raises(ConfigError, match="decodes 48-channel latents, the model's have 16"):
        load_tiny_decoder(path, 16)
