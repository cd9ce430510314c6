"""WebRTC viewers: aiortc peers fed with the daemon's already-encoded H.264 packets (no per-peer re-encode).

hub.py (offers, peers, their monitor), track.py (the paced passthrough track), pacing.py (pure pacing logic),
vp8.py (the shared fallback transcoder), ice.py (ICE servers and SDP helpers); aiortc's and aioice's private
API is used only through transports/compat/.
"""
from ..compat.aioice import restrict_host_addresses
from .hub import Peer, WebRTCConfig, WebRTCHub
from .ice import OfferError, ice_servers_json, offered_video_codecs, parse_ice_servers, strip_mdns_candidates
from .pacing import PacketPacer
from .track import VIDEO_CLOCK, PacedPacketTrack
from .vp8 import Vp8Transcoder

__all__ = ["OfferError", "PacedPacketTrack", "PacketPacer", "Peer", "VIDEO_CLOCK", "Vp8Transcoder", "WebRTCConfig",
           "WebRTCHub", "ice_servers_json", "offered_video_codecs", "parse_ice_servers", "restrict_host_addresses",
           "strip_mdns_candidates"]
