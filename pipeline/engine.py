"""The socket-free engine core: `tick()` advances every block in flight by one step and returns finished blocks.

One device here; the dual-parallel pipeline runs the same per-block work (`BlockStepper`) split over ranks.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

import torch

from .attention import install_feature_cache
from .config import EngineConfig
from .noise import NoisePool
from .prompts import Change, Cond, PromptSchedule
from .schedule import BlockQueue, Work
from .split import epilogue, prologue, rotary, run_blocks

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class FinishedBlock:
    index: int
    latents: torch.Tensor  # [1, ch, B, h, w] float32, clean
    cond: Cond
    tick: int


@dataclass
class TickResult:
    finished: list[FinishedBlock] = field(default_factory=list)
    applied: list[Change] = field(default_factory=list)
    flushed: list[int] = field(default_factory=list)
    entered: int | None = None
    seconds: float = 0.0


class CondTable:
    """Text embeddings per conditioning (mixtures of prompts), batched with the negative prompt for CFG."""

    def __init__(self, encode, negative: str, use_cfg: bool, dtype, device):
        self._encode, self._use_cfg, self._dtype, self._device = encode, use_cfg, dtype, device
        self._neg = encode(negative).to(device=device, dtype=dtype) if use_cfg else None
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, cond: Cond) -> torch.Tensor:
        key = cond.parts
        if key not in self._cache:
            emb = sum(w * self._encode(text).to(device=self._device, dtype=torch.float32) for text, w in cond.parts)
            emb = emb.to(self._dtype)
            if self._use_cfg:
                emb = torch.cat([emb, self._neg], dim=0)
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = emb
        return self._cache[key]


class BlockStepper:
    """Geometry of a window (which tokens are context, which rotary positions) shared by all stages."""

    def __init__(self, cfg: EngineConfig, model, device):
        self.cfg = cfg
        self.tpf = (cfg.latent_height // model.config.patch_size[1]) * (cfg.latent_width // model.config.patch_size[2])
        self._model, self._device = model, device
        self._rope: dict[tuple[int, int], tuple] = {}

    def window_frames(self, work: Work) -> int:
        return self.cfg.block_frames + (self.cfg.context_frames if work.prev is not None else 0)

    def rope(self, frames: int, extra: int):
        """(cos, sin) for the window and (cos, sin) for `extra` appended successor frames after it."""
        key = (frames, extra)
        if key not in self._rope:
            cos, sin = rotary(self._model, frames + extra, self.cfg.latent_height, self.cfg.latent_width, self._device)
            n = frames * self.tpf
            self._rope[key] = ((cos[:, :n], sin[:, :n]), (cos[:, n:], sin[:, n:]) if extra else None)
        return self._rope[key]

    def store_range(self, work: Work) -> tuple[int, int] | None:
        c = self.cfg.context_frames
        if c == 0:
            return None
        start = (c if work.prev is not None else 0) * self.tpf
        return start, start + c * self.tpf


class Engine:
    def __init__(self, cfg: EngineConfig, transformer, scheduler, encode_prompt, device="cpu"):
        self.cfg = cfg.validate()
        self.device = torch.device(device)
        self.dtype = DTYPES[cfg.dtype]
        self.model = transformer.eval().requires_grad_(False)
        self.cache = install_feature_cache(self.model.blocks)
        self.geom = BlockStepper(cfg, self.model, self.device)
        self.queue = BlockQueue(cfg.steps)
        self.prompts = PromptSchedule(cfg.prompt)
        self.lock = threading.Lock()
        self.noise = NoisePool(cfg.seed, self.model.config.in_channels, cfg.block_frames, cfg.context_frames,
                               cfg.latent_height, cfg.latent_width)
        self.base_scheduler = copy.deepcopy(scheduler)
        self.base_scheduler.set_timesteps(cfg.steps, device=self.device)
        self.timesteps = self.base_scheduler.timesteps
        self.conds = CondTable(encode_prompt, cfg.negative_prompt, cfg.use_cfg, self.dtype, self.device)
        self.latents: dict[int, torch.Tensor] = {}
        self.schedulers: dict[int, object] = {}
        self.last_done: tuple[int, torch.Tensor] | None = None
        self.stats = {"ticks": 0, "blocks": 0, "tick_ms": 0.0, "forward_ms": 0.0}
        self.on_step = None  # called after every block forward (heartbeat for watchdogs)

    # --- control (any thread) --------------------------------------------------------------------------
    def submit_prompt(self, prompt: str, mode: str = "soft", blocks=None, at_block=None) -> Change:
        with self.lock:
            return self.prompts.submit(prompt, mode, blocks, at_block)

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "head": self.queue.head,
                "next_enter": self.queue.next_enter,
                "depth": self.queue.depth,
                "epoch": self.prompts.epoch,
                "prompt": self.prompts.current_prompt,
                "pending_changes": len(self.prompts.pending),
                **self.stats,
            }

    @torch.inference_mode()
    def preload(self) -> None:
        """Start in steady state instead of filling (for benchmarks): S-1 blocks at steps 1..S-1 whose scheduler
        states were advanced with a zero prediction. Output is not meaningful; timing of every later tick is."""
        if self.queue.depth or self.queue.next_enter:
            raise RuntimeError("preload() only on a fresh engine")
        s = self.cfg.steps
        for b in range(s - 1):
            done = s - 1 - b
            sched = copy.deepcopy(self.base_scheduler)
            lat = self.noise.block_noise(b, self.device)
            for k in range(done):
                lat = sched.step(torch.zeros_like(lat), self.timesteps[k], lat, return_dict=False)[0]
            self.queue.preload(b, done)
            self.prompts.enter(b)
            self.latents[b], self.schedulers[b] = lat, sched

    # --- the tick --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def tick(self) -> TickResult:
        t0 = time.perf_counter()
        res = TickResult()
        with self.lock:
            br = self.prompts.begin_tick(self.queue.head, self.queue.next_enter)
            res.applied = br.applied
            if br.flush_from is not None:
                res.flushed = self.queue.flush_from(br.flush_from)
                for b in res.flushed:
                    self.latents.pop(b, None)
                    self.schedulers.pop(b, None)
            b = self.queue.enter()
            if b is not None:
                self.prompts.enter(b)
                self.latents[b] = self.noise.block_noise(b, self.device)
                self.schedulers[b] = copy.deepcopy(self.base_scheduler)
            res.entered = b
            plan = self.queue.plan()
            conds = {w.block: self.prompts.cond(w.block) for w in plan}
            self.prompts.set_boundary(*self.queue.next_boundary())
        self.cache.clear()
        fwd = 0.0
        for work in plan:
            f0 = time.perf_counter()
            self._step_block(work, conds[work.block])
            fwd += time.perf_counter() - f0
            if self.on_step is not None:
                self.on_step(work)
        done = self.queue.advance()
        with self.lock:
            for b in done:
                lat = self.latents.pop(b)
                self.schedulers.pop(b)
                res.finished.append(FinishedBlock(b, lat, self.prompts.leave(b), self.queue.tick))
                self.last_done = (b, lat)
            res.seconds = time.perf_counter() - t0
            self.stats["ticks"] += 1
            self.stats["blocks"] += len(done)
            self.stats["tick_ms"] = res.seconds * 1e3
            self.stats["forward_ms"] = fwd * 1e3 / max(1, len(plan))
        return res

    def _context(self, work: Work) -> torch.Tensor | None:
        if work.prev is None or self.cfg.context_frames == 0:
            return None
        c = self.cfg.context_frames
        if work.prev in self.latents:  # processed after this block within the tick: start-of-tick version
            return self.latents[work.prev][:, :, -c:]
        if self.last_done is not None and self.last_done[0] == work.prev:
            return self.last_done[1][:, :, -c:]
        raise RuntimeError(f"no latents for block {work.prev}, context of block {work.block}")

    def _step_block(self, work: Work, cond: Cond) -> None:
        lat = self.latents[work.block]
        ctx = self._context(work)
        x = lat if ctx is None else torch.cat([ctx, lat], dim=2)
        x = x.to(self.dtype)
        text = self.conds.get(cond)
        if self.cfg.use_cfg:
            x = torch.cat([x, x], dim=0)
        t = self.timesteps[work.step]
        timestep = t.expand(x.shape[0])
        frames = x.shape[2]
        use_succ = work.succ is not None and self.cfg.context_frames > 0
        (rot, extra_rot) = self.geom.rope(frames, self.cfg.context_frames if use_succ else 0)
        req = self.cache.request
        req.store = self.geom.store_range(work)
        req.use_read = use_succ
        req.extra_rope = extra_rot
        carry = prologue(self.model, x, timestep, text)
        carry = run_blocks(self.model.blocks, carry, rot)
        pred = epilogue(self.model, carry)[:, :, frames - self.cfg.block_frames:]
        pred = self.guide(pred)
        self.latents[work.block] = self.schedulers[work.block].step(pred, t, lat, return_dict=False)[0]

    def guide(self, pred: torch.Tensor) -> torch.Tensor:
        if not self.cfg.use_cfg:
            return pred
        cond, uncond = pred.float().chunk(2, dim=0)
        return (uncond + float(self.cfg.guidance) * (cond - uncond)).to(pred.dtype)
