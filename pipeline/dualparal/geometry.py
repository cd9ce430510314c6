"""The geometry of a block's window, the same on every rank: tokens per latent frame, which token ranges are the
block's first and last C frames, and the rotary positions of the window and of the cached context around it."""
from __future__ import annotations

from ..config import EngineConfig
from .context import tail_frames
from ..model.split import rotary


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

    def store_range(self, offset_frames: int) -> tuple[int, int] | None:
        """Token range of the block's own first frames (what its predecessor attends to, as its successor), the
        block's frames starting `offset_frames` into the window (context frames entered as tokens)."""
        n = tail_frames(self.cfg.block_frames, self.cfg.context_frames)
        if n == 0:
            return None
        return offset_frames * self.tpf, (offset_frames + n) * self.tpf

    def tail_range(self) -> tuple[int, int] | None:
        """--reuse-context: token range of the block's own last frames (what later blocks attend to); the window
        holds the block's frames alone."""
        b, n = self.cfg.block_frames, tail_frames(self.cfg.block_frames, self.cfg.context_frames)
        return ((b - n) * self.tpf, b * self.tpf) if n else None

    def sink_range(self) -> tuple[int, int] | None:
        """--sink-frames: token range of a shot's first frames, kept for the rest of the shot."""
        k = self.cfg.sink_frames
        return (0, k * self.tpf) if k else None
