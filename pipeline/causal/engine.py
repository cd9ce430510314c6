"""The causal engine: a causal few-step Wan checkpoint (Self-Forcing, CausVid, LongLive, Krea) streams block by
block. Each block of B latent frames is denoised at the recipe's few timesteps (schedule.py), attending to the
cached keys/values of the earlier frames of its shot (cache.py); after its last step it is run once more, clean, at
timestep 0, and that run's keys/values go into the cache for the blocks after it.

Prompts change as in the DualParal engine (pipeline/prompts.py): soft and blend re-run the cached window under the
new conditioning (the cache then holds keys/values as the new prompt sees the frames: LongLive's re-cache), cut
starts a new shot with an empty cache and frame positions from 0.

`tick()` makes one block and returns it finished (TickResult, as pipeline.dualparal.engine.Engine's).
"""
from __future__ import annotations

import threading
import time

import torch

from ..config import EngineConfig
from ..dualparal.engine import CondTable, FinishedBlock, PromptControl, TickResult
from ..prompts import PromptSchedule
from ..dualparal.schedule import Work
from ..model.split import Carry
from ..dualparal.stages import DTYPES, DistPipe, ItemMeta, LocalPipe
from .cache import window
from .stage import CausalStage
from .schedule import FlowTable

CONTEXT_NOISE = 0.0  # the timestep of the clean re-run that writes a block into the cache


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's timestep features [cos | sin] of t x 10000^(-i/half), computed in float64 as the recipe does."""
    half = dim // 2
    pos = t.reshape(-1).double()
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=pos.device) / half)
    angles = torch.outer(pos, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def prologue(model, latents: torch.Tensor, timestep: torch.Tensor, text_states: torch.Tensor) -> Carry:
    """Patch embedding, timestep and text conditioning (split.prologue's, with float64 timestep features)."""
    _, _, f, h, w = latents.shape
    p_t, p_h, p_w = model.config.patch_size
    hidden = model.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()
    ce = model.condition_embedder
    feats = sinusoid(timestep.expand(latents.shape[0]), model.config.freq_dim)
    temb = ce.time_embedder(feats.to(next(ce.time_embedder.parameters()).dtype)).type_as(text_states)
    proj = ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))
    return Carry(hidden, ce.text_embedder(text_states), proj, temb, (f // p_t, h // p_h, w // p_w))


class CausalEngine(PromptControl):
    """Rank 0's causal engine; with `world` > 1 each forward flows through the other ranks' layer slices (the ring
    of pipeline.dualparal.stages) and its prediction comes back. `noise(block, step)` gives a block's noise for each step
    ([1, C, B, h, w]; step 0: its start)."""

    def __init__(self, cfg: EngineConfig, transformer, encode_prompt, device="cpu", noise=None, world: int = 1,
                 layers: tuple[int, int] | None = None):
        self.cfg = cfg.validate()
        self.device = torch.device(device)
        self.dtype = DTYPES[cfg.dtype]
        self.model = transformer.eval().requires_grad_(False)
        self.table = FlowTable(cfg.flow_shift)
        self.timesteps = self.table.denoising_timesteps(cfg.steps)
        layers = layers or (0, len(self.model.blocks))
        self.stage = CausalStage(cfg, self.model, layers, last=world == 1, device=self.device)
        self.cache = self.stage.cache  # this rank's layers'
        self.pipe = LocalPipe(self.stage) if world == 1 else DistPipe(self.stage, world, self.stage.pred_shape,
                                                                      self.dtype, self.device)
        self.noise = noise or self._seeded_noise
        self.prompts = PromptSchedule(cfg.prompt)
        self.conds = CondTable(encode_prompt, cfg.negative_prompt, False, self.dtype, self.device)
        self.lock = threading.Lock()
        self.block = 0  # the next block of the stream
        self.shot = 0  # the block its shot started at
        self.clean: dict[int, torch.Tensor] = {}  # frame of the shot -> clean latents [1, C, 1, h, w] (re-cache)
        self.last_cond = None
        self._serial = 0
        self.stats = {"ticks": 0, "blocks": 0, "tick_ms": 0.0, "forward_ms": 0.0, "recache_ms": 0.0}
        self.on_step = None

    # --- noise ---------------------------------------------------------------------------------------------
    def _seeded_noise(self, block: int, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + block * 1009 + step) % 2**63)
        c = self.model.config.in_channels
        shape = (1, c, self.cfg.block_frames, self.cfg.latent_height, self.cfg.latent_width)
        return torch.randn(shape, generator=g).to(self.device)

    # --- control (any thread) ------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        with self.lock:
            return {"head": self.block, "next_enter": self.block, "depth": 0, "ticks_to_output": 1,
                    "epoch": self.prompts.epoch, "prompt": self.prompts.current_prompt,
                    "pending_changes": len(self.prompts.pending), "in_flight_windows": 0, **self.stats,
                    "cached_frames": len(self.cache.frames()), "ranks": []}

    # --- the model -----------------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, start: int, window_at: int,
                 cached_n: int = -1, commit: bool = False) -> torch.Tensor:
        """The flow prediction for frames [start, start + F) of the shot (x: [1, C, F, h, w]), attending to the
        first `cached_n` (-1: all) frames of the window of the block at frame `window_at`; `commit`: store this
        run's keys/values as those frames' (then the prediction is not computed)."""
        self._serial += 1
        meta = ItemMeta(serial=self._serial, block=self.block, step=0, frames=x.shape[2], shot=self.shot,
                        use_succ=False, start=start, window_at=window_at, cached_n=cached_n, commit=commit)
        return self._predict(meta, prologue(self.model, x.to(self.dtype), t.to(self.device), text))

    def _predict(self, meta: ItemMeta, carry: Carry) -> torch.Tensor:
        """Send one forward through the ranks and wait for its prediction (float32)."""
        self.pipe.submit(meta, carry)
        serial, pred = self.pipe.poll(wait=True)
        if serial != meta.serial:
            raise RuntimeError(f"prediction {serial} arrived for window {meta.serial}")
        return pred.float()

    def _recache(self, text: torch.Tensor, start: int) -> None:
        """A prompt change: the window of the block at `start` is run again, clean, at timestep 0, under `text`,
        block-sized groups in order (sinks first), each attending to the groups re-run before it; the cache then
        holds those frames as the new prompt sees them (LongLive's re-cache)."""
        win = window(start, self.cfg.sink_frames, self.cfg.context_frames)
        t0 = torch.tensor(CONTEXT_NOISE)
        b = self.cfg.block_frames
        groups = [list(win.sink[i:i + b]) for i in range(0, len(win.sink), b)]
        groups += [list(win.recent[i:i + b]) for i in range(0, len(win.recent), b)]
        done = 0
        for group in groups:
            x = torch.cat([self.clean[f] for f in group], dim=2)
            self._forward(x, t0, text, group[0], start, cached_n=done, commit=True)
            done += len(group)

    @torch.inference_mode()
    def generate(self, block: int, text: torch.Tensor, start: int) -> torch.Tensor:
        """Block `block` (its frames start at frame `start` of the shot): clean latents [1, C, B, h, w]."""
        x = self.noise(block, 0).to(self.device, torch.float32)
        steps = len(self.timesteps)
        x0 = x
        for k, t in enumerate(self.timesteps):
            flow = self._forward(x, t, text, start, start)
            x0 = self.table.to_x0(flow, x, t)
            if k + 1 < steps:
                x = self.table.renoise(x0, self.noise(block, k + 1).to(self.device, torch.float32),
                                       self.timesteps[k + 1])
            if self.on_step is not None:  # the runner's heartbeat (and its way to stop a long block)
                self.on_step(Work(block=block, step=k, prev=None, succ=None))
        self._forward(x0, torch.tensor(CONTEXT_NOISE), text, start, start, commit=True)
        return x0

    @torch.inference_mode()
    def warm_up(self) -> int:
        """Run a shot's first blocks, until the window holds as many frames as it ever will, and forget them (the
        stream starts as a new shot: its first block overwrites their frames and drops the rest, on every rank).
        With --compile this compiles the forwards of every cache length before the first frame instead of during
        the stream (the blocks are compiled for static shapes; on an H200 the compiles stretched the first blocks'
        ticks to ~2 s, RESULTS §11). Returns the blocks run; the stream's latents are unchanged (seeded noise)."""
        with self.lock:
            text = self.conds.get(self.prompts.entry)
        b, cfg = 0, self.cfg
        while True:
            self.generate(b, text, b * cfg.block_frames)
            b += 1
            n = len(window(b * cfg.block_frames, cfg.sink_frames, cfg.context_frames).frames)
            if n == len(window((b - 1) * cfg.block_frames, cfg.sink_frames, cfg.context_frames).frames):
                return b

    # --- the tick --------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def tick(self) -> TickResult:
        t0 = time.perf_counter()
        res = TickResult()
        b = self.block
        with self.lock:
            br = self.prompts.begin_tick(b, b)
            res.applied, res.superseded = br.applied, br.superseded
            cond = self.prompts.enter(b)
            self.prompts.leave(b)
            self.prompts.set_boundary(b + 1, b + 1)
        new_shot = any(ch.mode == "cut" for ch in br.applied) and b > self.shot
        if new_shot:  # (every rank's cache forgets the old shot at the new one's first clean re-run)
            self.shot = b
            self.clean.clear()
        start = (b - self.shot) * self.cfg.block_frames
        text = self.conds.get(cond)
        if self.last_cond is not None and cond.parts != self.last_cond.parts and not new_shot and start:
            r0 = time.perf_counter()
            self._recache(text, start)
            self.stats["recache_ms"] = (time.perf_counter() - r0) * 1e3
        self.last_cond = cond
        f0 = time.perf_counter()
        lat = self.generate(b, text, start)
        fwd = time.perf_counter() - f0
        for i in range(self.cfg.block_frames):
            self.clean[start + i] = lat[:, :, i:i + 1]
        nxt = start + self.cfg.block_frames
        keep = set(window(nxt, self.cfg.sink_frames, self.cfg.context_frames).frames)
        for f in [f for f in self.clean if f not in keep]:
            del self.clean[f]
        res.entered = b
        res.windows = len(self.timesteps) + 1
        res.finished.append(FinishedBlock(b, lat, cond, self.stats["ticks"], shot_start=new_shot))
        self.block += 1
        with self.lock:
            res.seconds = time.perf_counter() - t0
            self.stats["ticks"] += 1
            self.stats["blocks"] += 1
            self.stats["tick_ms"] = res.seconds * 1e3
            self.stats["forward_ms"] = fwd * 1e3 / res.windows
        return res

    def drain(self) -> list[FinishedBlock]:
        return []  # every forward's prediction is waited for

    def close(self) -> None:
        """Stop the other ranks (multi-rank)."""
        self.pipe.close()

    def retire(self) -> None:
        """Leave the other ranks running for another engine on rank 0 (tests, benchmarks)."""
        if isinstance(self.pipe, DistPipe):
            self.pipe.retire()
