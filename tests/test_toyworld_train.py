"""Toy-world training command (issue 6): smoke preset on CPU, a diffusers-loadable output, decreasing losses,
reproducible weights."""
import json

import numpy as np
import pytest
import torch

from pipeline.toyworld.train import PRESETS, TrainConfig, main, train

VAE_STEPS, DIT_STEPS, K = 60, 40, 10


def _cfg(**kw):
    return TrainConfig(**dict(PRESETS["smoke"], preset="smoke", **kw))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_model")
    rc = main(["--out", str(out), "--preset", "smoke", "--device", "cpu", "--seed", "0",
               "--vae-steps", str(VAE_STEPS), "--dit-steps", str(DIT_STEPS)])
    assert rc == 0
    return out, json.loads((out / "train_log.json").read_text())


def test_output_loads_with_project_loader_and_diffusers(smoke_run):
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    from pipeline.model.components import load_components

    out, log = smoke_run
    c = load_components(str(out))
    assert isinstance(c.transformer, WanTransformer3DModel) and isinstance(c.vae, AutoencoderKLWan)
    assert c.text_max_len == 32 and c.transformer.config.text_dim == c.text_encoder.config.d_model
    assert c.scheduler.config.flow_shift == 3.0 and c.scheduler.config.prediction_type == "flow_prediction"
    pipe = WanPipeline.from_pretrained(str(out))
    assert pipe.vae.config.latents_mean == c.vae.config.latents_mean
    z = c.vae.config.z_dim
    assert len(c.vae.config.latents_mean) == z == len(c.vae.config.latents_std) == 16
    assert c.vae.config.latents_mean == pytest.approx(log["vae"]["latents_mean"])
    assert all(s > 0 for s in c.vae.config.latents_std)
    assert log["seed"] == 0 and log["config"]["preset"] == "smoke" and log["seconds"] > 0
    from pipeline.model.components import model_defaults
    from pipeline.settings import MODEL_KEYS

    d = model_defaults(str(out), MODEL_KEYS)
    assert d["negative_prompt"] == "" and d["height"] == d["width"] == 32 and d["context_frames"] == 1


def test_losses_decrease(smoke_run):
    _, log = smoke_run
    vae, dit = log["vae"]["losses"], log["dit"]["losses"]
    assert (log["vae"]["steps"], log["dit"]["steps"]) == (len(vae), len(dit)) == (VAE_STEPS, DIT_STEPS)
    assert np.all(np.isfinite(vae)) and np.all(np.isfinite(dit))
    assert np.mean(vae[-K:]) < 0.95 * np.mean(vae[:K])
    assert np.mean(dit[-K:]) < 0.9 * np.mean(dit[:K])


def test_same_seed_same_weights(tmp_path):
    from diffusers import WanTransformer3DModel

    for name in ("a", "b", "c"):
        train(_cfg(seed=1 if name == "c" else 0, vae_steps=2, dit_steps=3, stats_clips=4), str(tmp_path / name),
              "cpu", log=lambda m: None)
    t = {n: WanTransformer3DModel.from_pretrained(str(tmp_path / n), subfolder="transformer").state_dict()
         for n in "abc"}
    assert t["a"].keys() == t["b"].keys()
    assert all(torch.equal(t["a"][k], t["b"][k]) for k in t["a"])
    assert not all(torch.equal(t["a"][k], t["c"][k]) for k in t["a"])
    stats = [json.loads((tmp_path / n / "train_log.json").read_text())["vae"]["latents_mean"] for n in "ab"]
    assert stats[0] == stats[1]
