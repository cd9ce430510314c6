"""Stage 2 of the toy-world training: a small WanTransformer3DModel with Wan's flow-matching objective.

x_t = (1 - s) x0 + s eps, target v = eps - x0, timestep = s * 1000, s drawn with Wan's shift (3). DualParal
windows are made in distribution: a window is C context frames + B block frames cut from a latent clip; the
context frames (the previous, cleaner part) are noised LESS than the block, the model is given the block's
timestep (as the engine does), and the loss covers the block frames only. Some steps train plain windows (C = 0).
Windows sometimes start at the stream's first latent frame (a 1-frame latent) and sometimes mid-stream; some end
with frames of the (noisier) successor, which the engine's blocks attend to. Batches come from a pool of clips
encoded once after the VAE is trained. A share of the steps trains the first block after a prompt change:
context frames of one scene, block frames of another (the shape continuing where it was), the new scene's prompt.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from pipeline.model.text import PromptEncoder
from pipeline.model.random_wan import TINY_TEXT_MAX_LEN
from pipeline.toyworld.render_torch import random_transition_batch
from pipeline.toyworld.loop import Budget, log_every, lr_at, optimiser_step
from pipeline.toyworld.train_vae import SCENES, latent_stats, prompts_of, sample_clips, scene_table

PROMPT_DROPOUT = 0.1
SHIFT = 3.0


def build_transformer(preset: str, text_dim: int):
    from diffusers import WanTransformer3DModel

    if preset == "full":
        arch = dict(num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=6, freq_dim=256)
    else:
        arch = dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, freq_dim=32)
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


@torch.no_grad()
def latent_pool(vae, rng: np.random.Generator, cfg, device, transitions: bool = False):
    """Clips of cfg.frames + 4 video frames, encoded once → (normalised latents [N, 16, T, h, w], scene indices
    [N]); the DiT samples its batches from here instead of running the VAE every step. With `transitions`, the
    clips switch scene at latent frame transition_cut(cfg) and the index is the second scene's."""
    mean, std = latent_stats(vae, device)
    n_all = max(1, round(cfg.pool_clips * cfg.transition_prob)) if transitions else cfg.pool_clips
    frames = cfg.frames + 4
    zs, ids = [], []
    chunk = max(1, min(n_all, 4 * cfg.batch))
    for start in range(0, n_all, chunk):
        n = min(chunk, n_all - start)
        if transitions:
            x, idx = random_transition_batch(scene_table(device), rng, n, frames, cfg.size,
                                             cut=4 * transition_cut(cfg) - 3)
        else:
            x, _, idx = sample_clips(rng, n, frames, cfg.size, device)
        zs.append(((vae.encode(x).latent_dist.mode() - mean) / std).float())
        ids.append(idx)
    return torch.cat(zs), np.concatenate(ids)


def transition_cut(cfg) -> int:
    """Latent frame at which transition clips switch scene: right after C context frames (not the first latent,
    which encodes a single video frame)."""
    return cfg.context_frames + 1


def make_window(total: int, rng: np.random.Generator, cfg) -> tuple[int, int, int, int]:
    """A DualParal window cut from a latent clip of `total` frames → (start, context frames, block frames,
    successor frames). Context frames come first (the older, cleaner neighbour), then the block, then
    optionally frames of the newer, noisier neighbour (the engine lets a block attend to its successor)."""
    length = int(rng.integers(min(2, total), total + 1))  # L in [2, T]
    start = int(rng.integers(0, total - length + 1))
    c = cfg.context_frames
    ctx = c if (rng.random() < cfg.window_prob and length - c >= 1) else 0
    succ = c if (ctx and rng.random() < cfg.succ_prob and length - ctx - c >= 1) else 0
    return start, ctx, length - ctx - succ, succ


def make_transition_window(total: int, rng: np.random.Generator, cfg) -> tuple[int, int, int, int]:
    """A window of a transition clip: C context frames of the old scene, then block frames of the new one (the
    first block after a prompt change), optionally followed by successor frames."""
    c, k = cfg.context_frames, transition_cut(cfg)
    room = total - k
    succ = c if (rng.random() < cfg.succ_prob and room - c >= 1) else 0
    block = int(rng.integers(1, room - succ + 1))
    return k - c, c, block, succ


def dit_loss(model, z0, ctx: int, block: int, text, gen_device):
    """Flow-matching loss on the block frames of window z0 = [context | block | successor]."""
    n, _, length = z0.shape[:3]
    dev = z0.device
    sig_b = shifted_sigmas(torch.rand(n, device=dev))  # block noise level
    sig_c = sig_b * torch.rand(n, device=dev)  # context: cleaner than the block
    sig_s = sig_b + (1.0 - sig_b) * torch.rand(n, device=dev)  # successor: noisier
    pos = torch.arange(length, device=dev)[None, :]
    s = torch.where(pos < ctx, sig_c[:, None], torch.where(pos < ctx + block, sig_b[:, None], sig_s[:, None]))
    s = s.view(n, 1, length, 1, 1)
    eps = torch.randn_like(z0)
    xt = (1.0 - s) * z0 + s * eps
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gen_device == "cuda"):
        pred = model(hidden_states=xt, timestep=sig_b * 1000.0, encoder_hidden_states=text, return_dict=False)[0]
    err = (pred.float() - (eps - z0))[:, :, ctx:ctx + block]
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
    pools = {False: latent_pool(vae, rng, cfg, device)}
    if cfg.transition_prob > 0 and cfg.context_frames > 0 and pools[False][0].shape[2] > transition_cut(cfg):
        pools[True] = latent_pool(vae, rng, cfg, device, transitions=True)
    log("latent pools ready: " + ", ".join(f"{'transitions' if k else 'plain'} {tuple(v[0].shape)}"
                                            for k, v in pools.items()))
    losses, budget = [], Budget(cfg.dit_steps, cfg.dit_seconds)
    for step, progress, elapsed in budget:
        trans = True in pools and rng.random() < cfg.transition_prob
        pool, pool_ids = pools[trans]
        pick = rng.integers(len(pool), size=cfg.dit_batch)
        start, ctx, block, succ = (make_transition_window if trans else make_window)(pool.shape[2], rng, cfg)
        z0 = pool[torch.from_numpy(pick).to(pool.device), :, start:start + ctx + block + succ]
        idx = np.where(rng.random(len(pick)) < PROMPT_DROPOUT, len(SCENES), pool_ids[pick])  # empty prompt
        text = table[torch.from_numpy(idx).to(device)]
        losses.append(optimiser_step(opt, model.parameters(), dit_loss(model, z0, ctx, block, text, dev_type),
                                     lr_at(step, progress, cfg.dit_lr, cfg.warmup)))
        if ema is not None:
            ema_update(ema, model, min(cfg.ema, (1 + step) / (10 + step)))
        log_every(log, "dit", step, losses, cfg.log_every, elapsed)
    out = ema if ema is not None else model
    return out.eval(), losses, budget.elapsed, budget.done
