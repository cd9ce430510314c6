"""Pure metric functions of the quality benchmark (numpy only; no model, no engine).

A *record* is one emitted block's score: {"index": int, "correct": {attr: bool}, "all_correct": bool, ...}, as
built by `benchmarks/quality.py` from `classify_block(frames, expected=block_prompt)`.
"""
from __future__ import annotations

import numpy as np

from pipeline.toyworld.world import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES

ATTRS = ("colour", "shape", "direction", "background")
# Accuracy of a classifier that guesses uniformly (what a model ignoring its prompt scores in expectation).
CHANCE = {"colour": 1 / len(COLOURS), "shape": 1 / len(SHAPES), "direction": 1 / len(DIRECTIONS),
          "background": 1 / len(BACKGROUNDS)}
CHANCE["all"] = float(np.prod(list(CHANCE.values())))


def accuracy(records, warmup: int = 0) -> dict:
    """Per-attribute and all-four accuracy over the records with index >= warmup (None where there are none)."""
    rs = [r for r in records if r["index"] >= warmup]
    out = {a: (float(np.mean([r["correct"][a] for r in rs])) if rs else None) for a in ATTRS}
    out["all"] = float(np.mean([r["all_correct"] for r in rs])) if rs else None
    out["n"] = len(rs)
    return out


def seam_stats(blocks, period: int | None = 4) -> dict:
    """Mean absolute frame-to-frame change (0..255) across block boundaries (last frame of a block -> first of the
    next) and within blocks; ratio = boundary / within (1.0: a cut between blocks is invisible).

    A Wan VAE decodes each latent frame into `period` (4) video frames, and the change between two latent frames'
    frames is larger than inside one (the VAE's own temporal rhythm, there without any streaming: RESULTS §9,
    session 10). A block boundary is always such a latent boundary, so `ratio` is above 1 even for a seamless
    stream. `latent_ratio` compares like with like: the boundary change against the change at the latent boundaries
    inside blocks (a block's frames end on a latent, so its transitions t -> t+1 with (len - 1 - t) % period == 0);
    None where blocks have no latent boundary inside (blocks of one latent frame) or no period is given."""
    def mad(a, b):
        return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())

    within = [mad(f[t], f[t + 1]) for f in blocks for t in range(len(f) - 1)]
    boundary = [mad(a[-1], b[0]) for a, b in zip(blocks, blocks[1:])]
    inner = ([mad(f[t], f[t + 1]) for f in blocks for t in range(len(f) - 1) if (len(f) - 1 - t) % period == 0]
             if period else [])
    w = float(np.mean(within)) if within else None
    b = float(np.mean(boundary)) if boundary else None
    li = float(np.mean(inner)) if inner else None

    def ratio(num, den):
        return None if num is None or den is None else (num / den if den > 0 else (1.0 if num == 0 else float("inf")))
    return {"boundary_mad": b, "within_mad": w, "ratio": ratio(b, w), "boundaries": len(boundary),
            "latent_boundary_mad": li, "latent_ratio": ratio(b, li)}


def latency(hits: dict, first_block: int, consecutive: int = 2) -> int | None:
    """Blocks from `first_block` until the new prompt is recognised in `consecutive` consecutive blocks:
    the smallest d >= 0 with hits[first_block + d + j] true for j < consecutive (0: recognised at the acknowledged
    block itself). `hits` maps block index -> all-four correct; None if that never happens in the blocks given."""
    last = max(hits, default=-1)
    for b in range(first_block, last - consecutive + 2):
        if all(hits.get(b + j, False) for j in range(consecutive)):
            return b - first_block
    return None


def latency_summary(runs: list[dict]) -> dict:
    """Over changes each with a "latency_blocks" (None: never clean): how many, how many never clean, the median and
    the largest latency of the others, and the fraction of all clean within one block."""
    got = [r["latency_blocks"] for r in runs if r["latency_blocks"] is not None]
    return {"n": len(runs), "not_reached": len(runs) - len(got),
            "median": float(np.median(got)) if got else None, "max": max(got) if got else None,
            "within_1": sum(x <= 1 for x in got) / len(runs) if runs else None}


def drift(records, window: int, warmup: int = 0, at: int = 100) -> dict:
    """All-four accuracy over the first `window` steady-state blocks vs the `window` blocks centred on block `at`.
    A run too short to reach `at` compares with its last `window` blocks instead (reached_at = False)."""
    rs = sorted((r for r in records if r["index"] >= warmup), key=lambda r: r["index"])
    early = rs[:window]
    lo = max(warmup, at - window // 2)
    late = [r for r in rs if lo <= r["index"] < lo + window]
    reached = len(late) == window
    if not reached:
        late = rs[-window:]

    def acc(x):
        return float(np.mean([r["all_correct"] for r in x])) if x else None

    def span(x):
        return [x[0]["index"], x[-1]["index"]] if x else None

    e, lt = acc(early), acc(late)
    return {"early": e, "late": lt, "delta": None if e is None or lt is None else lt - e,
            "early_blocks": span(early), "late_blocks": span(late), "reached_at": reached, "at": at}


def smoothness_summary(per_block) -> dict:
    """Aggregate smoothness() results of several blocks: means of visible fraction / max jump / area CV, and the
    worst (largest) max jump. Blocks where a value is None (shape not visible) are left out of that value."""
    def vals(k):
        return [s[k] for s in per_block if s.get(k) is not None]

    out = {}
    for k in ("visible_frac", "max_jump", "area_cv"):
        v = vals(k)
        out[f"mean_{k}"] = float(np.mean(v)) if v else None
    mj = vals("max_jump")
    out["worst_max_jump"] = float(max(mj)) if mj else None
    out["n"] = len(per_block)
    return out
