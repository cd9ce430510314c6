"""What the GPU benchmarks share: the workload options and a stand-in text encoder."""
from __future__ import annotations

import torch


def add_workload_args(ap, ticks: int, fill_ticks: int, out: str) -> None:
    """The DESIGN.md workload by default: Wan2.1-1.3B architecture, 480×832, B=8, C=8, S=50, CFG 5, bf16."""
    ap.add_argument("--arch", default="wan2.1-1.3b")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--block-frames", type=int, default=8)
    ap.add_argument("--context-frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--ticks", type=int, default=ticks)
    ap.add_argument("--fill-ticks", type=int, default=fill_ticks)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default=out)


def fake_text_encoder(device, dtype, dim: int = 4096, length: int = 512):
    """Random prompt embeddings of UMT5-XXL's shape (the 5.7B text encoder is not part of these measurements)."""
    cache = {}

    def encode(text):
        if text not in cache:
            g = torch.Generator().manual_seed(len(text))
            cache[text] = torch.randn(1, length, dim, generator=g).to(device, dtype)
        return cache[text]
    return encode
