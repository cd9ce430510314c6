"""The model's own VAE decode per block on one GPU, in the daemon's setting, with cuDNN's autotuner and with
channels-last 3-D weights.

The daemon decodes each finished block with StreamingDecoder (a whole block per decoder call on a GPU, bfloat16,
compiled under --compile). cuDNN picks its 3-D convolution algorithms by heuristics unless
torch.backends.cudnn.benchmark is set, when it times the candidates once per shape. This measures, on a random
Wan 2.1 (or 2.2) VAE: the decode of a block (network and un-normalisation, synchronised), eager and compiled, with
the autotuner off and on, with the 3-D convolutions' weights in channels-last order ("+cl": cuDNN then runs them
channels-last, NDHWC), and checks the frames agree. Median over --blocks blocks after warm-up.
Usage (GPU host): python benchmarks/vae_decode_gpu.py --out $OUT/vae_decode.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.decoders.wan_vae import StreamingDecoder  # noqa: E402
from pipeline.model.archs import random_wan_vae  # noqa: E402


def measure(dec, blocks, warmup: int) -> tuple[list[float], torch.Tensor]:
    dec.reset()
    times, last = [], None
    for i, blk in enumerate(blocks):
        torch.cuda.synchronize()
        t = time.perf_counter()
        last = dec.decode_block_float(blk)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times, last.float().cpu()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--wan22", action="store_true", help="the Wan 2.2 VAE (TI2V-5B: 48 channels, 16x)")
    ap.add_argument("--block-frames", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=0, help="latent frames per decoder call (0: the whole block, as the "
                    "daemon decodes on a GPU by default; --decode-chunk)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--variants", default="eager,eager+bench,compiled,compiled+bench",
                    help="comma-separated; '+bench': cuDNN's autotuner, '+cl': channels-last weights")
    ap.add_argument("--out", default="vae_decode_gpu.json")
    a = ap.parse_args()
    chunk = a.chunk or None
    dev = torch.device("cuda")
    vae = random_wan_vae(device=dev, dtype=getattr(torch, a.dtype), wan22=a.wan22)
    factor = 16 if a.wan22 else 8
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randn(1, vae.config.z_dim, a.block_frames, a.height // factor, a.width // factor, generator=g)
              .to(dev) for _ in range(a.blocks)]
    res = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "args": vars(a), "variants": {}}
    compiled = None
    ref = None
    for name in a.variants.split(","):
        torch.backends.cudnn.benchmark = "+bench" in name
        cl = "+cl" in name
        if name.startswith("compiled"):
            if compiled is None or compiled.channels_last != cl:
                torch._dynamo.reset()  # the weights' strides change: compile afresh
                t0 = time.perf_counter()
                compiled = StreamingDecoder(vae, chunk_frames=chunk, compile_backend="inductor", channels_last=cl)
                measure(compiled, blocks[:3], warmup=3)  # the three call shapes of a stream
                res.setdefault("compile_s", {})[name] = time.perf_counter() - t0
            dec = compiled
        else:
            dec = StreamingDecoder(vae, chunk_frames=chunk, channels_last=cl)
        torch.cuda.reset_peak_memory_stats(dev)
        times, last = measure(dec, blocks, warmup=2)
        ref = last if ref is None else ref
        res["variants"][name] = {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
                                 "max_ms": max(times) * 1e3, "n": len(times),
                                 "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30,
                                 "max_abs_diff_vs_first": float((last - ref).abs().max())}
        print(name, res["variants"][name], flush=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
