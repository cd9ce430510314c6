"""Control endpoint: a zmq.asyncio ROUTER socket speaking the JSON protocol of streamer.protocol.

Accepts REQ clients (frames [identity, b"", body]) and DEALER clients ([identity, body] or
[identity, b"", body]) and answers with the envelope it received. Requests from one peer are handled in
order; different peers are served concurrently. Nothing a peer sends can stop the loop: bad frames and bad
JSON get an error reply, a handler exception gets {"ok": false, "error": "internal error: ..."}.

    async def handler(req: Request, client: str) -> dict: ...
    server = ControlServer("tcp://127.0.0.1:5555", handler)
    await server.serve()      # until close() or cancellation
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from typing import Awaitable, Callable

import zmq
import zmq.asyncio

from common import faults
from pipeline.settings import DEFAULTS
from streamer.protocol import MAX_MESSAGE_BYTES, ProtocolError, Request, encode_reply, error_reply, parse_request

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[dict]]

# libzmq disconnects a peer that sends a bigger frame (nothing larger is ever buffered, and the peer gets no
# answer). Frames up to 1 MiB are read, so that a request over the protocol's 64 KiB (a long prompt) is answered
# with "request too large" instead of a dropped connection that a REQ client would wait out.
MAX_FRAME_BYTES = 16 * MAX_MESSAGE_BYTES
RCVHWM = 32  # messages queued per peer before libzmq stops reading from it (at most 32 MiB a peer)
MAX_PENDING_PER_PEER = 16  # requests queued behind a slow handler, per peer (each up to 64 KiB); more: an error
MAX_ACTIVE = 32  # handler calls running at once over all peers


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split ROUTER frames into (envelope to echo, body frames). [id, b"", ...] is the REQ shape."""
    if len(frames) >= 2 and frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]


async def answer(handler: Handler, raw: bytes, token: str = "", client: str = "") -> tuple[dict, int]:
    """One request → (reply dict, HTTP status): validation, the token, the handler, and the error replies. Shared
    by every control path (this ZMQ socket and HTTP POST /control) so that they answer alike. `token`: required in
    the request's "token" field when set (HTTP checks its headers instead and passes ""); `client` identifies the
    caller (per-client limits on scheduled prompt changes)."""
    try:
        req = parse_request(raw)
    except ProtocolError as e:
        return error_reply(e.message, e.id), e.status
    if token and not hmac.compare_digest((req.token or "").encode(), token.encode()):
        return error_reply("missing or wrong token", req.id), 401
    try:
        reply = await handler(req, client)
        if not isinstance(reply, dict):
            raise TypeError(f"handler returned {type(reply).__name__}, not dict")
        reply = dict(reply)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - the server outlives any handler bug
        log.exception("control: handler failed on %s", req)
        detail = (str(e).splitlines() or [""])[0][:300]
        return error_reply(f"internal error: {type(e).__name__}: {detail}", req.id), 500
    reply.setdefault("ok", True)
    if req.id is not None:
        reply["id"] = req.id
    return reply, 200


class ControlServer:
    def __init__(self, addr: str = DEFAULTS["control"], handler: Handler | None = None,
                 ctx: zmq.asyncio.Context | None = None, on_error: Callable[[BaseException], None] | None = None,
                 token: str = ""):
        """on_error(exc): a per-peer task failed (a bug, not a bad request); serve() failing raises instead.
        token: every request must carry it in its "token" field (set when the daemon has one)."""
        if handler is None:
            raise TypeError("ControlServer needs a handler: async def handler(req, client) -> dict")
        self._handler = handler
        self._on_error = on_error
        self._token = token
        if ctx is None:
            ctx = zmq.asyncio.Context.instance()
        elif not isinstance(ctx, zmq.asyncio.Context):  # a plain zmq.Context: share it, async API
            ctx = zmq.asyncio.Context.shadow(ctx.underlying)
        self._ctx = ctx
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._sock.setsockopt(zmq.RCVHWM, RCVHWM)
        try:
            self._sock.bind(addr)
        except zmq.ZMQError as e:
            self._sock.close()
            raise OSError(f"cannot bind control socket {addr}: {e}") from e
        self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)  # real port when addr ends in :*
        self._pending: dict[bytes, deque] = {}
        self._tasks: set[asyncio.Task] = set()
        self._active = asyncio.Semaphore(MAX_ACTIVE)
        self._closed = False
        self.requests = 0  # messages received, good or bad
        self.errors = 0  # error replies sent

    async def serve(self) -> None:
        """Receive and answer until close() is called or the task is cancelled."""
        try:
            while not self._closed:
                try:
                    frames = await self._sock.recv_multipart(copy=True)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._closed and not (task and task.cancelling()):
                        return  # close() cancelled the pending receive
                    raise
                except zmq.ZMQError as e:
                    if self._closed or e.errno in (zmq.ETERM, zmq.ENOTSOCK):
                        return
                    log.warning("control: receive failed: %s", e)
                    continue
                self.requests += 1
                faults.point("control")
                if len(frames) < 2:  # ROUTER always prefixes an identity; be defensive anyway
                    continue
                await self._enqueue(frames)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _enqueue(self, frames: list[bytes]) -> None:
        ident = frames[0]
        queue = self._pending.get(ident)
        if queue is None:
            queue = self._pending[ident] = deque()
            task = asyncio.ensure_future(self._drain(ident, queue))
            self._tasks.add(task)
            task.add_done_callback(self._drained)
        if len(queue) >= MAX_PENDING_PER_PEER:
            envelope, body = split_envelope(frames)
            try:
                rid = parse_request(body[0]).id if len(body) == 1 else None
            except ProtocolError as e:
                rid = e.id
            await self._send(envelope, error_reply("busy: too many pending requests from this client", rid))
            return
        queue.append(frames)

    def _drained(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            if self._on_error is None:
                log.error("control: a peer's task failed", exc_info=task.exception())
            else:
                self._on_error(task.exception())

    async def _drain(self, ident: bytes, queue: deque) -> None:
        try:
            while queue:
                frames = queue[0]
                envelope, body = split_envelope(frames)
                async with self._active:
                    reply = await self._answer(body, "zmq:" + ident.hex())
                queue.popleft()
                await self._send(envelope, reply)
        finally:
            if self._pending.get(ident) is queue:
                del self._pending[ident]

    async def _answer(self, body: list[bytes], client: str) -> dict:
        if len(body) != 1:
            return error_reply(f"expected exactly one JSON frame after the envelope, got {len(body)}")
        return (await answer(self._handler, body[0], token=self._token, client=client))[0]

    async def _send(self, envelope: list[bytes], reply: dict) -> None:
        if reply.get("ok") is False:
            self.errors += 1
        try:
            payload = encode_reply(reply)
        except (TypeError, ValueError) as e:
            payload = encode_reply(error_reply(f"internal error: reply is not JSON: {e}", reply.get("id")))
            self.errors += 1
        if self._closed:
            return
        try:
            # ROUTER never blocks: a message to a gone or congested peer is dropped.
            await self._sock.send_multipart(envelope + [payload], flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.debug("control: reply dropped: %s", e)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._sock.close(linger=0)

    async def __aenter__(self) -> "ControlServer":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
