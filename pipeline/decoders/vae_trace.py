"""The Wan VAE decoder made traceable by torch.compile without graph breaks.

diffusers' `WanResample.forward` marks a temporal upsampler that has seen only the stream's first chunk with the
string "Rep" in the causal cache and later compares the cache entry, a tensor by then, with that string. Dynamo
cannot trace a tensor compared with a string: it breaks the graph there, cannot resume, and recompiles the decoder's
up-blocks until its limit, then runs them eagerly (measured on an H200: 7–11 s per block instead of 0.4 s).
`traceable(decoder)` gives each temporal upsampler of the decoder a forward with the same arithmetic that tests the
entry's type instead. tests/test_decode.py checks compiled decoding against eager decoding on a VAE with temporal
upsampling.
"""
from __future__ import annotations

import types

import torch

from ..compat.diffusers import CACHE_T, WanResample

FIRST = "Rep"  # diffusers' marker: the upsampler has seen the stream's first chunk only


def _upsample_forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - diffusers' calling convention
    b, c, t, h, w = x.shape
    if feat_cache is not None:
        idx = feat_idx[0]
        feat_idx[0] += 1
        prev = feat_cache[idx]
        if prev is None:
            feat_cache[idx] = FIRST  # the first chunk (one latent frame) is not doubled in time
        else:
            after_first = isinstance(prev, str)
            tail = x[:, :, -CACHE_T:].clone()
            if tail.shape[2] < CACHE_T:
                older = torch.zeros_like(tail) if after_first else prev[:, :, -1:].to(tail.device)
                tail = torch.cat([older, tail], dim=2)
            x = self.time_conv(x) if after_first else self.time_conv(x, prev)
            feat_cache[idx] = tail
            # time_conv gives 2c channels: the two output frames of each input frame, interleaved in time
            x = x.reshape(b, 2, c, t, h, w)
            x = torch.stack((x[:, 0], x[:, 1]), 3).reshape(b, c, 2 * t, h, w)
    t = x.shape[2]
    x = self.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
    return x.view(b, t, x.shape[1], x.shape[2], x.shape[3]).permute(0, 2, 1, 3, 4)


def traceable(decoder: torch.nn.Module) -> int:
    """Give the decoder's temporal upsamplers the traceable forward (same results); returns how many."""
    n = 0
    for m in decoder.modules():
        if isinstance(m, WanResample) and m.mode == "upsample3d":
            m.forward = types.MethodType(_upsample_forward, m)
            n += 1
    return n
