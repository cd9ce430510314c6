"""Would batching a tick's windows pay? The S windows of a steady tick as S forwards of batch 1 (what the engine
runs) against one forward of batch S, through the compiled random-weight transformer, per attention kernel.

A proxy for the preset's tick (RESULTS.md §9, tenth follow-up): windows of `--frames` latent frames at 480×832
with the model's own attention (keys = queries; the engine's windows also see their successor's first frames).
Usage (GPU host): python benchmarks/batch_windows_gpu.py --out batch_windows.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.model.archs import random_transformer  # noqa: E402
from pipeline.model.compile import compile_blocks  # noqa: E402
from pipeline.model.split import epilogue, prologue, rotary, run_blocks  # noqa: E402

_ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="wan2.1-1.3b")
    ap.add_argument("--frames", type=int, default=4, help="latent frames a window (the preset's 2/2: 4)")
    ap.add_argument("--windows", type=int, default=4, help="windows a tick (its steps)")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default="batch_windows.json")
    a = ap.parse_args(argv)
    dev = torch.device("cuda")
    res = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "args": vars(a)}
    model = random_transformer(a.arch, device=dev, dtype=torch.bfloat16)
    compile_blocks(model.blocks)
    h, w = a.height // 8, a.width // 8
    rot = rotary(model, a.frames, h, w, dev)

    def forward(batch: int):
        x = torch.randn(batch, model.config.in_channels, a.frames, h, w, device=dev, dtype=torch.bfloat16)
        t = torch.full((batch,), 500.0, device=dev)
        text = torch.randn(batch, 512, model.config.text_dim, device=dev, dtype=torch.bfloat16)
        return lambda: epilogue(model, run_blocks(model.blocks, prologue(model, x, t, text), rot))

    def median_s(fn) -> float:
        for _ in range(3):  # compiling, then warm
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    one, all_ = forward(1), forward(a.windows)
    with torch.inference_mode():
        for name, first in (("default", None), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                            ("flash", SDPBackend.FLASH_ATTENTION)):
            prefs = [first] + [b for b in _ORDER if b != first] if first else None
            with sdpa_kernel(prefs, set_priority=True) if prefs else torch.no_grad():
                seq = median_s(lambda: [one() for _ in range(a.windows)])
                bat = median_s(all_)
            res[name] = {"seq_ms": seq * 1e3, "batch_ms": bat * 1e3, "ratio": seq / bat}
            print(name, res[name], flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
