"""A procedural video world with a closed vocabulary: one shape, one colour, one direction, one background.

Prompts follow one grammar, "a {colour} {shape} moving {direction} on a {background} background", and
`parse_prompt` is its exact inverse. Motion wraps around the frame edges (the frame is a torus), so a stream
of any length stays in distribution. Rendering is a pure function of (scene, seed, t): frame t is rendered
independently of any other frame, so a clip [t0, t0+n) equals its frames rendered one by one, for any t0.

Pure numpy; no torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Shape colours: saturated and far apart in RGB, and far from every background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 240),
    "yellow": (235, 220, 30),
    "white": (240, 240, 240),
    "magenta": (220, 40, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Unit step (dy, dx) in image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (100, 100, 100),
    "navy": (15, 20, 90),
    "dark green": (10, 70, 25),
}


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    direction: str
    background: str

    def __post_init__(self):
        for name, value, vocab in (("colour", self.colour, COLOURS), ("shape", self.shape, SHAPES),
                                   ("direction", self.direction, DIRECTIONS),
                                   ("background", self.background, BACKGROUNDS)):
            if value not in vocab:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(vocab)}")


def prompt_of(scene: Scene) -> str:
    return f"a {scene.colour} {scene.shape} moving {scene.direction} on a {scene.background} background"


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_PROMPT_RE = re.compile(
    rf"a ({_alt(COLOURS)}) ({_alt(SHAPES)}) moving ({_alt(DIRECTIONS)}) on a ({_alt(BACKGROUNDS)}) background")


def parse_prompt(text: str) -> Scene:
    """Exact inverse of `prompt_of` (surrounding whitespace is ignored); ValueError for anything else."""
    m = _PROMPT_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"not a toy-world prompt: {text!r}; expected 'a <colour> <shape> moving <direction> on a <background> "
            f"background' with colour in {list(COLOURS)}, shape in {list(SHAPES)}, direction in {list(DIRECTIONS)}, "
            f"background in {list(BACKGROUNDS)}")
    return Scene(*m.groups())


def all_scenes() -> list[Scene]:
    return [Scene(c, s, d, b) for c in COLOURS for s in SHAPES for d in DIRECTIONS for b in BACKGROUNDS]


def default_size(height: int, width: int) -> float:
    """Default shape size (circle diameter, square side, triangle base and height): a quarter of the short side."""
    return float(round(0.25 * min(height, width)))


def start_position(seed: int, height: int = 64, width: int = 64) -> tuple[float, float]:
    """Centre (y, x) at t = 0, in pixel coordinates (pixel i covers [i, i+1)). Depends on the seed only, so
    switching attributes mid-stream with the same seed keeps the object where it is."""
    u = np.random.default_rng(int(seed)).random(2)
    return float(u[0] * height), float(u[1] * width)


def centres(scene: Scene, t, height: int = 64, width: int = 64, seed: int = 0, speed_px: float = 2.0,
            start: tuple[float, float] | None = None) -> np.ndarray:
    """Ground-truth centres [len(t), 2] (y, x) of the shape's bounding box at frames t (any integers)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.int64)).astype(np.float64)
    y0, x0 = start_position(seed, height, width) if start is None else start
    dy, dx = DIRECTIONS[scene.direction]
    cy = np.mod(y0 + (dy * speed_px) * t, height)
    cx = np.mod(x0 + (dx * speed_px) * t, width)
    return np.stack([cy, cx], axis=1)


def _sdf(shape: str, oy: np.ndarray, ox: np.ndarray, size: float) -> np.ndarray:
    """Signed distance (approximate near triangle vertices) from the shape; negative inside."""
    h = size / 2
    if shape == "circle":
        return np.sqrt(oy * oy + ox * ox) - h
    if shape == "square":
        return np.maximum(np.abs(oy), np.abs(ox)) - h
    if shape == "triangle":  # isosceles, apex up, base = height = size (fills half its bounding box)
        k = np.float32(1.0 / np.sqrt(5.0))
        side = (2 * np.abs(ox) - (oy + h)) * k
        return np.maximum(side, oy - h)
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, frames: int, height: int = 64, width: int = 64, t0: int = 0, seed: int = 0,
           speed_px: float = 2.0, size_px: float | None = None,
           start: tuple[float, float] | None = None) -> np.ndarray:
    """Frames t0 .. t0+frames-1 as uint8 [frames, height, width, 3], anti-aliased, drawn on the torus (a shape
    straddling an edge reappears on the opposite one). `start` overrides the seed-derived centre at t = 0."""
    size = default_size(height, width) if size_px is None else float(size_px)
    if not 0 < size < min(height, width):
        raise ValueError(f"size_px must be in (0, {min(height, width)}), got {size}")
    c = centres(scene, np.arange(frames, dtype=np.int64) + int(t0), height, width, seed, speed_px, start)
    ys = np.arange(height, dtype=np.float64) + 0.5
    xs = np.arange(width, dtype=np.float64) + 0.5
    # torus offsets of every pixel centre from the shape centre, in [-H/2, H/2) x [-W/2, W/2) (float64 for the
    # wrap, so large t stays exact; float32 for the per-pixel work)
    oy = (np.mod(ys[None, :] - c[:, :1] + height / 2.0, height) - height / 2.0).astype(np.float32)  # [T, H]
    ox = (np.mod(xs[None, :] - c[:, 1:] + width / 2.0, width) - width / 2.0).astype(np.float32)  # [T, W]
    d = _sdf(scene.shape, oy[:, :, None], ox[:, None, :], np.float32(size))
    # pixel coverage (1-px linear ramp across the edge), quantised to 1/255, then a colour lookup table
    level = (np.clip(np.float32(128.0) - np.float32(255.0) * d, 0.0, 255.5)).astype(np.uint8)
    return _lut(scene)[level]


def _lut(scene: Scene) -> np.ndarray:
    a = np.arange(256, dtype=np.float64)[:, None] / 255.0
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64)
    fg = np.asarray(COLOURS[scene.colour], dtype=np.float64)
    return np.rint(bg + a * (fg - bg)).astype(np.uint8)
