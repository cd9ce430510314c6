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
from diffusers.models.transformers.transformer_wan import _get_qkv_projections


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

    store: tuple[int, int] | None = None  # token range of this block's first C frames, to store
    extra_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin for the appended (successor) tokens
    use_read: bool = False


@dataclass
class FeatureCache:
    num_layers: int
    request: CacheRequest = field(default_factory=CacheRequest)
    kv: list = field(default_factory=list)

    def __post_init__(self):
        self.clear()

    def clear(self) -> None:
        self.kv = [None] * self.num_layers


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
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        succ = self.cache.kv[self.slot] if req.use_read else None
        if req.store is not None:
            a, b = req.store
            # copies: a view would keep the whole window's K/V alive
            self.cache.kv[self.slot] = (key[:, a:b].clone(), value[:, a:b].clone())
        if rotary_emb is not None:
            query = apply_rotary(query, *rotary_emb)
            key = apply_rotary(key, *rotary_emb)
        if succ is not None:
            k2, v2 = succ
            if req.extra_rope is not None:
                k2 = apply_rotary(k2, *req.extra_rope)
            key = torch.cat([key, k2.to(key.dtype)], dim=1)
            value = torch.cat([value, v2.to(value.dtype)], dim=1)
        out = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=None,
        )
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def install_feature_cache(blocks, first_layer: int = 0) -> FeatureCache:
    """Give every self-attention layer of `blocks` (a slice of the transformer) a cache slot."""
    cache = FeatureCache(len(blocks))
    for i, blk in enumerate(blocks):
        proc = FeatureCacheAttnProcessor(cache, i)
        # keep whatever attention backend the model was configured with
        proc._attention_backend = getattr(blk.attn1.processor, "_attention_backend", None)
        blk.attn1.set_processor(proc)
    return cache
