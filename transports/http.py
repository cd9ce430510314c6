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
from prometheus_client import CONTENT_TYPE_LATEST

from common import faults

from .fanout import FanOut
from .mpegts import MpegTsWriter

log = logging.getLogger(__name__)

FANOUT_KEY = web.AppKey("fanout", FanOut)
STREAM_SUBS_KEY = web.AppKey("stream_subs", set)
PROMETHEUS_CT = CONTENT_TYPE_LATEST  # the text format prometheus_client writes (streamer/metrics.py)


async def _call(fn):
    res = fn()
    if inspect.isawaitable(res):
        res = await res
    return res


MAX_BODY = 128 * 1024  # no route takes a bigger request body (aiohttp refuses it with 413 before reading it)
MAX_CONNECTIONS = 256  # open connections at once; more are answered 503 and closed
MAX_STREAM_CLIENTS = 64  # /stream.ts readers at once
WRITE_TIMEOUT = 10.0  # seconds a /stream.ts reader may take to accept a chunk before it is dropped
KEEPALIVE_TIMEOUT = 15.0  # idle seconds before a keep-alive connection is closed
RUNNER_KEY = web.AppKey("runner", list)  # [the AppRunner], filled by start_http


def build_app(fanout: FanOut, status_fn: Callable, metrics_fn: Callable,
              index_html_path: str | os.PathLike | None = None,
              extra_routes: Iterable[web.AbstractRouteDef] | None = None,
              queue_size: int = 256,
              on_error: Callable[[BaseException], None] | None = None,
              middlewares: Iterable = ()) -> web.Application:
    """status_fn() -> dict and metrics_fn() -> str may be plain or async
    callables. extra_routes: aiohttp route defs, e.g. ``[web.post("/offer", h)]``.
    on_error(exc): a handler raised something other than an HTTP error or a client going away (a bug: the
    caller ends the daemon rather than serve on half-broken). middlewares: run after the connection cap and the
    error guard, before the handlers (e.g. the web front's Host/Origin/token guard)."""

    @web.middleware
    async def cap(request: web.Request, handler):
        server = request.app[RUNNER_KEY][0].server if request.app[RUNNER_KEY] else None
        if server is not None and len(server.connections) > MAX_CONNECTIONS:
            raise web.HTTPServiceUnavailable(text=f"too many connections (limit {MAX_CONNECTIONS})\n",
                                             headers={"Connection": "close"})
        return await handler(request)

    @web.middleware
    async def guard(request: web.Request, handler):
        try:
            faults.point("http")
            return await handler(request)
        except ConnectionError:  # the client went away mid-request: its business, one line, no traceback
            log.info("%s %s: the client %s went away", request.method, request.path, request.remote)
            return web.Response(status=400, text="connection lost\n")
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception as e:
            if on_error is None:
                raise
            on_error(e)
            raise web.HTTPInternalServerError(text="internal error: the daemon is stopping\n") from None

    app = web.Application(middlewares=[cap, guard, *middlewares], client_max_size=MAX_BODY)
    app[RUNNER_KEY] = []
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
        if len(app[STREAM_SUBS_KEY]) >= MAX_STREAM_CLIENTS:
            raise web.HTTPServiceUnavailable(text=f"too many /stream.ts readers (limit {MAX_STREAM_CLIENTS})\n")
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
                    await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT)
        except (ConnectionResetError, ConnectionError):
            pass
        except asyncio.TimeoutError:
            log.info("stream.ts client %s took over %gs to accept data: dropped", peer, WRITE_TIMEOUT)
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
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None,
                           keepalive_timeout=KEEPALIVE_TIMEOUT)
    await runner.setup()
    if RUNNER_KEY in app:
        app[RUNNER_KEY].append(runner)
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])
