"""Fine-tune a toy-world model's VAE decoder, its encoder frozen, so that shape outlines come back sharp.

The toy VAE was trained for 240 s, and its round trip rounds a triangle's corners: a green triangle's fill ratio
(area / bounding box) rises from 0.60 to 0.70, the classifier's triangle/circle line (benchmarks/vae_roundtrip.py).
Here only the decoder (and the convolution before it) trains further. The encoder and its latent statistics stay
as they are, so the latent space, and every transformer trained on it, stays valid.

Loss: the VAE's own (L1 + L2, shape pixels weighing SHAPE_WEIGHT times the background's), plus `edge_weight` ×
the coverage error on a band of pixels either side of the outline. Coverage is what the renderer draws (a pixel is
background + alpha × (colour − background)) and what the classifier reads back: the error's projection onto the
background → colour axis over that axis' squared length, so a dim colour on a dark background counts as much as a
bright one.

    python -m pipeline.toyworld.tune_decoder --model DIR --out DIR2 [--seconds 240] [--edge-weight 1.0]

DIR2 is DIR's folder with the new VAE (DIR2/vae a folder of its own) and a "decoder" entry in train_log.json.
Distil the tiny decoder again afterwards (pipeline.toyworld.train_tiny): it learned the old decoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def edge_band(mask: torch.Tensor) -> torch.Tensor:
    """Shape masks [N, 1, T, H, W] (0/1) → 1 where a pixel's 3×3 neighbourhood (on the torus) holds both shape and
    background: the outline, one pixel either side."""
    padded = F.pad(mask, (1, 1, 1, 1, 0, 0), mode="circular")
    dilated = F.max_pool3d(padded, (1, 3, 3), stride=1)
    eroded = -F.max_pool3d(-padded, (1, 3, 3), stride=1)
    return dilated - eroded


def coverage_error(rec: torch.Tensor, x: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """(rec − x) projected on each clip's background → colour axis, in units of that axis: [N, 1, T, H, W].
    rec, x: [N, 3, T, H, W] in [-1, 1]; fg, bg: [N, 3] in the same units."""
    axis = (fg - bg).view(-1, 3, 1, 1, 1)
    return ((rec - x) * axis).sum(1, keepdim=True) / axis.square().sum(1, keepdim=True)


def decoder_loss(vae, x, mask, fg, bg, edge_weight: float) -> torch.Tensor:
    from pipeline.toyworld.loop import shape_weighted_mean
    from pipeline.toyworld.train_vae import SHAPE_WEIGHT

    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    rec = vae.decode(z).sample
    err = rec - x
    loss = shape_weighted_mean(err.abs() + err.square(), mask, SHAPE_WEIGHT)
    if edge_weight > 0:
        band = edge_band(mask)
        cov = coverage_error(rec, x, fg, bg)
        loss = loss + edge_weight * (band * (cov.abs() + cov.square())).sum() / band.sum().clamp_min(1.0)
    return loss


def decoder_parameters(vae) -> list:
    """What trains: the decoder and the 1×1 convolution that feeds it."""
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


def tune_decoder(vae, rng, cfg, device, log=print):
    """Train vae's decoder in place (cfg: seconds, steps, batch, frames, lr, edge_weight, log_every) → (losses,
    seconds, steps). Everything else in the VAE is frozen and left unchanged."""
    from pipeline.toyworld.loop import Budget, log_every, lr_at, optimiser_step
    from pipeline.toyworld.train_vae import sample_clips, scene_table

    vae.requires_grad_(False).train()
    params = decoder_parameters(vae)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    table = scene_table(device)
    losses, budget = [], Budget(cfg.steps, cfg.seconds)
    for step, progress, elapsed in budget:
        x, mask, idx = sample_clips(rng, cfg.batch, cfg.frames, 64, device)
        sel = torch.from_numpy(idx).to(table.device)
        fg, bg = table.fg[sel].float() / 127.5 - 1.0, table.bg[sel].float() / 127.5 - 1.0
        loss = decoder_loss(vae, x, mask, fg, bg, cfg.edge_weight)
        losses.append(optimiser_step(opt, params, loss, lr_at(step, progress, cfg.lr, 20)))
        log_every(log, "decoder", step, losses, cfg.log_every, elapsed)
    vae.requires_grad_(False).eval()
    return losses, budget.elapsed, budget.done


def write_model(src: str, out: str, vae, entry: dict) -> None:
    """Copy model folder `src` to `out` (links followed) with `vae` as its VAE and `entry` added to its training
    history."""
    import json
    import os
    import shutil

    from pipeline.toyworld.loop import save_component

    if os.path.abspath(src) != os.path.abspath(out):
        shutil.copytree(src, out, symlinks=False, dirs_exist_ok=False,
                        ignore=shutil.ignore_patterns("__pycache__"))
    vae_dir = os.path.join(out, "vae")
    if os.path.islink(vae_dir):
        os.unlink(vae_dir)
    save_component(vae, vae_dir)
    log_path = os.path.join(out, "train_log.json")
    log = {}
    if os.path.exists(log_path):
        with open(log_path) as f:
            log = json.load(f)
    log.setdefault("decoder_tuning", []).append(entry)
    with open(log_path, "w") as f:
        json.dump(log, f, indent=1)


def main(argv=None) -> int:
    import argparse
    import os
    import sys
    from types import SimpleNamespace

    import numpy as np

    from pipeline.model.components import load_components
    from pipeline.modelinfo import resolve_model

    p = argparse.ArgumentParser(prog="python -m pipeline.toyworld.tune_decoder", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a toy-world model folder (or its name)")
    p.add_argument("--out", required=True, help="the new model folder (must not exist)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--steps", type=int, default=0, help="> 0: a step budget instead of seconds")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=17, help="video frames of a training clip (1 + 4k)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--edge-weight", type=float, default=1.0, help="weight of the outline's coverage error (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    a = p.parse_args(argv)
    if a.frames % 4 != 1:
        p.error(f"--frames must be 1 + 4k, got {a.frames}")
    if os.path.exists(a.out):
        p.error(f"--out {a.out} exists; give a new folder")
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(a.seed)
    src = resolve_model(a.model)
    vae = load_components(src, device=a.device, parts=("vae",)).vae.float()

    cfg = SimpleNamespace(seconds=a.seconds, steps=a.steps, batch=a.batch, frames=a.frames, lr=a.lr,
                          edge_weight=a.edge_weight, log_every=a.log_every)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    losses, seconds, steps = tune_decoder(vae, np.random.default_rng(a.seed), cfg, a.device, log)
    entry = {"base": src, "device": a.device, "seed": a.seed, "config": vars(cfg),
             "seconds": seconds, "steps": steps, "losses": losses}
    write_model(src, a.out, vae.cpu(), entry)
    log(f"wrote {a.out}: {steps} steps in {seconds:.0f}s, last loss {np.mean(losses[-20:]):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
