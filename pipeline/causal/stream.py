"""The causal engine's stream batch (`--stream-batch`): S blocks in flight, one at each denoising step, go through
the model together, one batched forward a tick (the block queue of pipeline/dualparal/schedule.py, and
StreamDiffusionV2's stream batch for causal Wan).

What a block sees: at step j it attends to its window of earlier frames (sinks + context, as the sequential causal
engine's) with their keys/values *as they were at step j*: each step has a cache of its own, written by the
block at that step in every forward (StreamDiffusionV2's per-row caches), so the rows of a batch never wait for
each other. The sequential engine instead lets every step see clean keys/values, written by an extra forward at
timestep 0 once a block is done; the stream batch needs none. A block is out S ticks after it entered, one
forward per tick (the sequential engine: one tick of S + 1 forwards). Where this differs from StreamDiffusionV2's
code, on purpose: each step's cache is filled by that step's own rows from a shot's first block on (its code
denoises the first chunk alone and copies the keys of its last step into every row's cache), and there is no extra
row at timestep 0 (its text-to-video path re-runs the finished block at t = 0 in the batch and decodes that; here
the last step's x0 is the block, as in the sequential recipe). tests/test_causal_stream.py checks this engine
against its definition (a full-sequence forward per block and step with a block-causal window mask).

Prompts: soft (and blend) switch the blocks in flight to the new conditioning from their next step; the caches
keep the keys/values computed under the old one (no re-cache). A cut drops the blocks in flight from its first
block on and starts a new shot: every step's cache empties when the shot's first block reaches that step.

Until S blocks are in flight the batch is padded with rows that read and write nothing, so every forward has the
same shape. Rank-count independence: each rank's slice keeps its own per-step caches, and the rows travel the ring
as one item, so W ranks compute what one does.
"""
from __future__ import annotations

import time

import torch

from ..dualparal.engine import FinishedBlock, TickResult, open_tick
from ..dualparal.schedule import BlockQueue, Work
from ..dualparal.stages import ItemMeta
from .cache import window
from .engine import CausalEngine, prologue


class CausalStreamEngine(CausalEngine):
    """CausalEngine's interface; `tick()` runs one batched forward and returns the block that finished, if any."""

    def __init__(self, cfg, transformer, encode_prompt, device="cpu", noise=None, world: int = 1,
                 layers: tuple[int, int] | None = None):
        if not cfg.stream_batch:
            raise ValueError("CausalStreamEngine needs a configuration with stream_batch")
        super().__init__(cfg, transformer, encode_prompt, device=device, noise=noise, world=world, layers=layers)
        self._reset_stream()

    def _reset_stream(self) -> None:
        self.queue = BlockQueue(self.cfg.steps)
        self.latents: dict[int, torch.Tensor] = {}  # block in flight -> its input at its next step, float32
        self.shots = [0]  # first blocks of the shots that blocks in flight or to come belong to

    def shot_of(self, block: int) -> int:
        return max(s for s in self.shots if s <= block)

    def snapshot(self) -> dict:
        with self.lock:
            steps = len(self.timesteps)
            return {"head": self.queue.head, "next_enter": self.queue.next_enter, "depth": self.queue.depth,
                    "ticks_to_output": steps - max((d for _, d in self.queue.blocks()), default=0),
                    "epoch": self.prompts.epoch, "prompt": self.prompts.current_prompt,
                    "pending_changes": len(self.prompts.pending), "in_flight_windows": 0, **self.stats,
                    "cached_frames": len(self.stage.caches[-1].frames()), "ranks": []}

    # --- one batched forward ---------------------------------------------------------------------------
    def _run(self, plan: list[Work], texts: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """One forward of the blocks in `plan` (a row each, padded to S rows): each block's x0, and each block not
        at its last step moved on to its next step's input. Returns {block: x0} of the blocks at their last step."""
        steps, b = len(self.timesteps), self.cfg.block_frames
        rows, xs, ts, txt = [], [], [], []
        for w in plan:
            rows.append((w.step, (w.block - self.shot_of(w.block)) * b))
            xs.append(self.latents[w.block])
            ts.append(self.timesteps[w.step])
            txt.append(texts[w.block])
        pad = steps - len(plan)
        if pad:  # (rows that read and write no cache; their predictions are dropped)
            rows += [(-1, 0)] * pad
            xs += [torch.zeros_like(xs[0])] * pad
            ts += [self.timesteps[0]] * pad
            txt += [txt[0]] * pad
        x = torch.cat(xs)
        self._serial += 1
        meta = ItemMeta(serial=self._serial, block=plan[0].block, step=0, frames=b, shot=self.shot_of(plan[0].block),
                        use_succ=False, rows=tuple(rows))
        pred = self._predict(meta, prologue(self.model, x.to(self.dtype), torch.stack(ts).to(self.device),
                                            torch.cat(txt)))
        clean = {}
        for i, w in enumerate(plan):
            x0 = self.table.to_x0(pred[i:i + 1], xs[i], ts[i])
            if w.step + 1 < steps:
                noise = self.noise(w.block, w.step + 1).to(self.device, torch.float32)
                self.latents[w.block] = self.table.renoise(x0, noise, self.timesteps[w.step + 1])
            else:
                clean[w.block] = x0
                del self.latents[w.block]
        return clean

    def _enter(self, block: int) -> None:
        self.latents[block] = self.noise(block, 0).to(self.device, torch.float32)

    # --- ticks -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def warm_up(self) -> int:
        """Run a shot's first ticks under the first prompt until every row's window is as long as it will ever be,
        then forget them (the stream starts as a new shot: its first block empties each step's cache). With
        --compile this compiles the forward of every combination of window lengths before the first frame.
        Returns the ticks run."""
        with self.lock:
            text = self.conds.get(self.prompts.entry)
        cfg = self.cfg
        length = lambda m: len(window(m * cfg.block_frames, cfg.sink_frames, cfg.context_frames).frames)  # noqa: E731
        full = 0  # the first block whose window is as long as any later block's (lengths grow until then)
        while length(full) != length(full + 1):
            full += 1
        ticks = full + len(self.timesteps)  # then the oldest row's block has a full window too
        for _ in range(ticks):
            blk = self.queue.enter()
            self._enter(blk)
            plan = self.queue.plan()
            self._run(plan, {w.block: text for w in plan})
            self.queue.advance()
        self._reset_stream()
        return ticks

    @torch.inference_mode()
    def tick(self) -> TickResult:
        t0 = time.perf_counter()
        res = TickResult()
        with self.lock:
            self.shots = open_tick(self.prompts, self.queue, self.shots, res, self.latents)
            blk = self.queue.enter()
            if blk is not None:
                self.prompts.enter(blk)
                self._enter(blk)
            res.entered = blk
            plan = self.queue.plan()
            conds = {w.block: self.prompts.cond(w.block) for w in plan}
            self.prompts.set_boundary(*self.queue.next_boundary())
        f0 = time.perf_counter()
        clean = self._run(plan, {blk: self.conds.get(c) for blk, c in conds.items()}) if plan else {}
        fwd = time.perf_counter() - f0
        if self.on_step is not None:  # the runner's heartbeat
            for w in plan:
                self.on_step(w)
        done = self.queue.advance()
        with self.lock:
            for blk in done:
                cond = self.prompts.leave(blk)
                res.finished.append(FinishedBlock(blk, clean[blk], cond, self.stats["ticks"],
                                                  shot_start=blk > 0 and blk in self.shots))
            res.windows = len(plan)  # blocks in flight (the pacer's lead counts the ticks with all S)
            res.seconds = time.perf_counter() - t0
            self.stats["ticks"] += 1
            self.stats["blocks"] += len(res.finished)
            self.stats["tick_ms"] = res.seconds * 1e3
            self.stats["forward_ms"] = fwd * 1e3
        return res
