"""Health of the stream judged by its output, as pure logic over explicit times (seconds, monotonic).

What counts is blocks *published* (encoded and handed to every consumer), not engine progress: an engine that
ticks while its decoder is dead publishes nothing, and that is a stall.

States: `loading` (the model is not loaded yet), `filling` (loaded, the first block not yet published),
`streaming`, `paused`, `stalled` (no block published for `stall_after()` seconds: several expected gaps between
blocks, where the gap is the longer of a block's play time at the target rate and the engine's ticks until its
next block leaves the queue — S ticks after a `cut`).

Apart from the state, `below_real_time`: streaming for a whole `slow_window_s` and publishing fewer than SLOW_RATIO
of the target rate over it, so that a player at the target rate stalls every so often (an engine or decoder too slow
for the settings: e.g. `--preset lowlatency` with a model's own VAE on one H200, ~14 fps for a 16 fps stream).
"""
from __future__ import annotations

from collections import deque

SLOW_RATIO = 0.95  # below this share of the target rate over `slow_window_s`: slower than real time


class OutputHealth:
    def __init__(self, fps: float, window_s: float = 10.0, min_stall_s: float = 10.0, stall_gaps: float = 4.0,
                 slow_window_s: float = 30.0):
        self.target_fps = float(fps)
        self.window_s, self.min_stall_s, self.stall_gaps = window_s, min_stall_s, stall_gaps
        self.slow_window_s = slow_window_s
        self.loaded = False
        self.paused = False
        self.blocks = 0
        self.frames = 0
        self._first: tuple[float, int] | None = None  # (time, frames) of the first published block
        self._last: float | None = None
        self._since: float | None = None  # when output was last expected to (re)start: load, first block, resume
        self._recent: deque[tuple[float, int]] = deque()
        self._tick_s = 0.0
        self._ticks_to_output = 1
        self._block_frames = 0

    # --- inputs ----------------------------------------------------------------------------------------------
    def on_loaded(self, now: float) -> None:
        self.loaded = True
        self._since = now

    def on_published(self, frames: int, now: float) -> None:
        self.blocks += 1
        self.frames += frames
        self._block_frames = max(self._block_frames, frames)
        if self._first is None:
            self._first = (now, frames)
        self._last = now
        self._recent.append((now, frames))
        while self._recent and self._recent[0][0] < now - max(self.window_s, self.slow_window_s):
            self._recent.popleft()

    def on_engine(self, tick_s: float | None = None, ticks_to_output: int | None = None) -> None:
        if tick_s is not None:
            self._tick_s = float(tick_s)
        if ticks_to_output is not None:
            self._ticks_to_output = max(1, int(ticks_to_output))

    def on_paused(self, paused: bool, now: float) -> None:
        if self.paused and not paused:
            self._since = now  # the clock restarts at the resume
        self.paused = paused

    # --- outputs ---------------------------------------------------------------------------------------------
    def expected_gap(self) -> float:
        play = self._block_frames / self.target_fps if self._block_frames else 0.0
        return max(play, self._tick_s * self._ticks_to_output)

    def stall_after(self) -> float:
        return max(self.min_stall_s, self.stall_gaps * self.expected_gap())

    def last_block_age(self, now: float) -> float | None:
        return None if self._last is None else now - self._last

    def state(self, now: float) -> str:
        if not self.loaded:
            return "loading"
        if self.paused:
            return "paused"
        if self._last is None:
            return "filling"
        ref = max(self._last, self._since or self._last)
        return "stalled" if now - ref > self.stall_after() else "streaming"

    def _rate(self, since: float) -> float | None:
        """Frames per second over the blocks published since `since` (each block's frames over the time since the
        block before it); None with fewer than two."""
        pts = [p for p in self._recent if p[0] >= since]
        if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
            return None
        return sum(f for _, f in pts[1:]) / (pts[-1][0] - pts[0][0])

    def fps_recent(self, now: float) -> float:
        """Frames per second over the blocks published in the last `window_s` seconds; 0 while stalled."""
        if self.state(now) == "stalled":
            return 0.0
        return self._rate((self._last or now) - self.window_s) or 0.0

    def fps_slow_window(self, now: float) -> float:
        """Frames per second over the blocks published in the last `slow_window_s` seconds (0: fewer than two)."""
        return self._rate(now - self.slow_window_s) or 0.0

    def below_real_time(self, now: float) -> bool:
        """Streaming for at least `slow_window_s` since output (re)started (the first block, a resume), and fewer
        than SLOW_RATIO x the target frames per second published over the last `slow_window_s`. A cut's refill is
        a few ticks of a window this long, and an engine that keeps up catches up after it."""
        if self.state(now) != "streaming" or self._first is None:
            return False
        if now - max(self._since or self._first[0], self._first[0]) < self.slow_window_s:
            return False
        return self.fps_slow_window(now) < SLOW_RATIO * self.target_fps

    def fps_lifetime(self) -> float:
        """Frames per second from the first published block to the last."""
        if self._first is None or self._last is None or self._last <= self._first[0]:
            return 0.0
        return (self.frames - self._first[1]) / (self._last - self._first[0])

    def snapshot(self, now: float) -> dict:
        age = self.last_block_age(now)
        return {"state": self.state(now), "fps_recent": round(self.fps_recent(now), 3),
                "fps_lifetime": round(self.fps_lifetime(), 3), "fps_window_s": self.window_s,
                "last_block_age_s": None if age is None else round(age, 3),
                "stall_after_s": round(self.stall_after(), 3), "below_real_time": self.below_real_time(now),
                "blocks_published": self.blocks,
                "frames_published": self.frames}
