"""`--compile`: torch.compile of every transformer block of this rank, with a persistent compile cache.

The window shapes are fixed by the configuration (a few variants: with or without predecessor and successor
context), so each block compiles a handful of graphs once; the feature cache's bookkeeping stays eager
(`FeatureCacheAttnProcessor._exchange`). Compiled artefacts are kept in a cache directory, so a restart with the
same model and configuration starts much faster: $STREAMER_COMPILE_CACHE, else systemd's $CACHE_DIRECTORY, else
~/.cache/endless-streamer, each with /inductor appended.
"""
from __future__ import annotations

import os


def cache_dir() -> str:
    base = (os.environ.get("STREAMER_COMPILE_CACHE") or os.environ.get("CACHE_DIRECTORY")
            or os.path.join(os.path.expanduser("~"), ".cache", "endless-streamer"))
    return os.path.join(base, "inductor")


def compile_blocks(blocks) -> str:
    """Compile each block in place (compilation happens at the first forward of each shape). Returns the cache
    directory used."""
    import torch

    path = os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir())  # the worker sets it before importing torch
    os.makedirs(path, exist_ok=True)
    # blocks share their code: one graph per window shape, not per layer; leave room for the shape variants
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    for blk in blocks:
        blk.compile(dynamic=False)
    return path
