"""Reaction time as pure logic: seconds from a prompt change "now" reaching the daemon to its first block on the
stream (published: encoded and handed to every consumer), over explicit times (seconds, monotonic).

A change E is on the stream once a published block carries an epoch >= E. Epochs are monotone, so a later change
that supersedes an earlier one (a cut after a soft change, say) resolves the earlier one too. Only changes "now"
(set_prompt without at_block) are tracked: a scheduled change waits for its block on purpose, so its delay says
nothing about how fast the stream reacts. A cancelled change leaves the pending set unresolved (`drop`).

Memory is bounded: at most `max_pending` changes wait (the oldest is forgotten beyond that), medians are over the
last `window` resolutions, the histogram is a fixed set of counters.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from pipeline.prompts import MODES

# histogram buckets (seconds): from a few-step engine's sub-second reaction up to a slow model's half minute
BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)


@dataclass(frozen=True)
class Resolved:
    """Change `epoch` (of `mode`) reached the stream with block `block`, `reaction_s` seconds after it was asked."""

    epoch: int
    mode: str
    block: int
    reaction_s: float


class _Figures:
    """last / median over the last `window` / count / histogram of one series."""

    def __init__(self, window: int, buckets: tuple):
        self.recent: deque[float] = deque(maxlen=window)
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket (not cumulative); the +Inf overflow is count - sum(counts)
        self.count = 0
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        self.recent.append(seconds)
        self.count += 1
        self.sum += seconds
        for i, le in enumerate(self.buckets):
            if seconds <= le:
                self.counts[i] += 1
                break

    def summary(self) -> dict:
        return {"last_s": round(self.recent[-1], 3) if self.recent else None,
                "median_s": round(statistics.median(self.recent), 3) if self.recent else None,
                "count": self.count}

    def cumulative(self) -> list[tuple[float, int]]:
        """Prometheus buckets: (le, observations <= le), ending with (inf, count)."""
        out, acc = [], 0
        for le, n in zip(self.buckets, self.counts):
            acc += n
            out.append((le, acc))
        return out + [(math.inf, self.count)]


class ReactionTracker:
    def __init__(self, window: int = 100, max_pending: int = 1024, buckets: tuple = BUCKETS, history: int = 64):
        self.max_pending = max_pending
        self.pending: dict[int, tuple[str, float]] = {}  # epoch -> (mode, requested at)
        self.forgotten = 0  # pending changes dropped to keep memory bounded
        self.all = _Figures(window, buckets)
        self.by_mode = {m: _Figures(window, buckets) for m in MODES}
        # (epoch, block, time) of the first published block of each run of equal epochs: a change registered after
        # its block went out (the engine's acknowledgement overtaken by its own frames) still gets the exact time
        self._history: deque[tuple[int, int, float]] = deque(maxlen=history)

    def requested(self, epoch: int, mode: str, requested_at: float) -> list[Resolved]:
        """Change `epoch` (a change "now"), asked for at `requested_at`, was accepted. Returns it resolved at once if
        a block carrying it was already published, else []."""
        for e, block, t in self._history:
            if e >= epoch:
                return [self._resolve(epoch, mode, requested_at, block, t)]
        self.pending[epoch] = (mode, requested_at)
        while len(self.pending) > self.max_pending:
            del self.pending[min(self.pending)]
            self.forgotten += 1
        return []

    def on_published(self, block: int, epoch: int, now: float) -> list[Resolved]:
        """Block `block`, carrying `epoch`, was published at `now`: every pending change with an epoch <= it is on
        the stream. Returns them in epoch order."""
        if not self._history or self._history[-1][0] != epoch:
            self._history.append((epoch, block, now))
        done = sorted(e for e in self.pending if e <= epoch)
        return [self._resolve(e, *self.pending.pop(e), block, now) for e in done]

    def drop(self, epochs) -> list[int]:
        """Forget cancelled changes; returns those that were pending."""
        return [e for e in epochs if self.pending.pop(e, None) is not None]

    def _resolve(self, epoch: int, mode: str, requested_at: float, block: int, t: float) -> Resolved:
        seconds = max(0.0, t - requested_at)
        self.all.add(seconds)
        self.by_mode.setdefault(mode, _Figures(self.all.recent.maxlen, self.all.buckets)).add(seconds)
        return Resolved(epoch, mode, block, seconds)

    def snapshot(self) -> dict:
        """For /status: {"last_s", "median_s", "count", "pending", "by_mode": {mode: {"last_s", "median_s",
        "count"}}} (None where nothing was measured yet)."""
        return {**self.all.summary(), "pending": len(self.pending),
                "by_mode": {m: f.summary() for m, f in self.by_mode.items()}}

    def histogram(self) -> dict[str, tuple[list[tuple[float, int]], float]]:
        """{mode: (cumulative buckets, sum of seconds)} for /metrics."""
        return {m: (f.cumulative(), f.sum) for m, f in self.by_mode.items()}
