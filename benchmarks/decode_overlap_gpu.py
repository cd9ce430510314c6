"""The tiny decoder as CUDA graphs, on one GPU, with torch alone (no diffusers needed):

1. equality: GraphedTinyDecoder's uint8 frames against StreamingTinyDecoder's, eager and compiled, over blocks
   with a new shot among them (bit for bit is expected: the same kernels in the same order);
2. decode per block (decode_block: network, uint8, copy to the host): the streaming decoder compiled (what the
   daemon ran before, the baseline), graphed compiled, graphed eager;
3. overlap: a stand-in engine load (Wan2.1-1.3B-sized attention and linear layers, bf16) alone, the graphed
   decoder alone, and the decoder replaying on its own thread and stream while the engine load runs: the share of
   the decode that hides behind the engine. The real daemon's figure comes from daemon_gpu.py; this isolates the
   card's behaviour.
Usage: python benchmarks/decode_overlap_gpu.py --out $OUT/decode_overlap.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.decoders.tiny_vae import random_tiny_decoder  # noqa: E402
from pipeline.decoders.tiny_graph import GraphedTinyDecoder  # noqa: E402
from pipeline.decoders.tiny_vae import StreamingTinyDecoder  # noqa: E402


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def latents(a, n: int, dev) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, 16, a.block_frames, a.height // 8, a.width // 8, generator=g).to(dev, torch.bfloat16)
            for _ in range(n)]


def equality(net, blocks, backend) -> dict:
    ref, graphed = StreamingTinyDecoder(net, backend), GraphedTinyDecoder(net, backend)
    ref.warm_up(*blocks[0].shape[2:])
    graphed.warm_up(*blocks[0].shape[2:])
    same, diffs = [], []
    for i, b in enumerate(blocks):
        x, y = ref.decode_block(b, new_shot=i == 3), graphed.decode_block(b, new_shot=i == 3)
        same.append(bool(x.shape == y.shape and np.array_equal(x, y)))
        diffs.append(int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()) if x.shape == y.shape else -1)
    return {"bitwise_equal_per_block": same, "max_abs_diff": diffs, "frames": [int(x.shape[0])]}


class StandInEngine:
    """Wan2.1-1.3B-sized layers: qkv/out projections, attention of the window's queries over its keys, FFN."""

    def __init__(self, dev, tokens_q: int, tokens_kv: int, layers: int, dim=1536, heads=12, ffn=8960):
        g = torch.Generator(device=dev).manual_seed(0)
        w = lambda *s: torch.randn(*s, device=dev, dtype=torch.bfloat16, generator=g) * 0.02  # noqa: E731
        self.qkv, self.o, self.up, self.down = w(3 * dim, dim), w(dim, dim), w(ffn, dim), w(dim, ffn)
        self.xq = w(tokens_q, dim) * 50
        self.xkv = w(tokens_kv, dim) * 50
        self.layers, self.heads, self.dim = layers, heads, dim

    @torch.inference_mode()
    def tick(self):
        x = self.xq
        for _ in range(self.layers):
            q = F.linear(x, self.qkv[: self.dim]).view(1, -1, self.heads, 128).transpose(1, 2)
            kv = F.linear(self.xkv, self.qkv[self.dim:]).view(1, -1, 2 * self.heads, 128).transpose(1, 2)
            k, v = kv.chunk(2, dim=1)
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, self.dim)
            x = x + F.linear(y, self.o)
            x = x + F.linear(F.gelu(F.linear(x, self.up), approximate="tanh"), self.down)
        return x


def overlap(a, dec, blocks, dev) -> dict:
    tok = (a.height // 16) * (a.width // 16)
    eng = StandInEngine(dev, tok * a.block_frames * 2, tok * a.block_frames * 3, a.layers)
    eng.tick()
    engine_alone = timed(eng.tick, 5)
    dec.reset()
    decode_alone = timed(lambda: dec.decode_block(blocks[0]), 5)
    stream = torch.cuda.Stream(dev)
    together, decode_beside = [], []
    for i in range(5):
        go, took = threading.Event(), []

        def run_decoder():
            go.wait()
            t = time.perf_counter()
            with torch.cuda.stream(stream):
                dec.decode_block(blocks[i % len(blocks)])
            took.append(time.perf_counter() - t)
        th = threading.Thread(target=run_decoder)
        th.start()
        torch.cuda.synchronize()
        t = time.perf_counter()
        go.set()
        eng.tick()
        th.join()
        torch.cuda.synchronize()
        together.append(time.perf_counter() - t)
        decode_beside.append(took[0])
    e, d, both = (statistics.median(v) for v in (engine_alone, decode_alone, together))
    return {"engine_alone_s": engine_alone, "decode_alone_s": decode_alone, "together_s": together,
            "decode_beside_s": decode_beside, "in_turn_s": e + d, "together_median_s": both,
            "hidden_share_of_decode": (e + d - both) / d, "speedup_vs_in_turn": (e + d) / both}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--block-frames", type=int, default=8)
    ap.add_argument("--layers", type=int, default=48, help="stand-in engine layers per tick (~0.8 s on an H200)")
    ap.add_argument("--out", default="decode_overlap.json")
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    res = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "args": vars(a)}

    def save():
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
    net = random_tiny_decoder(16).to(dev, torch.bfloat16)
    blocks = latents(a, 5, dev)
    for name, backend in (("eager", None), ("compiled", "inductor")):
        res[f"equal_{name}"] = equality(net, blocks, backend)
        print(name, res[f"equal_{name}"], flush=True)
        save()
    decoders = {"streaming_compiled": StreamingTinyDecoder(net, "inductor"),
                "graphed_compiled": GraphedTinyDecoder(net, "inductor"), "graphed_eager": GraphedTinyDecoder(net)}
    res["decode_ms"] = {}
    for name, dec in decoders.items():
        dec.warm_up(a.block_frames, a.height // 8, a.width // 8)
        dec.decode_block(blocks[0])
        t = timed(lambda: dec.decode_block(blocks[1]), 7)
        res["decode_ms"][name] = {"median": 1e3 * statistics.median(t), "all": [1e3 * x for x in t]}
        print(name, res["decode_ms"][name], flush=True)
    base = res["decode_ms"]["streaming_compiled"]["median"]
    for r in res["decode_ms"].values():
        r["speedup_vs_streaming_compiled"] = base / r["median"]
    save()
    res["overlap_graphed_compiled"] = overlap(a, decoders["graphed_compiled"], blocks, dev)
    print("overlap", res["overlap_graphed_compiled"], flush=True)
    save()


if __name__ == "__main__":
    main()
