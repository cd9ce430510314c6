"""Distil a tiny decoder (the TAEHV layout `--tiny-vae` reads, narrower) from the toy world's own VAE decoder.

Clips are rendered on the device, encoded by the VAE, and the tiny decoder learns to give, from the normalised
latents the transformer produces, the frames the VAE decoder gives from them (L1 + L2 on frames in [0, 1]). A clip
batch runs through the decoder's layers with each memory block's "previous frame" taken within its own clip, which
is what streaming one clip through `StreamingTinyDecoder` computes (its first three frames are dropped, as there).

Two options aim at block boundaries, where the real-time DiT's latents jump a little between one block and the
next (the seam ratio of quality.py): `jolt` adds to each clip's latents, from a random frame on, a step of up to
`jolt` latent standard deviations, and the teacher decodes the same jolted latents, so the student learns the VAE's
answer to such a step; `temporal` weighs a loss on frame-to-frame differences (the student's against the
teacher's), the quantity the seam ratio measures.
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


def jolted(z: torch.Tensor, std: torch.Tensor, jolt: float) -> torch.Tensor:
    """Latents [N, C, F, h, w] with, in each clip, a step of u·std·ε (u uniform in [0, jolt), ε standard normal per
    channel and position) added to every frame from a random frame k in 1..F-1 on."""
    n, _, f = z.shape[:3]
    k = torch.randint(1, f, (n,), device=z.device)
    after = (torch.arange(f, device=z.device)[None] >= k[:, None]).to(z.dtype).view(n, 1, f, 1, 1)
    u = torch.rand(n, device=z.device, dtype=z.dtype).mul(jolt).view(n, 1, 1, 1, 1)
    step = u * std * torch.randn(n, z.shape[1], 1, *z.shape[3:], device=z.device, dtype=z.dtype)
    return z + step * after


def tiny_loss(out: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temporal: float) -> torch.Tensor:
    """Frames [N, T, 3, H, W] against the teacher's: L1 + L2 per pixel, plus `temporal` × L1 of the frame-to-frame
    differences; the shape's pixels (mask [N, T, 1, H, W]) weigh more, as in the VAE's own training."""
    from pipeline.toyworld.loop import shape_weighted_mean
    from pipeline.toyworld.train_vae import SHAPE_WEIGHT

    err = out - teacher
    loss = shape_weighted_mean(err.abs() + err.square(), mask, SHAPE_WEIGHT)
    if temporal > 0:
        d_err = err[:, 1:] - err[:, :-1]  # (out[t+1] - out[t]) - (teacher[t+1] - teacher[t])
        loss = loss + temporal * shape_weighted_mean(d_err.abs(), torch.maximum(mask[:, 1:], mask[:, :-1]),
                                                     SHAPE_WEIGHT)
    return loss


def train_tiny(vae, rng, cfg, device, log=print, net: TinyDecoderNet | None = None):
    """→ (TinyDecoderNet in float32 on the CPU, losses, seconds, steps). `net`: continue from this decoder (else a
    new one of cfg.tiny_channels); cfg.tiny_jolt and cfg.tiny_temporal (0: off) as in the module's text, cfg.tiny_lr
    (cfg: train_rt's RTConfig, or main's namespace with the same fields)."""
    from pipeline.toyworld.loop import Budget, log_every, lr_at, optimiser_step
    from pipeline.toyworld.train_vae import latent_stats, sample_clips

    jolt, temporal, lr = cfg.tiny_jolt, cfg.tiny_temporal, cfg.tiny_lr
    net = (net or TinyDecoderNet(vae.config.z_dim, cfg.tiny_channels)).to(device).float().train().requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    mean, std = latent_stats(vae, device)
    losses, budget = [], Budget(cfg.tiny_steps, cfg.tiny_seconds)
    for step, progress, elapsed in budget:
        with torch.no_grad():
            x, mask, _ = sample_clips(rng, cfg.tiny_batch, 4 * CLIP_LATENTS - 3, 64, device)
            z = vae.encode(x).latent_dist.mode()
            if jolt > 0:
                z = jolted(z, std, jolt)
            teacher = vae.decode(z).sample.clamp(-1, 1).add(1).div(2)  # [N, 3, T, H, W]
            zn = ((z - mean) / std).transpose(1, 2)  # [N, F, C, h, w]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            out = clip_forward(net, zn)[:, 3:].float()  # a stream's first latent frame gives one frame
        loss = tiny_loss(out, teacher.transpose(1, 2), mask.transpose(1, 2), temporal)
        losses.append(optimiser_step(opt, net.parameters(), loss, lr_at(step, progress, lr, 50)))
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
    p.add_argument("--init", default=None, help="continue from this tiny decoder checkpoint (its channels)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--jolt", type=float, default=0.0, help="latent steps of up to this many standard deviations "
                   "from a random frame on, decoded by the teacher too (0: off)")
    p.add_argument("--temporal", type=float, default=0.0, help="weight of the frame-to-frame difference loss")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import os

    from pipeline.decoders.tiny_vae import load_tiny_decoder

    torch.manual_seed(a.seed)
    vae = load_components(a.model, device=a.device, parts=("vae",)).vae.requires_grad_(False)
    cfg = SimpleNamespace(tiny_channels=tuple(int(c) for c in a.channels.split(",")), tiny_seconds=a.seconds,
                          tiny_steps=a.steps, tiny_batch=a.batch, log_every=100, tiny_lr=a.lr, tiny_jolt=a.jolt,
                          tiny_temporal=a.temporal)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    init = load_tiny_decoder(a.init, vae.config.z_dim) if a.init else None
    net, losses, seconds, steps = train_tiny(vae, np.random.default_rng(a.seed), cfg, a.device, log, net=init)
    from pipeline.modelinfo import resolve_model

    out = a.out or os.path.join(resolve_model(a.model), TINY_VAE_FILE)
    save_tiny(net, dict(vae.config), out)
    log(f"wrote {out}: {steps} steps in {seconds:.0f}s, last loss {losses[-1]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
