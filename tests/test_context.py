"""Context beyond one neighbouring block, and sink frames: the pure plan, and the engine against reference
computations written from the definition (pipeline/dualparal/context.py) with the model's own modules."""
import copy

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError, EngineConfig
from pipeline.dualparal.context import blocks_back, plan_context, tail_frames
from pipeline.dualparal.engine import Engine
from pipeline.model.components import load_components
from pipeline.model.split import rotary
from pipeline.model.text import PromptEncoder

PROMPT, CUT_PROMPT = "a red circle moving left", "a blue square moving up"


def test_plan_reaches_back_over_several_blocks_but_not_past_the_shot():
    p = plan_context(block=5, shot=0, block_frames=2, context_frames=5)
    assert p.frames == 5 and p.sources == ((2, 1), (3, 2), (4, 2)) and p.sink == 0
    assert p.blocks == (2, 3, 4)
    assert plan_context(5, 4, 2, 5).sources == ((4, 2),)  # the shot started at block 4: one block of context
    assert plan_context(4, 4, 2, 5).frames == 0  # a shot's first block has none
    assert plan_context(3, 0, 4, 2).sources == ((2, 2),)  # C < B: the end of the predecessor
    assert plan_context(0, 0, 2, 0).sources == ()


def test_sink_frames_only_once_they_left_the_context():
    # B=2, C=3, K=1: block b's context starts at frame 2b-3; the sink (frame 2*shot) must lie before it
    assert [plan_context(b, 0, 2, 3, 1).sink for b in range(5)] == [0, 0, 1, 1, 1]
    assert [plan_context(b, 10, 2, 3, 1).sink for b in range(10, 14)] == [0, 0, 1, 1]
    assert plan_context(6, 0, 4, 4, 2).sink == 2  # a gap between the sink and the context is fine
    assert plan_context(2, 0, 2, 4, 1).sink == 0  # the context (blocks 0 and 1) still holds the shot's first frame
    assert plan_context(3, 0, 2, 4, 1).sink == 1
    with pytest.raises(ValueError):
        plan_context(3, 4, 2, 2)


def test_tail_and_reach():
    assert tail_frames(2, 5) == 2 and tail_frames(4, 3) == 3 and tail_frames(4, 0) == 0
    assert blocks_back(2, 5) == 3 and blocks_back(4, 4) == 1 and blocks_back(4, 0) == 0


def test_options_are_checked():
    EngineConfig(block_frames=2, context_frames=16).validate()  # up to 8 blocks back
    with pytest.raises(ConfigError, match="context-frames"):
        EngineConfig(block_frames=2, context_frames=17).validate()
    with pytest.raises(ConfigError, match="reuse-context"):
        EngineConfig(block_frames=2, context_frames=2, sink_frames=1).validate()
    with pytest.raises(ConfigError, match="sink-frames"):
        EngineConfig(block_frames=2, context_frames=2, sink_frames=3, reuse_context=True).validate()


@pytest.fixture(scope="module")
def tiny():
    c = load_components("tiny")
    enc = PromptEncoder(c.tokenizer, c.text_encoder, c.text_max_len)
    return c, enc.encode


def _engine(tiny, **kw):
    comps, encode = tiny
    # one step: every block enters, is denoised and leaves in one tick, so each block's context is final
    cfg = EngineConfig(steps=1, block_frames=2, guidance=1.0, seed=5, prompt=PROMPT, **kw)
    return Engine(cfg, comps.transformer, comps.scheduler, encode)


def _blocks(eng, n, cut_at=None):
    if cut_at is not None:
        eng.submit_prompt(CUT_PROMPT, "cut", at_block=cut_at)
    out = {}
    while len(out) < n:
        out.update({fb.index: fb for fb in eng.tick().finished})
    return out


def _step(eng, pred, noise):
    sched = copy.deepcopy(eng.base_scheduler)
    return sched.step(pred, eng.timesteps[0], noise, return_dict=False)[0]


@torch.inference_mode()
def test_recomputed_context_over_several_blocks_equals_a_direct_forward(tiny):
    """Without --reuse-context, C = 3 > B = 2 frames of context: the window of block b is the last 3 frames of the
    finished blocks before it (two blocks) followed by its own noise, run through the whole model at once."""
    comps, encode = tiny
    eng = _engine(tiny, context_frames=3)
    got = _blocks(eng, 5)
    emb = encode(PROMPT)
    clean = {b: got[b].latents for b in got}
    for b in range(5):
        noise = eng.noise.block_noise(b)
        ctx = torch.cat([clean[j] for j in range(max(0, b - 2), b)], dim=2)[:, :, -3:] if b else noise[:, :, :0]
        x = torch.cat([ctx, noise], dim=2)
        pred = comps.transformer(hidden_states=x, timestep=eng.timesteps[:1], encoder_hidden_states=emb,
                                 return_dict=False)[0][:, :, -2:]
        ref = _step(eng, pred, noise)
        assert torch.allclose(got[b].latents, ref, atol=1e-5), (b, (got[b].latents - ref).abs().max())
    assert any(ctx.shape[2] == 3 for ctx in [torch.cat([clean[1], clean[2]], 2)[:, :, -3:]])


class _Reference:
    """Self-attention from the definition: queries of the block's own frames attend to [sink frames of the shot's
    first block][the last C frames before the block, within its shot][its own frames], each earlier frame's
    keys/values being those its own block's forward computed; rotary positions 0.. across the three, local."""

    def __init__(self, model, tpf, lat_hw, sink_frames, context_frames, block_frames):
        self.model, self.tpf, self.lat_hw = model, tpf, lat_hw
        self.k, self.c, self.b = sink_frames, context_frames, block_frames
        self.record: dict[int, list] = {}  # block -> per layer (key, value), pre-rotary

    def run(self, block, shot, noise, t, emb):
        layers = []
        self.record[block] = layers
        plan = plan_context(block, shot, self.b, self.c, self.k)
        for i, blk in enumerate(self.model.blocks):
            blk.attn1.set_processor(self._processor(i, block, shot, plan, layers))
        try:
            return self.model(hidden_states=noise, timestep=t, encoder_hidden_states=emb, return_dict=False)[0]
        finally:
            from diffusers.models.transformers.transformer_wan import WanAttnProcessor
            for blk in self.model.blocks:
                blk.attn1.set_processor(WanAttnProcessor())

    def _processor(self, layer, block, shot, plan, layers):
        ref = self

        def proc(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
            k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
            v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
            layers.append((k, v))
            ks, vs = [], []
            if plan.sink:
                k0, v0 = ref.record[shot][layer]
                ks.append(k0[:, :plan.sink * ref.tpf])
                vs.append(v0[:, :plan.sink * ref.tpf])
            if plan.frames:
                kc = torch.cat([ref.record[j][layer][0] for j in range(shot, block)], dim=1)
                vc = torch.cat([ref.record[j][layer][1] for j in range(shot, block)], dim=1)
                ks.append(kc[:, -plan.frames * ref.tpf:])
                vs.append(vc[:, -plan.frames * ref.tpf:])
            ks.append(k)
            vs.append(v)
            kk, vv = torch.cat(ks, dim=1), torch.cat(vs, dim=1)
            cos, sin = rotary(ref.model, kk.shape[1] // ref.tpf, *ref.lat_hw)

            def rope(x, lo):
                c, s = cos[:, lo:lo + x.shape[1]], sin[:, lo:lo + x.shape[1]]
                x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
                return torch.stack([x1 * c[..., 0::2] - x2 * s[..., 1::2], x1 * s[..., 1::2] + x2 * c[..., 0::2]],
                                   dim=-1).flatten(-2)
            qr, kr = rope(q, kk.shape[1] - q.shape[1]), rope(kk, 0)
            out = F.scaled_dot_product_attention(qr.transpose(1, 2), kr.transpose(1, 2), vv.transpose(1, 2))
            return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2, 3)))
        return proc


@torch.inference_mode()
@pytest.mark.parametrize("context_frames, sink_frames", [(3, 0), (3, 1), (4, 2)])
def test_reused_context_and_sinks_equal_the_reference(tiny, context_frames, sink_frames):
    """--reuse-context with context over several blocks and sink frames, across a cut (a new shot at block 5)."""
    comps, encode = tiny
    eng = _engine(tiny, context_frames=context_frames, sink_frames=sink_frames, reuse_context=True)
    got = _blocks(eng, 9, cut_at=5)
    lat_hw = (eng.cfg.latent_height, eng.cfg.latent_width)
    ref = _Reference(comps.transformer, eng.geom.tpf, lat_hw, sink_frames, context_frames, 2)
    used_sink = used_multi = False
    for b in range(9):
        shot = 0 if b < 5 else 5
        noise = eng.noise.block_noise(b)
        pred = ref.run(b, shot, noise, eng.timesteps[:1], encode(PROMPT if b < 5 else CUT_PROMPT))
        want = _step(eng, pred, noise)
        assert torch.allclose(got[b].latents, want, atol=1e-5), (b, (got[b].latents - want).abs().max())
        plan = plan_context(b, shot, 2, context_frames, sink_frames)
        used_sink |= plan.sink > 0
        used_multi |= len(plan.sources) > 1
    assert used_multi and used_sink == (sink_frames > 0)
    assert got[5].shot_start and not any(got[b].shot_start for b in got if b != 5)
