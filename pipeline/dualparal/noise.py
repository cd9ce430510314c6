"""Coordinated noise initialisation (DESIGN.md §1).

One seeded pool of B+C Gaussian latent frames is drawn once. Block 0 takes B pool frames; every later block takes
the pool minus the C frames that ended the previous block, in a seeded random order. Everything is a function of
(seed, block index), so every rank derives the same noise and a re-entered block (after a cut) gets the same noise.
"""
from __future__ import annotations

import numpy as np
import torch


def block_pool_indices(seed: int, block: int, block_frames: int, context_frames: int) -> list[int]:
    """Pool frame indices (length B) used by `block`, in order (context_frames <= block_frames). Pure; O(block) the
    first time, then memoised."""
    return _IndexChain.get(seed, block_frames, min(context_frames, block_frames)).indices(block)


class _IndexChain:
    _chains: dict[tuple[int, int, int], "_IndexChain"] = {}

    def __init__(self, seed: int, b: int, c: int):
        self.seed, self.b, self.c = seed, b, c
        self._memo: dict[int, list[int]] = {}
        self._last = -1
        self._last_idx: list[int] = []

    @classmethod
    def get(cls, seed: int, b: int, c: int) -> "_IndexChain":
        key = (seed, b, c)
        if key not in cls._chains:
            if len(cls._chains) > 64:
                cls._chains.clear()
            cls._chains[key] = cls(seed, b, c)
        return cls._chains[key]

    def _perm(self, block: int, items: list[int]) -> list[int]:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.seed >> 32, block, 0x4E4F4953])
        return [items[i] for i in rng.permutation(len(items))]

    def _step(self, block: int, prev: list[int]) -> list[int]:
        pool = range(self.b + self.c)
        if block == 0:
            return self._perm(0, list(range(self.b)))
        tail = set(prev[len(prev) - self.c:]) if self.c else set()
        return self._perm(block, [i for i in pool if i not in tail])

    def indices(self, block: int) -> list[int]:
        if block in self._memo:
            return self._memo[block]
        if block < self._last or self._last < 0:
            self._last, self._last_idx = 0, self._step(0, [])
        while self._last < block:
            self._last += 1
            self._last_idx = self._step(self._last, self._last_idx)
        # keep a bounded window of recent answers (re-entry after a cut asks for recent blocks again)
        self._memo[block] = self._last_idx
        if len(self._memo) > 256:
            for k in sorted(self._memo)[:128]:
                del self._memo[k]
        return self._last_idx


class NoisePool:
    """The seeded pool of B+C latent frames; `block_noise(b)` is block b's initial noise [1, ch, B, h, w]."""

    def __init__(self, seed: int, channels: int, block_frames: int, context_frames: int, lat_h: int, lat_w: int):
        # the frames that end a block and start the next are what context shares: at most one block's worth
        context_frames = min(context_frames, block_frames)
        self.seed, self.b, self.c = seed, block_frames, context_frames
        g = torch.Generator(device="cpu").manual_seed(seed)
        # drawn on the CPU in float32 so every device and rank gets bit-identical noise
        self.pool = torch.randn((block_frames + context_frames, channels, lat_h, lat_w), generator=g)

    def block_noise(self, block: int, device="cpu") -> torch.Tensor:
        idx = block_pool_indices(self.seed, block, self.b, self.c)
        x = self.pool[idx]  # [B, ch, h, w]
        return x.permute(1, 0, 2, 3).unsqueeze(0).contiguous().to(device)
