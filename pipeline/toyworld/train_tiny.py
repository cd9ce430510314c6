"""Distil a tiny decoder (the TAEHV layout `--tiny-vae` reads, narrower) from the toy world's own VAE decoder.

Clips are rendered on the device, encoded by the VAE, and the tiny decoder learns to give, from the normalised
latents the transformer produces, the frames the VAE decoder gives from them (L1 + L2 on frames in [0, 1]). A clip
batch runs through the decoder's layers with each memory block's "previous frame" taken within its own clip, which
is what streaming one clip through `StreamingTinyDecoder` computes (its first three frames are dropped, as there).
"""
from __future__ import annotations

import torch

from pipeline.decoders.tiny_vae import LATENT_SPACE_KEY, MemoryBlock, TinyDecoderNet, latent_space

CLIP_LATENTS = 6  # latent frames per training clip (21 video frames)


def clip_forward(net: TinyDecoderNet, z: torch.Tensor) -> torch.Tensor:
    """Normalised latents [N, F, C, h, w] → frames [N, 4F, 3, 8h, 8w], each clip a stream of its own."""
    n, f = z.shape[:2]
    x = z.flatten(0, 1)
    for layer in net.decoder:
        if isinstance(layer, MemoryBlock):
            seq = x.unflatten(0, (n, -1))
            past = torch.cat([torch.zeros_like(seq[:, :1]), seq[:, :-1]], dim=1).flatten(0, 1)
            x = layer(x, past)
        else:
            x = layer(x)
    return x.unflatten(0, (n, -1))


def train_tiny(vae, rng, cfg, device, log=print):
    """→ (TinyDecoderNet in float32 on the CPU, losses, seconds, steps)."""
    from pipeline.toyworld.loop import Budget, log_every, lr_at, optimiser_step, shape_weighted_mean
    from pipeline.toyworld.train_vae import SHAPE_WEIGHT, latent_stats, sample_clips

    net = TinyDecoderNet(vae.config.z_dim, cfg.tiny_channels).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0)
    mean, std = latent_stats(vae, device)
    losses, budget = [], Budget(cfg.tiny_steps, cfg.tiny_seconds)
    for step, progress, elapsed in budget:
        with torch.no_grad():
            x, mask, _ = sample_clips(rng, cfg.tiny_batch, 4 * CLIP_LATENTS - 3, 64, device)
            z = vae.encode(x).latent_dist.mode()
            teacher = vae.decode(z).sample.clamp(-1, 1).add(1).div(2)  # [N, 3, T, H, W]
            zn = ((z - mean) / std).transpose(1, 2)  # [N, F, C, h, w]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            out = clip_forward(net, zn)[:, 3:].float()  # a stream's first latent frame gives one frame
        err = out - teacher.transpose(1, 2)
        # the shape's pixels weigh more, as in the VAE's own training
        loss = shape_weighted_mean(err.abs() + err.square(), mask.transpose(1, 2), SHAPE_WEIGHT)
        losses.append(optimiser_step(opt, net.parameters(), loss, lr_at(step, progress, 1e-3, 50)))
        log_every(log, "tiny decoder", step, losses, cfg.log_every, elapsed)
    return net.eval().cpu().float(), losses, budget.elapsed, budget.done


def save_tiny(net: TinyDecoderNet, vae_config: dict, path: str) -> None:
    """A TAEHV-layout checkpoint (decoder.N.* in float16) that declares the latent space it decodes."""
    import json

    from safetensors.torch import save_file

    from pipeline.decoders.tiny_vae import tiny_decoder_checkpoint

    sd = {k: v.half().contiguous() for k, v in tiny_decoder_checkpoint(net).items()}
    save_file(sd, path, metadata={LATENT_SPACE_KEY: json.dumps(latent_space(vae_config))})


def main(argv=None) -> int:
    """Distil (again) the tiny decoder of a toy-world model folder: python -m pipeline.toyworld.train_tiny --model
    DIR [--out FILE] [--seconds S] [--channels 64,64,32,32]."""
    import argparse
    import sys
    from types import SimpleNamespace

    import numpy as np

    from pipeline.model.components import load_components
    from pipeline.settings import TINY_VAE_FILE

    p = argparse.ArgumentParser(prog="python -m pipeline.toyworld.train_tiny", description=main.__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--out", default=None, help="default: the model folder's own tiny decoder file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", default="64,64,32,32")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import os

    torch.manual_seed(a.seed)
    vae = load_components(a.model, device=a.device, parts=("vae",)).vae.requires_grad_(False)
    cfg = SimpleNamespace(tiny_channels=tuple(int(c) for c in a.channels.split(",")), tiny_seconds=a.seconds,
                          tiny_steps=a.steps, tiny_batch=a.batch, log_every=100)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    net, losses, seconds, steps = train_tiny(vae, np.random.default_rng(a.seed), cfg, a.device, log)
    from pipeline.modelinfo import resolve_model

    out = a.out or os.path.join(resolve_model(a.model), TINY_VAE_FILE)
    save_tiny(net, dict(vae.config), out)
    log(f"wrote {out}: {steps} steps in {seconds:.0f}s, last loss {losses[-1]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
