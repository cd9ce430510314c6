"""The block queue as pure logic: which block is at which step each tick, in which order blocks are
processed, which neighbours give context, and which blocks finish.

Semantics (DESIGN.md §1–2, made exact):
- A tick first lets one new block enter at the tail (if fewer than S blocks are in flight), then advances every
  block in flight by one denoising step, processed tail → head (noisiest first), then the blocks that have had
  S steps leave at the head, in index order.
- Block b's forward sees the previous block b-1's latents *as of the start of the tick* (b-1 is processed after b
  within a tick, or has already left the queue) and the subsequent-context K/V of b+1 computed earlier in the same
  tick, if b+1 is in flight. Neither depends on message timing, so the output does not depend on the number of ranks.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    """One block forward of a tick."""

    block: int  # stream index of the block
    step: int  # denoising step index, 0 .. S-1
    prev: int | None  # block whose last C frames are prepended (None for the stream's first block)
    succ: int | None  # block whose first-C-frame K/V (computed just before, this tick) are appended


@dataclass
class _Slot:
    block: int
    done: int  # steps done


class BlockQueue:
    def __init__(self, steps: int, first_block: int = 0):
        if steps < 1:
            raise ValueError("steps must be >= 1")
        self.steps = steps
        self._q: list[_Slot] = []  # head (cleanest) first
        self.next_enter = first_block
        self.tick = 0

    # --- state -----------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._q)

    @property
    def head(self) -> int:
        """Index of the next block to be emitted."""
        return self._q[0].block if self._q else self.next_enter

    def blocks(self) -> list[tuple[int, int]]:
        """(block, steps done) head first."""
        return [(s.block, s.done) for s in self._q]

    def steps_done(self, block: int) -> int:
        for s in self._q:
            if s.block == block:
                return s.done
        raise KeyError(block)

    # --- transitions -----------------------------------------------------------------------------------
    def flush_from(self, block: int) -> list[int]:
        """Drop every block >= `block` from the queue; it re-enters next. Returns the dropped indices."""
        dropped = [s.block for s in self._q if s.block >= block]
        self._q = [s for s in self._q if s.block < block]
        self.next_enter = min(self.next_enter, block)
        return dropped

    def preload(self, block: int, done: int) -> None:
        """Append a block that has already had `done` steps (benchmarks start in steady state)."""
        if self._q and (block != self._q[-1].block + 1 or done >= self._q[-1].done):
            raise ValueError("preloaded blocks must be consecutive, noisier towards the tail")
        self._q.append(_Slot(block, done))
        self.next_enter = block + 1

    def enter(self) -> int | None:
        """Let the next block enter at the tail if there is room. Returns its index or None."""
        if len(self._q) >= self.steps:
            return None
        b = self.next_enter
        self._q.append(_Slot(b, 0))
        self.next_enter = b + 1
        return b

    def plan(self) -> list[Work]:
        """The forwards of this tick, in processing order (tail → head)."""
        out = []
        for i in range(len(self._q) - 1, -1, -1):
            s = self._q[i]
            succ = self._q[i + 1].block if i + 1 < len(self._q) and self._q[i + 1].block == s.block + 1 else None
            prev = s.block - 1 if s.block > 0 else None
            out.append(Work(block=s.block, step=s.done, prev=prev, succ=succ))
        return out

    def advance(self) -> list[int]:
        """Every block in flight has had one more step; return (and drop) the finished ones, head first."""
        for s in self._q:
            s.done += 1
        done = [s.block for s in self._q if s.done >= self.steps]
        self._q = [s for s in self._q if s.done < self.steps]
        self.tick += 1
        return done

    def next_boundary(self) -> tuple[int, int]:
        """(head, next_enter) as they will be at the start of the next tick, given the current tick's plan.

        Valid after `enter()` of the current tick: the head leaves at the end of this tick if it is on its last step.
        """
        rest = [s for s in self._q if s.done + 1 < self.steps]
        head = rest[0].block if rest else self.next_enter
        return head, self.next_enter
