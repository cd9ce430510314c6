"""The causal engine's key/value cache: per transformer layer, the keys and values of the frames a block may attend
to, written by the clean re-run of every finished block.

What a block sees (the published recipe's rolling window): the first `sink` frames of its shot, and the last
`context` frames before it; before the window is full, every earlier frame of the shot. Keys are kept before their
rotary embedding and rotated at use, at the positions `positions` gives, so that the window can move forever:
positions are the frames' own indices in the shot while they fit the rotary table (the original's absolute
positions), and beyond it the window is re-indexed to end at the table's last position, sinks staying at the
start, which keeps every distance inside the window exact and the memory flat.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Window:
    """Which earlier frames of the shot a block starting at frame `start` sees: sink frames first, then the recent
    ones, oldest first (frame indices within the shot)."""

    sink: tuple[int, ...]
    recent: tuple[int, ...]

    @property
    def frames(self) -> tuple[int, ...]:
        return self.sink + self.recent


def window(start: int, sink: int, context: int) -> Window:
    """The frames before `start` that a block sees: the shot's first `sink` frames and its last `context` ones."""
    recent = tuple(range(max(0, start - context), start))
    sinks = tuple(f for f in range(min(sink, start)) if f not in recent)
    return Window(sinks, recent)


def positions(cached: tuple[int, ...], own: list[int], sinks: int, table: int) -> tuple[list[int], list[int]]:
    """Rotary positions (cached frames, own frames) for a forward over frames `own` (indices in the shot) that
    attends to `cached` (the first `sinks` of them sink frames), all below `table` (the rotary table's length)."""
    if max(own) < table:
        return list(cached), list(own)
    shift = max(own) + 1 - table  # the window and the block move back; sinks keep their places at the start
    moved = [f - shift for f in cached[sinks:]] + [f - shift for f in own]
    if moved and min(moved) < sinks:
        raise ValueError(f"a window of {len(cached) + len(own)} frames does not fit a rotary table of {table}")
    return list(cached[:sinks]) + moved[:len(cached) - sinks], moved[len(cached) - sinks:]


@dataclass
class KVCache:
    """Per layer: frame index in the shot -> (keys before rotary, values), each [batch, tokens, heads, dim]."""

    num_layers: int
    layers: list = field(default_factory=list)

    def __post_init__(self):
        self.clear()

    def clear(self) -> None:
        self.layers = [{} for _ in range(self.num_layers)]

    def put(self, layer: int, frames, tokens_per_frame: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the keys and values ([b, frames x tokens, heads, dim]) of `frames`, frame by frame."""
        for i, f in enumerate(frames):
            a, b = i * tokens_per_frame, (i + 1) * tokens_per_frame
            self.layers[layer][f] = (k[:, a:b].clone(), v[:, a:b].clone())

    def get(self, layer: int, frames) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not frames:
            return None
        entries = self.layers[layer]
        missing = [f for f in frames if f not in entries]
        if missing:
            raise RuntimeError(f"no cached keys/values of frame(s) {missing[:4]} in layer {layer}")
        ks, vs = zip(*(entries[f] for f in frames))
        return torch.cat(ks, dim=1), torch.cat(vs, dim=1)

    def keep(self, frames) -> None:
        """Forget every frame not in `frames` (what later blocks can no longer see)."""
        want = set(frames)
        for entries in self.layers:
            for f in [f for f in entries if f not in want]:
                del entries[f]

    def frames(self) -> list[int]:
        return sorted(self.layers[0]) if self.layers else []
