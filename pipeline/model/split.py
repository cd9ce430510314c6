"""WanTransformer3DModel's forward cut into prologue / blocks[a:b] / epilogue, using the model's own submodules.

The three parts run on different ranks in the dual-parallel pipeline: rank 0 the prologue (patch embedding,
condition embedder, rotary table), every rank its slice of blocks, the last rank the epilogue (norm_out, proj_out,
unpatchify). Composed on one device they compute exactly `model.forward` (tests/test_split.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Carry:
    """What flows from stage to stage for one window (CFG batch included)."""

    hidden: torch.Tensor  # [batch, tokens, dim]
    text: torch.Tensor  # projected text states [batch, L, dim]
    timestep_proj: torch.Tensor  # [batch, 6, dim]
    temb: torch.Tensor  # [batch, dim]
    grid: tuple[int, int, int]  # post-patch frames, height, width


def rotary(model, frames: int, height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos/sin for a window of `frames` latent frames (positions 0..frames-1), latent size h×w."""
    # WanRotaryPosEmbed.forward reads only the input's shape: a shape-only probe is enough.
    cos, sin = model.rope(torch.empty((1, 1, frames, height, width), device="meta"))
    if device is not None:
        cos, sin = cos.to(device), sin.to(device)
    return cos, sin


def prologue(model, latents: torch.Tensor, timestep: torch.Tensor, text_states: torch.Tensor) -> Carry:
    """latents [batch, ch, F, H, W]; timestep [batch]; text_states [batch, L, text_dim] (raw encoder output)."""
    _, _, f, h, w = latents.shape
    p_t, p_h, p_w = model.config.patch_size
    hidden = model.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()
    temb, timestep_proj, text, _ = model.condition_embedder(timestep, text_states, None, timestep_seq_len=None)
    timestep_proj = timestep_proj.unflatten(1, (6, -1))
    return Carry(hidden, text, timestep_proj, temb, (f // p_t, h // p_h, w // p_w))


def run_blocks(blocks, carry: Carry, rotary_emb) -> Carry:
    hidden = carry.hidden
    for blk in blocks:
        hidden = blk(hidden, carry.text, carry.timestep_proj, rotary_emb)
    carry.hidden = hidden
    return carry


def epilogue(model, carry: Carry) -> torch.Tensor:
    hidden, temb = carry.hidden, carry.temb
    shift, scale = (model.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
    shift, scale = shift.to(hidden.device), scale.to(hidden.device)
    hidden = (model.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
    hidden = model.proj_out(hidden)
    f, h, w = carry.grid
    p_t, p_h, p_w = model.config.patch_size
    b = hidden.shape[0]
    hidden = hidden.reshape(b, f, h, w, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)
