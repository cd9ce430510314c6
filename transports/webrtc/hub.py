"""All WebRTC viewers of one daemon: answers offers, one `PacedPacketTrack` per peer fed from the shared packets,
keyframe requests merged for the shared encoder, and a monitor that drops peers that never connect or stall."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from common import faults

from ..compat.aiortc import route_pli
from ..fanout import FanOut
from ..packet import EncodedPacket
from .ice import OfferError, codec_prefs, offered_video_codecs, strip_mdns_candidates
from .track import PacedPacketTrack
from .vp8 import Vp8Transcoder

log = logging.getLogger(__name__)


@dataclass
class WebRTCConfig:
    ice_servers: list[RTCIceServer] = field(default_factory=list)  # [] = host candidates only
    max_peers: int = 32
    queue_size: int = 512  # packets per peer before it is restarted at a keyframe
    max_lag: float = 1.0  # seconds behind before skipping to the newest keyframe
    connect_timeout: float = 8.0  # offer → connected; a peer that never connects frees its slot after this
    max_pending_per_client: int = 4  # offers from one address not yet connected
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
            raise OfferError(f"too many viewers (limit {self.config.max_peers})", 429)  # a 4xx: the client may retry
        pending = sum(1 for p in self.peers.values() if p.remote == remote and p.connected_at is None)
        if remote and pending >= self.config.max_pending_per_client:
            raise OfferError(f"too many offers from {remote} not yet connected (limit "
                             f"{self.config.max_pending_per_client})", 429)
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
            tr.setCodecPreferences(codec_prefs(codec))
            route_pli(tr.sender, track.request_keyframe)

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
