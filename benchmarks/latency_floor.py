"""The floor of the soft-change latency that `quality.py --changes` reports: ground-truth change clips of the toy
world (scene A, then from a block boundary on scene B with the shape going on from where A's was, as train_rt's
change clips are rendered), cut into the stream's blocks and scored exactly as quality.py scores the stream
(blocks from the first block of scene B until it is recognised in 2 consecutive blocks). A stream that switched
at once would score this. A change whose ground truth itself needs 2 or more blocks would be slow in the scorer's
eyes, not the model's (rendered, none is: RESULTS.md §9, tenth follow-up).

The random changes are drawn as quality.py draws them (the same pairs of scenes for the same --seed); where the
shape is at the change is drawn uniformly (the stream's positions are its own). With --tiny FILE the clips also go
through the toy VAE's encoder and that tiny decoder, block by block, as the preset's pictures do: once as the change
clip encoded (the encoder's causal memory carries scene A into the first latents of B), and once with the latents
spliced at the change from two clips each of one scene (what a generator that switched at once would hand the
decoder; what remains is the decoder's own memory).
Usage (CPU): python benchmarks/latency_floor.py --changes 96 [--tiny FILE] --out latency_floor.json
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

from benchmarks.quality_metrics import latency, latency_summary  # noqa: E402
from benchmarks.seam_floor import stream_blocks, stream_decode  # noqa: E402
from pipeline.toyworld.classify import classify_block  # noqa: E402
from pipeline.toyworld.render_torch import render_batch  # noqa: E402
from pipeline.toyworld.world import all_scenes, prompt_of  # noqa: E402

SIZE = 64


def change_frame(block_frames: int, before: int) -> int:
    """The first video frame of stream block `before` (the first block has 4 B - 3 frames, the others 4 B)."""
    return 4 * block_frames * before - 3


def one_scene_clips(table, a: list[int], b: list[int], pos: torch.Tensor, block_frames: int, before: int,
                    after: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of scenes a[i] and of scenes b[i] (uint8 [n, T, 64, 64, 3] each, T = 4 L - 3 video frames for the
    L latent frames of `before` + `after` stream blocks), the shape's centre at pos[i] ((y, x) px) at the first
    video frame of stream block `before`, where a change would happen."""
    frames = 4 * block_frames * (before + after) - 3
    at = change_frame(block_frames, before)
    return tuple(render_batch(table, torch.tensor(s), pos, frames, SIZE, SIZE, t0=-at) for s in (a, b))


def joined(ua: torch.Tensor, ub: torch.Tensor, block_frames: int, before: int) -> torch.Tensor:
    """one_scene_clips' two clips as one change clip: scene A for `before` stream blocks, then scene B."""
    at = change_frame(block_frames, before)
    return torch.cat([ua[:, :at], ub[:, at:]], dim=1)


def change_clips(table, a: list[int], b: list[int], pos: torch.Tensor, block_frames: int, before: int,
                 after: int) -> torch.Tensor:
    """Scene a[i] for `before` stream blocks, then scene b[i] for `after`, the shape going on."""
    return joined(*one_scene_clips(table, a, b, pos, block_frames, before, after), block_frames, before)


def blocks_to_clean(frames: np.ndarray, target: str, block_frames: int, before: int) -> int | None:
    """quality.py's latency of one change: blocks from the first block of `target` (block `before`) until it is
    recognised in 2 consecutive blocks; None if never within the clip."""
    blocks = stream_blocks(frames, block_frames)
    hits = {i: classify_block(blk, expected=target)["all_correct"] for i, blk in enumerate(blocks) if i >= before}
    return latency(hits, before, consecutive=2)


@torch.inference_mode()
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0, help="quality.py's --seed: the same pairs of scenes")
    ap.add_argument("--block-frames", type=int, default=2)
    ap.add_argument("--before", type=int, default=4, help="stream blocks of scene A")
    ap.add_argument("--after", type=int, default=16, help="stream blocks of scene B (quality.py's window: 16)")
    ap.add_argument("--model", default=os.path.join(ROOT, "pipeline", "toyworld", "model_rt"),
                    help="the toy model whose VAE encodes the clips for --tiny")
    ap.add_argument("--tiny", action="append", default=[], help="a tiny decoder checkpoint to score (repeatable)")
    ap.add_argument("--out", default="latency_floor.json")
    a = ap.parse_args(argv)
    from pipeline.toyworld.train_vae import scene_table

    scenes = all_scenes()
    table = scene_table("cpu")
    rng = np.random.default_rng(a.seed + 1)  # as quality.random_changes draws its pairs
    pairs = [tuple(int(x) for x in rng.choice(len(scenes), size=2, replace=False)) for _ in range(a.changes)]
    pos = torch.from_numpy(np.random.default_rng(a.seed + 2).random((a.changes, 2)) * SIZE)
    one_a, one_b = one_scene_clips(table, [p[0] for p in pairs], [p[1] for p in pairs], pos, a.block_frames,
                                   a.before, a.after)
    clips = joined(one_a, one_b, a.block_frames, a.before)
    videos = {"ground truth (rendered)": [c.numpy() for c in clips]}
    if a.tiny:
        from pipeline.decoders.tiny_vae import load_tiny_decoder
        from pipeline.model.components import load_components
        from pipeline.toyworld.train_rt import latent_encoder

        vae = load_components(a.model, device="cpu", parts=("vae",)).vae
        enc = latent_encoder(vae, "cpu")

        def encode(u8: torch.Tensor) -> torch.Tensor:  # 8 clips per encoder call (memory)
            return torch.cat([enc(u8[i:i + 8]) for i in range(0, len(u8), 8)])

        encoded = encode(clips)
        lat = a.block_frames * a.before  # the first latent frame of scene B
        spliced = torch.cat([encode(one_a)[:, :, :lat], encode(one_b)[:, :, lat:]], dim=2)
        for path in a.tiny:
            net = load_tiny_decoder(path, vae.config.z_dim).float()
            for how, z in (("change clip encoded", encoded), ("latents spliced", spliced)):
                videos[f"tiny {os.path.basename(path)}, {how}"] = [stream_decode(net, z[i:i + 1], a.block_frames)
                                                                   for i in range(len(z))]
    res: dict = {"args": vars(a), "decoders": {}}
    for name, vids in videos.items():
        runs = [{"from": prompt_of(scenes[p[0]]), "to": prompt_of(scenes[p[1]]),
                 "position": [round(float(v), 2) for v in pos[i]],
                 "latency_blocks": blocks_to_clean(vids[i], prompt_of(scenes[p[1]]), a.block_frames, a.before)}
                for i, p in enumerate(pairs)]
        res["decoders"][name] = {**latency_summary(runs), "runs": runs}
        s = res["decoders"][name]
        print(f"{name}: within 1 block {s['within_1']:.3f} of {s['n']}, median {s['median']}, max {s['max']}, "
              f"not reached {s['not_reached']}", flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
