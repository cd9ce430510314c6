"""Synthetic video for the transport tests: a smooth moving gradient (compresses well, decodes close)."""
import numpy as np


def moving_gradient(n: int, width: int, height: int, start: int = 0) -> np.ndarray:
    """n RGB frames [n, height, width, 3] uint8; frame t is shifted by t, so consecutive frames differ."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        t = start + i
        out[i, ..., 0] = (x * 255 // width + 3 * t) % 256
        out[i, ..., 1] = (y * 255 // height + 5 * t) % 256
        out[i, ..., 2] = (x + y + 7 * t) % 256
    return out
