"""Standard output as a byte sink for the live stream (``--stdout mpegts|y4m``)."""
from __future__ import annotations

import sys


def stdout_write(b: bytes) -> None:
    """Write and flush at once: a reader downstream (ffmpeg, a player) gets each chunk without delay."""
    out = sys.stdout.buffer
    out.write(b)
    out.flush()
