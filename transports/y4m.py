"""Y4MWriter: raw RGB frames -> YUV4MPEG2 (4:2:0, BT.601 limited range: Y4M cannot
signal a colour matrix and readers such as ffmpeg assume BT.601).

Not thread-safe: drive one writer from one thread.
"""
from __future__ import annotations

from typing import Callable

import av
import numpy as np

from .encoder import as_fraction
from .stdio import stdout_write


class Y4MWriter:
    def __init__(self, write_fn: Callable[[bytes], object], width: int, height: int, fps):
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"width/height must be positive and even, got {width}x{height}")
        self._write = write_fn
        self.width, self.height = int(width), int(height)
        self.fps = as_fraction(fps)
        self.frames = 0
        self._header_done = False

    def _header(self) -> bytes:
        return (f"YUV4MPEG2 W{self.width} H{self.height} "
                f"F{self.fps.numerator}:{self.fps.denominator} Ip A1:1 C420jpeg "
                f"XYSCSS=420JPEG XCOLORRANGE=LIMITED\n").encode()

    def _i420(self, rgb: np.ndarray) -> bytes:
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        vf = vf.reformat(format="yuv420p")
        out = bytearray()
        for plane, (w, h) in zip(vf.planes, ((self.width, self.height),
                                            (self.width // 2, self.height // 2),
                                            (self.width // 2, self.height // 2))):
            arr = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w]
            out += arr.tobytes()
        return bytes(out)

    def write_frames(self, frames) -> None:
        """Write RGB uint8 frames [T,H,W,3] (or one [H,W,3])."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) \
                or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 [T,{self.height},{self.width},3], "
                             f"got {frames.dtype} {frames.shape}")
        chunks = [] if self._header_done else [self._header()]
        self._header_done = True
        for rgb in frames:
            chunks.append(b"FRAME\n")
            chunks.append(self._i420(rgb))
            self.frames += 1
        self._write(b"".join(chunks))


def stdout_y4m(width: int, height: int, fps) -> Y4MWriter:
    """Y4M to standard output (``--stdout y4m``)."""
    return Y4MWriter(stdout_write, width, height, fps)
