"""Real-time pacing as pure logic: never run more than `lead_s` seconds of video ahead of the wall clock.

A live stream is watched at `fps`; an engine faster than that would otherwise buffer without bound. An engine
slower than that is never held back. A pause (or a stall) re-anchors the clock so no burst follows it. Every
viewer waits through the lead when the prompt changes, so it should be no longer than the stream needs:
`LeadEstimator` derives it from recent tick and decode times.
"""
from __future__ import annotations

import math
from collections import deque


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


def quantile(values, q: float) -> float:
    """The nearest-rank q-quantile of a non-empty sequence (q in [0, 1]: 0 the smallest, 1 the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class LeadEstimator:
    """The pacer's lead that fits the stream. With lead L the engine starts a tick once it is L ahead of the wall
    clock; the tick (t seconds) emits a block, which reaches a player after decode and encode (e). A player anchored
    at the first frame never stalls while L >= t + (the variation of e) + (the jitter of t). So, from recent
    figures:

        L = p95 of the last full ticks (S windows: the fill and refill ticks after a start or cut are shorter and
            do not count) + (p95 - p5) of the last decode times + margin_s,  clamped to [1/fps, max_s];

    `max_s` until a full tick was seen, twice the slowest full tick (+ margin_s) until `min_ticks` were. `fixed` > 0 fixes the lead instead (--lead). Encode time varies
    far less than decode time and is left to the margin. Not thread-safe: the caller serialises its calls."""

    def __init__(self, fps: float, steps: int, fixed: float = 0.0, window: int = 32, min_ticks: int = 4,
                 margin_s: float = 0.1, max_s: float = 2.0):
        self.fps, self.steps, self.fixed = float(fps), int(steps), float(fixed)
        self.min_ticks, self.margin_s, self.max_s = min_ticks, margin_s, max_s
        self._ticks: deque[float] = deque(maxlen=window)
        self._decodes: deque[float] = deque(maxlen=window)

    @property
    def auto(self) -> bool:
        return self.fixed <= 0

    def on_tick(self, seconds: float, windows: int) -> None:
        """A tick of `seconds` that ran `windows` windows (blocks in flight)."""
        if windows >= self.steps:
            self._ticks.append(float(seconds))

    def on_decode(self, seconds: float) -> None:
        self._decodes.append(float(seconds))

    def lead_s(self) -> float:
        if not self.auto:
            return self.fixed
        if not self._ticks:
            return self.max_s
        if len(self._ticks) < self.min_ticks:
            # the first blocks: twice the slowest full tick so far. Holding `max_s` here instead let a warm start
            # run that far ahead at once, and a viewer who started then kept that delay (RESULTS §9).
            return min(self.max_s, max(1.0 / self.fps, 2.0 * max(self._ticks) + self.margin_s))
        spread = quantile(self._decodes, 0.95) - quantile(self._decodes, 0.05) if len(self._decodes) > 1 else 0.0
        lead = quantile(self._ticks, 0.95) + spread + self.margin_s
        return min(self.max_s, max(1.0 / self.fps, lead))
