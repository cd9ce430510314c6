"""Blocking clients for the streamer daemon: control requests (ZMQ DEALER) and the published stream (ZMQ SUB).

    with ControlClient() as c:
        c.set_prompt("a lighthouse at dusk", mode="blend", blocks=8)   # -> {"ok": true, "epoch": .., ...}
        c.set_prompt("a lighthouse at night", wait=True)  # replies once on the stream: "on_stream": {...}
        c.status()

    for topic, header, payload in VideoSubscriber():
        ...

Request helpers return the daemon's reply dict as is, {"ok": false, ...} included; transport problems
(no reply in time, a reply that is not JSON) raise ClientError.
"""
from __future__ import annotations

import itertools
import json
import os
import time

import zmq

from streamer.prompt_watch import WAIT_LIMIT_S
from pipeline.prompts import DEFAULT_MODE
from pipeline.settings import DEFAULTS
from streamer.protocol import MAX_MESSAGE_BYTES, Cancel, Pause, Resume, SetPrompt, Status

DEFAULT_CONTROL = os.environ.get("STREAMER_CONTROL", DEFAULTS["control"])
DEFAULT_PUBLISH = os.environ.get("STREAMER_PUBLISH", DEFAULTS["publish"])
WAIT_TIMEOUT = WAIT_LIMIT_S + 10.0  # a set_prompt that waits for the stream: longer than the daemon waits


class ClientError(RuntimeError):
    """A request that got no usable reply. The message is one line for the user."""


class ClientTimeout(ClientError):
    pass


class ControlClient:
    """DEALER socket with a poll timeout. Every request carries an "id" so a late reply to an earlier,
    timed-out request can never be taken for the current one; after a timeout the socket is recreated."""

    def __init__(self, addr: str = DEFAULT_CONTROL, timeout: float = 5.0, ctx: zmq.Context | None = None,
                 token: str | None = None):
        """token: sent with every request (a daemon with a token requires it); default $STREAMER_TOKEN."""
        self.addr = addr
        self.timeout = float(timeout)
        self.token = os.environ.get("STREAMER_TOKEN") if token is None else token
        self._ctx = ctx or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.connect(self.addr)
            except zmq.ZMQError as e:
                sock.close()
                raise ClientError(f"bad control address {self.addr!r}: {e}") from None
            self._sock = sock
        return self._sock

    def request(self, req: dict, timeout: float | None = None) -> dict:
        """Send one request object, return the reply object. Raises ClientTimeout / ClientError.
        timeout: seconds for this request's reply (default: the client's)."""
        timeout = self.timeout if timeout is None else float(timeout)
        sock = self._socket()
        req = dict(req)
        own_id = "id" not in req
        if own_id:
            req["id"] = f"c{os.getpid()}-{next(self._ids)}"
        if self.token and "token" not in req:
            req["token"] = self.token
        body = json.dumps(req).encode()
        if len(body) > MAX_MESSAGE_BYTES:  # the daemon would only answer "too large": say so without asking
            raise ClientError(f"request too large: {len(body)} bytes (the daemon takes at most {MAX_MESSAGE_BYTES}; "
                              "a prompt is limited to 2,000 characters)")
        sock.send_multipart([b"", body])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                if time.monotonic() < deadline:
                    continue
                self._reset()
                raise ClientTimeout(
                    f"no reply from {self.addr} within {timeout:g}s (is the streamer daemon running?)"
                )
            frames = sock.recv_multipart()
            try:
                reply = json.loads(frames[-1])
            except ValueError:
                raise ClientError(f"reply from {self.addr} is not JSON: {frames[-1][:80]!r}") from None
            if not isinstance(reply, dict):
                raise ClientError(f"reply from {self.addr} is not a JSON object: {reply!r:.80}")
            if "id" in reply and reply["id"] != req["id"]:
                continue  # a late answer to an earlier request
            if own_id:
                reply.pop("id", None)
            return reply

    def set_prompt(self, prompt: str, mode: str = DEFAULT_MODE, blocks: int | None = None,
                   at_block: int | None = None, wait: bool = False, timeout: float | None = None) -> dict:
        """wait: the daemon replies once the change is on the stream, with "on_stream": {"block", "reaction_s"}
        (or {"ok": false, ...} after its own limit, WAIT_LIMIT_S); the reply is then awaited `timeout` seconds
        (default WAIT_TIMEOUT, longer than the daemon's limit), else the client's timeout."""
        if wait:
            timeout = WAIT_TIMEOUT if timeout is None else timeout
        req = SetPrompt(prompt, mode, blocks, at_block, wait=True if wait else None)
        return self.request(req.to_dict(), timeout=timeout)

    def cancel(self, epoch: int | None = None) -> dict:
        """Withdraw the scheduled change of `epoch`, or (None) every scheduled change."""
        return self.request((Cancel(epoch=epoch) if epoch is not None else Cancel(all=True)).to_dict())

    def status(self, timeout: float | None = None) -> dict:
        return self.request(Status().to_dict(), timeout=timeout)

    def pause(self) -> dict:
        return self.request(Pause().to_dict())

    def resume(self) -> dict:
        return self.request(Resume().to_dict())

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoSubscriber:
    """SUB socket on the daemon's publisher. Iterating yields (topic, header_dict, payload) for messages
    shaped [topic, header_json, payload]; anything else is counted in `dropped` and skipped.
    With timeout (seconds), iteration raises ClientTimeout when nothing arrives for that long."""

    def __init__(self, addr: str = DEFAULT_PUBLISH, topics=(b"video.h264", b"events"),
                 timeout: float | None = None, ctx: zmq.Context | None = None, hwm: int = 2000):
        self.addr = addr
        self.timeout = timeout
        self.dropped = 0
        self._ctx = ctx or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode() if isinstance(topic, str) else topic)
        try:
            self._sock.connect(addr)
        except zmq.ZMQError as e:
            self._sock.close()
            raise ClientError(f"bad publish address {addr!r}: {e}") from None

    def recv(self, timeout: float | None = None):
        """Next well-formed message, or None if none arrives within timeout seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait, zmq.POLLIN):
                if deadline is None or time.monotonic() >= deadline:
                    return None
                continue
            frames = self._sock.recv_multipart()
            if len(frames) == 3:
                try:
                    header = json.loads(frames[1]) if frames[1] else {}
                except ValueError:
                    header = None
                if isinstance(header, dict):
                    return frames[0], header, frames[2]
            self.dropped += 1

    def __iter__(self):
        while True:
            msg = self.recv(self.timeout)
            if msg is None:
                raise ClientTimeout(f"nothing published on {self.addr} for {self.timeout:g}s "
                                    "(is the streamer daemon running?)")
            yield msg

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> "VideoSubscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
