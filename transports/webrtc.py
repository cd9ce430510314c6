"""WebRTC viewers: aiortc peers fed with the daemon's already-encoded H.264 packets (no per-peer re-encode).

Each viewer gets a `PacedPacketTrack`: its own fan-out subscription (so it starts at a keyframe, and the daemon
forces one when it joins), a pump that timestamps arrivals, and a `Pacer` that releases packets against the wall
clock by their pts (the engine runs up to ~2 s ahead and delivers a block at a time). `recv()` returns `av.Packet`s
with pts in the 90 kHz RTP clock; aiortc packetizes them as they are (H.264 passthrough). A peer that falls more
than ~1 s behind skips to the newest queued keyframe; a PLI/FIR from the browser asks the daemon's encoder for a
keyframe (rate-limited, the encoder is shared).

Browsers without H.264 get VP8 from one shared `Vp8Transcoder` (decode once, encode VP8 once, its own fan-out),
which runs only while such viewers exist.

ICE: host candidates only unless STUN/TURN servers are configured (aiortc's default Google STUN is never used);
`restrict_host_addresses` limits the host candidates to given addresses (aioice skips 127.0.0.1 on its own).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Sequence

import av
from aiortc import (RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from common import faults

from .fanout import FanOut, Subscription
from .packet import EncodedPacket

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)


class OfferError(ValueError):
    """An offer that cannot be answered; `status` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- ICE configuration ----------------------------------------------------------------------------------------

_host_addresses: list[str] | None = None
_orig_get_host_addresses = None


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _host_addresses is None:
        return _orig_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in _host_addresses if (use_ipv6 if ":" in a else use_ipv4)]


def restrict_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather host candidates on these local addresses only (None: aioice's default, every interface but
    loopback). Process-wide: aioice offers no per-connection setting."""
    global _host_addresses, _orig_get_host_addresses
    import aioice.ice

    if _orig_get_host_addresses is None:
        _orig_get_host_addresses = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _get_host_addresses
    _host_addresses = None if addresses is None else [str(a) for a in addresses]


def parse_ice_servers(spec: str | Sequence[str], username: str = "", credential: str = "") -> list[RTCIceServer]:
    """'stun:host:port,turn:host:port?transport=udp' → RTCIceServers (the TURN ones get username/credential).
    An empty spec gives [] — host candidates only, nothing outside is contacted."""
    urls = [u.strip() for u in (spec.split(",") if isinstance(spec, str) else spec) if u and u.strip()]
    servers = []
    for url in urls:
        scheme = url.split(":", 1)[0].lower()
        if scheme not in ("stun", "stuns", "turn", "turns") or ":" not in url:
            raise ValueError(f"ICE server {url!r}: must be stun:HOST[:PORT] or turn:HOST[:PORT][?transport=udp|tcp]")
        if scheme.startswith("turn"):
            if not username or not credential:
                raise ValueError(f"TURN server {url!r} needs a username and a credential")
            servers.append(RTCIceServer(urls=url, username=username, credential=credential))
        else:
            servers.append(RTCIceServer(urls=url))
    return servers


def ice_servers_json(servers: Sequence[RTCIceServer]) -> list[dict]:
    """The RTCIceServer list as the browser's RTCPeerConnection wants it."""
    out = []
    for s in servers:
        d: dict = {"urls": s.urls}
        if s.username:
            d["username"] = s.username
        if s.credential:
            d["credential"] = s.credential
        out.append(d)
    return out


_CANDIDATE_RE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ", re.I)


def strip_mdns_candidates(sdp: str) -> str:
    """Drop candidates whose address is an mDNS name (`<uuid>.local`): browsers hide their host addresses that
    way, and resolving them needs multicast. The browser still reaches us through our candidates (aioice learns
    its address as a peer-reflexive candidate)."""
    lines = sdp.splitlines(keepends=True)
    kept = [ln for ln in lines if not ((m := _CANDIDATE_RE.match(ln)) and m.group(1).lower().endswith(".local"))]
    return "".join(kept)


def offered_video_codecs(sdp: str) -> list[str]:
    """Names of the video codecs both the offer and aiortc can use (for H.264: packetization mode 1, the
    baseline profiles aiortc negotiates), e.g. ['VP8', 'H264']. Raises OfferError on unparsable SDP."""
    from aiortc.codecs import CODECS
    from aiortc.rtcpeerconnection import find_common_codecs

    try:
        desc = SessionDescription.parse(sdp)
    except Exception as e:  # aiortc raises assorted errors on malformed SDP
        raise OfferError(f"cannot parse the SDP offer: {type(e).__name__}: {str(e)[:200]}") from None
    names = []
    for m in desc.media:
        if m.kind == "video":
            names += [c.name.upper() for c in find_common_codecs(CODECS["video"], m.rtp.codecs)]
    return names


def _codec_prefs(name: str):
    caps = RTCRtpSender.getCapabilities("video").codecs
    wanted = [c for c in caps if c.mimeType.lower() == f"video/{name.lower()}"]
    return wanted + [c for c in caps if c.mimeType.lower() == "video/rtx"]


# --- pacing -----------------------------------------------------------------------------------------------------

class Pacer:
    """When to send each packet, as pure logic over explicit times (seconds, monotonic).

    A packet with media time t is due at ``offset + t``. The offset is set by the first packet (due on arrival) and
    only moves later when a packet arrives after its due time (the engine stalled, e.g. a `cut` refill or a pause).
    `feasible()` is the smallest offset that would have kept every packet of the recent window on time; when the
    current offset is more than `max_lag` above it, or a packet is released more than `max_lag` late, the peer is
    behind and should skip to its newest queued keyframe.
    """

    def __init__(self, max_lag: float = 1.0, tolerance: float = 0.03, window: float = 4.0):
        self.max_lag, self.tolerance, self.window = max_lag, tolerance, window
        self.offset: float | None = None
        self._recent: deque[tuple[float, float]] = deque()  # (arrival, arrival - media_t)
        self.reanchors = 0

    def arrived(self, media_t: float, arrival: float) -> None:
        self._recent.append((arrival, arrival - media_t))
        while self._recent and self._recent[0][0] < arrival - self.window:
            self._recent.popleft()

    def feasible(self) -> float | None:
        return max((a for _, a in self._recent), default=None)

    def due(self, media_t: float, arrival: float) -> float:
        """Due time of the packet at the head of the queue (moves the offset if it arrived late)."""
        if self.offset is None:
            self.offset = arrival - media_t
        elif arrival > self.offset + media_t + self.tolerance:
            self.offset = arrival - media_t
            self.reanchors += 1
        return self.offset + media_t

    def behind(self, media_t: float, now: float) -> bool:
        if self.offset is None:
            return False
        if now - (self.offset + media_t) > self.max_lag:
            return True
        f = self.feasible()
        return f is not None and self.offset - f > self.max_lag

    def restart(self, media_t: float, now: float) -> None:
        """Make the packet with media time `media_t` due now."""
        self.offset = now - media_t


# --- the track ----------------------------------------------------------------------------------------------------

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
        self.pacer = Pacer(max_lag=max_lag)
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


# --- VP8 fallback -------------------------------------------------------------------------------------------------

class Vp8Transcoder:
    """One shared H.264 → VP8 transcoder for browsers without H.264: decodes the daemon's packets once and encodes
    VP8 once into its own fan-out. Runs (a thread) only while it has subscribers."""

    def __init__(self, source: FanOut, request_source_keyframe: Callable[[], None], bitrate: int = 1_500_000,
                 keyframe_interval_s: float = 2.0, on_error: Callable[[BaseException], None] | None = None):
        self.source = source
        self.on_error = on_error
        self.request_source_keyframe = request_source_keyframe
        self.bitrate, self.keyframe_interval_s = bitrate, keyframe_interval_s
        self.fanout = FanOut(on_subscribe=lambda sub: self.request_keyframe())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._src: Subscription | None = None
        self._force_key = True
        self.frames = 0
        self.error: str | None = None

    def request_keyframe(self) -> None:
        self._force_key = True

    def subscribe(self, maxsize: int = 512, name: str = "") -> Subscription:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._src = self.source.subscribe(maxsize=1024, name="vp8-transcoder")
                self._thread = threading.Thread(target=self._loop, args=(self._src,), name="vp8", daemon=True)
                self._thread.start()
        return self.fanout.subscribe(maxsize=maxsize, name=name)

    def unsubscribe(self, sub: Subscription) -> None:
        self.fanout.unsubscribe(sub)
        with self._lock:
            if not self.fanout.subscribers and self._src is not None:
                self.source.unsubscribe(self._src)  # ends the thread
                self._src = None
                self._thread = None

    def close(self) -> None:
        with self._lock:
            if self._src is not None:
                self.source.unsubscribe(self._src)
                self._src = None
        self.fanout.close()

    def _loop(self, src: Subscription) -> None:
        dec = av.CodecContext.create("h264", "r")
        enc = None
        try:
            while True:
                pkt = src.get(timeout=0.5)
                if pkt is None:
                    if src.closed:
                        break
                    continue
                for frame in dec.decode(av.Packet(pkt.data)):
                    if enc is None:
                        enc = self._open(frame.width, frame.height, pkt.fps)
                    key = self._force_key or pkt.keyframe
                    self._force_key = False
                    frame.pts = pkt.pts
                    frame.time_base = 1 / Fraction(pkt.fps)
                    frame.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
                    for p in enc.encode(frame):
                        self.frames += 1
                        self.fanout.publish(EncodedPacket(
                            data=bytes(p), pts=pkt.pts, fps=pkt.fps, keyframe=bool(p.is_keyframe), block=pkt.block,
                            epoch=pkt.epoch, width=frame.width, height=frame.height))
        except Exception as e:  # noqa: BLE001
            self.error = f"VP8 transcoder failed: {type(e).__name__}: {e}"
            log.debug("VP8 transcoder failed", exc_info=True)
            if self.on_error is not None:
                self.on_error(RuntimeError(self.error))

    def _open(self, width: int, height: int, fps):
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height = width, height
        enc.pix_fmt = "yuv420p"
        enc.time_base = 1 / Fraction(fps)
        enc.framerate = Fraction(fps)
        enc.bit_rate = self.bitrate
        enc.gop_size = max(1, round(self.keyframe_interval_s * float(fps)))
        enc.thread_count = 1
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1",
                       "auto-alt-ref": "0"}
        enc.open()
        return enc


# --- peers --------------------------------------------------------------------------------------------------------

@dataclass
class WebRTCConfig:
    ice_servers: list[RTCIceServer] = field(default_factory=list)  # [] = host candidates only
    max_peers: int = 32
    queue_size: int = 512  # packets per peer before it is restarted at a keyframe
    max_lag: float = 1.0  # seconds behind before skipping to the newest keyframe
    connect_timeout: float = 20.0  # offer → connected
    stall_timeout: float = 10.0  # packets waiting but not pulled for this long → drop the peer
    keyframe_min_interval: float = 0.5  # PLI/FIR → encoder keyframe, at most this often (shared encoder)
    meta_interval: float = 0.5  # per-peer metadata messages on the "meta" data channel


class Peer:
    _ids = itertools.count(1)

    def __init__(self, pc: RTCPeerConnection, codec: str, remote: str = ""):
        self.id = f"p{next(self._ids)}"
        self.pc = pc
        self.codec = codec
        self.remote = remote
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.track: PacedPacketTrack | None = None
        self.channel = None  # the browser's "meta" data channel, when it opened one
        self.closing = False
        self.reason = ""
        self._last_meta = 0.0
        self._last_block = None

    def stats(self) -> dict:
        t = self.track
        return {"id": self.id, "codec": self.codec, "state": self.pc.connectionState, "remote": self.remote,
                "age_s": round(time.monotonic() - self.created, 1),
                "sent": t.sent if t else 0, "skipped": t.skipped if t else 0, "queued": t.queued() if t else 0,
                "overflows": t.overflows if t else 0, "reanchors": t.pacer.reanchors if t else 0,
                "lag_ms": round(t.lag_ms, 1) if t else None}


class WebRTCHub:
    """All WebRTC viewers of one daemon. `answer(sdp, type)` → answer dict; `close()` on shutdown."""

    def __init__(self, fanout: FanOut, request_keyframe: Callable[[], None], config: WebRTCConfig | None = None,
                 on_error: Callable[[str, BaseException], None] | None = None):
        """on_error("webrtc", exc), from any thread: a loop of the hub (the peer monitor, a track's pump, the VP8
        transcoder) failed; the caller ends the daemon."""
        self.fanout = fanout
        self.config = config or WebRTCConfig()
        self._request_keyframe = request_keyframe
        self._last_keyframe_request = 0.0
        self.on_error = on_error
        self.peers: dict[str, Peer] = {}
        self.vp8 = Vp8Transcoder(fanout, self.request_keyframe, on_error=self._failed)
        self.total = 0
        self.dropped: dict[str, int] = {}
        self._monitor: asyncio.Task | None = None
        self._closed = False
        self._tasks: set[asyncio.Task] = set()

    def _failed(self, exc: BaseException) -> None:
        if self.on_error is None:
            log.error("webrtc: %s: %s", type(exc).__name__, exc)
        else:
            self.on_error("webrtc", exc)

    def _watch_task(self, task: asyncio.Task) -> None:
        """Done callback of the hub's long-running tasks: anything but a cancel is a failure."""
        if not task.cancelled() and task.exception() is not None:
            self._failed(task.exception())

    # keyframes: the encoder is shared, so PLIs from any number of peers become one request per interval
    def request_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._last_keyframe_request >= self.config.keyframe_min_interval:
            self._last_keyframe_request = now
            self._request_keyframe()

    async def answer(self, sdp: str, type_: str = "offer", remote: str = "") -> dict:
        if self._closed:
            raise OfferError("shutting down", 503)
        if type_ != "offer":
            raise OfferError(f"expected an SDP of type 'offer', got {str(type_)[:20]!r}")
        if not isinstance(sdp, str) or "m=video" not in sdp:
            raise OfferError("the offer has no video section (add a recvonly video transceiver)")
        if len(self.peers) >= self.config.max_peers:
            raise OfferError(f"too many viewers (limit {self.config.max_peers})", 503)
        sdp = strip_mdns_candidates(sdp)
        codecs = offered_video_codecs(sdp)
        if "H264" in codecs:
            codec = "H264"
        elif "VP8" in codecs:
            codec = "VP8"
        else:
            raise OfferError("no common video codec: we send H.264 (packetization-mode=1, baseline profile "
                             "signalling), or VP8 as a fallback")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.config.ice_servers)))
        peer = Peer(pc, codec, remote)
        source = self.fanout if codec == "H264" else self.vp8
        keyframe = self.request_keyframe if codec == "H264" else self.vp8.request_keyframe

        def subscribe():
            return source.subscribe(maxsize=self.config.queue_size, name=f"webrtc:{peer.id}")

        unsubscribe = source.unsubscribe
        track = PacedPacketTrack(subscribe, unsubscribe, keyframe, name=f"webrtc:{peer.id}",
                                 queue_size=self.config.queue_size, max_lag=self.config.max_lag,
                                 on_release=lambda pkt, info: self._meta(peer, pkt, info),
                                 on_pump_done=self._watch_task)
        peer.track = track
        self.peers[peer.id] = peer
        self.total += 1
        try:
            # a transceiver made before the offer is applied carries our codec preference into the answer
            tr = pc.addTransceiver(track, direction="sendonly")
            tr.setCodecPreferences(_codec_prefs(codec))
            self._hook_pli(tr.sender, track)

            @pc.on("connectionstatechange")
            async def _state():
                st = pc.connectionState
                log.info("webrtc %s: %s", peer.id, st)
                if st == "connected" and peer.connected_at is None:
                    peer.connected_at = time.monotonic()
                elif st in ("failed", "closed"):
                    await self.drop(peer, st)

            @pc.on("datachannel")
            def _channel(ch):
                if ch.label == "meta":
                    peer.channel = ch

                    @ch.on("message")
                    def _msg(msg):
                        if msg == "bye":
                            self._spawn(self.drop(peer, "bye"))

            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except OfferError:
            await self.drop(peer, "bad offer")
            raise
        except Exception as e:  # noqa: BLE001 - aiortc rejects bad SDP with assorted exceptions
            await self.drop(peer, "bad offer")
            raise OfferError(f"cannot answer the offer: {type(e).__name__}: {str(e)[:200]}") from None
        if self._monitor is None:
            self._monitor = asyncio.ensure_future(self._watch())
            self._monitor.add_done_callback(self._watch_task)
        log.info("webrtc %s: new viewer (%s) from %s, %d connected", peer.id, codec, remote or "?", len(self.peers))
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "peer": peer.id, "codec": codec}

    def _hook_pli(self, sender, track: PacedPacketTrack) -> None:
        # aiortc turns PLI/FIR into a flag for its own encoder, which passthrough packets never use: route it to
        # the shared encoder instead (aiortc has no public hook for this).
        if hasattr(sender, "_send_keyframe"):
            sender._send_keyframe = track.request_keyframe
        else:
            log.warning("aiortc has no RTCRtpSender._send_keyframe; PLI will not force keyframes")

    def _meta(self, peer: Peer, pkt: EncodedPacket, info: dict) -> None:
        ch = peer.channel
        if ch is None or ch.readyState != "open":
            return
        now = time.monotonic()
        if pkt.block == peer._last_block and now - peer._last_meta < self.config.meta_interval:
            return
        peer._last_meta, peer._last_block = now, pkt.block
        ch.send(json.dumps({"type": "frame", "block": pkt.block, "epoch": pkt.epoch, "pts": pkt.pts,
                            "keyframe": pkt.keyframe, "codec": peer.codec, "peer": peer.id, **info}))

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def drop(self, peer: Peer, reason: str) -> None:
        """Close one peer and release its subscription; the others are not touched."""
        if peer.closing:
            return
        peer.closing = True
        peer.reason = reason
        self.peers.pop(peer.id, None)
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if peer.track is not None:
            peer.track.stop()
        try:
            await asyncio.wait_for(peer.pc.close(), 5.0)
        except Exception:  # noqa: BLE001 - a peer's teardown must not disturb the others
            log.debug("closing peer %s failed", peer.id, exc_info=True)
        log.info("webrtc %s: dropped (%s), %d left", peer.id, reason, len(self.peers))

    async def _watch(self) -> None:
        cfg = self.config
        while not self._closed:
            await asyncio.sleep(1.0)
            faults.point("webrtc")
            now = time.monotonic()
            for peer in list(self.peers.values()):
                if peer.closing:
                    continue
                st = peer.pc.connectionState
                if st in ("failed", "closed"):
                    self._spawn(self.drop(peer, st))
                elif peer.connected_at is None and now - peer.created > cfg.connect_timeout:
                    self._spawn(self.drop(peer, "connect timeout"))
                elif peer.track is not None and peer.track.queued() and now - peer.track.last_pull > cfg.stall_timeout:
                    self._spawn(self.drop(peer, "stalled"))

    def stats(self) -> dict:
        return {"viewers": len(self.peers), "total": self.total, "dropped": dict(self.dropped),
                "vp8_transcoder": bool(self.vp8.fanout.subscribers), "peers": [p.stats() for p in self.peers.values()]}

    async def close(self) -> None:
        self._closed = True
        if self._monitor is not None:
            self._monitor.cancel()
        await asyncio.gather(*(self.drop(p, "shutdown") for p in list(self.peers.values())), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        self.vp8.close()
