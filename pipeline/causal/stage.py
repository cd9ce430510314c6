"""One rank's share of the causal engine: its slice of the transformer's layers, their key/value cache, and what a
window's header says to do with it (pipeline.dualparal.stages.ItemMeta's causal fields). It has the interface of
pipeline.dualparal.stages.Stage, so the ring that carries DualParal's windows between ranks (LocalPipe, DistPipe,
serve_stage) carries the causal engine's too: W ranks compute what one does."""
from __future__ import annotations

import torch

from ..model.split import Carry, epilogue, run_blocks
from .attention import CausalRequest, RowPlan, install
from .cache import KVCache, positions, window


def rope_at(rope, frames: list[int], height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos/sin [1, len(frames) x height x width, 1, dim] for latent frames at these positions (post-patch
    height x width tokens each): WanRotaryPosEmbed's tables, indexed by position instead of 0..F-1."""
    split = [rope.t_dim, rope.h_dim, rope.w_dim]
    idx = torch.tensor(frames, dtype=torch.long, device=rope.freqs_cos.device)
    out = []
    for table in (rope.freqs_cos, rope.freqs_sin):
        t, hh, ww = table.split(split, dim=1)
        n = len(frames)
        parts = [t[idx].view(n, 1, 1, -1).expand(n, height, width, -1),
                 hh[:height].view(1, height, 1, -1).expand(n, height, width, -1),
                 ww[:width].view(1, 1, width, -1).expand(n, height, width, -1)]
        out.append(torch.cat(parts, dim=-1).reshape(1, n * height * width, 1, -1).to(device))
    return out[0], out[1]


class CausalStage:
    """Layers [a, b) of the model with their cache. forward(meta, carry) runs them; the last rank's finish gives the
    flow prediction (zeros for a clean re-run, whose output nobody reads). With --stream-batch, a cache per
    denoising step instead (`caches`), and each forward's batch holds a row per step (`meta.rows`)."""

    def __init__(self, cfg, model, layers: tuple[int, int], last: bool, device):
        self.cfg, self.model, self.last = cfg, model, last
        self.device = torch.device(device)
        self.blocks = [model.blocks[i] for i in range(*layers)]
        self.cache = KVCache(len(self.blocks))
        self.caches = [KVCache(len(self.blocks)) for _ in range(cfg.steps)] if cfg.stream_batch else []
        self.request = CausalRequest()
        install(self.blocks, self.request)
        p = model.config.patch_size
        self.grid = (cfg.latent_height // p[1], cfg.latent_width // p[2])
        self.request.tokens_per_frame = self.grid[0] * self.grid[1]
        rows = cfg.steps if cfg.stream_batch else 1
        self.pred_shape = (rows, model.config.out_channels, cfg.block_frames, cfg.latent_height, cfg.latent_width)
        self._ropes: dict = {}
        self._rope_slots = 4 + 2 * rows

    def _rope(self, positions: list[int]):
        """rope_at for these positions, on this rank's device, computed once per set of positions: a block's steps
        and clean re-run reuse them (a few entries only: a window's table is tokens x head dim in float64)."""
        key = tuple(positions)
        got = self._ropes.get(key)
        if got is None:
            if len(self._ropes) >= self._rope_slots:
                self._ropes.clear()
            got = self._ropes[key] = rope_at(self.model.rope, list(positions), *self.grid, self.device)
        return got

    def plan(self, meta) -> tuple[list[int], tuple[int, ...], int]:
        """(own frames, cached frames, how many of those are sinks) of a window."""
        win = window(meta.window_at, self.cfg.sink_frames, self.cfg.context_frames)
        cached = win.frames if meta.cached_n < 0 else win.frames[:meta.cached_n]
        return list(range(meta.start, meta.start + meta.frames)), cached, min(len(win.sink), len(cached))

    def forward(self, meta, carry: Carry) -> Carry:
        if meta.rows:
            return self._forward_rows(meta, carry)
        own, cached, sinks = self.plan(meta)
        if meta.commit and meta.cached_n == 0:  # a re-cache starts: its groups rebuild the cache
            self.cache.clear()
        table = self.model.rope.max_seq_len
        cached_pos, own_pos = positions(cached, own, sinks, table)
        req = self.request
        req.rows = [RowPlan(self.cache, cached, self._rope(cached_pos) if cached else None,
                            tuple(own) if meta.commit else ())]
        carry = run_blocks(self.blocks, carry, self._rope(own_pos))
        if meta.commit and meta.cached_n < 0:  # a finished block: forget what the next block cannot see
            nxt = meta.start + meta.frames
            self.cache.keep(window(nxt, self.cfg.sink_frames, self.cfg.context_frames).frames)
        req.rows = []
        return carry

    def _forward_rows(self, meta, carry: Carry) -> Carry:
        """A stream batch: row i is a block at step `meta.rows[i][0]` whose frames start at `meta.rows[i][1]` of its
        shot. It attends to its window of the step's cache (the earlier blocks' keys/values as they were at that
        step), then stores its own keys/values there; a block starting a shot (frame 0) empties the step's cache
        first. Padding rows (step -1) read and store nothing."""
        cfg, table, b = self.cfg, self.model.rope.max_seq_len, self.cfg.block_frames
        plans, cos, sin = [], [], []
        for step, start in meta.rows:
            own = list(range(start, start + b))
            if step < 0:
                plans.append(RowPlan())
                own_pos = own
            else:
                cache = self.caches[step]
                if start == 0:
                    cache.clear()
                win = window(start, cfg.sink_frames, cfg.context_frames)
                cached_pos, own_pos = positions(win.frames, own, len(win.sink), table)
                plans.append(RowPlan(cache, win.frames, self._rope(cached_pos) if win.frames else None, tuple(own)))
            c, s = self._rope(own_pos)
            cos.append(c)
            sin.append(s)
        self.request.rows = plans
        carry = run_blocks(self.blocks, carry, (torch.cat(cos), torch.cat(sin)))
        for (step, start), plan in zip(meta.rows, plans):
            if plan.cache is not None:  # forget what the step's next block cannot see
                plan.cache.keep(window(start + b, cfg.sink_frames, cfg.context_frames).frames)
        self.request.rows = []
        return carry

    def finish(self, carry: Carry, meta) -> torch.Tensor:
        if meta.commit:
            return torch.zeros(self.pred_shape, dtype=carry.hidden.dtype, device=carry.hidden.device)
        return epilogue(self.model, carry)
