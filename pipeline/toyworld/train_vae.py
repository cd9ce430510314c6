"""Stage 1 of the toy-world training: toy-world clips rendered on the fly, and a small AutoencoderKLWan.

Recipe (a plain one learned only the background): shape pixels weigh 10x in the L1+L2 reconstruction loss, the
posterior log-variance starts small, temporal convolutions start as identity (each frame first behaves like an
image VAE), and the first part of the budget trains on single frames before moving to clips. Afterwards the
per-channel latents mean/std are measured and stored in the VAE config, so that, as in WanPipeline, the
transformer works on (z - mean) / std.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.toyworld.loop import Budget, log_every, lr_at, optimiser_step, shape_weighted_mean
from pipeline.toyworld.render_torch import SceneTable, random_batch
from pipeline.toyworld.world import all_scenes, prompt_of

SCENES = all_scenes()
SHAPE_WEIGHT = 10.0  # loss weight of shape pixels (background pixels: 1)
KL_WEIGHT = 1e-6  # on the per-sample KL sum
LOGVAR_INIT = -8.0  # initial posterior log-variance (std ~ 0.02)


_TABLES: dict[str, SceneTable] = {}


def sample_clips(rng: np.random.Generator, n: int, frames: int, size: int, device):
    """n random clips rendered on `device` → (video [n, 3, frames, size, size] in [-1, 1], shape mask
    [n, 1, frames, size, size], scene indices [n]). Positions are uniform on the torus, which puts every stage of
    the endless stream's wrap-around in distribution."""
    return random_batch(scene_table(device), rng, n, frames, size)


def scene_table(device) -> SceneTable:
    key = str(torch.device(device))
    if key not in _TABLES:
        _TABLES[key] = SceneTable(SCENES, device)
    return _TABLES[key]


def prompts_of(idx) -> list[str]:
    return [prompt_of(SCENES[i]) for i in idx]


def build_vae(preset: str):
    from diffusers import AutoencoderKLWan

    arch = dict(base_dim=32, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if preset == "full" else \
        dict(base_dim=8, dim_mult=[1, 1, 2, 2], num_res_blocks=1)
    vae = AutoencoderKLWan(z_dim=16, attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0,
                           scale_factor_temporal=4, scale_factor_spatial=8, **arch)
    init_vae(vae)
    return vae


@torch.no_grad()
def init_vae(vae) -> None:
    """Temporal convolutions as identity (only the current frame's tap), small posterior log-variance."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    for m in vae.modules():
        if not isinstance(m, WanCausalConv3d) or m.kernel_size[0] == 1:
            continue
        w = m.weight  # [out, in, kt, kh, kw]; causal padding puts the current frame at the last tap
        if tuple(m.kernel_size[1:]) == (1, 1):  # WanResample.time_conv: pure temporal mixing -> identity
            w.zero_()
            m.bias.zero_()
            n_in = w.shape[1]
            for k in range(w.shape[0] // n_in):  # upsample3d: out = 2 * in (two output frames per input frame)
                w[k * n_in:(k + 1) * n_in, :, -1, 0, 0] = torch.eye(n_in)
        else:  # 3x3x3 conv -> a 3x3 image conv on the current frame (variance kept)
            w[:, :, -1] *= math.sqrt(w.shape[2])
            w[:, :, :-1] = 0.0
    z = vae.config.z_dim
    q = vae.quant_conv  # 2z -> 2z channels: [mean | logvar]
    q.weight[z:] = 0.0
    q.bias[z:] = LOGVAR_INIT


def vae_loss(vae, x, mask):
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    err = rec - x
    return shape_weighted_mean(err.abs() + err.square(), mask, SHAPE_WEIGHT) + KL_WEIGHT * post.kl().mean()


def train_vae(cfg, rng: np.random.Generator, device, log=print) -> tuple:
    """Train the VAE within cfg.vae_steps (if set) or cfg.vae_seconds; returns (vae, losses, seconds, steps)."""
    vae = build_vae(cfg.preset).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    losses, budget = [], Budget(cfg.vae_steps, cfg.vae_seconds)
    for step, progress, elapsed in budget:
        if progress < cfg.vae_image_fraction:  # single frames first ...
            x, mask, _ = sample_clips(rng, cfg.batch * 4, 1, cfg.size, device)
        else:  # ... then clips
            x, mask, _ = sample_clips(rng, cfg.batch, cfg.frames, cfg.size, device)
        losses.append(optimiser_step(opt, vae.parameters(), vae_loss(vae, x, mask),
                                     lr_at(step, progress, cfg.vae_lr, cfg.warmup)))
        log_every(log, "vae", step, losses, cfg.log_every, elapsed)
    return vae.eval(), losses, budget.elapsed, budget.done


@torch.no_grad()
def set_latent_stats(vae, rng: np.random.Generator, cfg, device) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the posterior means over cfg.stats_clips clips, stored in the VAE config."""
    zs = []
    for start in range(0, cfg.stats_clips, cfg.batch):
        x, _, _ = sample_clips(rng, min(cfg.batch, cfg.stats_clips - start), cfg.frames, cfg.size, device)
        zs.append(vae.encode(x).latent_dist.mode().transpose(0, 1).flatten(1).float().cpu())
    z = torch.cat(zs, dim=1).double()
    mean = [float(v) for v in z.mean(dim=1)]
    std = [float(max(v, 1e-4)) for v in z.std(dim=1)]
    vae.register_to_config(latents_mean=mean, latents_std=std)
    return mean, std


def latent_stats(vae, device):
    mean = torch.tensor(vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
    return mean, std
