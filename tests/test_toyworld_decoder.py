"""Fine-tuning the toy VAE's decoder (pipeline/toyworld/tune_decoder.py): the outline band, the coverage error it
weighs, and a short run on the shipped model, on CPU: only the decoder changes, the latent space stays."""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.toyworld import tune_decoder as td  # noqa: E402

MODEL_RT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "pipeline", "toyworld", "model_rt")


def test_edge_band_is_the_outline_on_the_torus():
    mask = torch.zeros(1, 1, 1, 8, 8)
    mask[..., 2:5, 2:5] = 1.0  # a 3x3 square
    band = td.edge_band(mask)[0, 0, 0]
    assert band[3, 3] == 0  # the centre: shape all round
    assert band[0, 0] == 0 and band[6, 6] == 0  # far background
    assert band[2, 2] == 1 and band[1, 3] == 1 and band[5, 5] == 1  # the square's own edge and the pixels outside it
    assert int(band.sum()) == 5 * 5 - 1  # the 5x5 ring around the square, its centre excluded
    wrapped = torch.zeros(1, 1, 1, 8, 8)
    wrapped[..., 0, 0] = 1.0  # a pixel in the corner: its neighbours wrap to the other edges
    assert td.edge_band(wrapped)[0, 0, 0, 7, 7] == 1


def test_coverage_error_reads_alpha_along_the_colour_axis():
    torch.manual_seed(0)
    fg, bg = torch.tensor([[0.8, -0.6, -0.7]]), torch.tensor([[-0.9, -0.2, -0.8]])
    x = torch.rand(1, 3, 2, 4, 4) * 2 - 1
    delta = torch.rand(1, 1, 2, 4, 4) - 0.5
    axis = (fg - bg).view(1, 3, 1, 1, 1)
    got = td.coverage_error(x + delta * axis, x, fg, bg)
    assert torch.allclose(got, delta, atol=1e-5)  # a coverage change is read back as itself
    across = torch.linalg.cross(axis.view(1, 3), torch.tensor([[0.0, 0.0, 1.0]])).view(1, 3, 1, 1, 1)
    assert td.coverage_error(x + 0.3 * across, x, fg, bg).abs().max() < 1e-5  # a hue error across it is not


def test_a_short_run_changes_the_decoder_only(tmp_path, capsys):
    from pipeline.model.components import load_components

    out = tmp_path / "tuned"
    assert td.main(["--model", MODEL_RT, "--out", str(out), "--device", "cpu", "--steps", "2", "--batch", "2",
                    "--frames", "5", "--log-every", "1"]) == 0
    old = load_components(MODEL_RT, parts=("vae",)).vae
    new = load_components(str(out), parts=("vae",)).vae
    assert not os.path.islink(out / "vae")  # a VAE of its own, not the shipped one's link
    assert "_name_or_path" not in json.loads((out / "vae" / "config.json").read_text())  # no path of this machine
    assert new.config.latents_mean == old.config.latents_mean and new.config.latents_std == old.config.latents_std
    old_sd, new_sd = old.state_dict(), new.state_dict()
    trained = {k for k in old_sd if not torch.equal(old_sd[k], new_sd[k])}
    assert trained and all(k.startswith(("decoder.", "post_quant_conv.")) for k in trained)
    assert not any(k.startswith(("encoder.", "quant_conv.")) for k in trained)
    log = json.loads((out / "train_log.json").read_text())
    assert log["decoder_tuning"][-1]["steps"] == 2 and len(log["decoder_tuning"][-1]["losses"]) == 2
    assert os.path.isfile(out / "transformer" / "diffusion_pytorch_model.safetensors")  # the rest comes along
    assert "2 steps" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [(["--frames", "6"], "1 + 4k"), ([], "exists")])
def test_bad_arguments_are_refused(tmp_path, capsys, args, message):
    out = tmp_path / "tuned"
    if message == "exists":
        out.mkdir()
    with pytest.raises(SystemExit) as e:
        td.main(["--model", MODEL_RT, "--out", str(out), "--device", "cpu", "--steps", "1", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
