"""The browser side of the daemon's HTTP server: the viewer page's script, WebRTC offers, the control path, and the
guards every route passes.

    POST /offer      {"sdp": "...", "type": "offer"} → {"sdp": "...", "type": "answer", "peer": ..., "codec": ...}
    POST /control    one control request (JSON, exactly as on the ZMQ socket) → the same reply object
    GET  /webrtc     {"iceServers": [...], "token_required": bool} for the page's RTCPeerConnection
    GET  /viewer.js  the page's script (streamer/page/viewer.js)
    WHEP (draft-ietf-wish-whep; WHIP's HTTP shape, RFC 9725), what the page, OBS, GStreamer and media servers use:
    POST   /whep          application/sdp offer → 201 Created, Location: /whep/<session>, the answer (with every
                          candidate: no trickle)
    DELETE /whep/<session> ends that viewer;  PATCH → 405;  OPTIONS → CORS preflight (Accept-Post)

Guards, on every route: the Host header must name this daemon (loopback names, the bound address, --allowed-hosts;
a guard against DNS rebinding), and an Origin, when sent, the same host. With a token (--token-file,
STREAMER_TOKEN, --token) every route but the page, its script and /webrtc needs it: `Authorization: Bearer
<token>`, `X-Streamer-Token`, or `?token=` (for players that cannot send headers). /control goes through the very
path the ZMQ socket uses (`streamer.control.answer`), so validation, acks and errors are identical; protocol errors
answer 400/413/422 with that JSON body.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from common.netaddr import host_of, is_loopback

from transports.compat import aioice as aioice_compat
from transports.compat import aiortc as aiortc_compat
from transports.webrtc import (OfferError, WebRTCConfig, WebRTCHub, ice_servers_json, parse_ice_servers,
                               restrict_host_addresses)

from .control import answer
from .protocol import MAX_MESSAGE_BYTES, encode_reply, error_reply

log = logging.getLogger("streamer.web")

PAGE_DIR = Path(__file__).resolve().parent / "page"  # the viewer page and its script (package data)
MAX_OFFER_BYTES = 128 * 1024
MAX_ACTIVE_CONTROL = 32
BODY_TIMEOUT = 10.0  # seconds for a request body to arrive (slow uploads hold nothing longer)
PUBLIC_PATHS = frozenset({"/", "/viewer.js", "/webrtc"})  # the page and its script hold no data; /webrtc only
# says whether a token is needed (TURN credentials only with it)


class WebSetupError(OSError):
    """Bad web/WebRTC settings: the daemon reports it as 'cannot start' and exits 2."""


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


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is longer than `limit`; a body that does not arrive within BODY_TIMEOUT
    seconds ends the request (408)."""
    if request.content_length is not None and request.content_length > limit:
        return None

    async def read() -> bytes | None:
        buf = bytearray()
        while chunk := await request.content.read(limit + 1 - len(buf)):
            buf += chunk
            if len(buf) > limit:
                return None
        return bytes(buf)
    try:
        return await asyncio.wait_for(read(), BODY_TIMEOUT)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {BODY_TIMEOUT:g} s\n") from None


def allowed_hosts(http_host: str, extra: str) -> frozenset | None:
    """The names the Host header may carry, or None (any) when serving beyond loopback without --allowed-hosts (the
    token guards that case)."""
    names = {h.strip().lower().strip("[]") for h in (extra or "").split(",") if h.strip()}
    if not names and not is_loopback(http_host):
        return None
    names |= {"localhost", "127.0.0.1", "::1"}
    if http_host and http_host not in ("0.0.0.0", "::"):
        names.add(http_host.strip("[]").lower())
    return frozenset(names)


def _text(msg: str, status: int) -> web.Response:
    return web.Response(status=status, text=msg + "\n")


def _json(obj, status: int = 200) -> web.Response:
    return web.Response(body=encode_reply(obj), status=status, content_type="application/json")


class WebFrontend:
    """Built by the daemon when HTTP is on: the WebRTC hub (which the daemon then holds as an output,
    streamer.sinks.WebRTCSink) and the routes the viewer page uses. It gets what it needs, not the daemon: the
    options, the fan-out and a keyframe request for the hub, the control handler and the status source for its
    routes, and where to report a failure."""

    def __init__(self, opts, http_host: str, fanout, request_keyframe, handle, status, on_error):
        self._handle, self._status = handle, status
        try:  # aiortc's and aioice's private API, as checked: fail closed before serving anything
            aiortc_compat.self_test()
            aioice_compat.self_test()
        except RuntimeError as e:
            raise WebSetupError(str(e)) from None
        self.token = opts.token  # resolved by pipeline.settings: --token, --token-file or $STREAMER_TOKEN
        self.allowed_hosts = allowed_hosts(http_host, opts.allowed_hosts)
        try:
            ice = parse_ice_servers(getattr(opts, "ice_servers", ""), getattr(opts, "ice_username", ""),
                                    getattr(opts, "ice_credential", ""))
        except ValueError as e:
            raise WebSetupError(str(e)) from None
        restrict_host_addresses(resolve_ice_hosts(getattr(opts, "ice_hosts", "auto"), http_host))
        max_peers = int(getattr(opts, "max_viewers", 32))
        if max_peers < 1:
            raise WebSetupError("--max-viewers must be >= 1")
        if not is_loopback(http_host) and not self.token:  # only with --allow-no-token (pipeline.settings)
            log.warning("HTTP is bound to %s without a token: anyone who can reach it can watch and change the "
                        "prompt", http_host or "all interfaces")
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("aioice").setLevel(logging.WARNING)  # one INFO line per ICE check otherwise
        self.hub = WebRTCHub(fanout, request_keyframe, WebRTCConfig(ice_servers=ice, max_peers=max_peers),
                             on_error=on_error)
        self._control_slots = asyncio.Semaphore(MAX_ACTIVE_CONTROL)
        self._whep: dict[str, str] = {}  # WHEP session (unguessable) → the hub's peer id


    # --- guards -------------------------------------------------------------------------------------------------
    def _authed(self, request: web.Request) -> bool:
        if not self.token:
            return True
        auth = request.headers.get("Authorization", "")
        given = (auth[7:].strip() if auth[:7].lower() == "bearer " else
                 request.headers.get("X-Streamer-Token") or request.query.get("token", ""))
        return hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def guard(self, request: web.Request, handler):
        """Host, Origin and token, before any handler runs."""
        if self.allowed_hosts is not None and host_of(request.host) not in self.allowed_hosts:
            return _json(error_reply(f"Host {request.host[:80]!r} is not served here (see --allowed-hosts)"), 421)
        origin = request.headers.get("Origin")
        whep = request.path == "/whep" or request.path.startswith("/whep/")
        if origin is not None:
            netloc = urlsplit(origin).netloc
            if not (whep and self._cors_allowed(netloc)) and (
                    netloc != request.host or
                    (self.allowed_hosts is not None and host_of(netloc) not in self.allowed_hosts)):
                return _json(error_reply("cross-origin requests are not accepted"), 403)
        preflight = whep and request.method == "OPTIONS"
        if request.path not in PUBLIC_PATHS and not preflight and not self._authed(request):
            return _json(error_reply("missing or wrong token"), 401)
        response = await handler(request)
        if whep and origin is not None:
            response.headers.update(self._cors_headers(origin))
        return response

    def _cors_allowed(self, netloc: str) -> bool:
        """WHEP players on another origin: allowed when the token guards WHEP, or the origin's host is one this
        daemon answers to (loopback names, the bound address, --allowed-hosts)."""
        return bool(self.token) or self.allowed_hosts is None or host_of(netloc) in self.allowed_hosts

    @staticmethod
    def _cors_headers(origin: str) -> dict:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Methods": "OPTIONS, POST, DELETE, PATCH",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Expose-Headers": "Location, Accept-Post"}

    def _json_post(self, request: web.Request) -> web.Response | None:
        if request.content_type != "application/json":
            return _json(error_reply("Content-Type must be application/json"), 415)
        return None

    # --- handlers ----------------------------------------------------------------------------------------------
    async def offer(self, request: web.Request) -> web.Response:
        if (bad := self._json_post(request)) is not None:
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
        if (bad := self._json_post(request)) is not None:
            return bad
        raw = await _read_body(request, MAX_MESSAGE_BYTES)
        if raw is None:
            return _json(error_reply(f"request too large (limit {MAX_MESSAGE_BYTES} bytes)"), 413)
        async with self._control_slots:
            reply, status = await answer(self._handle, raw, client=f"http:{request.remote}")
        return _json(reply, status)

    async def webrtc_config(self, request: web.Request) -> web.Response:
        servers = ice_servers_json(self.hub.config.ice_servers)
        if not self._authed(request):  # no TURN credentials without the token
            servers = [s for s in servers if "credential" not in s]
        return _json({"iceServers": servers, "token_required": bool(self.token)})

    async def viewer_js(self, request: web.Request) -> web.StreamResponse:
        path = PAGE_DIR / "viewer.js"
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "text/javascript; charset=utf-8",
                                               "Cache-Control": "no-cache"})

    # --- WHEP ---------------------------------------------------------------------------------------------------
    async def whep_post(self, request: web.Request) -> web.Response:
        if request.content_type != "application/sdp":
            return _text("Content-Type must be application/sdp", 415)
        raw = await _read_body(request, MAX_OFFER_BYTES)
        if raw is None:
            return _text(f"offer too large (limit {MAX_OFFER_BYTES} bytes)", 413)
        try:
            sdp = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _text("the offer is not UTF-8", 400)
        try:
            ans = await self.hub.answer(sdp, "offer", remote=request.remote or "")
        except OfferError as e:
            return _text(str(e), e.status)
        session = secrets.token_urlsafe(12)
        self._whep = {k: v for k, v in self._whep.items() if v in self.hub.peers}  # peers that left on their own
        self._whep[session] = ans["peer"]
        return web.Response(status=201, body=ans["sdp"].encode(),
                            headers={"Content-Type": "application/sdp", "Location": f"/whep/{session}",
                                     "X-Streamer-Peer": ans["peer"], "X-Streamer-Codec": ans["codec"]})

    async def whep_delete(self, request: web.Request) -> web.Response:
        peer_id = self._whep.pop(request.match_info["session"], None)
        peer = self.hub.peers.get(peer_id) if peer_id else None
        if peer is None:
            return _text("no such WHEP session", 404)
        await self.hub.drop(peer, "whep delete")
        return _text("ended", 200)

    async def whep_patch(self, request: web.Request) -> web.Response:
        return web.Response(status=405, text="trickle ICE is not supported: the answer carries every candidate\n",
                            headers={"Allow": "DELETE"})

    async def whep_options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": "application/sdp", "Allow": "OPTIONS, POST"})

    def routes(self) -> list:
        return [web.post("/offer", self.offer), web.post("/control", self.control),
                web.get("/webrtc", self.webrtc_config), web.get("/viewer.js", self.viewer_js),
                web.post("/whep", self.whep_post), web.options("/whep", self.whep_options),
                web.delete("/whep/{session}", self.whep_delete), web.patch("/whep/{session}", self.whep_patch),
                web.options("/whep/{session}", self.whep_options)]

    def status(self) -> dict:
        return self._status()  # the daemon's, WebRTC figures included (streamer.sinks)

    async def close(self) -> None:
        """The hub is closed as an output (streamer.sinks.WebRTCSink); closing it again is harmless."""
        await self.hub.close()
