"""Self-attention with the DualParal feature cache, as a diffusers attention processor (no fork of the model).

Each self-attention layer (`blocks[i].attn1`) gets a `FeatureCacheAttnProcessor` bound to one slot of a
`FeatureCache`. When a block's window is processed, the processor
- takes the slot's keys and values (the successor's first C frames, stored by the forward just before on this
  rank) and appends them to its own, rotated to the positions that follow the window (positions stay local to the
  window, so RoPE never runs out on an endless stream), and
- then overwrites the slot with copies of the pre-RoPE (normalised) keys and values of its own first C latent
  frames, for the previous (cleaner) block processed next on this rank.
One buffer per layer: the slot is read before it is overwritten.
Without a cache request it computes exactly what diffusers' `WanAttnProcessor` computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from ..compat.diffusers import qkv_projections


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved rotary embedding (same arithmetic as diffusers' WanAttnProcessor)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c = cos[..., 0::2]
    s = sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


@dataclass
class CacheRequest:
    """What the layers should do for the current forward."""

    store: tuple[int, int] | None = None  # token range of this block's first frames, to store for its predecessor
    extra_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin for the appended (successor) tokens
    use_read: bool = False
    # --reuse-context: earlier frames enter as cached keys/values instead of as tokens (pipeline/dualparal/context.py)
    store_tail: tuple[int, int] | None = None  # token range of this block's last frames, kept for later blocks
    block: int | None = None  # this block's index (the key its tail is stored under)
    prev_sources: tuple[tuple[int, int], ...] = ()  # (block, tokens from the end of its stored tail), oldest first
    sink: tuple[int, int] | None = None  # (shot's first block, tokens from the start of its stored sink)
    store_sink: tuple[int, int] | None = None  # token range of this block's first frames, kept as its shot's sink
    prev_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin for the prepended (sink, context) tokens


@dataclass
class FeatureCache:
    num_layers: int
    request: CacheRequest = field(default_factory=CacheRequest)
    kv: list = field(default_factory=list)
    tails: list = field(default_factory=list)  # per layer: {block: (k, v) of its last frames} (--reuse-context)
    sinks: list = field(default_factory=list)  # per layer: {shot's first block: (k, v) of its first frames}
    keep: int = 2  # tails kept per layer behind the newest block stored (set by the stage)
    lenient: bool = False  # missing cached keys/values are skipped, not an error (the first tick after preload())

    def __post_init__(self):
        self.clear()

    def clear(self) -> None:
        self.kv = [None] * self.num_layers
        self.tails = [{} for _ in range(self.num_layers)]
        self.sinks = [{} for _ in range(self.num_layers)]


class FeatureCacheAttnProcessor:
    _attention_backend = None
    _parallel_config = None

    def __init__(self, cache: FeatureCache, slot: int):
        self.cache = cache
        self.slot = slot

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attn.add_k_proj is not None:
            raise RuntimeError("FeatureCacheAttnProcessor is for self-attention (attn1) of T2V models only")
        req = self.cache.request
        query, key, value = qkv_projections(attn, hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        prev, succ = self._exchange(key, value)
        if rotary_emb is not None:
            query = apply_rotary(query, *rotary_emb)
            key = apply_rotary(key, *rotary_emb)
        parts_k, parts_v = [key], [value]
        if prev is not None:
            parts_k.insert(0, apply_rotary(prev[0], *req.prev_rope).to(key.dtype))
            parts_v.insert(0, prev[1].to(value.dtype))
        if succ is not None:
            k2, v2 = succ
            if req.extra_rope is not None:
                k2 = apply_rotary(k2, *req.extra_rope)
            parts_k.append(k2.to(key.dtype))
            parts_v.append(v2.to(value.dtype))
        if len(parts_k) > 1:
            key, value = torch.cat(parts_k, dim=1), torch.cat(parts_v, dim=1)
        out = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=None,
        )
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    @torch.compiler.disable
    def _exchange(self, key: torch.Tensor, value: torch.Tensor):
        """The cache's reads and writes for this layer: (earlier K/V or None, successor K/V or None), read before
        this window's own are stored. Earlier K/V are the sink frames, then the context frames, oldest first. Never
        compiled (with --compile the rest of the layer is): it indexes Python containers by layer and block, which
        would make every layer and block a graph of its own."""
        req = self.cache.request
        succ = self.cache.kv[self.slot] if req.use_read else None
        tails, sinks = self.cache.tails[self.slot], self.cache.sinks[self.slot]
        parts, missing = [], []
        if req.sink is not None:
            shot, n = req.sink
            got = sinks.get(shot)
            if got is None:
                missing.append(f"the sink of the shot starting at block {shot}")
            else:
                parts.append((got[0][:, :n], got[1][:, :n]))
        for blk, n in req.prev_sources:
            got = tails.get(blk)
            if got is None:
                missing.append(f"block {blk}")
            else:
                parts.append((got[0][:, -n:], got[1][:, -n:]))
        if missing and not self.cache.lenient:
            raise RuntimeError(f"no cached keys/values of {', '.join(missing)}, context of block {req.block}")
        prev = None  # lenient with entries missing (after preload()): no earlier frames rather than misplaced ones
        if parts and not missing:
            prev = parts[0] if len(parts) == 1 else (torch.cat([k for k, _ in parts], dim=1),
                                                     torch.cat([v for _, v in parts], dim=1))
        # copies: a view would keep the whole window's K/V alive
        if req.store is not None:
            a, b = req.store
            self.cache.kv[self.slot] = (key[:, a:b].clone(), value[:, a:b].clone())
        if req.store_sink is not None:
            a, b = req.store_sink
            sinks[req.block] = (key[:, a:b].clone(), value[:, a:b].clone())
            for old in sorted(sinks)[:-2]:  # this shot's and the one before (blocks of it may still be in flight)
                del sinks[old]
        if req.store_tail is not None:
            # read (above) before written: an earlier block's entry is replaced when that block runs, later
            a, b = req.store_tail
            tails[req.block] = (key[:, a:b].clone(), value[:, a:b].clone())
            for old in [k for k in tails if k < req.block - self.cache.keep]:
                del tails[old]
        return prev, succ


def install_feature_cache(blocks, cache: FeatureCache | None = None) -> FeatureCache:
    """Give every self-attention layer of `blocks` (a slice of the transformer) a cache slot: of a new cache, or
    of `cache` (another expert's slice of the same layers, which shares their slots)."""
    if cache is not None and cache.num_layers != len(blocks):
        raise ValueError(f"a cache of {cache.num_layers} slots for {len(blocks)} layers")
    cache = cache or FeatureCache(len(blocks))
    for i, blk in enumerate(blocks):
        proc = FeatureCacheAttnProcessor(cache, i)
        # keep whatever attention backend the model was configured with
        proc._attention_backend = getattr(blk.attn1.processor, "_attention_backend", None)
        blk.attn1.set_processor(proc)
    return cache
