"""What the toy world's VAE (or its tiny decoder) alone does to a shape: ground-truth clips of every colour and
background, encoded and decoded, then measured by the classifier that scores the stream (quality.py). A fill ratio
(area / bounding box) that the round trip pushes towards the next shape's is a ceiling on prompt accuracy that no
transformer or streaming setting can lift.

    python benchmarks/vae_roundtrip.py --model toyworld-rt --shape triangle --out fill.json
    python benchmarks/vae_roundtrip.py --model toyworld-rt --shape all --tiny-vae model --out fill_tiny.json

`--tiny-vae` decodes with a tiny decoder instead (`model`: the model folder's own), streaming the clip's latents as
one block, as `--tiny-vae` in the daemon does.
"""
from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch


CHUNK = 8  # clips per VAE call (on a CPU, the whole run ~1.6x faster than one clip a call)


def vae_decoder(vae):
    """Latents [N, z, F, h, w] → the VAE's frames as uint8 [N, T, H, W, 3]."""
    def decode(z):
        y = vae.decode(z).sample.clamp(-1, 1)
        return y.permute(0, 2, 3, 4, 1).add(1).mul(127.5).round().byte().cpu().numpy()
    return decode


def tiny_decoder(vae, model: str, path: str, device: str):
    """Latents [N, z, F, h, w] → a tiny decoder's frames (one stream per clip) as uint8 [N, T, H, W, 3]."""
    from pipeline.decoders.tiny_vae import StreamingTinyDecoder, load_tiny_decoder
    from pipeline.resolve import tiny_vae_file
    from pipeline.toyworld.train_vae import latent_stats

    net = load_tiny_decoder(tiny_vae_file(path, model), vae.config.z_dim).float().to(device)
    mean, std = latent_stats(vae, device)

    def decode(z):
        return np.stack([StreamingTinyDecoder(net).decode_block((clip[None] - mean) / std) for clip in z])
    return decode


def main(argv=None) -> int:
    from pipeline.model.components import load_components
    from pipeline.toyworld.classify import CIRCLE_MAX, TRIANGLE_MAX, classify_block
    from pipeline.toyworld.world import BACKGROUNDS, COLOURS, SHAPES, Scene, render

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toyworld-rt")
    ap.add_argument("--shape", choices=(*SHAPES, "all"), default="triangle")
    ap.add_argument("--tiny-vae", default="", help="decode with this tiny decoder ('model': the model's own)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=3, help="clips (start positions) per colour and background")
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--out", default="vae_roundtrip.json")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    vae = load_components(a.model, device=a.device, parts=("vae",)).vae.float().eval()
    decode = vae_decoder(vae) if not a.tiny_vae else tiny_decoder(vae, a.model, a.tiny_vae, a.device)
    cases = list(itertools.product(SHAPES if a.shape == "all" else (a.shape,), COLOURS, BACKGROUNDS))
    clips = [render(Scene(colour, shape, "down", bg), a.frames, seed=seed)  # a.seeds clips per case, in order
             for shape, colour, bg in cases for seed in range(a.seeds)]
    backs = []  # uint8 [T, H, W, 3] per clip
    for i in range(0, len(clips), CHUNK):
        x = torch.from_numpy(np.stack(clips[i:i + CHUNK])).float().div(127.5).sub(1)
        with torch.no_grad():
            backs.extend(decode(vae.encode(x.permute(0, 4, 1, 2, 3).to(a.device)).latent_dist.mode()))
    rows = []
    for k, (shape, colour, bg) in enumerate(cases):
        truth, decoded, shapes = [], [], []
        span = slice(k * a.seeds, (k + 1) * a.seeds)
        for frames, back in zip(clips[span], backs[span]):
            got = classify_block(back[1:])  # the first frame stands alone in the causal VAE
            truth.append(classify_block(frames)["fill"])
            decoded.append(got["fill"])
            shapes.append(got["shape"])
        rows.append({"shape": shape, "colour": colour, "background": bg,
                     "fill_truth": round(float(np.mean(truth)), 4), "fill_decoded": round(float(np.mean(decoded)), 4),
                     "read_as": {s: shapes.count(s) for s in set(shapes)}})
        print(f"{shape:8s} {colour:8s} {bg:10s} fill {rows[-1]['fill_truth']:.3f} -> "
              f"{rows[-1]['fill_decoded']:.3f} read as {rows[-1]['read_as']}", flush=True)
    with open(a.out, "w") as f:
        json.dump({"model": a.model, "tiny_vae": a.tiny_vae, "shape": a.shape, "seeds": a.seeds, "frames": a.frames,
                   "thresholds": {"triangle_below": TRIANGLE_MAX, "circle_below": CIRCLE_MAX}, "rows": rows}, f,
                  indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
