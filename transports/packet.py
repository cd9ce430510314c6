"""EncodedPacket: one H.264 access unit, the unit the fan-out distributes."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class EncodedPacket:
    """One encoded video frame.

    ``data`` is an H.264 Annex-B access unit. Keyframes are IDR frames with
    SPS/PPS in front, so any keyframe is a valid entry point for a decoder.
    ``pts`` is the frame index; the time base is ``1 / fps``.
    """

    data: bytes
    pts: int
    fps: Fraction
    keyframe: bool
    block: int
    epoch: int
    width: int
    height: int

    @property
    def time_base(self) -> Fraction:
        return 1 / Fraction(self.fps)

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)

    def header(self) -> dict:
        """JSON-able description (the ``video.h264`` topic header)."""
        fps = Fraction(self.fps)
        return {
            "pts": int(self.pts),
            "keyframe": bool(self.keyframe),
            "block": int(self.block),
            "epoch": int(self.epoch),
            "width": int(self.width),
            "height": int(self.height),
            "fps": int(fps) if fps.denominator == 1 else float(fps),
            "fps_num": fps.numerator,
            "fps_den": fps.denominator,
        }
