"""A video track whose recv() returns the daemon's already-encoded packets (av.Packet, 90 kHz pts), paced per peer.

Each viewer gets its own fan-out subscription (so it starts at a keyframe, and the daemon forces one when it joins),
a pump that timestamps arrivals, and a `PacketPacer` that releases packets against the wall clock by their pts
(the engine runs ahead by its lead and delivers a block at a time). aiortc packetizes the packets as they are
(H.264 passthrough). A peer that falls more than ~1 s behind skips to the newest queued keyframe.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from fractions import Fraction
from typing import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from common import faults

from ..fanout import Subscription
from ..packet import EncodedPacket
from .pacing import PacketPacer

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)


class PacedPacketTrack(MediaStreamTrack):
    """A video track whose recv() returns the shared encoded packets (av.Packet, 90 kHz pts), paced per peer."""

    kind = "video"

    def __init__(self, subscribe: Callable[[], Subscription], unsubscribe: Callable[[Subscription], None],
                 request_keyframe: Callable[[], None], name: str = "", queue_size: int = 512,
                 max_lag: float = 1.0, on_release: Callable[[EncodedPacket, dict], None] | None = None,
                 on_pump_done: Callable[[asyncio.Task], None] | None = None):
        super().__init__()
        self._subscribe, self._unsubscribe = subscribe, unsubscribe
        self._on_pump_done = on_pump_done
        self._request_keyframe = request_keyframe
        self.name = name
        self.queue_size = queue_size
        self.pacer = PacketPacer(max_lag=max_lag)
        self.on_release = on_release
        self._sub: Subscription | None = None
        self._pump_task: asyncio.Task | None = None
        self._q: deque[tuple[EncodedPacket, float]] = deque()
        self._wake = asyncio.Event()
        self._need_key = False
        self._t0: float | None = None
        self._last_ts = -1
        self._last_media_t: float | None = None
        self._ended = False
        self.sent = 0
        self.skipped = 0
        self.overflows = 0
        self.keyframe_requests = 0
        self.last_pull = time.monotonic()  # last time the sender asked for a packet
        self.lag_ms = 0.0  # release time - arrival time of the last packet sent

    # the sender's side --------------------------------------------------------------------------------------
    async def recv(self) -> av.Packet:
        if self.readyState != "live" or self._ended:
            raise MediaStreamError
        if self._sub is None:
            self._sub = self._subscribe()  # the daemon forces a keyframe for a new subscriber
            self._pump_task = asyncio.ensure_future(self._pump())
            if self._on_pump_done is not None:
                self._pump_task.add_done_callback(self._on_pump_done)
        self.last_pull = time.monotonic()
        while True:
            while not self._q:
                if self._ended or self.readyState != "live":
                    raise MediaStreamError
                self._wake.clear()
                await self._wake.wait()
            pkt, arrival = self._q[0]
            media_t = pkt.time_s
            if self._last_media_t is not None and media_t <= self._last_media_t:
                self.pacer.restart(media_t, arrival)  # pts went backwards: a new timeline
            now = time.monotonic()
            due = self.pacer.due(media_t, arrival)
            if self.pacer.behind(media_t, now):
                k = self._newest_keyframe()
                if k > 0:  # skip to the newest keyframe, due now
                    for _ in range(k):
                        self._q.popleft()
                    self.skipped += k
                    pkt, arrival = self._q[0]
                    media_t = pkt.time_s
                    log.info("%s: behind by %.2fs, skipped %d packets to a keyframe", self.name, now - due, k)
                    self.pacer.restart(media_t, now)
                    due = now
                elif now - due > self.pacer.max_lag:
                    # the sender stalled and there is nothing to skip to yet: go on from here at real-time pace
                    # (a burst would only make the browser fast-forward) and ask for a keyframe to skip to
                    self.request_keyframe()
                    self.pacer.restart(media_t, now)
                    due = now
                # else: later than needed but no keyframe queued yet: keep pace until the next one arrives
            if due > now:
                await asyncio.sleep(due - now)
                continue  # the queue may have changed while sleeping (overflow, skip); re-evaluate the head
            self._q.popleft()
            self.last_pull = time.monotonic()
            return self._packet(pkt, due, arrival)

    def _newest_keyframe(self) -> int:
        for i in range(len(self._q) - 1, 0, -1):
            if self._q[i][0].keyframe:
                return i
        return 0

    def _packet(self, pkt: EncodedPacket, due: float, arrival: float) -> av.Packet:
        if self._t0 is None:
            self._t0 = due
        ts = max(self._last_ts + 1, round((due - self._t0) * VIDEO_CLOCK))
        self._last_ts = ts
        self._last_media_t = pkt.time_s
        out = av.Packet(pkt.data)
        out.pts = ts
        out.dts = ts
        out.time_base = VIDEO_TIME_BASE
        self.sent += 1
        self.lag_ms = max(0.0, time.monotonic() - arrival) * 1e3
        if self.on_release is not None:
            try:
                self.on_release(pkt, {"lag_ms": round(self.lag_ms, 1), "sent": self.sent, "skipped": self.skipped})
            except Exception:  # noqa: BLE001 - metadata must never break the video
                log.debug("on_release failed", exc_info=True)
        return out

    # the fan-out's side -------------------------------------------------------------------------------------
    async def _pump(self) -> None:
        sub = self._sub
        try:
            while self.readyState == "live":
                pkt = await sub.aget(timeout=1.0)
                if pkt is None:
                    if sub.closed:
                        break
                    continue
                now = time.monotonic()
                faults.point("webrtc")
                if self._need_key:
                    if not pkt.keyframe:
                        continue
                    self._need_key = False
                if len(self._q) >= self.queue_size:  # the sender stopped pulling: drop, restart at a keyframe
                    self.overflows += 1
                    self._q.clear()
                    self.request_keyframe()
                    if not pkt.keyframe:
                        self._need_key = True
                        continue
                self._q.append((pkt, now))
                self.pacer.arrived(pkt.time_s, now)
                self._wake.set()
        finally:
            self._ended = True
            self._wake.set()

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        try:
            self._request_keyframe()
        except Exception:  # noqa: BLE001
            log.debug("keyframe request failed", exc_info=True)

    def queued(self) -> int:
        return len(self._q)

    def stop(self) -> None:
        super().stop()
        self._ended = True
        self._wake.set()
        if self._pump_task is not None:
            self._pump_task.cancel()
            self._pump_task = None
        if self._sub is not None:
            self._unsubscribe(self._sub)
            self._sub = None
