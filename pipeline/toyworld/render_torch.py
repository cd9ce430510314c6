"""The toy world rendered in torch, a whole batch of clips at once, on the training device (GPU or CPU).

Same picture as `world.render` (same centres on the torus, same signed distances, same 1/255 coverage levels and
colour rounding): a clip rendered here equals `world.render(scene, frames, H, W, t0=0, start=(y0, x0))` up to
float rounding at a few edge pixels (one level at most; tests/test_toyworld.py checks it).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.toyworld.world import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, Scene, default_size


class SceneTable:
    """Per-scene attributes as tensors on one device, indexed like the `scenes` list."""

    def __init__(self, scenes: list[Scene], device):
        self.scenes = scenes
        self.fg = torch.tensor([COLOURS[s.colour] for s in scenes], dtype=torch.float64, device=device)
        self.bg = torch.tensor([BACKGROUNDS[s.background] for s in scenes], dtype=torch.float64, device=device)
        self.shape = torch.tensor([SHAPES.index(s.shape) for s in scenes], device=device)
        self.step = torch.tensor([DIRECTIONS[s.direction] for s in scenes], dtype=torch.float64, device=device)
        self.device = torch.device(device)


def render_batch(table: SceneTable, idx: torch.Tensor, start: torch.Tensor, frames: int, height: int = 64,
                 width: int = 64, speed_px: float = 2.0, size_px: float | None = None,
                 t0: int = 0) -> torch.Tensor:
    """Clips of scenes table.scenes[idx] whose shape centre is `start` ([n, 2], (y, x) px) at t = 0, frames
    t0 .. t0+frames-1, as uint8 [n, frames, height, width, 3] on the table's device."""
    dev = table.device
    idx = idx.to(dev)
    size = default_size(height, width) if size_px is None else float(size_px)
    t = torch.arange(t0, t0 + frames, dtype=torch.float64, device=dev)
    step = table.step[idx] * speed_px  # [n, 2]
    c = torch.remainder(start.to(dev, torch.float64)[:, None, :] + step[:, None, :] * t[None, :, None],
                        torch.tensor([height, width], dtype=torch.float64, device=dev))  # [n, T, 2]
    ys = torch.arange(height, dtype=torch.float64, device=dev) + 0.5
    xs = torch.arange(width, dtype=torch.float64, device=dev) + 0.5
    oy = (torch.remainder(ys - c[..., :1] + height / 2.0, height) - height / 2.0).float()[..., :, None]  # [n,T,H,1]
    ox = (torch.remainder(xs - c[..., 1:] + width / 2.0, width) - width / 2.0).float()[..., None, :]  # [n,T,1,W]
    h = np.float32(size / 2)
    circle = torch.sqrt(oy * oy + ox * ox) - h
    square = torch.maximum(oy.abs(), ox.abs()) - h
    k = np.float32(1.0 / np.sqrt(5.0))
    triangle = torch.maximum((2 * ox.abs() - (oy + h)) * k, oy - h)
    sid = table.shape[idx].view(-1, 1, 1, 1)
    d = torch.where(sid == 0, circle, torch.where(sid == 1, square, triangle))
    level = torch.clamp(np.float32(128.0) - np.float32(255.0) * d, 0.0, 255.5).floor().double()  # [n, T, H, W]
    fg, bg = table.fg[idx].view(-1, 1, 1, 1, 3), table.bg[idx].view(-1, 1, 1, 1, 3)
    return torch.round(bg + (level[..., None] / 255.0) * (fg - bg)).to(torch.uint8)


def random_batch(table: SceneTable, rng: np.random.Generator, n: int, frames: int, size: int):
    """n clips of uniformly drawn scenes at uniformly drawn positions (the torus makes every t0 equivalent) →
    (video [n, 3, frames, size, size] in [-1, 1] float32, shape mask [n, 1, frames, size, size], scene indices)."""
    idx = rng.integers(len(table.scenes), size=n)
    start = torch.from_numpy(rng.random((n, 2)) * size)
    u8 = render_batch(table, torch.from_numpy(idx), start, frames, size, size)
    x = u8.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
    bg = (table.bg[torch.from_numpy(idx).to(table.device)].float() / 127.5 - 1.0).view(n, 3, 1, 1, 1)
    mask = (x - bg).abs().amax(dim=1, keepdim=True).gt(0.1).float()
    return x, mask, idx


def random_transition_batch(table: SceneTable, rng: np.random.Generator, n: int, frames: int, size: int,
                            cut: int):
    """n clips that switch scene at frame `cut`: scene A before, scene B from `cut` on, the shape continuing from
    where A left it (what a prompt change mid-stream asks of the model) → (video [n, 3, frames, size, size] in
    [-1, 1], scene indices of B)."""
    a, b = rng.integers(len(table.scenes), size=n), rng.integers(len(table.scenes), size=n)
    start = torch.from_numpy(rng.random((n, 2)) * size)  # the centre at the cut
    ua = render_batch(table, torch.from_numpy(a), start, cut, size, size, t0=-cut)
    ub = render_batch(table, torch.from_numpy(b), start, frames - cut, size, size, t0=0)
    x = torch.cat([ua, ub], dim=1).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
    return x, b
