"""aiortc's private API the WebRTC viewers use (checked for aiortc >=1.10,<1.17):

- `RTCRtpSender._send_keyframe`: aiortc turns a PLI/FIR from the browser into a flag for its own encoder, which
  passthrough packets never use; we route it to the daemon's shared encoder instead (no public hook exists);
- `aiortc.rtcpeerconnection.find_common_codecs` and `aiortc.codecs.CODECS`: which video codecs an offer and aiortc
  can both use, to pick H.264 or the VP8 fallback before answering.
"""
from __future__ import annotations

import inspect
from typing import Callable

import aiortc
from aiortc import RTCRtpSender
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs

from common.versions import check_version

LOWEST, BELOW = "1.10", "1.17"


def route_pli(sender: RTCRtpSender, request_keyframe: Callable[[], None]) -> None:
    """A PLI/FIR received by `sender` calls `request_keyframe` instead of flagging aiortc's own encoder."""
    sender._send_keyframe = request_keyframe


def common_codecs(remote_codecs) -> list:
    """aiortc's video codecs that the remote side offered too (for H.264: packetization mode 1, the baseline
    profiles aiortc negotiates)."""
    return find_common_codecs(CODECS["video"], remote_codecs)


def self_test() -> None:
    """RuntimeError naming what does not match; run once at start."""
    check_version("aiortc", aiortc.__version__, LOWEST, BELOW)
    keyframe = getattr(RTCRtpSender, "_send_keyframe", None)
    if not callable(keyframe) or list(inspect.signature(keyframe).parameters) != ["self"]:
        raise RuntimeError("aiortc: RTCRtpSender._send_keyframe(self) is gone: PLI could not reach the encoder")
    if list(inspect.signature(find_common_codecs).parameters) != ["local_codecs", "remote_codecs"]:
        raise RuntimeError("aiortc: find_common_codecs(local_codecs, remote_codecs) changed")
    if "video" not in CODECS or not any(c.mimeType.lower() == "video/h264" for c in CODECS["video"]):
        raise RuntimeError("aiortc: CODECS['video'] has no H.264")
