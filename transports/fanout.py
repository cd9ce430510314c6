"""FanOut: the same EncodedPackets to every consumer, never blocking the producer.

Each Subscription has a bounded queue. It starts at the next keyframe; when its
queue is full it drops everything queued and resumes at the next keyframe.

Threading: ``FanOut.publish/subscribe/unsubscribe`` and ``Subscription.get``
may be called from any thread. ``Subscription.aget`` must always be awaited on
the same event loop (the first one it sees is recorded).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Callable

from .packet import EncodedPacket

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, maxsize: int = 256, name: str = ""):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize, self.name = maxsize, name
        self._q: deque[EncodedPacket] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting_key = True
        self._closed = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._aevent: asyncio.Event | None = None
        self._async_waiting = False
        self.received = 0   # packets queued for the consumer
        self.dropped = 0    # packets dropped (before the first keyframe or on overflow)
        self.overflows = 0  # times the queue overflowed and skipped to a keyframe

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        return len(self._q)

    def stats(self) -> dict:
        return {"name": self.name, "queued": len(self._q), "received": self.received,
                "dropped": self.dropped, "overflows": self.overflows}

    # -- producer side (any thread) --
    def _push(self, pkt: EncodedPacket) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._q) >= self.maxsize:
                self.dropped += len(self._q)
                self.overflows += 1
                self._q.clear()
                self._waiting_key = True
            if self._waiting_key:
                if not pkt.keyframe:
                    self.dropped += 1
                    return
                self._waiting_key = False
            self._q.append(pkt)
            self.received += 1
            self._cond.notify()
            wake = self._async_waiting
            self._async_waiting = False
        if wake:
            self._wake_async()

    def _wake_async(self) -> None:
        loop, ev = self._loop, self._aevent
        if loop is None or ev is None:
            return
        try:
            loop.call_soon_threadsafe(ev.set)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            wake = self._async_waiting
            self._async_waiting = False
        if wake:
            self._wake_async()

    # -- consumer side --
    def get(self, timeout: float | None = None) -> EncodedPacket | None:
        """Next packet, blocking the calling thread. None on timeout or when
        closed and drained (check ``closed``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._q or self._closed, timeout):
                return None
            return self._q.popleft() if self._q else None

    def get_nowait(self) -> EncodedPacket | None:
        with self._cond:
            return self._q.popleft() if self._q else None

    async def aget(self, timeout: float | None = None) -> EncodedPacket | None:
        """Next packet without blocking the event loop. None on timeout or when
        closed and drained."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("Subscription.aget used from two event loops")
        if self._aevent is None:
            self._aevent = asyncio.Event()
        while True:
            with self._cond:
                if self._q:
                    return self._q.popleft()
                if self._closed:
                    return None
                self._aevent.clear()
                self._async_waiting = True
            try:
                await asyncio.wait_for(self._aevent.wait(), timeout)
            except asyncio.TimeoutError:
                with self._cond:
                    self._async_waiting = False
                    return self._q.popleft() if self._q else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FanOut:
    """Publish each packet to all subscribers. ``on_subscribe(sub)`` is called
    (in the subscribing thread) after each new subscription, e.g. to make the
    encoder emit a keyframe so the new consumer starts quickly."""

    def __init__(self, on_subscribe: Callable[[Subscription], None] | None = None):
        self.on_subscribe = on_subscribe
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()
        self.published = 0

    def subscribe(self, maxsize: int = 256, name: str = "") -> Subscription:
        sub = Subscription(maxsize, name)
        with self._lock:
            self._subs = self._subs + (sub,)
        hook = self.on_subscribe
        if hook is not None:
            try:
                hook(sub)
            except Exception:
                log.exception("on_subscribe hook failed")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
        sub.close()

    def publish(self, pkt: EncodedPacket) -> None:
        """Hand ``pkt`` to every subscriber; never blocks on a consumer."""
        self.published += 1
        for sub in self._subs:  # immutable snapshot, no lock needed
            sub._push(pkt)

    def publish_many(self, pkts) -> None:
        for p in pkts:
            self.publish(p)

    @property
    def subscribers(self) -> tuple[Subscription, ...]:
        return self._subs

    def stats(self) -> list[dict]:
        return [s.stats() for s in self._subs]

    def close(self) -> None:
        with self._lock:
            subs, self._subs = self._subs, ()
        for s in subs:
            s.close()
