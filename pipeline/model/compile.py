"""`--compile`: torch.compile of every transformer block of this rank (and of the VAE decoder, in
`decode.StreamingDecoder`), with a persistent compile cache.

The window shapes are fixed by the configuration (a few variants: with or without predecessor and successor
context), so each block compiles a handful of graphs once; the feature cache's bookkeeping stays eager
(`FeatureCacheAttnProcessor._exchange`). Compiled artefacts are kept in a cache directory, so a restart with the
same model and configuration starts much faster: $STREAMER_COMPILE_CACHE, else systemd's $CACHE_DIRECTORY, else
~/.cache/endless-streamer, each with /inductor appended.
"""
from __future__ import annotations

import os

from common.cache import cache_root


def cache_dir() -> str:
    return os.path.join(cache_root(), "inductor")


def allow_shape_variants(n: int = 64) -> None:
    """Let dynamo keep up to n graphs per function (its default, 8, is too few: the transformer blocks share their
    code across window shapes, the VAE decoder's up-blocks across resolutions and the stream's three call shapes)."""
    import torch

    torch._dynamo.config.cache_size_limit = max(n, torch._dynamo.config.cache_size_limit)


def compile_blocks(blocks) -> str:
    """Compile each block in place (compilation happens at the first forward of each shape). Returns the cache
    directory used."""
    path = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir())  # the worker sets it before importing torch
    os.makedirs(path, exist_ok=True)
    allow_shape_variants()
    for blk in blocks:
        blk.compile(dynamic=False)
    return path
