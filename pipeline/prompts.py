"""Prompt epochs as pure logic: which conditioning each block carries, and when a change lands.

Every accepted change gets a new epoch and is acknowledged with the index of the first *emitted* block it affects.
Changes take effect at tick boundaries, so an acknowledgement computed from the boundary view is exact:
- soft  (default block: the next block to be emitted): every block in flight with index >= N switches now;
- queue (default: the next block to enter): blocks entering from N on;
- blend (default: next to enter; over K blocks): block N+j enters with weight (j+1)/K of the new prompt;
- cut   (default: the next block to be emitted): blocks >= N are flushed and re-enter with the new prompt, as a
        new shot: block N is generated without context frames from the blocks before it.
A change "now" that has not taken effect when a newer change does (a blend waiting for its first block to enter,
overtaken by a cut or a soft change) is superseded: dropped, never applied after the newer one. Scheduled changes
(at_block) are not: they wait for their block on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("soft", "queue", "blend", "cut")
DEFAULT_MODE = "soft"  # of a prompt change that names none: everywhere (protocol, clients, engines) from here
DEFAULT_BLEND_BLOCKS = 4  # blocks a blend spreads over when none is given
# Immediate changes (no at_block) are always accepted: they apply at the next tick boundary. Scheduled ones are
# limited, so that no client can fill the schedule: at most MAX_AHEAD blocks ahead of the next emitted one, at most
# MAX_PER_CLIENT pending per client, and MAX_SCHEDULED pending in all.
MAX_AHEAD = 3600
MAX_PER_CLIENT = 32
MAX_SCHEDULED = 256
MAX_IMMEDIATE = 1000  # pending between two tick boundaries (a flood; the next boundary applies them all)


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class Cond:
    """A block's conditioning: prompts with weights summing to 1, and the epoch of the latest change in it."""

    parts: tuple[tuple[str, float], ...]
    epoch: int

    @property
    def prompt(self) -> str:
        """The dominant prompt (for display)."""
        return max(self.parts, key=lambda p: p[1])[0]


def _mix(a: Cond, b: Cond, w: float, epoch: int) -> Cond:
    if w >= 1.0:
        return Cond(b.parts, epoch)
    acc: dict[str, float] = {}
    for text, x in a.parts:
        acc[text] = acc.get(text, 0.0) + x * (1.0 - w)
    for text, x in b.parts:
        acc[text] = acc.get(text, 0.0) + x * w
    return Cond(tuple((t, x) for t, x in acc.items() if x > 0.0), epoch)


@dataclass
class Change:
    epoch: int
    prompt: str
    mode: str
    first_block: int
    blocks: int = 1
    scheduled: bool = False  # asked for a block (at_block) rather than "now"
    client: str = ""


@dataclass
class _Blend:
    src: Cond
    dst: Cond
    start: int
    k: int


@dataclass
class BoundaryResult:
    flush_from: int | None = None
    applied: list[Change] = field(default_factory=list)
    superseded: list[Change] = field(default_factory=list)  # changes "now" overtaken by a newer one, dropped


class PromptSchedule:
    def __init__(self, prompt: str):
        self.epoch = 0
        self.entry = Cond(((prompt, 1.0),), 0)
        self.inflight: dict[int, Cond] = {}
        self.pending: list[Change] = []
        self._blend: _Blend | None = None
        self._head = 0  # boundary view: head and next-to-enter at the start of the next tick
        self._next_enter = 0

    # --- boundary view (set by the engine) -------------------------------------------------------------
    def set_boundary(self, head: int, next_enter: int) -> None:
        self._head, self._next_enter = head, next_enter

    @property
    def current_prompt(self) -> str:
        return self.entry.prompt

    # --- submission ------------------------------------------------------------------------------------
    def submit(self, prompt: str, mode: str = DEFAULT_MODE, blocks: int | None = None, at_block: int | None = None,
               client: str = "") -> Change:
        if mode not in MODES:
            raise PromptError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
        scheduled = [p for p in self.pending if p.scheduled]
        if at_block is None:
            if len(self.pending) - len(scheduled) >= MAX_IMMEDIATE:
                raise PromptError(f"too many changes since the last tick (limit {MAX_IMMEDIATE})")
        else:
            if int(at_block) > self._head + MAX_AHEAD:
                raise PromptError(f"at_block {at_block} is more than {MAX_AHEAD} blocks ahead of the next block to be "
                                  f"emitted ({self._head})")
            if sum(p.client == client for p in scheduled) >= MAX_PER_CLIENT:
                raise PromptError(f"this client has {MAX_PER_CLIENT} scheduled changes pending (the limit): cancel "
                                  "some first")
            if len(scheduled) >= MAX_SCHEDULED:
                raise PromptError(f"{MAX_SCHEDULED} scheduled changes are pending (the limit)")
        k = 1
        if mode == "blend":
            k = DEFAULT_BLEND_BLOCKS if blocks is None else int(blocks)
            if k < 1:
                raise PromptError("blocks must be >= 1")
        head = self._head
        enter = self._next_enter
        for p in self.pending:  # a pending cut moves the entry point back
            if p.mode == "cut" and p.first_block < enter:
                enter = p.first_block
        if mode in ("soft", "cut"):
            n = head if at_block is None else int(at_block)
            if n < head:
                raise PromptError(f"at_block {n} is in the past: the next block to be emitted is {head}")
        else:
            n = enter if at_block is None else int(at_block)
            if n < enter:
                raise PromptError(
                    f"block {n} has already entered the queue (next to enter is {enter}); "
                    "use mode soft or cut to change blocks in flight"
                )
        self.epoch += 1
        ch = Change(self.epoch, prompt, mode, n, k, scheduled=at_block is not None, client=client)
        self.pending.append(ch)
        self.pending.sort(key=lambda c: (c.first_block, c.epoch))
        return ch

    def cancel(self, epoch: int | None = None) -> list[int]:
        """Withdraw pending changes that have not taken effect: the one of `epoch`, or (None) every scheduled one.
        Returns the epochs withdrawn."""
        if epoch is None:
            gone = [p.epoch for p in self.pending if p.scheduled]
        else:
            gone = [p.epoch for p in self.pending if p.epoch == epoch]
            if not gone:
                raise PromptError(f"no pending change has epoch {epoch} (it took effect, or never existed)")
        self.pending = [p for p in self.pending if p.epoch not in gone]
        return gone

    # --- tick boundary (engine side) -------------------------------------------------------------------
    def begin_tick(self, head: int, next_enter: int) -> BoundaryResult:
        """Apply every change due at this boundary. `head`: the queue's head (or next_enter if empty)."""
        res = BoundaryResult()
        keep = []
        newest = 0  # the newest change applied at this boundary
        for ch in self.pending:  # (in order of first block, then epoch)
            if not ch.scheduled and ch.epoch < newest:
                res.superseded.append(ch)  # a newer change took effect first
                continue
            new = Cond(((ch.prompt, 1.0),), ch.epoch)
            if ch.mode == "soft" and head >= ch.first_block:
                for b in self.inflight:
                    if b >= ch.first_block:
                        self.inflight[b] = new
                self.entry, self._blend = new, None
            elif ch.mode == "cut" and ch.first_block <= next_enter:
                if ch.first_block < next_enter:
                    res.flush_from = ch.first_block if res.flush_from is None else min(res.flush_from, ch.first_block)
                    next_enter = ch.first_block
                    for b in [b for b in self.inflight if b >= ch.first_block]:
                        del self.inflight[b]
                self.entry, self._blend = new, None
            elif ch.mode == "queue" and ch.first_block == next_enter:
                self.entry, self._blend = new, None
            elif ch.mode == "blend" and ch.first_block == next_enter:
                self._blend = _Blend(self.entry, new, ch.first_block, ch.blocks)
            else:
                keep.append(ch)
                continue
            res.applied.append(ch)
            newest = max(newest, ch.epoch)
        res.superseded += [p for p in keep if not p.scheduled and p.epoch < newest]
        self.pending = [p for p in keep if p not in res.superseded]
        return res

    def enter(self, block: int) -> Cond:
        """Conditioning of a block entering the queue now."""
        if self._blend is not None:
            bl = self._blend
            w = min(1.0, (block - bl.start + 1) / bl.k)
            cond = _mix(bl.src, bl.dst, w, bl.dst.epoch)
            if w >= 1.0:
                self.entry, self._blend = bl.dst, None
        else:
            cond = self.entry
        self.inflight[block] = cond
        return cond

    def cond(self, block: int) -> Cond:
        return self.inflight[block]

    def leave(self, block: int) -> Cond:
        return self.inflight.pop(block)
