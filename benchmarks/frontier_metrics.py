"""Reaction time from a received stream (pure: no sockets, no model).

A *frame* is (arrival, pts_s, epoch): when a subscriber received it (monotonic seconds), its presentation time in
the stream (pts / fps) and the prompt epoch of its block.

- prompt → publish: from the request to the arrival of the first frame whose epoch is the change's or later;
- prompt → display: from the request to the moment a player would show that frame. The player shows frame i at
  `anchor + pts_i`, where `anchor` is the largest `arrival - pts` of the frames it has received so far: it starts
  with the first frame it gets and, when a frame would come too late, waits for it (and stays that much later). Two
  such viewers are reported: one watching since the run's first frame (`display_s`: what the pacer's lead and every
  cut's refill gap it rode out cost it stay in its delay), and one that joined `before` seconds before the request
  (`display_joined_s`).
"""
from __future__ import annotations

import statistics


def first_of_epoch(frames, epoch: int, after: float):
    """The first frame (in arrival order) at or after time `after` whose epoch is >= `epoch`, or None."""
    for f in frames:
        if f[0] >= after and f[2] >= epoch:
            return f
    return None


def reaction(frames, t_request: float, epoch: int, since: float | None = None, before: float = 5.0) -> dict | None:
    """{'publish_s', 'display_s', 'display_joined_s', 'buffered_s'} for a change requested at t_request and
    acknowledged with `epoch` (None if no frame of that epoch arrived). `since`: when the first viewer joined (default:
    the first frame). buffered_s: how far ahead of that viewer's display the newest frame was at the request."""
    first = first_of_epoch(frames, epoch, t_request)
    if first is None:
        return None
    since = frames[0][0] if since is None else since

    def anchor(t0):
        return max(f[0] - f[1] for f in frames if t0 <= f[0] <= first[0])
    a_since = anchor(since)
    got = [f for f in frames if since <= f[0] <= t_request]
    return {"publish_s": first[0] - t_request, "display_s": a_since + first[1] - t_request,
            "display_joined_s": anchor(t_request - before) + first[1] - t_request,
            "buffered_s": (max(f[1] for f in got) + a_since - t_request) if got else None}


def summary(values) -> dict:
    """Median, min, max and count of the values that are not None."""
    v = [x for x in values if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3),
            "n": len(v)}


def fps_between(samples, t0: float, t1: float) -> float | None:
    """Frames per second from (time, frames_published) samples between t0 and t1 (first and last sample inside)."""
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
