"""An analytic (not learned) classifier for toy-world video, meant to score generated clips.

Per clip:
- background: the most common colour (mode of a coarse 8x8x8 colour histogram, refined by a median), named by
  the nearest vocabulary background;
- shape pixels: pass 1 keeps pixels far from the background (distance > a noise-adaptive threshold), whose
  interior median gives the shape colour (nearest vocabulary colour); pass 2 projects every pixel onto the
  background->colour axis (an estimate of coverage alpha) and keeps alpha > 0.5, then a 4-neighbour opening on the
  torus removes isolated noise pixels;
- per frame, the shape is located on the torus: the mask's column/row occupancy is cut in the largest empty gap
  and the heaviest occupied run is kept, so a shape straddling an edge is measured whole (and stray blobs are
  ignored). Area, centroid and fill ratio (area / bounding-box area) follow;
- shape type from the median fill ratio over visible frames: triangle ~ 1/2, circle ~ pi/4, square ~ 1
  (thresholds TRIANGLE_MAX, CIRCLE_MAX);
- direction from the mean centroid displacement between consecutive visible frames, each delta unwrapped modulo
  the frame size (so speeds must stay below half the frame per frame).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.toyworld.world import BACKGROUNDS, COLOURS, DIRECTIONS, Scene

TRIANGLE_MAX = 0.70  # fill ratio below: triangle (ideal 0.5)
CIRCLE_MAX = 0.89  # fill ratio below: circle (ideal 0.785); above: square (ideal 1.0)
BOX_MIN_FRAC = 0.12  # rows/columns with fewer pixels (relative to the fullest) don't count towards the bounding box
MIN_AREA_FRAC = 0.001  # a frame's shape must cover at least this fraction of the frame (and >= 4 px) to be visible
PASS1_MIN, PASS1_MAX = 40.0, 90.0  # clip range of the noise-adaptive "far from background" distance

_COL_NAMES = list(COLOURS)
_COL_RGB = np.array([COLOURS[k] for k in _COL_NAMES], dtype=np.float64)
_BG_NAMES = list(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[k] for k in _BG_NAMES], dtype=np.float64)


@dataclass
class Prediction:
    colour: str | None
    shape: str | None
    background: str
    direction: str | None
    visible: list[bool]
    centroids: list[tuple[float, float] | None]  # (y, x) in pixel coordinates, None where not visible
    areas: list[float]  # shape pixels per frame (0 where not visible)
    fills: list[float | None] = field(default_factory=list)  # area / bounding-box area per frame
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    colour_rgb: tuple[float, float, float] | None = None
    velocity: tuple[float, float] | None = None  # mean (dy, dx) per frame

    def scene(self) -> Scene | None:
        if None in (self.colour, self.shape, self.direction):
            return None
        return Scene(self.colour, self.shape, self.direction, self.background)


def _nearest(rgb, table, names) -> str:
    return names[int(np.argmin(((table - np.asarray(rgb, dtype=np.float64)) ** 2).sum(1)))]


def _median_u8(v: np.ndarray) -> float:
    """Median of non-negative integers < 256 (lower median), by histogram."""
    c = np.cumsum(np.bincount(v, minlength=256))
    return float(np.searchsorted(c, (c[-1] + 1) // 2))


def _background(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """Most common colour of the clip, and a robust per-channel noise estimate (MAD) around it."""
    px = frames.reshape(-1, 3)
    px = px[:: max(1, len(px) // 16384)]  # a strided subsample is plenty for a mode and a median
    q = (px >> 5).astype(np.int64)
    codes = (q[:, 0] << 6) | (q[:, 1] << 3) | q[:, 2]
    sel = px[codes == int(np.argmax(np.bincount(codes, minlength=512)))]
    bg = np.array([_median_u8(sel[:, i]) for i in range(3)])
    dev = px.astype(np.int32) - bg.astype(np.int32)
    near = px[(dev * dev).sum(1) < 60 ** 2]  # refine over a window wider than one histogram bin
    bg = np.array([_median_u8(near[:, i]) for i in range(3)])
    ad = np.abs(near.astype(np.int32) - bg.astype(np.int32)).ravel()
    noise = 1.4826 * _median_u8(ad)
    return bg, noise


def _open(mask: np.ndarray) -> np.ndarray:
    """4-neighbour opening of [T, H, W] masks on the torus."""
    e = mask & np.roll(mask, 1, 1) & np.roll(mask, -1, 1) & np.roll(mask, 1, 2) & np.roll(mask, -1, 2)
    return e | np.roll(e, 1, 1) | np.roll(e, -1, 1) | np.roll(e, 1, 2) | np.roll(e, -1, 2)


def _dilate(mask: np.ndarray) -> np.ndarray:
    return mask | np.roll(mask, 1, -2) | np.roll(mask, -1, -2) | np.roll(mask, 1, -1) | np.roll(mask, -1, -1)


def _erode(mask: np.ndarray) -> np.ndarray:
    return mask & np.roll(mask, 1, -2) & np.roll(mask, -1, -2) & np.roll(mask, 1, -1) & np.roll(mask, -1, -1)


def _main_run(counts: np.ndarray) -> tuple[int, int]:
    """(start, length) of the circular run of nonzero entries with the largest total; cut in an empty entry."""
    n = len(counts)
    empty = np.flatnonzero(counts == 0)
    if len(empty) == 0:
        return int(np.argmin(counts)), n  # spans the whole axis: nothing to unwrap
    k = int(empty[0])  # roll an empty entry to the front, so no run wraps
    p = np.roll(counts, -k)
    occ = np.concatenate([[0], (p > 0).astype(np.int8), [0]])
    d = np.diff(occ)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    cs = np.concatenate([[0], np.cumsum(p)])
    best = int(np.argmax(cs[ends] - cs[starts]))
    return (int(starts[best]) + k) % n, int(ends[best] - starts[best])


def _measure(mask: np.ndarray) -> tuple[float, tuple[float, float], float]:
    """Area, centroid (y, x) and fill ratio of the main blob of one [H, W] mask, on the torus."""
    h, w = mask.shape
    x0, nx = _main_run(mask.sum(0))
    cols = (x0 + np.arange(nx)) % w
    sub = mask[:, cols]
    y0, ny = _main_run(sub.sum(1))
    rows = (y0 + np.arange(ny)) % h
    sub = sub[rows]
    area = float(sub.sum())
    # bounding box over rows/columns holding at least 2 pixels (and 12% of the fullest): a noise pixel stuck to an
    # edge must not grow the box
    rc, cc = sub.sum(1), sub.sum(0)
    ry = np.flatnonzero(rc >= max(2.0, BOX_MIN_FRAC * rc.max()))
    rx = np.flatnonzero(cc >= max(2.0, BOX_MIN_FRAC * cc.max()))
    if len(ry) and len(rx):
        box = sub[ry[0]:ry[-1] + 1, rx[0]:rx[-1] + 1]
        fill = float(box.sum()) / box.size
    else:  # a sliver: no meaningful box
        fill = 1.0
    yy, xx = np.nonzero(sub)
    cy = (y0 + yy.mean() + 0.5) % h
    cx = (x0 + xx.mean() + 0.5) % w
    return area, (float(cy), float(cx)), fill


def _wrap(d: np.ndarray, n: float) -> np.ndarray:
    return np.mod(d + n / 2.0, n) - n / 2.0


def shape_of_fill(fill: float) -> str:
    if fill < TRIANGLE_MAX:
        return "triangle"
    return "circle" if fill < CIRCLE_MAX else "square"


def classify_frames(frames: np.ndarray) -> Prediction:
    """Classify a clip uint8 [T, H, W, 3] (a single frame [H, W, 3] is accepted; direction is then None)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    T, H, W, _ = frames.shape
    bg, noise = _background(frames)
    background = _nearest(bg, _BG_RGB, _BG_NAMES)
    f = frames.astype(np.float32) - bg.astype(np.float32)
    dist = np.sqrt((f * f).sum(-1))
    thr1 = float(np.clip(6.0 * noise * np.sqrt(3.0), PASS1_MIN, PASS1_MAX))
    m1 = _open(dist > thr1)
    min_area = max(4.0, MIN_AREA_FRAC * H * W)
    none = Prediction(None, None, background, None, [False] * T, [None] * T, [0.0] * T, [None] * T,
                      tuple(float(v) for v in bg))
    if m1.sum() < min_area:
        return none
    core = _erode(m1)
    sel = core if core.sum() >= min_area else m1
    rgb = np.median(frames[sel].astype(np.float64), axis=0)
    colour = _nearest(rgb, _COL_RGB, _COL_NAMES)
    axis = (rgb - bg).astype(np.float32)
    alpha = (f @ axis) / float(axis @ axis)  # coverage estimate along background -> colour
    raw = alpha > 0.5
    # drop isolated noise with an opening, then give back raw pixels within 2 px of what survived (the opening
    # also eats sharp corners such as a triangle's apex, which would bias the fill ratio)
    grown = _dilate(_dilate(_open(raw)))
    mask = raw & grown
    visible, cents, areas, fills = [], [], [], []
    for t in range(T):
        m = mask[t]
        if m.sum() < min_area:
            visible.append(False), cents.append(None), areas.append(0.0), fills.append(None)
            continue
        a, c, fl = _measure(m)
        ok = a >= min_area
        visible.append(ok), cents.append(c if ok else None), areas.append(a if ok else 0.0)
        fills.append(fl if ok else None)
    if not any(visible):
        return none
    shape = shape_of_fill(float(np.median([fl for fl in fills if fl is not None])))
    direction, velocity = None, None
    deltas = [(_wrap(cents[t + 1][0] - cents[t][0], H), _wrap(cents[t + 1][1] - cents[t][1], W))
              for t in range(T - 1) if visible[t] and visible[t + 1]]
    if deltas:
        vy, vx = (float(v) for v in np.mean(deltas, axis=0))
        velocity = (vy, vx)
        if max(abs(vy), abs(vx)) > 0.0:
            step = (int(np.sign(vy)), 0) if abs(vy) > abs(vx) else (0, int(np.sign(vx)))
            direction = next(k for k, v in DIRECTIONS.items() if v == step)
    return Prediction(colour, shape, background, direction, visible, cents, areas, fills,
                      tuple(float(v) for v in bg), tuple(float(v) for v in rgb), velocity)


def classify_block(frames: np.ndarray, expected: Scene | str | None = None) -> dict:
    """Flat summary of `classify_frames` for benchmarks. With `expected` (a Scene or a prompt), adds per-attribute
    correctness under "correct" and "all_correct"."""
    p = classify_frames(frames)
    out = {"colour": p.colour, "shape": p.shape, "background": p.background, "direction": p.direction,
           "visible_frac": float(np.mean(p.visible)), "velocity": p.velocity,
           "fill": float(np.median([f for f in p.fills if f is not None])) if any(p.visible) else None}
    if expected is not None:
        if isinstance(expected, str):
            from pipeline.toyworld.world import parse_prompt
            expected = parse_prompt(expected)
        correct = {k: out[k] == getattr(expected, k) for k in ("colour", "shape", "background", "direction")}
        out["correct"] = correct
        out["all_correct"] = all(correct.values())
    return out


def smoothness(frames: np.ndarray) -> dict:
    """Temporal consistency of the shape: max/mean centroid jump (px, unwrapped on the torus) between consecutive
    visible frames, area coefficient of variation over visible frames, and the visible fraction."""
    p = classify_frames(frames)
    frames = np.asarray(frames)
    H, W = frames.shape[-3], frames.shape[-2]
    jumps = [float(np.hypot(_wrap(b[0] - a[0], H), _wrap(b[1] - a[1], W)))
             for a, b, va, vb in zip(p.centroids, p.centroids[1:], p.visible, p.visible[1:]) if va and vb]
    areas = np.array([a for a, v in zip(p.areas, p.visible) if v])
    return {"max_jump": max(jumps) if jumps else None, "mean_jump": float(np.mean(jumps)) if jumps else None,
            "area_cv": float(areas.std() / areas.mean()) if len(areas) else None,
            "visible_frac": float(np.mean(p.visible))}
