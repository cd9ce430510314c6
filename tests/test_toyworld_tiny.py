"""The toy world's tiny-decoder distillation: the boundary options (a latent step the teacher decodes too, a loss on
frame-to-frame differences), continuing from a shipped decoder, and the seam floor of the decoders without streaming,
on CPU."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.decoders.tiny_vae import load_tiny_decoder  # noqa: E402
from pipeline.toyworld import train_tiny as tt  # noqa: E402

MODEL_RT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipeline", "toyworld", "model_rt")


def test_jolt_is_one_step_from_a_frame_on():
    torch.manual_seed(0)
    z = torch.randn(6, 4, 5, 3, 3)
    std = torch.rand(1, 4, 1, 1, 1) + 0.5
    out = tt.jolted(z, std, 2.0)
    d = out - z
    for i in range(z.shape[0]):
        moved = [t for t in range(z.shape[2]) if d[i, :, t].abs().max() > 0]
        assert moved and moved == list(range(moved[0], z.shape[2])) and moved[0] >= 1  # from frame k >= 1 on
        for t in moved[1:]:
            assert torch.allclose(d[i, :, t], d[i, :, moved[0]], atol=1e-6)  # the same step on every later frame
    assert torch.equal(tt.jolted(z, std, 0.0), z)


def test_temporal_term_sees_steps_not_offsets():
    torch.manual_seed(0)
    teacher = torch.rand(2, 6, 3, 8, 8)
    mask = torch.zeros(2, 6, 1, 8, 8)
    offset = teacher + 0.1  # the same motion, every frame off by 0.1
    step = teacher.clone()
    step[:, 3:] += 0.1  # right before frame 3, off after it: a seam the teacher does not have
    plain = [tt.tiny_loss(o, teacher, mask, 0.0) for o in (offset, step)]
    temporal = [tt.tiny_loss(o, teacher, mask, 1.0) for o in (offset, step)]
    assert torch.allclose(temporal[0], plain[0])  # a constant error has no frame-to-frame part
    assert temporal[1] > plain[1] + 1e-3
    assert tt.tiny_loss(teacher, teacher, mask, 1.0) == 0


def test_continuing_from_the_shipped_decoder_with_both_options(tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    shipped = os.path.join(MODEL_RT, "tiny_vae.safetensors")
    rc = tt.main(["--model", MODEL_RT, "--out", str(out), "--device", "cpu", "--steps", "2", "--seconds", "0",
                  "--batch", "2", "--init", shipped, "--jolt", "1.0", "--temporal", "0.5", "--lr", "1e-4"])
    assert rc == 0
    new, old = load_tiny_decoder(str(out), 16), load_tiny_decoder(shipped, 16)
    pairs = list(zip(new.state_dict().items(), old.state_dict().items()))
    assert [k for (k, _), _ in pairs] == [k for _, (k, _) in pairs]  # the shipped decoder's layout, continued
    assert any(not torch.equal(a.float(), b.float()) for (_, a), (_, b) in pairs)  # and trained
    assert "2 steps" in capsys.readouterr().err


def test_init_must_be_a_tiny_decoder(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="--tiny-vae"):
        tt.main(["--model", MODEL_RT, "--out", str(tmp_path / "o.safetensors"), "--device", "cpu", "--steps", "1",
                 "--init", str(junk)])


def test_seam_floor_scores_ground_truth_as_seamless(tmp_path):
    from benchmarks import seam_floor

    res = seam_floor.main(["--model", MODEL_RT, "--tiny", os.path.join(MODEL_RT, "tiny_vae.safetensors"),
                           "--clips", "2", "--latents", "6", "--out", str(tmp_path / "floor.json")])
    d = res["decoders"]
    assert d["ground truth (rendered)"]["ratio"] == pytest.approx(1.0, abs=0.02)
    assert d["ground truth (rendered)"]["boundaries"] == 2 * 2  # 6 latents in blocks of 2: 3 blocks a clip
    for name in ("the VAE", "tiny tiny_vae.safetensors"):
        assert d[name]["boundary_mad"] > 0 and d[name]["latent_ratio"] > 0
