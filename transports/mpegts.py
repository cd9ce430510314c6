"""MpegTsWriter: mux EncodedPackets (stream copy) into MPEG-TS (or mp4) with PyAV.

Not thread-safe: drive one writer from one thread (or one asyncio task).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable

import av

from .encoder import as_fraction
from .stdio import stdout_write
from .packet import EncodedPacket


class _WriteOnly:
    """Non-seekable file-like object that forwards writes to a callback."""

    def __init__(self, write_fn: Callable[[bytes], object]):
        self._write_fn = write_fn

    def write(self, b) -> int:
        self._write_fn(bytes(b))
        return len(b)


class MpegTsWriter:
    """``write(pkt)`` muxes one EncodedPacket; ``close()`` writes the trailer.

    Output starts at the first keyframe (earlier packets are dropped) and
    timestamps are rebased so the output starts at 0 (``rebase=False`` keeps
    the encoder's frame index). ``write_fn`` gets the muxed bytes as they are
    produced (the muxer flushes after every packet for low latency).
    """

    def __init__(self, write_fn: Callable[[bytes], object] | None, width: int, height: int, fps,
                 format: str = "mpegts", rebase: bool = True, *, path: str | None = None,
                 options: dict | None = None, silent_audio: bool = False):
        """path: a file or a URL (rtmp://, srt://, ...) with FFmpeg `options` for it; silent_audio: add a silent
        AAC track (some ingest servers insist on audio)."""
        self.width, self.height = int(width), int(height)
        self.fps: Fraction = as_fraction(fps)
        self.format = format
        self.rebase = rebase
        self._offset: int | None = None
        self._last_dts: int | None = None
        self._closed = False
        self.packets = 0
        self.skipped = 0
        if path is not None:
            self._container = av.open(path, "w", format=format, options=options or {})
        else:
            if write_fn is None:
                raise ValueError("need write_fn or path")
            opts = {"flush_packets": "1"}
            self._container = av.open(_WriteOnly(write_fn), "w", format=format,
                                      container_options=opts)
        self._stream = self._container.add_mux_stream(
            "h264", rate=self.fps, width=self.width, height=self.height)
        self._stream.time_base = 1 / self.fps
        self._audio = _SilentAac(self._container) if silent_audio else None

    def write(self, pkt: EncodedPacket) -> None:
        if self._closed:
            raise RuntimeError("writer closed")
        if self._offset is None:
            if not pkt.keyframe:
                self.skipped += 1
                return
            self._offset = pkt.pts if self.rebase else 0
        ts = pkt.pts - self._offset
        if self._last_dts is not None and ts <= self._last_dts:
            self.skipped += 1  # out of order / repeated (e.g. encoder restart): drop
            return
        self._last_dts = ts
        p = av.Packet(pkt.data)
        p.stream = self._stream
        p.time_base = pkt.time_base
        p.pts = p.dts = ts
        p.duration = 1
        p.is_keyframe = pkt.keyframe
        self._container.mux(p)
        self.packets += 1
        if self._audio is not None:  # silence up to the end of this frame
            self._audio.until(float((ts + 1) * pkt.time_base))

    def write_many(self, pkts) -> None:
        for p in pkts:
            self.write(p)

    def close(self) -> None:
        """Finalise (trailer) and release the container; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _SilentAac:
    """A silent stereo AAC track: one frame of silence encoded once, muxed again and again at 48 kHz."""

    RATE, SAMPLES = 48_000, 1024

    def __init__(self, container):
        import numpy as np

        self._stream = container.add_stream("aac", rate=self.RATE, layout="stereo")
        enc = self._stream.codec_context
        frame = av.AudioFrame.from_ndarray(np.zeros((2, self.SAMPLES), np.float32), format="fltp", layout="stereo")
        frame.sample_rate = self.RATE
        packets = []
        for pts in range(0, 4 * self.SAMPLES, self.SAMPLES):  # the encoder's priming: keep a steady-state frame
            frame.pts = pts
            packets += enc.encode(frame)
        self._payload = bytes(packets[-1]) if packets else b""
        self._container = container
        self._next = 0  # samples written

    def until(self, seconds: float) -> None:
        while self._payload and self._next / self.RATE < seconds:
            p = av.Packet(self._payload)
            p.stream = self._stream
            p.time_base = Fraction(1, self.RATE)
            p.pts = p.dts = self._next
            p.duration = self.SAMPLES
            self._container.mux(p)
            self._next += self.SAMPLES


def open_file(path: str, width: int, height: int, fps, fmt: str = "mp4") -> MpegTsWriter:
    """A writer on a (seekable) file path, e.g. the mp4 recorder."""
    return MpegTsWriter(None, width, height, fps, format=fmt, path=path)


def stdout_writer(width: int, height: int, fps) -> MpegTsWriter:
    """MPEG-TS to standard output (``--stdout mpegts``)."""
    return MpegTsWriter(stdout_write, width, height, fps)
