"""The engine drives the Wan model correctly and deterministically."""
import torch
from diffusers import WanPipeline

from pipeline.config import EngineConfig
from pipeline.dualparal.engine import Engine
from pipeline.model.random_wan import TINY_TEXT_MAX_LEN, build_tiny_components


def _pipe(seed=0):
    c = build_tiny_components(seed)
    return WanPipeline(tokenizer=c["tokenizer"], text_encoder=c["text_encoder"], transformer=c["transformer"],
                       vae=c["vae"], scheduler=c["scheduler"])


def _encoder(pipe):
    def encode(text):
        with torch.inference_mode():
            return pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=TINY_TEXT_MAX_LEN,
                                      device="cpu")[0]
    return encode


def _engine(pipe, **kw):
    cfg = EngineConfig(**{"steps": 4, "block_frames": 2, "context_frames": 1, "seed": 3, **kw})
    return Engine(cfg, pipe.transformer, pipe.scheduler, _encoder(pipe))


def _run(engine, ticks):
    out = {}
    for _ in range(ticks):
        for fb in engine.tick().finished:
            out[fb.index] = fb
    return out


def test_block_equals_diffusers_wan_pipeline_on_the_same_window():
    """With no context, every block is exactly WanPipeline's denoising of its own noise."""
    pipe = _pipe()
    eng = _engine(pipe, context_frames=0, guidance=5.0)
    got = _run(eng, 4 + 2)  # blocks 0..2 finished
    enc = _encoder(pipe)
    for b in (0, 2):
        noise = eng.noise.block_noise(b)
        ref = pipe(prompt_embeds=enc(eng.cfg.prompt), negative_prompt_embeds=enc(eng.cfg.negative_prompt),
                   latents=noise.clone(), num_frames=4 * (2 - 1) + 1, height=64, width=64, num_inference_steps=4,
                   guidance_scale=5.0, output_type="latent").frames
        diff = (got[b].latents - ref).abs().max().item()
        # CFG is batched here (cond+uncond in one forward) and run separately by WanPipeline: float32 rounding only
        assert diff < 1e-4, diff
        assert got[b].latents.shape == (1, 16, 2, 8, 8)


def test_same_seed_same_schedule_identical_and_other_seed_differs():
    pipe = _pipe()
    a = _run(_engine(pipe), 8)
    b = _run(_engine(pipe), 8)
    c = _run(_engine(pipe, seed=4), 8)
    assert sorted(a) == [0, 1, 2, 3, 4]
    for k in a:
        assert torch.equal(a[k].latents, b[k].latents)
    assert not torch.allclose(a[2].latents, c[2].latents)


def test_context_couples_neighbouring_blocks():
    """Block 0 differs between two runs (its prompt), every later block has the same prompt: with context frames
    block 1 differs through its context alone; without, blocks are independent and block 1 is identical."""
    pipe = _pipe()

    def run(first_prompt, context_frames):
        eng = _engine(pipe, prompt=first_prompt, context_frames=context_frames)
        eng.submit_prompt("a blue square moving up", "queue", at_block=1)
        return _run(eng, 7)
    with_a, with_b = run("a red circle", 1), run("a green triangle", 1)
    no_a, no_b = run("a red circle", 0), run("a green triangle", 0)
    assert with_a[1].cond.prompt == with_b[1].cond.prompt == "a blue square moving up"
    assert with_a[0].cond.prompt != with_b[0].cond.prompt
    assert torch.equal(no_a[1].latents, no_b[1].latents)  # independent blocks
    assert (with_a[1].latents - with_b[1].latents).abs().max().item() > 1e-3  # coupled through the context


def test_prompt_change_is_deterministic_and_lands_at_the_acknowledged_block():
    pipe = _pipe()
    runs = []
    for _ in range(2):
        eng = _engine(pipe)
        _run(eng, 3)
        ch = eng.submit_prompt("a blue square moving up", "soft", at_block=2)
        runs.append((ch, _run(eng, 6)))
    (ch, a), (_, b) = runs
    assert ch.first_block == 2
    assert a[1].cond.epoch == 0 and a[2].cond.epoch == ch.epoch
    for k in a:
        assert torch.equal(a[k].latents, b[k].latents)


def test_cut_starts_a_new_shot_that_does_not_depend_on_the_old_one():
    """After a cut, the acknowledged block is generated without context frames from before the cut (a new shot):
    the blocks from it on are identical whatever the stream showed before, and only that block is a shot start."""
    pipe = _pipe()
    runs = []
    for before in ("a red circle", "a green triangle"):
        eng = _engine(pipe, prompt=before)
        seen = _run(eng, 6)
        ch = eng.submit_prompt("a blue square moving up", "cut")
        seen.update(_run(eng, 8))
        runs.append((ch, seen))
    (ch, a), (ch2, b) = runs
    n = ch.first_block
    assert n == ch2.first_block and n >= 2 and max(a) >= n + 2
    assert not torch.allclose(a[n - 1].latents, b[n - 1].latents)  # the old shots differ ...
    for k in range(n, max(a) + 1):  # ... the new one does not
        assert torch.equal(a[k].latents, b[k].latents), k
    assert [k for k in sorted(a) if a[k].shot_start] == [n]


def test_reuse_context_without_context_frames_changes_nothing():
    pipe = _pipe()
    a = _run(_engine(pipe, context_frames=0), 7)
    b = _run(_engine(pipe, context_frames=0, reuse_context=True), 7)
    assert sorted(a) == sorted(b) and len(a) >= 3
    for k in a:
        assert torch.equal(a[k].latents, b[k].latents)


def test_reuse_context_takes_the_predecessor_from_the_cache():
    """--reuse-context: windows hold the block's own frames only; the predecessor's last C frames enter each layer
    as the keys/values its forward stored one tick earlier. Deterministic, close to recomputing them but not the
    same, and the cache holds one entry per block in flight plus the one before the head."""
    pipe = _pipe()
    eng = _engine(pipe, reuse_context=True)
    seen_frames = []
    submit = eng.pipe.submit
    eng.pipe.submit = lambda meta, carry: (seen_frames.append((meta.block > meta.shot, carry.grid[0])), submit(meta, carry))
    a = _run(eng, 8)
    b = _run(_engine(pipe, reuse_context=True), 8)
    ref = _run(_engine(pipe), 8)
    assert sorted(a) == sorted(ref) == [0, 1, 2, 3, 4]
    assert {f for _, f in seen_frames} == {2}  # B frames per window, never B + C
    assert any(has_prev for has_prev, _ in seen_frames)
    for k in a:
        assert torch.equal(a[k].latents, b[k].latents)
        assert torch.isfinite(a[k].latents).all()
    diff = max((a[k].latents - ref[k].latents).abs().max().item() for k in a if k > 0)
    assert diff > 1e-4  # a different (approximate) context ...
    assert a[0].latents.std().item() > 0.1
    tails = eng.stage.cache.tails
    assert all(len(t) <= eng.cfg.steps + 1 for t in tails)
    in_flight = {blk for blk, _ in eng.queue.blocks()}
    assert in_flight and all(min(in_flight) - 1 in t and max(in_flight) in t for t in tails)


def test_compiled_blocks_compute_what_the_eager_ones_do(tmp_path, monkeypatch):
    from pipeline.model.compile import compile_blocks

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    pipe = _pipe()
    ref = _run(_engine(pipe, reuse_context=True), 7)
    eng = _engine(_pipe(), reuse_context=True)
    assert compile_blocks(eng.stage.blocks) == str(tmp_path)
    got = _run(eng, 7)
    assert sorted(got) == sorted(ref) and len(got) >= 3
    for k in ref:
        assert torch.allclose(got[k].latents, ref[k].latents, atol=1e-4), k
    assert any(tmp_path.iterdir())  # compiled artefacts were written to the persistent cache


def test_a_tick_reports_its_windows_fewer_than_steps_while_filling_and_after_a_cut():
    """What the pacer's LeadEstimator counts as a full tick: one with S windows."""
    eng = _engine(_pipe())
    assert [eng.tick().windows for _ in range(6)] == [1, 2, 3, 4, 4, 4]
    eng.submit_prompt("a blue square moving up", "cut")
    after = [eng.tick().windows for _ in range(5)]
    assert after[0] < 4 and after[-1] == 4, after
