"""One shared H.264 → VP8 transcoder for browsers without H.264 (decode once, encode VP8 once, its own fan-out),
running only while such viewers exist."""
from __future__ import annotations

import logging
import threading
from fractions import Fraction
from typing import Callable

import av

from ..fanout import FanOut, Subscription
from ..packet import EncodedPacket

log = logging.getLogger(__name__)


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
