"""The geometry of a block's window, the same on every rank: tokens per latent frame, which token ranges are the
block's first and last C frames, and the rotary positions of the window and of the cached context around it."""
from __future__ import annotations

from .config import EngineConfig
from .split import rotary


class WindowGeometry:
    """Geometry of a window (which tokens are context, which rotary positions), the same on every rank."""

    def __init__(self, cfg: EngineConfig, model, device):
        self.cfg = cfg
        self.tpf = (cfg.latent_height // model.config.patch_size[1]) * (cfg.latent_width // model.config.patch_size[2])
        self._model, self._device = model, device
        self._rope: dict[tuple[int, int], tuple] = {}

    def rope(self, prev: int, own: int, succ: int):
        """Rotary (cos, sin) of a window whose `own` frames (queries) follow `prev` frames that enter only as cached
        keys/values and are followed by `succ` such frames; positions 0.. across all three, local to the window.
        Returns (own, prev or None, succ or None)."""
        key = (prev, own, succ)
        if key not in self._rope:
            cos, sin = rotary(self._model, prev + own + succ, self.cfg.latent_height, self.cfg.latent_width,
                              self._device)
            a, b = prev * self.tpf, (prev + own) * self.tpf
            part = lambda i, j: (cos[:, i:j], sin[:, i:j]) if j > i else None  # noqa: E731
            self._rope[key] = (part(a, b), part(0, a), part(b, cos.shape[1]))
        return self._rope[key]

    def store_range_of(self, has_prev: bool) -> tuple[int, int] | None:
        """Token range of the block's own first C frames (what its predecessor will attend to)."""
        c = self.cfg.context_frames
        if c == 0:
            return None
        start = (c if has_prev else 0) * self.tpf
        return start, start + c * self.tpf

    def tail_range(self) -> tuple[int, int] | None:
        """--reuse-context: token range of the block's own last C frames (what its successor will attend to); the
        window holds the block's frames alone."""
        b, c = self.cfg.block_frames, self.cfg.context_frames
        return ((b - c) * self.tpf, b * self.tpf) if c else None
