"""The daemon's side of reaction time, on its event loop: feeds `streamer.reaction.ReactionTracker`, publishes a
`prompt_on_stream` event when a change reaches the stream, and holds the replies of set_prompt requests that asked
to wait for that ("wait": true).

A waiting request is bounded: at most MAX_WAITING wait at once (more are refused before their change is submitted,
so that waiting requests never take every control slot), each at most `limit_s` seconds (then it is answered
{"ok": false, "error": "... did not reach the stream within ..."} with the change still in place), a cancelled
change answers its waiter with an error, and on shutdown every waiter is answered with an error.

    watch = PromptWatch(publisher.send_event)
    with watch.slot():                        # raises WaitRefused when no waiter may be added
        ...                                   # submit the change, get its epoch
        fut = watch.accepted(epoch, mode, requested_at, wait=True)
        extra = await watch.wait(fut, epoch)  # {"on_stream": {...}} or {"ok": False, "error": ...}
"""
from __future__ import annotations

import asyncio
import contextlib

from .reaction import ReactionTracker, Resolved

WAIT_LIMIT_S = 120.0  # a waiting set_prompt is answered with an error after this long
MAX_WAITING = 16  # waiting set_prompt requests at once (the control paths serve 32 requests at once each)


class WaitRefused(Exception):
    """No more waiting requests now (too many, or the daemon is stopping); the message is for the client."""


class PromptWatch:
    def __init__(self, send_event, limit_s: float = WAIT_LIMIT_S, max_waiting: int = MAX_WAITING):
        """send_event(dict): publish one `events` message."""
        self.tracker = ReactionTracker()
        self.limit_s = float(limit_s)
        self.max_waiting = max_waiting
        self._send_event = send_event
        self._waiters: dict[int, asyncio.Future] = {}
        self._slots = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed: str | None = None

    # --- inputs (event loop) ----------------------------------------------------------------------------------
    def accepted(self, epoch: int, mode: str, requested_at: float, wait: bool = False) -> asyncio.Future | None:
        """Change `epoch`, asked for "now" at `requested_at`, was accepted. With `wait`, a future for `wait()`."""
        fut = None
        if wait:
            fut = self._waiters[epoch] = asyncio.get_running_loop().create_future()
        self._resolved(self.tracker.requested(epoch, mode, requested_at))
        if self._closed:  # the engine answered after close(): answer at once
            self._answer(epoch, self._closing_error(epoch))
        return fut

    def published(self, block: int, epoch: int, now: float) -> None:
        self._resolved(self.tracker.on_published(block, epoch, now))

    def cancelled(self, epochs) -> None:
        self.tracker.drop(epochs)
        for e in epochs:
            self._answer(e, {"ok": False, "error": f"change {e} was cancelled before it reached the stream"})

    def _resolved(self, done: list[Resolved]) -> None:
        for r in done:
            seconds = round(r.reaction_s, 3)
            self._send_event({"event": "prompt_on_stream", "epoch": r.epoch, "block": r.block, "mode": r.mode,
                              "reaction_s": seconds})
            self._answer(r.epoch, {"on_stream": {"block": r.block, "reaction_s": seconds}})

    def _answer(self, epoch: int, result: dict) -> None:
        fut = self._waiters.get(epoch)
        if fut is not None and not fut.done():
            fut.set_result(result)

    # --- waiting requests -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def slot(self):
        """Held by a waiting request from before its change is submitted until it is answered."""
        if self._closed:
            raise WaitRefused(self._closed)
        if self._slots >= self.max_waiting:
            raise WaitRefused(f"too many requests wait for their change to reach the stream (limit "
                              f"{self.max_waiting}): ask without 'wait'")
        self._slots += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._slots -= 1
            if self._slots == 0:
                self._idle.set()

    async def wait(self, fut: asyncio.Future, epoch: int) -> dict:
        """{"on_stream": {"block": N, "reaction_s": x}} once change `epoch` is on the stream, or {"ok": False,
        "error": ...} when it was cancelled, the daemon stops, or `limit_s` passed."""
        try:
            done, _ = await asyncio.wait({fut}, timeout=self.limit_s)
            if not done:
                return {"ok": False, "error": f"change {epoch} did not reach the stream within {self.limit_s:g} s "
                                              "(it stays accepted)"}
            return fut.result()
        finally:
            self._waiters.pop(epoch, None)

    @property
    def waiting(self) -> int:
        return self._slots

    def close(self, reason: str = "the daemon is stopping") -> None:
        """Answer every waiter with an error and refuse new ones."""
        self._closed = reason
        for epoch in list(self._waiters):
            self._answer(epoch, self._closing_error(epoch))

    def _closing_error(self, epoch: int) -> dict:
        return {"ok": False, "error": f"{self._closed} before change {epoch} reached the stream"}

    async def drained(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until no request waits any more; True if none does."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def snapshot(self) -> dict:
        return {**self.tracker.snapshot(), "waiting": self._slots}
