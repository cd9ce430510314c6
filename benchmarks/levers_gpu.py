"""Issue 12's levers, each against a baseline measured in the same run, on one GPU.

- engine: median steady tick (queue preloaded with S blocks) for each variant of --variants, e.g.
  `base` (eager, PyTorch's default attention), `reuse` (--reuse-context), `fp8` (--quant fp8), `cudnn`
  (cuDNN attention preferred), `compile` (torch.compile of every transformer block), and `+`-joined combinations;
- decode: seconds per block of the streaming Wan VAE decoder for --decode-variants: dtype, latent frames per
  decoder call, cuDNN autotuning (`bench`), channels-last memory (`cl`), torch.compile (`compile`), e.g.
  `float32/1`, `bfloat16/8/bench`; `tiny/DTYPE/...` is the tiny decoder (`--tiny-vae`, random weights);
- overlap: ticks of the base engine while a second thread decodes every finished block on its own CUDA stream, as
  the daemon does, against the two run one after the other.
Writes JSON to --out as it goes. Usage: python benchmarks/levers_gpu.py --out levers.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import add_workload_args, fake_text_encoder  # noqa: E402
from pipeline.model.archs import arch_family, random_transformer, random_wan_vae  # noqa: E402
from pipeline.decoders.tiny_vae import random_tiny_decoder  # noqa: E402
from pipeline.model.compile import compile_blocks  # noqa: E402
from pipeline.config import EngineConfig  # noqa: E402
from pipeline.decoders.wan_vae import StreamingDecoder  # noqa: E402
from pipeline.dualparal.engine import Engine  # noqa: E402
from pipeline.model.quant import quantize_blocks  # noqa: E402
from pipeline.model.sdpa import preferred_kernel  # noqa: E402
from pipeline.model.random_wan import wan_scheduler  # noqa: E402
from pipeline.decoders.tiny_vae import StreamingTinyDecoder  # noqa: E402


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_ticks(eng, n: int) -> tuple[float, list[float]]:
    eng.tick()  # warm-up (and compilation)
    times = []
    for _ in range(n):
        sync()
        t = time.perf_counter()
        eng.tick()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def engine_variant(name: str, a, cfg: EngineConfig, dev, dtype, encode) -> dict:
    parts = set(name.split("+"))
    model = random_transformer(a.arch, device=dev, dtype=dtype)
    out = {}
    if "fp8" in parts:
        out["fp8_layers"] = quantize_blocks(model.blocks, dev)
    c = copy.copy(cfg)
    c.reuse_context = "reuse" in parts
    with preferred_kernel("cudnn" if "cudnn" in parts else ""):
        eng = Engine(c, model, wan_scheduler(3.0), encode, device=dev)
        if "compile" in parts:
            compile_blocks(eng.stage.blocks)
        eng.preload()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        eng.tick()
        sync()
        out["first_tick_s"] = time.perf_counter() - t0
        med, times = median_ticks(eng, a.ticks)
    out.update(median_tick_s=med, ticks_s=times, fps=4 * a.block_frames / med,
               peak_gib=torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else 0.0)
    del eng, model
    torch.cuda.empty_cache()
    return out


def make_decoder(name: str, dev):
    """A streaming decoder from a variant name: DTYPE/CHUNK/flags (the Wan VAE) or tiny/DTYPE/flags."""
    kind, dtype, *flags = name.split("/") if name.startswith("tiny/") else ["wan", *name.split("/")]
    torch.backends.cudnn.benchmark = "bench" in flags
    backend = "inductor" if "compile" in flags else None
    if kind == "tiny":
        net = random_tiny_decoder(16).to(dev, getattr(torch, dtype))
        if "cl" in flags:
            net = net.to(memory_format=torch.channels_last)
        return StreamingTinyDecoder(net, compile_backend=backend)
    chunk, *flags = flags
    vae = random_wan_vae(device=dev, dtype=getattr(torch, dtype))
    if "cl" in flags:
        vae = vae.to(memory_format=torch.channels_last_3d)
    return StreamingDecoder(vae, chunk_frames=int(chunk), compile_backend=backend)


def decode_variant(name: str, a, dev) -> dict:
    dec = make_decoder(name, dev)
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randn(1, 16, a.block_frames, a.height // 8, a.width // 8, generator=g).to(dev) for _ in range(5)]
    times = []
    for blk in blocks:
        sync()
        t = time.perf_counter()
        dec.decode_block(blk)
        sync()
        times.append(time.perf_counter() - t)
    torch.backends.cudnn.benchmark = False
    del dec
    torch.cuda.empty_cache()
    return {"first_s": times[0], "median_s": statistics.median(times[1:]), "blocks_s": times}


def overlap(a, cfg: EngineConfig, dev, dtype, encode, decode_name: str) -> dict:
    """Ticks with a decode thread (own stream) vs ticks and decodes in turn, for the same blocks; the engine is
    --overlap-engine's variant (base, reuse, compile, reuse+compile)."""
    parts = set(a.overlap_engine.split("+"))
    model = random_transformer(a.arch, device=dev, dtype=dtype)
    dec = make_decoder(decode_name, dev)
    cfg = copy.copy(cfg)
    cfg.reuse_context = "reuse" in parts
    if "compile" in parts:
        compile_blocks(model.blocks)
    res = {}
    for mode in ("serial", "concurrent"):
        eng = Engine(cfg, model, wan_scheduler(3.0), encode, device=dev)
        eng.preload()
        eng.tick()
        stream = torch.cuda.Stream(dev)
        work: list = []
        cv = threading.Condition()

        def decoder():
            while True:
                with cv:
                    cv.wait_for(lambda: work)
                    item = work.pop(0)
                if item is None:
                    return
                lat, ev = item
                with torch.cuda.stream(stream):
                    stream.wait_event(ev)
                    dec.decode_block(lat)
        th = threading.Thread(target=decoder) if mode == "concurrent" else None
        if th:
            th.start()
        sync()
        t0 = time.perf_counter()
        for _ in range(a.ticks):
            r = eng.tick()
            for fb in r.finished:
                if th:
                    ev = torch.cuda.Event()
                    ev.record()
                    with cv:
                        work.append((fb.latents, ev))
                        cv.notify()
                else:
                    dec.decode_block(fb.latents)
        if th:
            with cv:
                work.append(None)
                cv.notify()
            th.join()
        sync()
        res[mode + "_s"] = time.perf_counter() - t0
        res[mode + "_fps"] = 4 * a.block_frames * a.ticks / res[mode + "_s"]
        del eng
    torch.backends.cudnn.benchmark = False
    return res


def main():
    ap = argparse.ArgumentParser()
    add_workload_args(ap, ticks=6, fill_ticks=0, out="levers.json")
    ap.set_defaults(steps=4, guidance=1.0)
    ap.add_argument("--variants", default="base,reuse,cudnn,fp8,reuse+fp8,compile,reuse+compile")
    ap.add_argument("--decode-variants", default="float32/1,bfloat16/1,bfloat16/8,bfloat16/8/bench,"
                                                 "bfloat16/8/bench/cl,bfloat16/4/bench")
    ap.add_argument("--overlap-decode", default="bfloat16/8/bench")
    ap.add_argument("--overlap-engine", default="base", help="engine variant of the overlap test")
    a = ap.parse_args()
    dev = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "args": vars(a), "engine": {}, "decode": {}}

    def save():
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
    cfg = EngineConfig(model=a.arch, height=a.height, width=a.width, steps=a.steps, guidance=a.guidance,
                       block_frames=a.block_frames, context_frames=a.context_frames, dtype=a.dtype, device=a.device,
                       family=arch_family(a.arch).to_dict())
    encode = fake_text_encoder(dev, dtype)
    for name in filter(None, a.decode_variants.split(",")):
        try:
            res["decode"][name] = decode_variant(name, a, dev)
        except Exception as e:  # noqa: BLE001 - record and go on
            res["decode"][name] = f"failed: {type(e).__name__}: {e}"
        print(name, res["decode"][name], flush=True)
        save()
    for name in filter(None, a.variants.split(",")):
        t0 = time.perf_counter()
        try:
            res["engine"][name] = engine_variant(name, a, cfg, dev, dtype, encode)
        except Exception as e:  # noqa: BLE001
            res["engine"][name] = f"failed: {type(e).__name__}: {str(e)[:500]}"
        if isinstance(res["engine"][name], dict):
            res["engine"][name]["wall_s"] = time.perf_counter() - t0
        print(name, res["engine"][name], flush=True)
        save()
    base = res["engine"].get("base")
    if isinstance(base, dict):
        for name, r in res["engine"].items():
            if isinstance(r, dict):
                r["speedup_vs_base"] = base["median_tick_s"] / r["median_tick_s"]
    if a.overlap_decode:
        try:
            res["overlap"] = overlap(a, cfg, dev, dtype, encode, a.overlap_decode)
        except Exception as e:  # noqa: BLE001
            res["overlap"] = f"failed: {type(e).__name__}: {e}"
        print("overlap", res["overlap"], flush=True)
    save()


if __name__ == "__main__":
    main()
