"""Dual-parallel benchmark: the engine over W ranks (one process per GPU, NCCL), for W in --worlds, in one run.

Per W: each rank materialises only its slice (random weights of a real Wan architecture); rank 0 runs the engine.
1. Fill: the first --fill-ticks ticks of a fresh stream, timed; the rest of the fill computed (see below).
2. Steady state: the queue preloaded with S blocks at consecutive steps, then --ticks ticks timed (the first one
   includes the ring's own ramp-up and is reported but not used).
Reports steady tick time, video fps, scaling efficiency fps_W / (W · fps_1), time to first block, peak memory per
GPU and each rank's share of time spent waiting for its input (communication and pipeline bubbles).
Usage: python benchmarks/dual_gpu.py --worlds 1,2,4 --out dual.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import add_workload_args, fake_text_encoder  # noqa: E402
from pipeline.model.archs import arch_family, random_transformer_slice  # noqa: E402
from pipeline.config import EngineConfig  # noqa: E402
from pipeline.dualparal.engine import DTYPES, Engine  # noqa: E402
from pipeline.process.ranks import init_dist  # noqa: E402
from pipeline.dualparal.stages import balanced_split, build_stage, serve_stage  # noqa: E402
from pipeline.model.random_wan import wan_scheduler  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.current_stream(dev).synchronize()  # device-wide would wait for posted receives


def timed_ticks(eng, n, dev):
    out = []
    for _ in range(n):
        sync(dev)
        t = time.perf_counter()
        eng.tick()
        sync(dev)
        out.append(time.perf_counter() - t)
    return out


def rank_main(rank, world, port, a, out_path):
    # NCCL receives are posted ahead; with lazy module loading the first launch of a new kernel waits for the
    # GPU to drain, i.e. for that receive: a deadlock. Load every kernel up front in multi-rank CUDA processes.
    if world > 1 and a.device == "cuda" and a.eager:
        os.environ["CUDA_MODULE_LOADING"] = "EAGER"
    if a.hang_dump:  # on a hang, every rank prints its Python stacks to stderr, then (all had time to) exits
        import faulthandler
        import threading

        def dump():
            time.sleep(a.hang_dump)
            faulthandler.dump_traceback(all_threads=True)
            time.sleep(10)
            os._exit(3)
        threading.Thread(target=dump, daemon=True).start()

    def log(msg):
        print(f"[w{world} r{rank} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dev = torch.device(f"cuda:{rank}" if a.device == "cuda" else "cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    init_dist(dev, world, rank)
    log("process group up")
    cfg = EngineConfig(model=a.arch, height=a.height, width=a.width, steps=a.steps, guidance=a.guidance,
                       block_frames=a.block_frames, context_frames=a.context_frames, dtype=a.dtype,
                       device=str(dev.type), ranks=world, family=arch_family(a.arch).to_dict())
    dtype = DTYPES[a.dtype]
    from pipeline.model.archs import WAN_ARCHS
    layers = balanced_split(WAN_ARCHS[a.arch]["num_layers"], world)[rank]
    model = random_transformer_slice(a.arch, layers, rank == 0, rank == world - 1, device=dev, dtype=dtype)
    if a.attention:
        model.set_attention_backend(a.attention)
    log("slice built")
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type != "meta") / 2**30
    with torch.inference_mode():
        if rank != 0:
            serve_stage(build_stage(cfg, model, layers, rank, world, dev), rank, world, dev)
            dist.destroy_process_group()
            return
        res = {"world": world, "layers": balanced_split(WAN_ARCHS[a.arch]["num_layers"], world),
               "rank0_weights_gib": weights_gib}
        encode = fake_text_encoder(dev, dtype)
        if a.compare:  # 0. the first --compare finished blocks, kept for the W-independence check
            eng = Engine(cfg, model, wan_scheduler(3.0), encode, device=dev, world=world, layers=layers)
            done = []
            while len(done) < a.compare:
                done += [fb.latents.float().cpu() for fb in eng.tick().finished]
            eng.retire()
            torch.save(torch.cat(done[:a.compare]), out_path + ".latents")
            log(f"{a.compare} blocks kept for the comparison")
        # 1. the fill, measured for its first ticks
        eng = Engine(cfg, model, wan_scheduler(3.0), encode, device=dev, world=world, layers=layers)
        res["fill_ticks_s"] = timed_ticks(eng, a.fill_ticks, dev)
        log(f"fill ticks {res['fill_ticks_s']}")
        eng.retire()
        log("retired")
        # 2. steady state
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        eng = Engine(cfg, model, wan_scheduler(3.0), encode, device=dev, world=world, layers=layers)
        eng.preload()
        ramp = timed_ticks(eng, 1 if world > 1 else 0, dev)  # one rank has no ring to ramp up
        t0 = time.perf_counter()
        ticks = timed_ticks(eng, a.ticks, dev)
        eng.drain()
        sync(dev)
        span = time.perf_counter() - t0
        after = [list(r) for r in eng.pipe.rank_stats]
        res["ramp_tick_s"] = ramp[0] if ramp else None
        res["steady_ticks_s"] = ticks
        res["steady_span_s"] = span
        # per-rank totals over the whole steady run (ramp tick + timed ticks + drain)
        res["ranks"] = [{"rank": r, "compute_s": after[r][0] / 1e3, "wait_s": after[r][1] / 1e3,
                         "peak_mem_gib": after[r][2], "windows": after[r][3]} for r in range(world)]
        for r in res["ranks"]:
            busy = r["compute_s"] + r["wait_s"]
            r["wait_share"] = r["wait_s"] / busy if busy else 0.0
        eng.close()
        with open(out_path, "w") as f:
            json.dump(res, f, indent=2)
    dist.destroy_process_group() if dist.is_initialized() else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", default="1,2,4")
    add_workload_args(ap, ticks=2, fill_ticks=4, out="dual_gpu.json")
    ap.add_argument("--attention", default="")
    ap.add_argument("--frames", type=int, default=1025, help="report the time to produce a video this long")
    ap.add_argument("--eager", type=int, default=1, help="CUDA_MODULE_LOADING=EAGER in multi-rank CUDA runs")
    ap.add_argument("--compare", type=int, default=0,
                    help="also run the first N blocks of a fresh stream per W and compare them with the first W's")
    ap.add_argument("--hang-dump", type=float, default=0, help="dump stacks and exit after this many seconds")
    a = ap.parse_args()
    results = {"device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
               "gpus": torch.cuda.device_count() if a.device == "cuda" else 0, "torch": torch.__version__,
               "args": vars(a), "runs": []}
    ref = None  # the first W's blocks (--compare)
    for world in [int(w) for w in a.worlds.split(",")]:
        tmp = f"{a.out}.w{world}.json"
        t0 = time.perf_counter()
        mp.spawn(rank_main, args=(world, free_port(), a, tmp), nprocs=world, join=True)
        with open(tmp) as f:
            r = json.load(f)
        os.remove(tmp)
        r["wall_s"] = time.perf_counter() - t0
        if a.compare:
            lat = torch.load(tmp + ".latents")
            os.remove(tmp + ".latents")
            ref = lat if ref is None else ref
            r["compare"] = {"blocks": a.compare, "bitwise_equal_to_first": bool(torch.equal(lat, ref)),
                            "max_abs_diff": float((lat - ref).abs().max()), "shape": list(lat.shape),
                            "max_abs_ref": float(ref.abs().max())}
        tick = sum(r["steady_ticks_s"]) / len(r["steady_ticks_s"])
        r["steady_tick_s"] = tick
        r["video_fps"] = 4 * a.block_frames / tick
        per_window = tick / a.steps
        rest = sum(max(k + 1, world) for k in range(a.fill_ticks, a.steps)) * per_window
        r["time_to_first_block_s"] = {"measured": sum(r["fill_ticks_s"]), "computed_rest": rest,
                                      "total": sum(r["fill_ticks_s"]) + rest}
        # a video of --frames frames: the first block gives 4B-3 frames, every later one 4B, one per steady tick
        more = max(0, -(-(a.frames - (4 * a.block_frames - 3)) // (4 * a.block_frames)))
        r[f"time_to_{a.frames}_frames_s"] = r["time_to_first_block_s"]["total"] + more * tick
        results["runs"].append(r)
        base = results["runs"][0]
        if base["world"] == 1:
            r["scaling_efficiency"] = r["video_fps"] / (world * base["video_fps"])
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)
        print(json.dumps({k: r[k] for k in ("world", "steady_tick_s", "video_fps", "ranks", "compare") if k in r},
                         indent=1), flush=True)


if __name__ == "__main__":
    main()
