"""Per-viewer pacing of the shared packets against the wall clock, as pure logic over explicit times."""
from __future__ import annotations

from collections import deque


class PacketPacer:
    """When to send each packet, as pure logic over explicit times (seconds, monotonic).

    A packet with media time t is due at ``offset + t``. The offset is set by the first packet (due on arrival) and
    only moves later when a packet arrives after its due time (the engine stalled, e.g. a `cut` refill or a pause).
    `feasible()` is the smallest offset that would have kept every packet of the recent window on time; when the
    current offset is more than `max_lag` above it, or a packet is released more than `max_lag` late, the peer is
    behind and should skip to its newest queued keyframe.
    """

    def __init__(self, max_lag: float = 1.0, tolerance: float = 0.03, window: float = 4.0):
        self.max_lag, self.tolerance, self.window = max_lag, tolerance, window
        self.offset: float | None = None
        self._recent: deque[tuple[float, float]] = deque()  # (arrival, arrival - media_t)
        self.reanchors = 0

    def arrived(self, media_t: float, arrival: float) -> None:
        self._recent.append((arrival, arrival - media_t))
        while self._recent and self._recent[0][0] < arrival - self.window:
            self._recent.popleft()

    def feasible(self) -> float | None:
        return max((a for _, a in self._recent), default=None)

    def due(self, media_t: float, arrival: float) -> float:
        """Due time of the packet at the head of the queue (moves the offset if it arrived late)."""
        if self.offset is None:
            self.offset = arrival - media_t
        elif arrival > self.offset + media_t + self.tolerance:
            self.offset = arrival - media_t
            self.reanchors += 1
        return self.offset + media_t

    def behind(self, media_t: float, now: float) -> bool:
        if self.offset is None:
            return False
        if now - (self.offset + media_t) > self.max_lag:
            return True
        f = self.feasible()
        return f is not None and self.offset - f > self.max_lag

    def restart(self, media_t: float, now: float) -> None:
        """Make the packet with media time `media_t` due now."""
        self.offset = now - media_t
