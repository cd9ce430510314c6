"""Record the published H.264 stream into an MP4 file, without re-encoding.

Subscribes to `video.h264` ([topic, header_json, Annex-B access unit]; header: pts, keyframe, fps, width,
height, block, ...), waits for the first keyframe, and stream-copies packets into the file. `pts` (and `dts`
if present) count frames at `fps` unless the header carries "time_base" as [num, den] or "num/den".
Timestamps are rebased to start at 0 and kept strictly increasing across daemon restarts.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from fractions import Fraction

import av

from clients.client import ClientTimeout, DEFAULT_PUBLISH, VideoSubscriber

_logger = logging.getLogger(__name__)

TOPIC = b"video.h264"


def _time_base(header: dict) -> Fraction:
    tb = header.get("time_base")
    if isinstance(tb, str) and "/" in tb:
        num, den = tb.split("/", 1)
        return Fraction(int(num), int(den))
    if isinstance(tb, (list, tuple)) and len(tb) == 2:
        return Fraction(int(tb[0]), int(tb[1]))
    fps = Fraction(str(header.get("fps") or 0)).limit_denominator(1_000_000)
    if fps <= 0:
        raise ValueError(f"video header has no usable fps or time_base: {header!r:.200}")
    return 1 / fps


class _Mp4Writer:
    """Opened lazily on the first keyframe, whose in-band SPS/PPS describe the stream."""

    def __init__(self, path: str, keyframe: bytes, header: dict):
        self.time_base = _time_base(header)
        self.size = (header.get("width"), header.get("height"))
        # The raw h264 demuxer parses the first keyframe into codec parameters (size, profile, extradata);
        # a stream made from that template is muxed as-is: no encoder is ever opened.
        self._probe = av.open(io.BytesIO(keyframe), format="h264")
        self._out = av.open(path, "w", format="mp4")
        self._stream = self._out.add_stream_from_template(self._probe.streams.video[0])
        self._stream.time_base = self.time_base
        self._offset: int | None = None
        self._last_dts: int | None = None
        self.frames = 0
        self.last_pts = 0

    def write(self, data: bytes, header: dict) -> None:
        pts = int(header.get("pts", self.last_pts + 1))
        dts = int(header.get("dts", pts))
        if self._offset is None:
            self._offset = -dts
        if self._last_dts is not None and dts + self._offset <= self._last_dts:  # the source restarted
            self._offset = self._last_dts + 1 - dts
        pts, dts = pts + self._offset, dts + self._offset
        packet = av.Packet(data)
        packet.pts = pts
        packet.dts = dts
        packet.duration = 1 if "time_base" not in header else 0
        packet.time_base = self.time_base
        packet.is_keyframe = bool(header.get("keyframe"))
        packet.stream = self._stream
        self._out.mux(packet)  # rebases the packet's timestamps to the muxer's time base
        self._last_dts = dts
        self.last_pts = pts - self._offset
        self.frames += 1

    def media_seconds(self) -> float:
        return 0.0 if self._last_dts is None else float((self._last_dts + 1) * self.time_base)

    def close(self) -> None:
        try:
            self._out.close()  # writes the moov atom: the file is playable from here on
        finally:
            self._probe.close()


def record(path: str, sub_addr: str = DEFAULT_PUBLISH, duration: float | None = None,
           max_blocks: int | None = None, stop_event: threading.Event | None = None,
           wait_timeout: float | None = None, log=_logger.info) -> int:
    """Record until `duration` seconds of video, `max_blocks` blocks (the first may be partial: recording
    starts at a keyframe), `stop_event` set, or Ctrl-C.
    Returns the number of frames written (0: nothing written, no file created).
    Raises ClientTimeout if no keyframe arrives within `wait_timeout` seconds (None: wait forever)."""
    writer: _Mp4Writer | None = None
    blocks: list = []
    started = time.monotonic()
    sub = VideoSubscriber(sub_addr, topics=(TOPIC,))
    try:
        while not (stop_event is not None and stop_event.is_set()):
            msg = sub.recv(timeout=0.2)
            if msg is None:
                if writer is None and wait_timeout is not None and time.monotonic() - started > wait_timeout:
                    raise ClientTimeout(f"no video from {sub_addr} within {wait_timeout:g}s "
                                        "(is the streamer daemon running?)")
                continue
            topic, header, payload = msg
            if topic != TOPIC or not payload:
                continue
            if writer is None:
                if not header.get("keyframe"):
                    continue
                writer = _Mp4Writer(path, payload, header)
                log(f"recording {writer.size[0]}x{writer.size[1]} to {path}")
            elif (header.get("width"), header.get("height")) != writer.size:
                log("video size changed: stopping")
                break
            block = header.get("block")
            if max_blocks is not None and block is not None and block not in blocks:
                if len(blocks) >= max_blocks:
                    break
                blocks.append(block)
            writer.write(payload, header)
            if duration is not None and writer.media_seconds() >= duration:
                break
    except KeyboardInterrupt:
        log("interrupted: finishing the file")
    finally:
        sub.close()
        if writer is not None:
            writer.close()
    return 0 if writer is None else writer.frames
