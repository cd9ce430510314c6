"""Train the project's own small text-to-video model on the toy world (same diffusers Wan classes as the real one).

    python -m pipeline.toyworld.train --out DIR [--device cuda] [--seed 0] [--vae-seconds S] [--dit-seconds S]
        [--size 64] [--frames 17] [--batch N] [--dit-batch N] [--pool-clips N] [--preset full|smoke]
        [--vae-steps N] [--dit-steps N] [--context-frames C]

Stage 1 trains an AutoencoderKLWan (train_vae.py), stage 2 a WanTransformer3DModel (train_dit.py) on its latents,
conditioned by a frozen tiny UMT5 encoder + the offline tokenizer (pipeline/model/random_wan.py). DIR becomes a diffusers
WanPipeline folder (pipeline.model.components.load_components(DIR) loads it) plus DIR/train_log.json and DIR/streamer.json
(the daemon's defaults for the model: `streamer serve --model DIR`). Budgets are seconds
unless --vae-steps/--dit-steps are given; with step budgets the same seed gives the same weights (on CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch


@dataclasses.dataclass
class TrainConfig:
    preset: str = "full"
    seed: int = 0
    size: int = 64
    frames: int = 17  # video frames of a training clip (1 + 4k)
    batch: int = 32  # VAE clips per step (single-frame phase: 4x as many frames)
    dit_batch: int = 256  # DiT windows per step
    pool_clips: int = 16384  # clips encoded once for the DiT stage
    vae_seconds: float = 240.0
    dit_seconds: float = 270.0
    vae_steps: int = 0  # > 0: a step budget instead of seconds (reproducible)
    dit_steps: int = 0
    vae_lr: float = 3e-4
    dit_lr: float = 3e-4
    warmup: int = 100
    vae_image_fraction: float = 0.3  # first part of the VAE budget: single frames
    context_frames: int = 1  # C of the DualParal windows
    window_prob: float = 0.75  # share of DiT steps on context+block windows (rest: plain windows)
    succ_prob: float = 0.5  # of those, the share that also end with successor frames
    transition_prob: float = 0.25  # share of DiT steps (and of the pool) on prompt-change windows
    ema: float = 0.999
    stats_clips: int = 256
    log_every: int = 50


PRESETS = {
    "full": {},
    "smoke": dict(size=32, frames=5, batch=4, dit_batch=16, pool_clips=64, vae_seconds=20.0, dit_seconds=20.0,
                  vae_lr=1e-3, dit_lr=2e-3, warmup=5, ema=0.0, stats_clips=8, log_every=10),
}


def serve_defaults(cfg: TrainConfig) -> dict:
    """What `streamer serve --model DIR` uses unless told otherwise: the empty negative prompt (the one the model
    was trained with for CFG) and the steps / guidance / block sizes the quality benchmark picked
    (benchmarks/RESULTS.md §5: guidance 3 beat 5 at 8 steps; 16 steps gained nothing)."""
    from pipeline.toyworld.world import all_scenes, prompt_of

    return {"prompt": prompt_of(all_scenes()[0]), "negative_prompt": "", "height": cfg.size, "width": cfg.size,
            "steps": 8, "guidance": 3.0, "block_frames": 2, "context_frames": cfg.context_frames, "fps": 8.0}


def train(cfg: TrainConfig, out: str, device: str = "cpu", log=print) -> dict:
    from pipeline.model.components import DEFAULTS_FILE, Components, save_components
    from pipeline.model.random_wan import TINY_TEXT_MAX_LEN, build_tiny_components, wan_scheduler
    from pipeline.toyworld.train_dit import train_dit
    from pipeline.toyworld.train_vae import set_latent_stats, train_vae

    if cfg.size % 16 or cfg.frames % 4 != 1 or cfg.frames < 5:
        raise ValueError(f"size must be a multiple of 16 and frames 1 + 4k >= 5, got {cfg.size}, {cfg.frames}")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tiny = build_tiny_components(cfg.seed)  # frozen text encoder + offline tokenizer (the rest is unused)
    text_encoder, tokenizer = tiny["text_encoder"].requires_grad_(False), tiny["tokenizer"]

    vae, vae_losses, vae_s, vae_n = train_vae(cfg, rng, device, log)
    vae.requires_grad_(False)
    mean, std = set_latent_stats(vae, rng, cfg, device)
    transformer, dit_losses, dit_s, dit_n = train_dit(cfg, rng, vae, tokenizer, text_encoder, device, log)

    comps = Components(transformer=transformer.cpu().to(torch.bfloat16),  # shipped in bf16 (14 MB)
                       vae=vae.cpu().float(), text_encoder=text_encoder.cpu(), tokenizer=tokenizer,
                       scheduler=wan_scheduler(3.0), text_max_len=TINY_TEXT_MAX_LEN)
    save_components(comps, out)
    with open(os.path.join(out, DEFAULTS_FILE), "w") as f:  # the daemon's defaults for this model
        json.dump(serve_defaults(cfg), f, indent=2)
    result = {
        "seed": cfg.seed, "device": device, "config": dataclasses.asdict(cfg),
        "vae": {"losses": vae_losses, "seconds": vae_s, "steps": vae_n, "latents_mean": mean, "latents_std": std},
        "dit": {"losses": dit_losses, "seconds": dit_s, "steps": dit_n},
        "seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {out} in {result['seconds']:.0f}s (vae {vae_n} steps, dit {dit_n} steps)")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.toyworld.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (a diffusers WanPipeline folder)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    for name, typ in (("seed", int), ("vae-seconds", float), ("dit-seconds", float), ("size", int),
                      ("frames", int), ("batch", int), ("dit-batch", int), ("pool-clips", int), ("vae-steps", int),
                      ("dit-steps", int), ("context-frames", int)):
        p.add_argument(f"--{name}", type=typ, default=None)
    a = p.parse_args(argv)
    fields = dict(PRESETS[a.preset], preset=a.preset)
    fields.update({k: v for k, v in vars(a).items() if k in TrainConfig.__dataclass_fields__ and v is not None})
    cfg = TrainConfig(**fields)
    os.makedirs(a.out, exist_ok=True)
    train(cfg, a.out, a.device, log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
