"""Real-time pacing as pure logic: never run more than `lead_s` seconds of video ahead of the wall clock.

A live stream is watched at `fps`; an engine faster than that would otherwise buffer without bound. An engine
slower than that is never held back. A pause (or a stall) re-anchors the clock so no burst follows it.
"""
from __future__ import annotations


class Pacer:
    def __init__(self, fps: float, lead_s: float = 2.0):
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.fps = float(fps)
        self.lead_s = float(lead_s)
        self._t0: float | None = None
        self._frames = 0

    def emitted(self, frames: int, now: float) -> None:
        """Record `frames` video frames leaving the engine at time `now`."""
        if self._t0 is None:
            self._t0 = now
        self._frames += frames
        # fell behind real time (slow engine, pause): re-anchor so we don't try to catch up in a burst
        behind = (now - self._t0) - self._frames / self.fps
        if behind > self.lead_s:
            self._t0 = now - self._frames / self.fps

    def delay(self, now: float) -> float:
        """Seconds to wait before producing more."""
        if self._t0 is None:
            return 0.0
        ahead = self._frames / self.fps - (now - self._t0)
        return max(0.0, ahead - self.lead_s)

    def reset(self) -> None:
        self._t0, self._frames = None, 0
