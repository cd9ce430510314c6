"""The stream's picture format, one value for every output (encoder, writers, pushers) instead of width, height
and fps as loose arguments."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoFormat:
    width: int
    height: int
    fps: float

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(f"a video format needs even positive sizes, got {self.width}x{self.height}")
        if not self.fps > 0:
            raise ValueError(f"a video format needs fps > 0, got {self.fps}")
