"""HTTP endpoints: /stream.ts (live MPEG-TS), /status, /metrics, / (viewer page).

Runs on the daemon's asyncio loop. Each /stream.ts client gets its own fan-out
subscription and its own MpegTsWriter (stream copy, no re-encode); a client
that cannot keep up skips to the next keyframe via the fan-out.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from typing import Callable, Iterable

from aiohttp import web

from common import faults

from .fanout import FanOut
from .mpegts import MpegTsWriter

log = logging.getLogger(__name__)

FANOUT_KEY = web.AppKey("fanout", FanOut)
STREAM_SUBS_KEY = web.AppKey("stream_subs", set)
PROMETHEUS_CT = "text/plain; version=0.0.4; charset=utf-8"


async def _call(fn):
    res = fn()
    if inspect.isawaitable(res):
        res = await res
    return res


def build_app(fanout: FanOut, status_fn: Callable, metrics_fn: Callable,
              index_html_path: str | os.PathLike | None = None,
              extra_routes: Iterable[web.AbstractRouteDef] | None = None,
              queue_size: int = 256,
              on_error: Callable[[BaseException], None] | None = None) -> web.Application:
    """status_fn() -> dict and metrics_fn() -> str may be plain or async
    callables. extra_routes: aiohttp route defs, e.g. ``[web.post("/offer", h)]``.
    on_error(exc): a handler raised something other than an HTTP error or a client going away (a bug: the
    caller ends the daemon rather than serve on half-broken)."""

    @web.middleware
    async def guard(request: web.Request, handler):
        try:
            faults.point("http")
            return await handler(request)
        except (web.HTTPException, ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:
            if on_error is None:
                raise
            on_error(e)
            raise web.HTTPInternalServerError(text="internal error: the daemon is stopping\n") from None

    app = web.Application(middlewares=[guard])
    app[FANOUT_KEY] = fanout
    app[STREAM_SUBS_KEY] = set()

    async def index(request: web.Request) -> web.StreamResponse:
        if index_html_path and os.path.isfile(index_html_path):
            return web.FileResponse(index_html_path)
        return web.Response(status=404, text="no viewer page configured; try /stream.ts\n")

    async def status(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(await _call(status_fn)),
                            content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        body = str(await _call(metrics_fn))
        if not body.endswith("\n"):
            body += "\n"
        return web.Response(body=body.encode(), headers={"Content-Type": PROMETHEUS_CT})

    async def stream_ts(request: web.Request) -> web.StreamResponse:
        peer = request.remote or "?"
        sub = fanout.subscribe(maxsize=queue_size, name=f"http:{peer}")
        app[STREAM_SUBS_KEY].add(sub)
        resp = web.StreamResponse(headers={"Content-Type": "video/mp2t",
                                           "Cache-Control": "no-cache, no-store"})
        resp.enable_chunked_encoding()
        buf = bytearray()
        writer: MpegTsWriter | None = None
        try:
            await resp.prepare(request)
            while True:
                pkt = await sub.aget(timeout=1.0)
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # client went away while the stream was idle
                if pkt is None:
                    if sub.closed:
                        break
                    continue
                if writer is None:
                    writer = MpegTsWriter(buf.extend, pkt.width, pkt.height, pkt.fps)
                writer.write(pkt)
                if buf:
                    data = bytes(buf)
                    buf.clear()
                    await resp.write(data)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            app[STREAM_SUBS_KEY].discard(sub)
            fanout.unsubscribe(sub)
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    log.debug("closing per-client muxer failed", exc_info=True)
            log.info("stream.ts client %s left (%s)", peer, sub.stats())
        return resp

    async def on_shutdown(app: web.Application) -> None:
        for sub in list(app[STREAM_SUBS_KEY]):  # ends the streaming handlers
            sub.close()

    app.router.add_get("/", index)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stream.ts", stream_ts)
    if extra_routes:
        app.add_routes(list(extra_routes))
    app.on_shutdown.append(on_shutdown)
    return app


async def start_http(app: web.Application, host: str = "127.0.0.1", port: int = 8080,
                     shutdown_timeout: float = 2.0) -> web.AppRunner:
    """Start serving; stop with ``await runner.cleanup()``. Port 0 picks a free
    port: see ``bound_port(runner)``."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])
