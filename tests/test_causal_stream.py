"""The causal engine's stream batch (`--stream-batch`, pipeline/causal/stream.py) against a reference written from
its definition: block k at step j is predicted from the whole shot up to block k at step j in one full forward with
a block-causal window mask (each block's queries see its own frames, the shot's sink frames and the last C frames
before it). No caches, no rows, no ticks: what the batched, cached, padded engine must compute (float32, CPU)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from pipeline.causal.cache import window
from pipeline.causal.engine import prologue
from pipeline.causal.schedule import FlowTable
from pipeline.causal.stream import CausalStreamEngine
from pipeline.config import ConfigError, EngineConfig
from pipeline.dualparal.attention import apply_rotary
from pipeline.model.split import epilogue, rotary, run_blocks

from test_causal import _model, ref  # noqa: F401 - the fixture's tiny causal model

B = 3


class MaskedSelfAttention:
    """Wan's self-attention over a whole sequence with a boolean mask [tokens, tokens] (True: may attend)."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        q, k = apply_rotary(q, *rotary_emb), apply_rotary(k, *rotary_emb)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=self.mask).transpose(1, 2)
        return attn.to_out[1](attn.to_out[0](out.flatten(2, 3)))


def _mask(blocks: int, tokens: int, context: int, sink: int) -> torch.Tensor:
    frames = blocks * B
    allowed = torch.zeros(frames, frames, dtype=torch.bool)
    for f in range(frames):
        start = f // B * B
        for g in list(window(start, sink, context).frames) + list(range(start, start + B)):
            allowed[f, g] = True
    return allowed.repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)


def reference(model, text, noise, steps: int, shift: float, first: int, blocks: int, context: int, sink: int):
    """Blocks first .. first + blocks - 1 of a shot that starts at block `first`: {block: clean latents}."""
    table = FlowTable(shift)
    ts = table.denoising_timesteps(steps)
    _, _, _, h, w = noise(first, 0).shape
    p = model.config.patch_size
    tokens = (h // p[1]) * (w // p[2])
    inputs, out = {}, {}
    for k in range(blocks):
        x = noise(first + k, 0)
        for j in range(steps):
            inputs[(k, j)] = x
            seq = torch.cat([inputs[(m, j)] for m in range(k + 1)], dim=2)
            mask = _mask(k + 1, tokens, context, sink)
            for blk in model.blocks:
                blk.attn1.set_processor(MaskedSelfAttention(mask))
            carry = prologue(model, seq, ts[j], text)
            carry = run_blocks(model.blocks, carry, rotary(model, (k + 1) * B, h, w))
            flow = epilogue(model, carry)[:, :, k * B:]
            x0 = table.to_x0(flow, x, ts[j])
            if j + 1 < steps:
                x = table.renoise(x0, noise(first + k, j + 1), ts[j + 1])
        out[first + k] = x0
    return out


def _noise(block: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * block + step)
    return torch.randn(1, 16, B, 4, 6, generator=g)


def _engine(model, embs, context, sink, steps=4):
    cfg = EngineConfig(engine="causal", stream_batch=True, height=32, width=48, steps=steps, block_frames=B,
                       flow_shift=5.0, guidance=1.0, context_frames=context, sink_frames=sink,
                       prompt="first")
    return CausalStreamEngine(cfg, model, lambda text: embs[text], noise=_noise)


def _run(eng, blocks: int, at_tick=None) -> dict:
    """Tick until `blocks` blocks are out; at_tick: {tick: (prompt, mode)} changes sent before that tick."""
    out, t = {}, 0
    while len(out) < blocks:
        if at_tick and t in at_tick:
            eng.submit_prompt(*at_tick[t])
        for fb in eng.tick().finished:
            out[fb.index] = fb
        t += 1
        assert t < 10 * blocks, "the stream batch stopped emitting blocks"
    return out


@pytest.mark.parametrize("context,sink,steps", [(21, 0, 4), (6, 3, 4), (3, 0, 2)],
                         ids=["global", "local+sink", "two-steps"])
def test_blocks_equal_the_masked_full_sequence_reference(ref, context, sink, steps):  # noqa: F811
    tensors, meta = ref
    model = _model(tensors, meta)
    emb = tensors["prompt_embeds"]
    want = reference(copy.deepcopy(model), emb, _noise, steps, 5.0, 0, 7, context, sink)
    eng = _engine(model, {"first": emb}, context, sink, steps)
    got = _run(eng, 7)
    assert sorted(got) == list(range(7))
    for b in range(7):
        err = (got[b].latents - want[b]).abs().max().item()
        assert err <= 1e-4, f"block {b}: max |diff| {err:.2e}"
    assert not any(fb.shot_start for fb in got.values())
    # one batched forward a tick, S ticks from entering to out
    assert eng.stats["ticks"] == 7 + steps - 1


def test_warm_up_compiles_every_window_length_and_changes_no_block(ref):  # noqa: F811
    tensors, meta = ref
    emb = tensors["prompt_embeds"]
    plain = _run(_engine(_model(tensors, meta), {"first": emb}, 6, 3), 4)
    eng = _engine(_model(tensors, meta), {"first": emb}, 6, 3)
    assert eng.warm_up() == 3 + 4  # window lengths grow until block 3 (9 frames: 6 of context + 3 sinks)
    warmed = _run(eng, 4)
    for b in range(4):
        assert torch.equal(warmed[b].latents, plain[b].latents)
    # a tick reports the blocks in flight (the pacer's lead learns from the ticks that have all S of them)
    assert eng.tick().windows == 4


def test_a_cut_starts_a_new_shot_that_equals_a_fresh_stream_and_soft_changes_blocks_in_flight(ref):  # noqa: F811
    tensors, meta = ref
    emb = tensors["prompt_embeds"]
    embs = {"first": emb, "second": emb.flip(1), "third": -emb}
    model = _model(tensors, meta)
    plain = _run(_engine(model, embs, 6, 3), 6)
    got = _run(_engine(model, embs, 6, 3), 9, at_tick={5: ("second", "soft"), 8: ("third", "cut")})
    # block k enters at tick k and is out after tick k + 3. The soft change before tick 5: blocks 0 and 1 are out,
    # blocks 2..4 are in flight and switch from their next step. The cut before tick 8: blocks 5..7 (the head on)
    # are dropped and a new shot starts at block 5
    assert [got[b].cond.epoch for b in range(9)] == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    for b in (0, 1):
        assert torch.equal(got[b].latents, plain[b].latents)
    for b in (2, 3, 4):
        assert not torch.equal(got[b].latents, plain[b].latents)
    cut = [b for b, fb in got.items() if fb.shot_start]
    assert cut == [5]
    n = cut[0]
    want = reference(copy.deepcopy(model), embs["third"], _noise, 4, 5.0, n, 9 - n, 6, 3)
    for b in range(n, 9):
        assert got[b].cond.epoch == 2
        err = (got[b].latents - want[b]).abs().max().item()
        assert err <= 1e-4, f"block {b} of the new shot: max |diff| {err:.2e}"


def test_stream_batch_settings_are_checked():
    with pytest.raises(ConfigError, match="causal engine"):
        EngineConfig(stream_batch=True).validate()
    with pytest.raises(ConfigError, match="at most 8"):
        EngineConfig(engine="causal", stream_batch=True, steps=9, guidance=1.0).validate()
