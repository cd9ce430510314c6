"""H264Encoder: RGB frame blocks -> H.264 Annex-B EncodedPackets (encode once).

Threading: drive ``encode``/``flush`` from one thread (the daemon's encoder
thread). ``request_keyframe`` may be called from any thread.
"""
from __future__ import annotations

import logging
import threading
from fractions import Fraction

import av
import numpy as np

from .packet import EncodedPacket

log = logging.getLogger(__name__)

NVENC = "h264_nvenc"
X264 = "libx264"


def as_fraction(fps) -> Fraction:
    """fps as a Fraction (floats such as 29.97 are approximated sensibly)."""
    if isinstance(fps, (Fraction, int)):
        f = Fraction(fps)
    else:
        f = Fraction(float(fps)).limit_denominator(1001)
    if f <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return f


class H264Encoder:
    """One H.264 encoder: zerolatency, no B-frames, IDR at least every
    ``keyframe_interval_s``, SPS/PPS repeated before every IDR, Annex-B."""

    def __init__(self, width: int, height: int, fps, keyframe_interval_s: float = 2.0,
                 crf: int = 23, preset: str = "veryfast", codec: str | None = None,
                 prefer_hw: bool = False, threads: int = 0):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"width/height must be positive and even, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.fps = as_fraction(fps)
        self.gop = max(1, round(float(keyframe_interval_s * self.fps)))
        self.crf, self.preset, self.threads = crf, preset, threads
        wanted = codec or (NVENC if prefer_hw else X264)
        self._ctx = None
        if wanted != X264:
            try:
                self._ctx = self._open(wanted)
            except Exception as e:  # no GPU, no driver, no NVENC unit (e.g. H100)...
                log.warning("encoder %s unavailable (%s); falling back to libx264", wanted, e)
        if self._ctx is None:
            self._ctx = self._open(X264)
        self.codec_name = self._ctx.name
        self._lock = threading.Lock()
        self._force_key = True  # first frame is an IDR anyway; keep it explicit
        self._next_pts = 0
        self._tags: dict[int, tuple[int, int]] = {}  # pts -> (block, epoch)
        self._flushed = False
        self.frames_in = 0
        self.packets_out = 0
        self.keyframes_out = 0
        self.bytes_out = 0

    def _open(self, name: str):
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = 1 / self.fps
        ctx.framerate = self.fps
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        if self.threads:
            ctx.thread_count = self.threads
        if name == X264:
            ctx.options = {
                "preset": self.preset,
                "tune": "zerolatency",
                "crf": str(self.crf),
                "forced-idr": "1",
                "x264-params": (f"keyint={self.gop}:scenecut=0:bframes=0:repeat-headers=1:"
                                "colorprim=bt709:transfer=bt709:colormatrix=bt709"),
            }
        else:  # NVENC: in-band SPS/PPS are repeated when no global header is asked for
            preset = self.preset if self.preset.startswith("p") else "p3"
            ctx.options = {"preset": preset, "tune": "ull", "zerolatency": "1",
                           "forced-idr": "1", "bf": "0", "rc": "vbr", "cq": str(self.crf)}
        ctx.open()
        return ctx

    def request_keyframe(self) -> None:
        """Make the next encoded frame an IDR (any thread)."""
        self._force_key = True

    def encode(self, frames, block: int = 0, epoch: int = 0) -> list[EncodedPacket]:
        """Encode RGB uint8 frames [T,H,W,3] (or a list of [H,W,3]); returns the
        packets produced (one per frame with zerolatency)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected [T,{self.height},{self.width},3] frames, got {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {frames.dtype}")
        out: list[EncodedPacket] = []
        with self._lock:
            if self._flushed:
                raise RuntimeError("encoder already flushed")
            for rgb in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                vf = vf.reformat(format="yuv420p", dst_colorspace="ITU709")
                vf.pts = self._next_pts
                if self._force_key:
                    self._force_key = False
                    vf.pict_type = av.video.frame.PictureType.I
                self._tags[self._next_pts] = (block, epoch)
                self._next_pts += 1
                self.frames_in += 1
                out.extend(self._wrap(self._ctx.encode(vf)))
        return out

    def flush(self) -> list[EncodedPacket]:
        """Drain the encoder; it cannot encode afterwards."""
        with self._lock:
            if self._flushed:
                return []
            self._flushed = True
            return self._wrap(self._ctx.encode(None))

    def _wrap(self, packets) -> list[EncodedPacket]:
        res = []
        for p in packets:
            pts = int(p.pts)
            block, epoch = self._tags.pop(pts, (-1, -1))
            ep = EncodedPacket(data=bytes(p), pts=pts, fps=self.fps, keyframe=bool(p.is_keyframe),
                               block=block, epoch=epoch, width=self.width, height=self.height)
            self.packets_out += 1
            self.keyframes_out += ep.keyframe
            self.bytes_out += len(ep.data)
            res.append(ep)
        return res
