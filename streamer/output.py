"""Encode once, fan out: the encoder thread turns each block's RGB frames into H.264 packets for every consumer,
and the stdout writers (MPEG-TS from the packets, or raw Y4M from the frames).
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time

import numpy as np

from common import faults
from common.errors import ComponentFailed
from transports.encoder import H264Encoder
from transports.fanout import FanOut
from transports.mpegts import stdout_writer
from transports.video_format import VideoFormat
from transports.y4m import stdout_y4m

log = logging.getLogger("streamer.output")

MAX_BACKLOG = 8  # blocks waiting for the encoder before the oldest is dropped


def _run(part: str, fn, *args):
    """fn(*args), any failure re-raised as ComponentFailed(part) (a closed stdout pipe worded as such)."""
    try:
        faults.point(part)
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        if part == "stdout" and isinstance(e, OSError):
            e = OSError(f"the reader of standard output went away ({e})")
        raise ComponentFailed(part, e) from e


class EncoderThread:
    """One encoder thread. `put(frames, block, epoch)` never blocks the caller.

    on_published(block, frames, epoch): after a block's packets went to every consumer; on_error(component, exc): the
    thread failed ("encoder", "fan-out" or "stdout" for the raw Y4M sink) and has stopped. Both are called on the
    encoder thread."""

    def __init__(self, fmt: VideoFormat, fanout: FanOut, keyframe_interval_s: float = 2.0,
                 crf: int = 23, preset: str = "veryfast", prefer_hw: bool = False, raw_sink=None,
                 on_published=None, on_error=None):
        self.enc = H264Encoder(fmt.width, fmt.height, fmt.fps, keyframe_interval_s=keyframe_interval_s, crf=crf,
                               preset=preset, prefer_hw=prefer_hw)
        self.fanout = fanout
        self.raw_sink = raw_sink  # callable(frames) for y4m output, or None
        self.on_published = on_published
        self.on_error = on_error
        self.q: queue.Queue = queue.Queue(maxsize=MAX_BACKLOG)
        self.dropped_blocks = 0
        self.frames_out = 0
        self.blocks_out = 0
        self.encode_ms = 0.0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="encoder", daemon=True)
        self._thread.start()

    def put(self, frames: np.ndarray, block: int, epoch: int) -> None:
        """Queue a block for encoding. If MAX_BACKLOG blocks already wait (the encoder cannot keep up), the oldest
        is dropped: the stream skips ahead (from a keyframe) rather than grow without bound or stall the caller."""
        while True:
            try:
                self.q.put_nowait((frames, block, epoch))
                return
            except queue.Full:
                try:
                    old = self.q.get_nowait()
                except queue.Empty:
                    continue
                if old is None:  # closing: keep the end marker, drop this block instead
                    self.q.put_nowait(None)
                    return
                self.dropped_blocks += 1
                self.enc.request_keyframe()
                log.warning("encoder %d blocks behind: dropped block %d (%d dropped so far)", MAX_BACKLOG, old[1],
                            self.dropped_blocks)

    def request_keyframe(self) -> None:
        """The next frame encoded is a keyframe (a new consumer, a viewer's PLI); any thread."""
        self.enc.request_keyframe()

    def stats(self) -> dict:
        return {"codec": self.enc.codec_name, "backlog_blocks": self.backlog(), "encode_ms": round(self.encode_ms, 2),
                "dropped_blocks": self.dropped_blocks, "bytes": self.enc.bytes_out}

    def backlog(self) -> int:
        return self.q.qsize()

    def _loop(self):
        try:
            while True:
                item = self.q.get()
                if item is None:
                    break
                frames, block, epoch = item
                t0 = time.perf_counter()
                if self.raw_sink is not None:
                    _run("stdout", self.raw_sink, frames)
                packets = _run("encoder", self.enc.encode, frames, block, epoch)
                _run("fan-out", self.fanout.publish_many, packets)
                self.encode_ms = (time.perf_counter() - t0) * 1e3
                self.frames_out += len(frames)
                self.blocks_out += 1
                if self.on_published is not None:
                    self.on_published(block, len(frames), epoch)
            _run("fan-out", self.fanout.publish_many, _run("encoder", self.enc.flush))
        except ComponentFailed as f:
            self.error = str(f)
            log.debug("%s", f, exc_info=True)
            if self.on_error is not None:
                self.on_error(f.component, f.cause)

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.q.put(None, timeout=timeout)
        except queue.Full:  # a hung encoder: nothing more will be flushed anyway
            return
        self._thread.join(timeout)


class StdoutTs:
    """Writes the shared packets as MPEG-TS to standard output on its own thread; finalised on close().
    on_error("stdout", exc) when writing fails (the reader went away, a muxer error)."""

    def __init__(self, fmt: VideoFormat, fanout: FanOut, on_error=None):
        self.sub = fanout.subscribe(maxsize=4096, name="stdout")
        self.writer = stdout_writer(fmt.width, fmt.height, fmt.fps)
        self.packets = 0
        self.on_error = on_error
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stdout-ts", daemon=True)
        self._thread.start()

    def _loop(self):
        try:
            while True:
                pkt = self.sub.get(timeout=0.2)
                if pkt is None:
                    if self._stop.is_set() or self.sub.closed:
                        break
                    continue
                _run("stdout", self.writer.write, pkt)
                self.packets += 1
        except ComponentFailed as f:
            self._failed(f)
        finally:
            try:  # the trailer; once the reader has gone, PyAV raises its own error (a RuntimeError) for it
                self.writer.close()
            except Exception as e:  # noqa: BLE001
                if self.error is None:  # else already reported: the close failed for the same reason
                    self._failed(ComponentFailed("stdout", e))

    def _failed(self, f: ComponentFailed) -> None:
        self.error = str(f)
        if self.on_error is not None:
            self.on_error(f.component, f.cause)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.sub.close()
        try:
            sys.stdout.buffer.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass


def y4m_sink(fmt: VideoFormat):
    w = stdout_y4m(fmt.width, fmt.height, fmt.fps)
    return w.write_frames
