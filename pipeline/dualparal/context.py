"""Which earlier frames a block's window sees (pure logic, computed alike on every rank).

A block of B latent frames sees, before its own frames:
- up to C *context* frames: the last C frames before it in the stream, possibly spanning several earlier blocks
  (C may exceed B), but never reaching back past the first block of its shot (the stream's start or a cut);
- optionally K *sink* frames: the first K frames of its shot, kept for the whole shot (the long-video trick of
  StreamingLLM, LongLive and StreamDiffusionV2), but only once they are no longer among the context frames.
After its own frames it sees the first min(C, B) frames of its successor (the feature cache), if that is in flight.

Without --reuse-context the context frames enter as tokens (their latents as of the start of the tick); with it,
context and sink frames enter as the keys/values that their blocks' own forwards cached (`pipeline.dualparal.attention`).
Rotary positions are local to the window: sink frames first, then the context frames, the block, the successor.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ContextPlan:
    frames: int  # context frames before the block (0: none)
    sources: tuple[tuple[int, int], ...]  # (block, frames taken from the end of that block), oldest first
    sink: int  # sink frames taken from the start of the shot's first block (0: none)
    shot: int  # the shot's first block

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(b for b, _ in self.sources)


def plan_context(block: int, shot: int, block_frames: int, context_frames: int, sink_frames: int = 0) -> ContextPlan:
    """The context of `block`, whose shot starts at block `shot` (<= block)."""
    if shot > block or shot < 0:
        raise ValueError(f"block {block} cannot belong to a shot starting at block {shot}")
    b = block_frames
    n = min(context_frames, (block - shot) * b)
    sources, left, j = [], n, 1
    while left > 0:
        take = min(left, b)
        sources.append((block - j, take))
        left -= take
        j += 1
    # sinks only where the shot's first frames are not already among the context frames
    sink = sink_frames if sink_frames and block * b - n >= shot * b + sink_frames else 0
    return ContextPlan(n, tuple(reversed(sources)), sink, shot)


def tail_frames(block_frames: int, context_frames: int) -> int:
    """Frames at the end of each block that a later block may use as context (and at its start, as a successor's)."""
    return min(block_frames, context_frames)


def blocks_back(block_frames: int, context_frames: int) -> int:
    """How many earlier blocks the context can reach into."""
    return -(-context_frames // block_frames) if context_frames else 0
