"""The training loop the toy-world stages share: a step or time budget, the LR schedule, one optimiser step, and
the loss weighting that makes the shapes' few pixels count."""
from __future__ import annotations

import math
import time

import numpy as np
import torch


def lr_at(step: int, progress: float, base: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 10 % at the end of the budget (progress 0 → 1)."""
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


class Budget:
    """Iterate over steps until `steps` (if > 0) or else `seconds` is used up; yields (step, progress, elapsed).
    Neither given (both <= 0): no steps."""

    def __init__(self, steps: int, seconds: float):
        self.steps, self.seconds = steps, seconds
        self.done, self.t0 = 0, time.perf_counter()

    def __iter__(self):
        if self.steps <= 0 and self.seconds <= 0:
            return
        while True:
            elapsed = time.perf_counter() - self.t0
            progress = self.done / self.steps if self.steps else elapsed / self.seconds
            if progress >= 1.0:
                return
            yield self.done, progress, elapsed
            self.done += 1

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def shape_weighted_mean(err: torch.Tensor, mask, weight: float) -> torch.Tensor:
    """Mean of `err` with the shape's elements (`mask` 1, broadcast over `err`) weighing `weight` times the
    background's (mask 0): a shape's corners, which tell a square or a triangle from a circle, are few."""
    w = 1.0 + (weight - 1.0) * mask
    return (w * err).mean() / w.mean()


def optimiser_step(opt, params, loss: torch.Tensor, lr: float, clip: float = 1.0) -> float:
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return loss.item()


def log_every(log, name: str, step: int, losses: list, every: int, elapsed: float) -> None:
    if (step + 1) % every == 0:
        log(f"{name} step {step + 1} loss {np.mean(losses[-every:]):.4f} ({elapsed:.0f}s)")


def save_component(model, folder: str) -> None:
    """`model.save_pretrained(folder)` without the `_name_or_path` diffusers records in its config.json: that is where
    it was loaded from on the training machine, not the model's business."""
    import json
    import os

    model.save_pretrained(folder)
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    if config.pop("_name_or_path", None) is not None:
        with open(path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
