"""ICE and SDP for the WebRTC viewers: STUN/TURN servers from the options, and the SDP helpers the hub uses
(mDNS candidates dropped, codecs both sides can use, our codec preference).

ICE uses host candidates only unless STUN/TURN servers are configured (aiortc's default Google STUN is never used);
which local addresses give host candidates is `transports.compat.aioice.restrict_host_addresses`.
"""
from __future__ import annotations

import re
from typing import Sequence

from aiortc import RTCIceServer, RTCRtpSender
from aiortc.sdp import SessionDescription

from ..compat.aiortc import common_codecs


class OfferError(ValueError):
    """An offer that cannot be answered; `status` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


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


MAX_MEDIA = 8  # m= sections an offer may have (the page sends a video and a data channel)


def offered_video_codecs(sdp: str) -> list[str]:
    """Names of the video codecs both the offer and aiortc can use (for H.264: packetization mode 1, the
    baseline profiles aiortc negotiates), e.g. ['VP8', 'H264']. Raises OfferError unless the SDP is an offer we can
    answer: it parses, has at most MAX_MEDIA sections, exactly one video section that receives (recvonly or
    sendrecv), and every section carries ICE credentials and a DTLS fingerprint."""
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as e:  # aiortc raises assorted errors on malformed SDP
        raise OfferError(f"cannot parse the SDP offer: {type(e).__name__}: {str(e)[:200]}") from None
    if not desc.media or len(desc.media) > MAX_MEDIA:
        raise OfferError(f"the offer must have 1 to {MAX_MEDIA} media sections, it has {len(desc.media)}")
    video = [m for m in desc.media if m.kind == "video"]
    if len(video) != 1:
        raise OfferError(f"the offer must have exactly one video section, it has {len(video)}")
    if video[0].direction not in ("recvonly", "sendrecv"):
        raise OfferError(f"the video section must receive (recvonly or sendrecv), not {video[0].direction}")
    for m in desc.media:
        ice, dtls = m.ice, m.dtls
        if not (ice and ice.usernameFragment and ice.password):
            raise OfferError(f"the {m.kind} section has no ICE credentials (a=ice-ufrag / a=ice-pwd)")
        if not (dtls and dtls.fingerprints):
            raise OfferError(f"the {m.kind} section has no DTLS fingerprint (a=fingerprint)")
    return [c.name.upper() for c in common_codecs(video[0].rtp.codecs)]


def codec_prefs(name: str):
    caps = RTCRtpSender.getCapabilities("video").codecs
    wanted = [c for c in caps if c.mimeType.lower() == f"video/{name.lower()}"]
    return wanted + [c for c in caps if c.mimeType.lower() == "video/rtx"]
