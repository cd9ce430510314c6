"""The toy world's real-time member: the training command on CPU (a few steps: it runs, writes a model the daemon
loads with its own tiny decoder, and its losses are finite), and the shipped model's settings."""
import json

import numpy as np
import pytest

from pipeline.toyworld.train_rt import main


@pytest.fixture(scope="module")
def rt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_rt")
    rc = main(["--out", str(out), "--device", "cpu", "--steps", "4", "--batch", "2", "--pool-clips", "2",
               "--pair-clips", "2", "--tiny-steps", "2", "--tiny-batch", "1", "--log-every", "2"])
    assert rc == 0
    return out, json.loads((out / "train_log.json").read_text())


def test_training_writes_a_model_the_engine_loads(rt_run):
    from pipeline.model.components import load_components, model_defaults
    from pipeline.settings import MODEL_KEYS
    from pipeline.decoders.tiny_vae import latent_space_of, load_tiny_decoder

    out, log = rt_run
    c = load_components(str(out))
    assert c.transformer.config.num_layers == 6
    d = model_defaults(str(out), MODEL_KEYS)
    assert (d["steps"], d["guidance"], d["flow_shift"], d["reuse_context"]) == (4, 1.0, 5.0, True)
    assert load_tiny_decoder(str(out / "tiny_vae.safetensors"), 16).channels == (64, 64, 32, 32)
    assert latent_space_of(str(out / "tiny_vae.safetensors"))["latents_std"] == pytest.approx(
        c.vae.config.latents_std)
    assert log["dit"]["steps"] == len(log["dit"]["losses"]) == 4 and np.all(np.isfinite(log["dit"]["losses"]))
    assert log["tiny_decoder"]["steps"] == 2 and np.all(np.isfinite(log["tiny_decoder"]["losses"]))


def test_the_shipped_model_streams_in_the_engine():
    """toyworld-rt with its defaults: 4 steps, no CFG, blocks that leave the queue clean."""
    import torch

    from pipeline.config import EngineConfig
    from pipeline.dualparal.engine import Engine
    from pipeline.model.components import load_components, model_defaults
    from pipeline.settings import MODEL_KEYS
    from pipeline.model.text import PromptEncoder

    d = model_defaults("toyworld-rt", MODEL_KEYS)
    c = load_components("toyworld-rt", flow_shift=d["flow_shift"])
    cfg = EngineConfig(model="toyworld-rt", **{k: v for k, v in d.items() if k in EngineConfig.__dataclass_fields__})
    enc = PromptEncoder(c.tokenizer, c.text_encoder, c.text_max_len)
    eng = Engine(cfg, c.transformer, c.scheduler, enc.encode)
    out = []
    while len(out) < 3:
        out += eng.tick().finished
    assert [b.index for b in out] == [0, 1, 2] and not cfg.use_cfg
    assert all(torch.isfinite(b.latents).all() and b.latents.shape == (1, 16, 2, 8, 8) for b in out)
