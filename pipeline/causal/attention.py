"""Self-attention of a causal block over its own frames and the cached keys/values of earlier ones, as a diffusers
attention processor on each layer's `attn1` (no fork of the model). No mask: a block's queries see every key of
the window (the recipe's inference), its own frames included. A forward's batch may hold several rows, each with a
cache of its own (the stream batch, pipeline/causal/stream.py)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from ..dualparal.attention import apply_rotary
from ..compat.diffusers import qkv_projections
from .cache import KVCache


@dataclass
class RowPlan:
    """What one row of the forward's batch reads and writes (the sequential engine has one row; the stream batch
    one per denoising step, each over the cache of its step)."""

    cache: KVCache | None = None  # None: a padding row, which attends to its own frames only and stores nothing
    cached: tuple[int, ...] = ()  # frames of the shot whose cached keys/values are attended to, in order
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin at their positions
    commit: tuple[int, ...] = ()  # store this forward's keys/values as these frames'


@dataclass
class CausalRequest:
    """What the layers do in the current forward."""

    rows: list = field(default_factory=list)  # a RowPlan per row of the batch
    tokens_per_frame: int = 0


class CausalAttnProcessor:
    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer: int, request: CausalRequest):
        self.layer, self.request = layer, request

    def _attend(self, query, key, value):
        return dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                     backend=self._attention_backend, parallel_config=None)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None or attn.add_k_proj is not None:
            raise RuntimeError("CausalAttnProcessor is for self-attention (attn1) of T2V models only")
        query, key, value = qkv_projections(attn, hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        cached = self._exchange(key, value)
        query = apply_rotary(query, *rotary_emb)
        own_key = apply_rotary(key, *rotary_emb)
        if cached is None:
            out = self._attend(query, own_key, value)
        elif isinstance(cached, tuple):  # every row sees as many cached frames: one call for the batch
            ck, cv, cos, sin = cached
            out = self._attend(query, torch.cat([apply_rotary(ck, cos, sin).to(own_key.dtype), own_key], dim=1),
                               torch.cat([cv.to(value.dtype), value], dim=1))
        else:  # rows with different windows (a stream batch while it fills): row by row
            outs = []
            for i, got in enumerate(cached):
                q, k, v = query[i:i + 1], own_key[i:i + 1], value[i:i + 1]
                if got is not None:
                    ck, cv, cos, sin = got
                    k = torch.cat([apply_rotary(ck, cos, sin).to(k.dtype), k], dim=1)
                    v = torch.cat([cv.to(v.dtype), v], dim=1)
                outs.append(self._attend(q, k, v))
            out = torch.cat(outs, dim=0)
        out = out.flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    @torch.compiler.disable
    def _exchange(self, key: torch.Tensor, value: torch.Tensor):
        """Each row's cache write (keys before rotary: the window may move them later) and read. Returns None (no
        row reads), (keys, values, cos, sin) stacked over the rows (every row reads as many frames), or a list with
        one such tuple or None per row. Never compiled: it indexes Python containers by layer and frame."""
        req = self.request
        got = []
        for i, row in enumerate(req.rows):
            if row.cache is None:
                got.append(None)
                continue
            if row.commit:
                row.cache.put(self.layer, row.commit, req.tokens_per_frame, key[i:i + 1], value[i:i + 1])
            kv = row.cache.get(self.layer, row.cached)
            got.append(None if kv is None else (*kv, *row.rope))
        if all(g is None for g in got):
            return None
        if len(got) == 1:
            return got[0]
        if all(g is not None for g in got) and len({g[0].shape[1] for g in got}) == 1:
            return tuple(torch.cat(parts, dim=0) for parts in zip(*got))
        return got


def install(blocks, request: CausalRequest) -> None:
    """Give every self-attention layer of `blocks` the causal processor (the caches it uses come with `request`'s
    rows)."""
    for i, blk in enumerate(blocks):
        proc = CausalAttnProcessor(i, request)
        proc._attention_backend = getattr(blk.attn1.processor, "_attention_backend", None)
        blk.attn1.set_processor(proc)
