"""Quality benchmark (CPU): score the stream the engine produces on the toy world.

The same Engine and StreamingDecoder the daemon uses are driven in-process (no sockets, no pacing), so a run is
deterministic. Every emitted block is decoded and scored by the analytic toy-world classifier against the block's
own (dominant) prompt:

- prompt following: colour / shape / direction / background and all-four accuracy, blocks >= --warmup;
- smoothness per block and over the whole steady-state stream (pipeline.toyworld.classify.smoothness);
- seams: mean |frame change| across block boundaries / within blocks (1.0 = seamless);
- drift: all-four accuracy over the first --drift-window steady blocks vs the window around block --drift-at;
- prompt-change latency per mode: one run per mode (--changes N: N more, between random scenes); a change to
  --change-prompt is submitted live (default at_block) at the tick boundary where block --change-at is the next
  to be emitted, and acknowledged with its first_block (soft, cut: --change-at; queue, blend: the next block to
  enter). Latency = blocks from first_block until the new prompt is recognised (all four attributes) in 2
  consecutive blocks; from_request adds the acknowledgement delay. gap_ticks: ticks without output before
  first_block (a cut refills the queue);
- --strip: a picture of the --strip-mode run across the change (one row per block), captions in PATH.txt.

    python benchmarks/quality.py --model /path/to/toy-model --out q.json --strip strip.png
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.quality_metrics import (ATTRS, CHANCE, accuracy, drift, latency, seam_stats,  # noqa: E402
                                        latency_summary, smoothness_summary)
from pipeline.config import EngineConfig  # noqa: E402
from pipeline.decoders.wan_vae import StreamingDecoder  # noqa: E402
from pipeline.dualparal.engine import DTYPES, Engine  # noqa: E402
from pipeline.model.components import load_components, model_defaults  # noqa: E402
from pipeline.settings import MODEL_KEYS  # noqa: E402
from pipeline.resolve import tiny_vae_file  # noqa: E402
from pipeline.prompts import MODES  # noqa: E402
from pipeline.model.quant import quantize_blocks  # noqa: E402
from pipeline.model.components import vae_configs  # noqa: E402
from pipeline.decoders.tiny_vae import (StreamingTinyDecoder, check_latent_space, latent_space_of,  # noqa: E402
                               load_tiny_decoder)
from pipeline.model.text import PromptEncoder  # noqa: E402
from pipeline.toyworld.classify import classify_block, smoothness  # noqa: E402
from pipeline.toyworld.world import parse_prompt  # noqa: E402

BASE_PROMPT = "a red circle moving left on a black background"
CHANGE_PROMPT = "a blue square moving up on a gray background"  # differs from the base in all four attributes


@dataclass
class Block:
    index: int
    prompt: str  # the block's dominant prompt (FinishedBlock.cond.prompt)
    epoch: int
    tick: int
    frames: np.ndarray  # uint8 [T, H, W, 3]
    latents: torch.Tensor | None = None  # the clean latents the frames were decoded from


class Streamer:
    """Builds a fresh Engine + StreamingDecoder per run (same seed: runs agree up to their prompt change)."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg = cfg.validate().resolved()
        dtype = DTYPES[cfg.dtype]
        self.comps = load_components(cfg.model, device=cfg.device, dtype=dtype, flow_shift=cfg.flow_shift,
                                     vae_dtype=DTYPES[cfg.vae_dtype])
        self.tiny = None
        if cfg.tiny_vae:  # as the daemon does: the file's latent space checked against the model's
            check_latent_space(*vae_configs(cfg.model), cfg.model, declared=latent_space_of(cfg.tiny_vae))
            self.tiny = load_tiny_decoder(cfg.tiny_vae, self.comps.transformer.config.in_channels)
        c = self.comps
        self.penc = PromptEncoder(c.tokenizer, c.text_encoder, c.text_max_len, device=cfg.device, dtype=dtype)
        if cfg.quant == "fp8":
            quantize_blocks(c.transformer.blocks, cfg.device)

    def run(self, n_blocks: int, change: dict | None = None, change_at: int = 0, after_ack: int = 0,
            prompt: str | None = None):
        """Blocks in emission order, and the Change acknowledged for `change` (submit_prompt kwargs), submitted
        live at the tick boundary where block `change_at` is the next to be emitted. Runs to block n_blocks - 1,
        and with a change at least to block first_block + after_ack - 1."""
        cfg = self.cfg if prompt is None else dataclasses.replace(self.cfg, prompt=prompt)
        eng = Engine(cfg, self.comps.transformer, self.comps.scheduler, self.penc.encode, device=self.cfg.device)
        dec = StreamingTinyDecoder(self.tiny) if self.tiny is not None else \
            StreamingDecoder(self.comps.vae, chunk_frames=self.cfg.decode_chunk)
        ack = None
        out: list[Block] = []
        while len(out) < max(n_blocks, ack.first_block + after_ack if ack else 0) or (change and ack is None):
            if change and ack is None and len(out) >= change_at:
                self.penc.encode(change["prompt"])  # as the daemon does: embed off the hot path
                ack = eng.submit_prompt(**change)
            for fb in eng.tick().finished:
                frames = dec.decode_block(fb.latents, new_shot=fb.shot_start)
                out.append(Block(fb.index, fb.cond.prompt, fb.cond.epoch, fb.tick, frames, fb.latents))
        return out, ack


CONFIG_FIELDS = {f.name for f in dataclasses.fields(EngineConfig)}


def score(b: Block) -> dict:
    """One block's record: classifier output vs the block's prompt, and its smoothness."""
    c = classify_block(b.frames, expected=parse_prompt(b.prompt))
    return {"index": b.index, "prompt": b.prompt, "epoch": b.epoch, "tick": b.tick,
            "pred": {a: c[a] for a in ATTRS}, "correct": c["correct"], "all_correct": c["all_correct"],
            "smooth": smoothness(b.frames)}


def change_latency(streamer: Streamer, args, mode: str, prompt: str | None = None,
                   change_prompt: str | None = None) -> tuple[dict, list[Block]]:
    """One run with a change from `prompt` (default: the model's) to `change_prompt` (default --change-prompt)."""
    change_prompt = change_prompt or args.change_prompt
    kw = {"blocks": args.blend_blocks} if mode == "blend" else {}
    blocks, ack = streamer.run(0, {"prompt": change_prompt, "mode": mode, **kw}, change_at=args.change_at,
                               after_ack=args.latency_window, prompt=prompt)
    target = parse_prompt(change_prompt)
    hits = {b.index: classify_block(b.frames, expected=target)["all_correct"] for b in blocks}
    ticks = {b.index: b.tick for b in blocks}
    fb = ack.first_block
    lat = latency(hits, fb, consecutive=2)
    return {"requested_at": args.change_at, "first_block": fb, "epoch": ack.epoch, "latency_blocks": lat,
            # blocks from the request (block change_at next to be emitted) to the first of the 2 recognised blocks
            "from_request": None if lat is None else fb + lat - args.change_at, "window": args.latency_window,
            # ticks without output between the last old block and the acknowledged one (a cut refills the queue)
            "gap_ticks": ticks[fb] - ticks[fb - 1] - 1 if fb in ticks and fb - 1 in ticks else None,
            "recognised": {str(k): v for k, v in sorted(hits.items()) if k >= fb}}, blocks


def random_changes(streamer: Streamer, args, mode: str) -> dict:
    """Blocks until clean over --changes seeded random changes between two different scenes of the world."""
    from pipeline.toyworld.world import all_scenes, prompt_of

    scenes = all_scenes()
    rng = np.random.default_rng(args.seed + 1)
    runs = []
    for _ in range(args.changes):
        a, b = rng.choice(len(scenes), size=2, replace=False)
        r, _ = change_latency(streamer, args, mode, prompt_of(scenes[a]), prompt_of(scenes[b]))
        runs.append({"from": prompt_of(scenes[a]), "to": prompt_of(scenes[b]), "latency_blocks": r["latency_blocks"]})
    return {**latency_summary(runs), "runs": runs}


def vae_psnr(cfg: EngineConfig, blocks: list[Block]) -> dict:
    """PSNR (dB, 8-bit frames) of the blocks as decoded against the same latents decoded by a float32 VAE."""
    vae = load_components(cfg.model, device=cfg.device, parts=("vae",)).vae
    dec = StreamingDecoder(vae, chunk_frames=cfg.decode_chunk)
    per_block = []
    for b in blocks:
        if b.index == blocks[0].index:  # the reference stream starts here: its causal cache must match
            dec.reset()
            ref = dec.decode_block(b.latents)
            continue
        ref = dec.decode_block(b.latents)
        mse = np.mean((ref.astype(np.float64) - b.frames.astype(np.float64)) ** 2)
        per_block.append(float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
    return {"mean_db": round(float(np.mean(per_block)), 2), "min_db": round(float(np.min(per_block)), 2),
            "blocks": len(per_block)}


def write_strip(path: str, blocks: list[Block], n_frames: int) -> str:
    """One row per block, n_frames evenly spaced frames each; a label column with the block index drawn if Pillow
    is installed (PNG), else a PPM next to `path`. Captions (block, epoch, prompt) always go to PATH.txt."""
    h, w = blocks[0].frames.shape[1:3]
    label_w = 48
    rows = []
    for b in blocks:
        idx = np.linspace(0, len(b.frames) - 1, n_frames).round().astype(int)
        row = np.concatenate([np.full((h, label_w, 3), 255, np.uint8)] + [b.frames[i] for i in idx], axis=1)
        rows.append(np.pad(row, ((0, 2), (0, 0), (0, 0)), constant_values=128))  # thin separator line
    img = np.concatenate(rows, axis=0)
    captions = [f"block {b.index}  epoch {b.epoch}  tick {b.tick}  {b.prompt}" for b in blocks]
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        path = os.path.splitext(path)[0] + ".ppm"
        with open(path, "wb") as f:
            f.write(b"P6 %d %d 255\n" % (img.shape[1], img.shape[0]) + img.tobytes())
        print(f"Pillow not installed: wrote a PPM ({path}); block labels are in the caption file only")
    else:
        im = Image.fromarray(img)
        draw = ImageDraw.Draw(im)
        for r, b in enumerate(blocks):
            draw.text((3, r * (h + 2) + 3), f"#{b.index}", fill=(0, 0, 0))
            draw.text((3, r * (h + 2) + 17), f"e{b.epoch}", fill=(0, 0, 0))
        im.save(path)
    with open(path + ".txt", "w") as f:
        f.write("\n".join(captions) + "\n")
    return path


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def scene_accuracy(streamer: Streamer, args) -> dict:
    """Prompt following over --scenes prompts drawn from the whole world (seeded), --scene-blocks blocks each."""
    from pipeline.toyworld.world import all_scenes, prompt_of

    scenes = all_scenes()
    pick = np.random.default_rng(args.seed).choice(len(scenes), size=min(args.scenes, len(scenes)), replace=False)
    records = []
    for i in pick:
        blocks, _ = streamer.run(args.scene_blocks, prompt=prompt_of(scenes[i]))
        records += [score(b) for b in blocks]
    acc = accuracy(records, args.warmup)
    failed = [{"prompt": r["prompt"], "index": r["index"], "pred": r["pred"]}
              for r in records if r["index"] >= args.warmup and not r["all_correct"]]
    return {"scenes": len(pick), "blocks_each": args.scene_blocks, "accuracy": acc, "failed": failed}


def print_table(res: dict) -> None:
    pf = res["prompt_following"]
    print(f"\nprompt following (blocks >= {res['config']['warmup']}, n={pf['n']}):   accuracy   (chance)")
    for a in (*ATTRS, "all"):
        print(f"  {a:<12} {_fmt(pf[a]):>8}   ({CHANCE[a]:.3f})")
    if res.get("scenes"):
        sa = res["scenes"]
        print(f"over {sa['scenes']} random prompts ({sa['blocks_each']} blocks each, n={sa['accuracy']['n']}): "
              + "  ".join(f"{a} {_fmt(sa['accuracy'][a])}" for a in (*ATTRS, "all")))
    sm = res["smoothness"]
    print("smoothness           per-block mean      whole stream")
    for name, k in (("visible fraction", "visible_frac"), ("max jump (px)", "max_jump"), ("area CV", "area_cv")):
        print(f"  {name:<18} {_fmt(sm['per_block']['mean_' + k]):>14}  {_fmt((sm['stream'] or {}).get(k)):>16}")
    se = res["seams"]
    print(f"seams: boundary {_fmt(se['boundary_mad'])} / within {_fmt(se['within_mad'])} = ratio {_fmt(se['ratio'])}; "
          f"/ latent boundaries within {_fmt(se.get('latent_boundary_mad'))} = {_fmt(se.get('latent_ratio'))}")
    d = res["drift"]
    print(f"drift: all-four {_fmt(d['early'])} (blocks {d['early_blocks']}) -> {_fmt(d['late'])} "
          f"(blocks {d['late_blocks']}{'' if d['reached_at'] else ', did not reach block ' + str(d['at'])})")
    print(f"prompt-change latency (requested at block {res['config']['change_at']}; blocks from first_block to 2 "
          f"consecutive recognised; window {res['config']['latency_window']}):")
    for m, r in res["latency"].items():
        lat = r["latency_blocks"]
        print(f"  {m:<6} first_block {r['first_block']:>4}  latency {'not reached' if lat is None else lat:>11}"
              f"  from request {_fmt(r['from_request']):>4}  gap_ticks {_fmt(r['gap_ticks'])}")
    for m, r in (res.get("latency_random") or {}).items():
        print(f"  {m:<6} over {r['n']} random changes: median {_fmt(r['median'])}, max {_fmt(r['max'])}, "
              f"within 1 block {_fmt(r['within_1'])}, not reached {r['not_reached']}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="toyworld",
                    help="toyworld (default: the shipped model), tiny (random weights) or a diffusers folder; "
                         "options left out come from the model's streamer.json, then EngineConfig's defaults")
    for name, typ in (("height", int), ("width", int), ("steps", int), ("guidance", float), ("block-frames", int),
                      ("context-frames", int), ("sink-frames", int), ("flow-shift", float), ("negative-prompt", str),
                      ("tiny-vae", str)):
        ap.add_argument(f"--{name}", type=typ, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--vae-dtype", default="float32",
                    help="VAE decoder dtype; other than float32, the steady blocks are also decoded in float32 and "
                         "the PSNR of this decode against that one is reported")
    ap.add_argument("--reuse-context", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--quant", choices=["fp8"], default=None)
    ap.add_argument("--prompt", default=BASE_PROMPT)
    ap.add_argument("--change-prompt", default=CHANGE_PROMPT)
    ap.add_argument("--blocks", type=int, default=110, help="blocks of the main (no change) run")
    ap.add_argument("--warmup", type=int, default=4, help="blocks skipped before steady state")
    ap.add_argument("--drift-window", type=int, default=10)
    ap.add_argument("--drift-at", type=int, default=100)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--scenes", type=int, default=0, help="also score this many random prompts of the world")
    ap.add_argument("--scene-blocks", type=int, default=8, help="blocks per random prompt (--warmup skipped)")
    ap.add_argument("--change-at", type=int, default=None,
                    help="submit the change when this block is next to be emitted (default warmup + 4)")
    ap.add_argument("--latency-window", type=int, default=16, help="blocks generated from first_block on")
    ap.add_argument("--changes", type=int, default=0,
                    help="also time this many seeded random changes (scene A to scene B) per mode: median, max and "
                         "the fraction clean within 1 block")
    ap.add_argument("--blend-blocks", type=int, default=4)
    ap.add_argument("--strip", default=None, help="picture strip across the change (PNG; PPM without Pillow)")
    ap.add_argument("--strip-mode", default="soft")
    ap.add_argument("--strip-frames", type=int, default=4)
    ap.add_argument("--out", default="quality.json")
    args = ap.parse_args(argv)
    if args.change_at is None:
        args.change_at = args.warmup + 4
    modes = [m for m in args.modes.split(",") if m]
    parse_prompt(args.prompt), parse_prompt(args.change_prompt)  # toy-world prompts only: fail fast

    t0 = time.perf_counter()
    fields = {k: v for k, v in model_defaults(args.model, MODEL_KEYS).items() if k in CONFIG_FIELDS}
    fields.pop("prompt", None)
    fields.update({k: v for k, v in vars(args).items() if k in CONFIG_FIELDS and v is not None})
    if fields.get("tiny_vae"):  # 'model': the model folder's own, as `streamer serve` reads it
        fields["tiny_vae"] = tiny_vae_file(fields["tiny_vae"], args.model)
    cfg = EngineConfig(**fields)
    for k in ("height", "width", "steps", "guidance", "flow_shift", "block_frames", "context_frames", "sink_frames",
              "reuse_context", "negative_prompt", "tiny_vae"):
        setattr(args, k, getattr(cfg, k))  # what was used, in the report
    streamer = Streamer(cfg)
    blocks, _ = streamer.run(args.blocks)
    records = [score(b) for b in blocks]
    steady = [b for b in blocks if b.index >= args.warmup]
    res = {
        "config": {**vars(args), "modes": modes},
        "chance": CHANCE,
        "prompt_following": accuracy(records, args.warmup),
        "smoothness": {"per_block": smoothness_summary([r["smooth"] for r in records if r["index"] >= args.warmup]),
                       "stream": smoothness(np.concatenate([b.frames for b in steady])) if steady else None},
        "seams": seam_stats([b.frames for b in steady]),
        "drift": drift(records, args.drift_window, args.warmup, args.drift_at),
        "latency": {},
        "blocks": records,
    }
    if streamer.cfg.vae_dtype != "float32" or streamer.cfg.tiny_vae:
        res["vae_psnr_vs_float32"] = vae_psnr(streamer.cfg, steady)
    if args.scenes:
        res["scenes"] = scene_accuracy(streamer, args)
    runs = {}
    for m in modes:
        res["latency"][m], runs[m] = change_latency(streamer, args, m)
    if args.changes:
        res["latency_random"] = {m: random_changes(streamer, args, m) for m in modes}
    if args.strip:
        mode = args.strip_mode if args.strip_mode in runs else modes[0]
        shown = [b for b in runs[mode] if b.index >= args.change_at - 2]
        res["strip"] = {"path": write_strip(args.strip, shown, args.strip_frames), "mode": mode}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    print_table(res)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {args.out} ({res['seconds']} s)")
    return res


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
