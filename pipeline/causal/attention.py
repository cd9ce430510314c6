"""Self-attention of a causal block over its own frames and the cached keys/values of earlier ones, as a diffusers
attention processor on each layer's `attn1` (no fork of the model). No mask: a block's queries see every key of
the window (the recipe's inference), its own frames included."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from ..dualparal.attention import apply_rotary
from ..compat.diffusers import qkv_projections
from .cache import KVCache


@dataclass
class CausalRequest:
    """What the layers do in the current forward."""

    cached: tuple[int, ...] = ()  # frames of the shot whose cached keys/values are attended to, in order
    cached_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin at their positions
    commit: tuple[int, ...] = ()  # store this forward's keys/values as these frames' (the clean re-run)
    tokens_per_frame: int = 0


class CausalAttnProcessor:
    _attention_backend = None
    _parallel_config = None

    def __init__(self, cache: KVCache, layer: int, request: CausalRequest):
        self.cache, self.layer, self.request = cache, layer, request

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attn.add_k_proj is not None:
            raise RuntimeError("CausalAttnProcessor is for self-attention (attn1) of T2V models only")
        req = self.request
        query, key, value = qkv_projections(attn, hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        cached = self._exchange(key, value)
        query = apply_rotary(query, *rotary_emb)
        own_key = apply_rotary(key, *rotary_emb)
        if cached is not None:
            ck, cv = cached
            key = torch.cat([apply_rotary(ck, *req.cached_rope).to(own_key.dtype), own_key], dim=1)
            value = torch.cat([cv.to(value.dtype), value], dim=1)
        else:
            key = own_key
        out = dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                    backend=self._attention_backend, parallel_config=None)
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


    @torch.compiler.disable
    def _exchange(self, key: torch.Tensor, value: torch.Tensor):
        """The cache's write (the clean re-run: keys before rotary, the window may move them later) and read (the
        window's keys/values). Never compiled: it indexes Python containers by layer and frame."""
        req = self.request
        if req.commit:
            self.cache.put(self.layer, req.commit, req.tokens_per_frame, key, value)
        return self.cache.get(self.layer, req.cached)


def install(blocks, cache: KVCache, request: CausalRequest) -> None:
    """Give every self-attention layer of `blocks` the causal processor over `cache`."""
    for i, blk in enumerate(blocks):
        proc = CausalAttnProcessor(cache, i, request)
        proc._attention_backend = getattr(blk.attn1.processor, "_attention_backend", None)
        blk.attn1.set_processor(proc)
