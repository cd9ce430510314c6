"""The browser side of the daemon's HTTP server: the viewer page's script, WebRTC offers and the control path.

    POST /offer      {"sdp": "...", "type": "offer"} → {"sdp": "...", "type": "answer", "peer": ..., "codec": ...}
    POST /control    one control request (JSON, exactly as on the ZMQ socket) → the same reply object
    GET  /webrtc     {"iceServers": [...], "token_required": bool} for the page's RTCPeerConnection
    GET  /viewer.js  the page's script (clients/viewer.js)

/control goes through `streamer.protocol.parse_request` and the daemon's `handle` coroutine, the very path the ZMQ
ROUTER uses, so validation, acks and errors are identical. With a token configured (`--token` or the
STREAMER_TOKEN environment variable) /offer and /control need `Authorization: Bearer <token>` (or an
`X-Streamer-Token` header). Both also need `Content-Type: application/json` and refuse cross-origin requests, so a
web page in the same browser cannot drive a loopback daemon behind the user's back.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from transports.compat import aioice as aioice_compat
from transports.compat import aiortc as aiortc_compat
from transports.webrtc import (OfferError, WebRTCConfig, WebRTCHub, ice_servers_json, parse_ice_servers,
                               restrict_host_addresses)

from .control import MAX_FRAME_BYTES, answer
from .protocol import MAX_MESSAGE_BYTES, encode_reply, error_reply

log = logging.getLogger("streamer.web")

CLIENTS_DIR = Path(__file__).resolve().parent.parent / "clients"
MAX_OFFER_BYTES = 128 * 1024
MAX_ACTIVE_CONTROL = 32


class WebSetupError(OSError):
    """Bad web/WebRTC settings: the daemon reports it as 'cannot start' and exits 2."""


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_ice_hosts(spec: str, http_host: str) -> list[str] | None:
    """'auto' → loopback only when HTTP is bound to loopback, else every interface (None); 'all' → None;
    otherwise a comma-separated list of local addresses."""
    spec = (spec or "auto").strip()
    if spec == "auto":
        return ["127.0.0.1"] if is_loopback(http_host) else None
    if spec == "all":
        return None
    hosts = [h.strip() for h in spec.split(",") if h.strip()]
    for h in hosts:
        try:
            ipaddress.ip_address(h)
        except ValueError:
            raise WebSetupError(f"--ice-hosts: {h!r} is not an IP address") from None
    return hosts


async def answer_control(handler: Callable[[object], Awaitable[dict]], raw: bytes) -> dict:
    """One control request → reply dict, exactly as the ZMQ control server answers it."""
    return await answer(handler, raw)


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit`."""
    if request.content_length is not None and request.content_length > limit:
        return None
    buf = bytearray()
    while chunk := await request.content.read(limit + 1 - len(buf)):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def _json(obj, status: int = 200) -> web.Response:
    return web.Response(body=encode_reply(obj), status=status, content_type="application/json")


class WebFrontend:
    """Built by the daemon when HTTP is on: owns the WebRTC hub and the routes the viewer page uses."""

    def __init__(self, daemon, http_host: str):
        opts = daemon.opts
        self.daemon = daemon
        try:  # aiortc's and aioice's private API, as checked: fail closed before serving anything
            aiortc_compat.self_test()
            aioice_compat.self_test()
        except RuntimeError as e:
            raise WebSetupError(str(e)) from None
        self.token = getattr(opts, "token", "") or os.environ.get("STREAMER_TOKEN", "")
        try:
            ice = parse_ice_servers(getattr(opts, "ice_servers", ""), getattr(opts, "ice_username", ""),
                                    getattr(opts, "ice_credential", ""))
        except ValueError as e:
            raise WebSetupError(str(e)) from None
        restrict_host_addresses(resolve_ice_hosts(getattr(opts, "ice_hosts", "auto"), http_host))
        max_peers = int(getattr(opts, "max_viewers", 32))
        if max_peers < 1:
            raise WebSetupError("--max-viewers must be >= 1")
        if not is_loopback(http_host) and not self.token:
            log.warning("HTTP is bound to %s without --token: anyone who can reach it can watch and change the "
                        "prompt", http_host or "all interfaces")
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("aioice").setLevel(logging.WARNING)  # one INFO line per ICE check otherwise
        self.hub = WebRTCHub(daemon.fanout, daemon.request_keyframe,
                             WebRTCConfig(ice_servers=ice, max_peers=max_peers), on_error=daemon.fail_threadsafe)
        self._control_slots = asyncio.Semaphore(MAX_ACTIVE_CONTROL)


    # --- guards -------------------------------------------------------------------------------------------------
    def _authed(self, request: web.Request) -> bool:
        if not self.token:
            return True
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("X-Streamer-Token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _check(self, request: web.Request) -> web.Response | None:
        if not self._authed(request):
            return _json(error_reply("missing or wrong token"), 401)
        origin = request.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != request.host:
            return _json(error_reply("cross-origin requests are not accepted"), 403)
        if request.content_type != "application/json":
            return _json(error_reply("Content-Type must be application/json"), 415)
        return None

    # --- handlers ----------------------------------------------------------------------------------------------
    async def offer(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        raw = await _read_body(request, MAX_OFFER_BYTES)
        if raw is None:
            return _json(error_reply(f"offer too large (limit {MAX_OFFER_BYTES} bytes)"), 413)
        try:
            body = json.loads(raw)
            sdp, type_ = body["sdp"], body.get("type", "offer")
            if not isinstance(sdp, str) or not isinstance(type_, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _json(error_reply('expected {"sdp": "...", "type": "offer"}'), 400)
        try:
            ans = await self.hub.answer(sdp, type_, remote=request.remote or "")
        except OfferError as e:
            return _json(error_reply(str(e)), e.status)
        return _json(ans)

    async def control(self, request: web.Request) -> web.Response:
        if (bad := self._check(request)) is not None:
            return bad
        raw = await _read_body(request, MAX_FRAME_BYTES)  # as the ZMQ socket: parse_request reports the 64 KiB limit
        if raw is None:
            return _json(error_reply(f"request too large (limit {MAX_MESSAGE_BYTES} bytes)"), 413)
        async with self._control_slots:
            reply = await answer_control(self.daemon.handle, raw)
        return _json(reply)

    async def webrtc_config(self, request: web.Request) -> web.Response:
        servers = ice_servers_json(self.hub.config.ice_servers)
        if not self._authed(request):  # no TURN credentials without the token
            servers = [s for s in servers if "credential" not in s]
        return _json({"iceServers": servers, "token_required": bool(self.token)})

    async def viewer_js(self, request: web.Request) -> web.StreamResponse:
        path = CLIENTS_DIR / "viewer.js"
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "text/javascript; charset=utf-8",
                                               "Cache-Control": "no-cache"})

    def routes(self) -> list:
        return [web.post("/offer", self.offer), web.post("/control", self.control),
                web.get("/webrtc", self.webrtc_config), web.get("/viewer.js", self.viewer_js)]

    def status(self) -> dict:
        s = self.daemon.status()
        s["webrtc"] = self.hub.stats()
        return s

    async def close(self) -> None:
        await self.hub.close()
