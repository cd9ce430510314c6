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
               "--pair-clips", "2", "--tiny-steps", "2", "--tiny-batch", "1", "--log-every", "2",
               "--focus", "0.5", "--shape-weight", "4", "--kinds", "0.25,0.25,0.25,0.25",
               "--self-context", "1", "--self-from", "1"])
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
    assert (log["config"]["focus"], log["config"]["shape_weight"]) == (0.5, 4.0)
    assert log["config"]["kinds"] == [0.25] * 4 + [0.0]  # four given: no steps after a change
    assert (log["config"]["self_context"], log["config"]["self_from"]) == (1.0, 1)
    assert "_name_or_path" not in json.loads((out / "transformer" / "config.json").read_text())  # no machine path


def test_training_keeps_the_base_vaes_record(rt_run):
    """The VAE is copied from the base model: the record of its decoder's tuning comes along."""
    import os

    from pipeline.toyworld import MODEL_DIR

    out, log = rt_run
    with open(os.path.join(MODEL_DIR, "train_log.json")) as f:
        base = json.load(f)
    assert base["decoder_tuning"] and log["decoder_tuning"] == base["decoder_tuning"]


def test_own_output_is_the_models_denoising_of_the_block():
    """The context `--self-context` trains on: the shipped model's own last steps on a re-noised clip land nearer
    the clip than the noisy input was."""
    import torch

    from pipeline.model.components import load_components
    from pipeline.model.random_wan import wan_scheduler
    from pipeline.toyworld.render_torch import render_batch
    from pipeline.toyworld.train_dit import prompt_table
    from pipeline.toyworld.train_rt import RT_SHIFT, RT_STEPS, Unroll, own_output
    from pipeline.toyworld.train_vae import latent_stats, scene_table

    torch.manual_seed(0)
    c = load_components("toyworld-rt", dtype=torch.float32)
    table = scene_table("cpu")
    idx = torch.tensor([0, 40])
    u8 = render_batch(table, idx, torch.tensor([[20.0, 30.0], [40.0, 10.0]]), 4 * 6 - 3)
    mean, std = latent_stats(c.vae, "cpu")
    with torch.no_grad():
        lat = (c.vae.encode(u8.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)).latent_dist.mode() - mean) / std
    text = prompt_table(c.tokenizer, c.text_encoder, "cpu")[idx]
    sched = wan_scheduler(RT_SHIFT)
    sched.set_timesteps(RT_STEPS)
    u = Unroll(c.transformer.eval(), sched.sigmas, sched.timesteps, torch.device("cpu"))
    u.set_geometry(2, 2, 0, False)
    target = lat[:, :, 4:6]
    for level in (1, RT_STEPS - 1):
        torch.manual_seed(level)
        noisy = u.noised(target, level)
        torch.manual_seed(level)
        z = own_output(u, lat, 2, 2, 2, level, text)
        assert z.shape == target.shape
        assert (z - target).square().mean() < 0.5 * (noisy - target).square().mean()
    assert not torch.equal(z, target)


def test_after_change_context_is_the_models_own_soft_change():
    """The context of a step after a change: scene A's latents up to the change, then the model's own blocks as a
    soft change to B makes them (the first after `level` steps under A, the next one step fewer, each seeing the
    ones before), then A's again from the trained block on (which the step never reads). The second block, all its
    steps under B, lands nearer scene B than scene A."""
    import torch

    from pipeline.model.components import load_components
    from pipeline.model.random_wan import wan_scheduler
    from pipeline.toyworld.train_dit import prompt_table
    from pipeline.toyworld.train_rt import (CUT, RT_SHIFT, RT_STEPS, Unroll, after_change_context, change_pair,
                                            latent_encoder, own_output)
    from pipeline.toyworld.train_vae import scene_table

    torch.manual_seed(0)
    c = load_components("toyworld-rt", dtype=torch.float32)
    table = scene_table("cpu")
    a, b = torch.tensor([0, 40]), torch.tensor([77, 5])
    with torch.no_grad():
        za, zb = change_pair(latent_encoder(c.vae, "cpu"), table, a, b, torch.tensor([[20.0, 30.0], [40.0, 10.0]]),
                             torch.ones(2, dtype=torch.bool))
    text_b = prompt_table(c.tokenizer, c.text_encoder, "cpu")[b]
    sched = wan_scheduler(RT_SHIFT)
    sched.set_timesteps(RT_STEPS)
    u = Unroll(c.transformer.eval(), sched.sigmas, sched.timesteps, torch.device("cpu"))
    u.set_geometry(2, 1, 0, False)
    first, block, level = CUT // 2, CUT // 2 + 2, 1
    torch.manual_seed(7)
    got = after_change_context(u, za, block, 2, 1, level, text_b)
    torch.manual_seed(7)
    want = za.clone()
    want[:, :, 2 * first:2 * first + 2] = own_output(u, want, first, 2, 1, level, text_b)
    want[:, :, 2 * first + 2:2 * block] = own_output(u, want, first + 1, 2, 1, level - 1, text_b)
    assert torch.equal(got, want)
    assert torch.equal(got[:, :, :CUT], za[:, :, :CUT]) and torch.equal(got[:, :, 2 * block:], za[:, :, 2 * block:])
    second = slice(2 * first + 2, 2 * block)
    for i in range(2):
        assert (got[i, :, second] - zb[i, :, second]).square().mean() < \
            (got[i, :, second] - za[i, :, second]).square().mean()


def test_a_step_after_a_change_runs():
    """--kinds 0,0,0,0,1: every step trains a block after a soft change on the model's own rollout of it, at the
    recomputed geometries even where the draw was a reused one."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        assert main(["--out", d, "--device", "cpu", "--steps", "2", "--batch", "2", "--pool-clips", "2",
                     "--pair-clips", "2", "--tiny-seconds", "0", "--kinds", "0,0,0,0,1", "--seed", "3"]) == 0
        log = json.loads(open(d + "/train_log.json").read())
    assert log["config"]["kinds"] == [0, 0, 0, 0, 1.0]
    assert log["dit"]["steps"] == 2 and np.all(np.isfinite(log["dit"]["losses"]))


def test_shape_mask_marks_the_shape_not_the_background():
    import torch

    from pipeline.toyworld.train_rt import shape_mask

    z = torch.randn(2, 16, 1, 1, 1).expand(2, 16, 3, 8, 8).clone()  # a flat background per clip
    z[:, :, :, 2:4, 5:7] += 3.0  # the shape
    m = shape_mask(z)
    assert m.shape == (2, 1, 3, 8, 8)
    assert torch.allclose(m[:, :, :, 2:4, 5:7], torch.ones(()))
    m[:, :, :, 2:4, 5:7] = 0
    assert m.abs().max() < 1e-6


@pytest.mark.parametrize("kinds", ["0.5,0.5", "0.5,0.5,0.5,0.5", "a,b,c,d", "-0.5,0.5,0.5,0.5",
                                   "0.2,0.2,0.2,0.2,0.1,0.1", "0.2,0.2,0.2,0.2,0.3"])
def test_kinds_must_be_four_or_five_probabilities(kinds, capsys):
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--kinds", kinds])
    assert "--kinds" in capsys.readouterr().err


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


def test_no_tiny_decoder_budget_from_a_base_without_one(tmp_path):
    """--tiny-seconds 0 keeps the base's tiny decoder; from a base that has none (the default toy world), none is
    written, rather than an untrained one or a crash."""
    out = tmp_path / "rt"
    assert main(["--out", str(out), "--device", "cpu", "--steps", "1", "--batch", "1", "--pool-clips", "2",
                 "--pair-clips", "2", "--tiny-seconds", "0"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["dit"]["steps"] == 1 and log["tiny_decoder"]["steps"] == 0
    assert not (out / "tiny_vae.safetensors").exists() and (out / "transformer").is_dir()


def test_a_soft_change_between_dark_backgrounds_at_the_focus_context(tmp_path):
    """--focus 1 --focus-context 1: every step is at blocks of 2 with 1 frame of context (the preset's geometry);
    with --dark-changes 1 every change clip goes between navy and black. One in-flight step, its context the model's
    own output, runs and writes its record."""
    out = tmp_path / "rt"
    assert main(["--out", str(out), "--device", "cpu", "--steps", "1", "--batch", "2", "--pool-clips", "2",
                 "--pair-clips", "2", "--tiny-seconds", "0", "--focus", "1", "--focus-context", "1",
                 "--kinds", "0,0,0,1", "--dark-changes", "1", "--self-context", "1", "--self-from", "1"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert (log["config"]["focus_context"], log["config"]["dark_changes"]) == (1, 1.0)
    assert log["dit"]["steps"] == 1 and np.all(np.isfinite(log["dit"]["losses"]))


def test_dark_pairs_redraw_the_asked_fraction_between_navy_and_black():
    import torch

    from pipeline.toyworld.train_rt import dark_pairs
    from pipeline.toyworld.train_vae import SCENES

    rng = np.random.default_rng(0)
    n = 400
    a, b = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)  # scene 0 -> scene 0
    dark_pairs(rng, SCENES, a, b, 0.5)
    bgs = [(SCENES[i].background, SCENES[j].background) for i, j in zip(a.tolist(), b.tolist())]
    assert SCENES[0].background == "black"
    redrawn = [p for p in bgs if p != ("black", "black")]  # the pairs left alone stay scene 0 -> scene 0
    assert set(redrawn) == {("navy", "black"), ("black", "navy")}
    assert 150 < len(redrawn) < 250  # about half of 400
    assert 0.3 < sum(p == ("navy", "black") for p in redrawn) / len(redrawn) < 0.7  # both ways
    assert len({SCENES[i].colour for i in a.tolist()}) > 1  # colour (and shape, direction) drawn anew
    a2 = torch.zeros(n, dtype=torch.long)
    dark_pairs(rng, SCENES, a2, torch.zeros(n, dtype=torch.long), 0.0)
    assert not a2.any()


def test_spliced_change_clips_switch_at_once():
    """A change clip encoded whole carries scene A into its first latents of scene B (the encoder is causal); a
    spliced row has scene A's latents up to CUT and then exactly those of a clip of scene B throughout."""
    import torch

    from pipeline.model.components import load_components
    from pipeline.toyworld import MODEL_DIR
    from pipeline.toyworld.render_torch import render_batch
    from pipeline.toyworld.train_rt import CLIP_LATENTS, CUT, change_pair, latent_encoder
    from pipeline.toyworld.train_vae import SCENES, scene_table

    enc = latent_encoder(load_components(MODEL_DIR, device="cpu", parts=("vae",)).vae, "cpu")
    table = scene_table("cpu")
    pick = lambda c, s, bg: next(i for i, x in enumerate(SCENES) if (x.colour, x.shape, x.background) == (c, s, bg))  # noqa: E731
    a = torch.tensor([pick("red", "circle", "navy")] * 2)
    b = torch.tensor([pick("magenta", "triangle", "black")] * 2)
    pos = torch.tensor([[20.0, 30.0], [50.0, 10.0]])
    za, zb = change_pair(enc, table, a, b, pos, torch.tensor([False, True]))
    whole_b = enc(render_batch(table, b, pos, 4 * CLIP_LATENTS - 3, 64, 64, t0=-(4 * CUT - 3)))
    assert torch.equal(zb[1, :, :CUT], za[1, :, :CUT])
    assert torch.allclose(zb[1, :, CUT:], whole_b[1, :, CUT:], atol=1e-5)  # (encoded in another batch)
    assert torch.allclose(zb[0, :, :CUT], za[0, :, :CUT], atol=1e-5)  # encoded whole: A's up to the change,
    assert (zb[0, :, CUT] - whole_b[0, :, CUT]).abs().max() > 0.1  # then not yet B's own
    assert torch.allclose(zb[0, :, -1], whole_b[0, :, -1], atol=0.05)  # (the memory fades)


@pytest.mark.parametrize("argv, name", [(["--focus-context", "9"], "--focus-context"),
                                        (["--focus-context", "-1"], "--focus-context"),
                                        (["--dark-changes", "1.5"], "--dark-changes"),
                                        (["--spliced-changes", "-0.1"], "--spliced-changes")])
def test_focus_context_and_dark_changes_are_checked(argv, name, capsys):
    with pytest.raises(SystemExit):
        main(["--out", "unused", *argv])
    assert name in capsys.readouterr().err


def test_a_budget_of_nothing_runs_no_steps():
    from pipeline.toyworld.loop import Budget

    assert list(Budget(0, 0.0)) == []
    assert [s for s, _, _ in Budget(3, 0.0)] == [0, 1, 2]
