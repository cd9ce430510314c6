"""The seam ratio of the toy world's decoders without any streaming: ground-truth clips of the toy world, encoded by
its VAE and decoded (by the VAE, and by tiny decoders streaming block by block), cut into blocks exactly as the
stream cuts them (4B-3 frames, then 4B), scored with quality_metrics.seam_stats. The rendered clips themselves
move at constant speed (ratio 1.0). What a decoder scores here is the floor of the stream's seam ratio: the
part that comes from decoding 4 frames per latent frame, not from generating block by block.
Usage (CPU is fine): python benchmarks/seam_floor.py [--tiny FILE ...] --out seam_floor.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.quality_metrics import seam_stats  # noqa: E402
from pipeline.decoders.block_decoder import to_uint8_rgb  # noqa: E402
from pipeline.decoders.tiny_vae import StreamingTinyDecoder, load_tiny_decoder  # noqa: E402
from pipeline.model.components import load_components  # noqa: E402
from pipeline.toyworld.train_vae import latent_stats, sample_clips  # noqa: E402


def stream_blocks(frames: np.ndarray, block_frames: int) -> list[np.ndarray]:
    """Video frames [T, ...] of a stream -> its blocks: 4B-3 frames first, then 4B each (a partial tail dropped)."""
    first, per = 4 * block_frames - 3, 4 * block_frames
    out = [frames[:first]]
    for i in range(first, len(frames) - per + 1, per):
        out.append(frames[i:i + per])
    return out


def stream_decode(net, z: torch.Tensor, block_frames: int) -> np.ndarray:
    """One clip's normalised latents [1, C, L, h, w] decoded by a tiny decoder as the stream decodes them, block by
    block with its memory carried: uint8 frames [T, H, W, 3]."""
    d = StreamingTinyDecoder(net)
    return np.concatenate([d.decode_block(z[:, :, k:k + block_frames]) for k in range(0, z.shape[2], block_frames)])


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> [T, H, W, 3] uint8, as the stream's decoders convert their frames."""
    return to_uint8_rgb(video.transpose(0, 1), -1.0).numpy()


def pooled(stats: list[dict]) -> dict:
    """Mean boundary and within changes over clips (each clip's seams are its own), and their ratios."""
    keys = ("boundary_mad", "within_mad", "latent_boundary_mad")
    m = {k: float(np.mean([s[k] for s in stats])) for k in keys}
    return {**m, "ratio": m["boundary_mad"] / m["within_mad"], "latent_ratio":
            m["boundary_mad"] / m["latent_boundary_mad"], "clips": len(stats),
            "boundaries": sum(s["boundaries"] for s in stats)}


@torch.inference_mode()
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="pipeline/toyworld/model_rt")
    ap.add_argument("--tiny", action="append", default=[], help="a tiny decoder checkpoint to score (repeatable)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--latents", type=int, default=22, help="latent frames per clip")
    ap.add_argument("--block-frames", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="seam_floor.json")
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    vae = load_components(a.model, device="cpu", parts=("vae",)).vae
    mean, std = latent_stats(vae, "cpu")
    x, _, _ = sample_clips(np.random.default_rng(a.seed), a.clips, 4 * a.latents - 3, 64, "cpu")
    z = vae.encode(x).latent_dist.mode()
    res: dict = {"args": vars(a), "decoders": {}}
    res["decoders"]["ground truth (rendered)"] = pooled(
        [seam_stats(stream_blocks(to_uint8(x[i]), a.block_frames)) for i in range(a.clips)])
    dec = vae.decode(z).sample
    res["decoders"]["the VAE"] = pooled(
        [seam_stats(stream_blocks(to_uint8(dec[i]), a.block_frames)) for i in range(a.clips)])
    for path in a.tiny:
        net = load_tiny_decoder(path, vae.config.z_dim).float()
        stats = []
        for i in range(a.clips):
            frames = stream_decode(net, (z[i:i + 1] - mean) / std, a.block_frames)  # the stream's uint8 frames
            stats.append(seam_stats(stream_blocks(frames, a.block_frames)))
        res["decoders"][f"tiny {os.path.basename(path)}"] = pooled(stats)
    for name, r in res["decoders"].items():
        print(f"{name}: ratio {r['ratio']:.3f}, latent-aligned {r['latent_ratio']:.3f} "
              f"(boundary {r['boundary_mad']:.2f}, within {r['within_mad']:.2f}, latent within "
              f"{r['latent_boundary_mad']:.2f})", flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
