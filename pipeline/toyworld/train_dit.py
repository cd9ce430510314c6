"""Stage 2 of the toy-world training: a small WanTransformer3DModel with Wan's flow-matching objective.

x_t = (1 - s) x0 + s eps, target v = eps - x0, timestep = s * 1000, s drawn with Wan's shift (3). DualParal
windows are made in distribution: a window is C context frames + B block frames cut from a latent clip; the
context frames (the previous, cleaner part) are noised LESS than the block, the model is given the block's
timestep (as the engine does), and the loss covers the block frames only. Some steps train plain windows (C = 0).
Windows sometimes start at the stream's first latent frame (a 1-frame latent) and sometimes mid-stream.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from pipeline.text import PromptEncoder
from pipeline.tiny import TINY_TEXT_MAX_LEN
from pipeline.toyworld.train_vae import SCENES, latent_stats, prompts_of, sample_clips

PROMPT_DROPOUT = 0.1
SHIFT = 3.0


def build_transformer(preset: str, text_dim: int):
    from diffusers import WanTransformer3DModel

    arch = dict(num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=6, freq_dim=256) \
        if preset == "full" else dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, freq_dim=32)
    return WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=text_dim,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                                 rope_max_seq_len=1024, **arch)


@torch.no_grad()
def prompt_table(tokenizer, text_encoder, device) -> torch.Tensor:
    """[len(SCENES) + 1, max_len, text_dim]: every toy-world prompt, then the empty prompt (for CFG), computed
    exactly as the engine's PromptEncoder does."""
    enc = PromptEncoder(tokenizer, text_encoder, TINY_TEXT_MAX_LEN, cache_size=len(SCENES) + 1)
    prompts = prompts_of(range(len(SCENES))) + [""]
    return torch.cat([enc.encode(p) for p in prompts]).to(device)


def shifted_sigmas(u: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    return shift * u / (1.0 + (shift - 1.0) * u)


def make_window(z: torch.Tensor, rng: np.random.Generator, cfg):
    """z: [n, 16, T+1, h, w] normalised latents of a clip one latent longer than needed. Returns the window
    (latents [n, 16, L, h, w]) and the number C of leading context frames."""
    total = z.shape[2]
    length = int(rng.integers(min(2, total - 1), total))  # L in [2, T]
    start = int(rng.integers(0, total - length + 1))
    ctx = cfg.context_frames if (rng.random() < cfg.window_prob and length > cfg.context_frames) else 0
    return z[:, :, start:start + length], ctx


def dit_loss(model, z0, ctx: int, text, gen_device):
    n, _, length = z0.shape[:3]
    dev = z0.device
    sig_b = shifted_sigmas(torch.rand(n, device=dev))  # block noise level
    sig_c = sig_b * torch.rand(n, device=dev)  # context: cleaner than the block
    frame_is_ctx = torch.arange(length, device=dev) < ctx
    s = torch.where(frame_is_ctx[None, :], sig_c[:, None], sig_b[:, None]).view(n, 1, length, 1, 1)
    eps = torch.randn_like(z0)
    xt = (1.0 - s) * z0 + s * eps
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gen_device == "cuda"):
        pred = model(hidden_states=xt, timestep=sig_b * 1000.0, encoder_hidden_states=text, return_dict=False)[0]
    err = (pred.float() - (eps - z0))[:, :, ctx:]
    return err.square().mean()


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1.0 - decay)


def train_dit(cfg, rng: np.random.Generator, vae, tokenizer, text_encoder, device, log=print) -> tuple:
    """Returns (transformer with EMA weights if cfg.ema > 0, losses, seconds, steps)."""
    dev_type = torch.device(device).type
    table = prompt_table(tokenizer, text_encoder.to(device), device)
    model = build_transformer(cfg.preset, table.shape[-1]).to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.dit_lr, betas=(0.9, 0.99), weight_decay=0.01)
    mean, std = latent_stats(vae, device)
    losses, t_start, step = [], time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - t_start
        if (step >= cfg.dit_steps) if cfg.dit_steps else (elapsed >= cfg.dit_seconds):
            break
        x, _, idx = sample_clips(rng, cfg.batch, cfg.frames + 4, cfg.size, device)
        with torch.no_grad():
            z = (vae.encode(x).latent_dist.mode() - mean) / std
        z0, ctx = make_window(z, rng, cfg)
        idx = np.where(rng.random(len(idx)) < PROMPT_DROPOUT, len(SCENES), idx)  # empty prompt
        text = table[torch.from_numpy(idx).to(device)]
        for g in opt.param_groups:
            g["lr"] = cfg.dit_lr * min(1.0, (step + 1) / cfg.warmup)
        loss = dit_loss(model, z0, ctx, text, dev_type)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema_update(ema, model, min(cfg.ema, (1 + step) / (10 + step)))
        losses.append(loss.item())
        step += 1
        if step % cfg.log_every == 0:
            log(f"dit step {step} loss {np.mean(losses[-cfg.log_every:]):.4f} ({elapsed:.0f}s)")
    out = ema if ema is not None else model
    return out.eval(), losses, time.perf_counter() - t_start, step
