"""diffusers' private API the engine uses (checked for diffusers >=0.35,<0.50):

- `transformer_wan._get_qkv_projections(attn, hidden, encoder_hidden)`: the Wan attention's q/k/v projections
  (fused or not), which our feature-cache processor (pipeline/dualparal/attention.py) computes exactly as the stock one;
- the Wan VAE decoder's causal cache calling convention `decoder(x, feat_cache=list, feat_idx=[0],
  first_chunk=bool)` and its `WanCausalConv3d` layers (pipeline/decoders/wan_vae.py's streaming decode);
- `unpatchify(x, patch_size)`: the Wan 2.2 VAE's pixel rearrangement after its decoder (TI2V-5B);
- `WanResample` (mode, time_conv, resample) and the cache depth `CACHE_T`, for the traceable temporal upsampler
  that `--compile` swaps in (pipeline/decoders/vae_trace.py).
"""
from __future__ import annotations

import inspect

import diffusers
from diffusers.models.autoencoders.autoencoder_kl_wan import (CACHE_T, WanCausalConv3d, WanDecoder3d, WanResample,
                                                               unpatchify)
from diffusers.models.transformers.transformer_wan import _get_qkv_projections

from common.versions import check_version

LOWEST, BELOW = "0.35", "0.50"

__all__ = ["CACHE_T", "WanCausalConv3d", "WanResample", "qkv_projections", "self_test", "unpatchify"]


def qkv_projections(attn, hidden_states):
    """(query, key, value) of a Wan self-attention layer, before norms and rotary embedding."""
    return _get_qkv_projections(attn, hidden_states, None)


def self_test() -> None:
    """RuntimeError naming what does not match; run once at start."""
    check_version("diffusers", diffusers.__version__, LOWEST, BELOW)
    if list(inspect.signature(_get_qkv_projections).parameters) != ["attn", "hidden_states", "encoder_hidden_states"]:
        raise RuntimeError("diffusers: transformer_wan._get_qkv_projections(attn, hidden_states, "
                           "encoder_hidden_states) changed")
    params = inspect.signature(WanDecoder3d.forward).parameters
    if not {"feat_cache", "feat_idx", "first_chunk"} <= set(params):
        raise RuntimeError("diffusers: the Wan VAE decoder no longer takes feat_cache/feat_idx/first_chunk")
    if list(inspect.signature(WanResample.forward).parameters) != ["self", "x", "feat_cache", "feat_idx"]:
        raise RuntimeError("diffusers: WanResample.forward(x, feat_cache, feat_idx) changed")
