"""The socket-free engine core: `tick()` advances every block in flight by one step and returns finished blocks.

One device here; the dual-parallel pipeline runs the same per-window work (`stages.Stage`) split over ranks.
"""
from __future__ import annotations

import copy
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from ..config import EngineConfig
from .context import ContextPlan, blocks_back, plan_context
from ..family import expert_for
from .noise import NoisePool
from ..prompts import DEFAULT_MODE, Change, Cond, PromptSchedule
from .schedule import BlockQueue, Work
from ..model.split import prologue
from .stages import DTYPES, DistPipe, ItemMeta, LocalPipe, build_stage  # noqa: F401 - DTYPES re-exported




@dataclass
class FinishedBlock:
    index: int
    latents: torch.Tensor  # [1, ch, B, h, w] float32, clean
    cond: Cond
    tick: int
    shot_start: bool = False  # first block after a cut: generated without context, decoded as a new stream


@dataclass
class BlockState:
    """One block from entering the queue until it is handed out as finished."""

    latents: torch.Tensor  # [1, ch, B, h, w] float32: noisy while in flight, clean once `clean`
    scheduler: object  # its own copy of the scheduler (multistep state)
    serial: int  # this entry's serial: a cut re-enters blocks, and predictions for an older entry are dropped
    clean: bool = False  # its last prediction was applied
    cond: Cond | None = None  # set when it left the queue (all steps issued): its dominant conditioning


@dataclass
class TickResult:
    finished: list[FinishedBlock] = field(default_factory=list)
    applied: list[Change] = field(default_factory=list)
    superseded: list[Change] = field(default_factory=list)  # changes "now" overtaken by a newer one (dropped)
    flushed: list[int] = field(default_factory=list)
    entered: int | None = None
    seconds: float = 0.0
    windows: int = 0  # blocks in flight that this tick ran a window of (S in steady state, fewer while filling)


def open_tick(prompts: PromptSchedule, queue: BlockQueue, shots: list[int], res: "TickResult",
              states: dict) -> list[int]:
    """A tick boundary of a block queue: the prompt changes due now take effect (res.applied, res.superseded), a cut
    starts a new shot at its first block (later shot starts go with it) and drops the blocks in flight from there
    (res.flushed), with their entries in `states` (the engine's per-block state; predictions still in flight for
    them will be dropped). Returns the first blocks of the shots still needed: the head block's and any later
    ones."""
    br = prompts.begin_tick(queue.head, queue.next_enter)
    res.applied, res.superseded = br.applied, br.superseded
    for ch in br.applied:
        if ch.mode == "cut":
            shots = [s for s in shots if s < ch.first_block] + [ch.first_block]
    head = queue.head
    shots = [max(s for s in shots if s <= head)] + [s for s in shots if s > head]
    if br.flush_from is not None:
        res.flushed = queue.flush_from(br.flush_from)
        for b in res.flushed:
            states.pop(b, None)
    return shots


class CondTable:
    """Text embeddings per conditioning (mixtures of prompts), batched with the negative prompt for CFG. Only what
    the text encoder's own cache (pipeline.model.text.PromptEncoder) does not hold is kept here: mixtures and CFG
    batches."""

    def __init__(self, encode, negative: str, use_cfg: bool, dtype, device):
        self._encode, self._use_cfg, self._dtype, self._device = encode, use_cfg, dtype, device
        self._neg = encode(negative).to(device=device, dtype=dtype) if use_cfg else None
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, cond: Cond) -> torch.Tensor:
        if not self._use_cfg and len(cond.parts) == 1 and cond.parts[0][1] == 1.0:
            # one prompt, no CFG: the encoder's cached embedding as it is (no second copy here; same values)
            return self._encode(cond.parts[0][0]).to(device=self._device, dtype=self._dtype)
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


class PromptControl:
    """Prompt changes from any thread, for an engine with `lock` and `prompts` (a PromptSchedule)."""

    def submit_prompt(self, prompt: str, mode: str = DEFAULT_MODE, blocks=None, at_block=None,
                      client: str = "") -> Change:
        with self.lock:
            return self.prompts.submit(prompt, mode, blocks, at_block, client=client)

    def cancel_prompts(self, epoch: int | None = None) -> list[int]:
        with self.lock:
            return self.prompts.cancel(epoch)


class Engine(PromptControl):
    """Rank 0's engine. With `world` > 1 the windows flow through the other ranks (DistPipe); rank 0 runs the
    prologue and its own slice and applies the scheduler step when a prediction comes back.

    `transformer`: the model, or a two-expert model's list (high-noise expert first, pipeline.family): each window
    is run by the expert of its timestep, so blocks at different noise levels in one tick may use different ones."""

    def __init__(self, cfg: EngineConfig, transformer, scheduler, encode_prompt, device="cpu", world: int = 1,
                 layers: tuple[int, int] | None = None):
        self.cfg = cfg.validate()
        self.device = torch.device(device)
        self.dtype = DTYPES[cfg.dtype]
        models = list(transformer) if isinstance(transformer, (list, tuple)) else [transformer]
        self.models = [m.eval().requires_grad_(False) for m in models]
        self.model = self.models[0]
        want = len(cfg.model_family().experts)
        if len(self.models) != want:
            raise ValueError(f"model {cfg.model!r} has {want} expert(s), the engine was given {len(self.models)}")
        self.boundary = cfg.boundary_timestep(scheduler.config.num_train_timesteps)
        layers = layers or (0, len(self.model.blocks))
        self.stage = build_stage(cfg, self.models, layers, rank=0, world=world, device=self.device)
        self.geom = self.stage.geom
        lat_shape = (1, self.model.config.in_channels, cfg.block_frames, cfg.latent_height, cfg.latent_width)
        self.pipe = LocalPipe(self.stage) if world == 1 else DistPipe(self.stage, world, lat_shape, self.dtype,
                                                                      self.device)
        self.world = world
        self.queue = BlockQueue(cfg.steps)
        self.prompts = PromptSchedule(cfg.prompt)
        self.lock = threading.Lock()
        self.noise = NoisePool(cfg.seed, self.model.config.in_channels, cfg.block_frames, cfg.context_frames,
                               cfg.latent_height, cfg.latent_width)
        self.base_scheduler = copy.deepcopy(scheduler)
        self.base_scheduler.set_timesteps(cfg.steps, device=self.device)
        self.timesteps = self.base_scheduler.timesteps
        self.conds = CondTable(encode_prompt, cfg.negative_prompt, cfg.use_cfg, self.dtype, self.device)
        self.blocks: dict[int, BlockState] = {}  # from entering the queue until handed out
        self.inflight: deque = deque()  # (window serial, block, step, block serial): prediction not yet applied
        self.finished: list[FinishedBlock] = []
        self.recent: dict[int, torch.Tensor] = {}  # clean latents of the last finished blocks (context, recomputed)
        self.shots: list[int] = [0]  # first blocks of shots (the stream's start, cuts) that blocks may still use
        self._serial = 0
        self.stats = {"ticks": 0, "blocks": 0, "tick_ms": 0.0, "forward_ms": 0.0}
        self.on_step = None  # called after every block submission (heartbeat for watchdogs)

    # --- control (any thread) --------------------------------------------------------------------------
    def snapshot(self) -> dict:
        with self.lock:
            return {
                "head": self.queue.head,
                "next_enter": self.queue.next_enter,
                "depth": self.queue.depth,
                # ticks until the head block leaves the queue (S after a cut or at start, 1 in steady state)
                "ticks_to_output": self.cfg.steps - self.queue.blocks()[0][1] if self.queue.depth else self.cfg.steps,
                "epoch": self.prompts.epoch,
                "prompt": self.prompts.current_prompt,
                "pending_changes": len(self.prompts.pending),
                "in_flight_windows": len(self.inflight),
                **self.stats,
                "ranks": [{"rank": r, "compute_s": round(v[0] / 1e3, 3), "wait_s": round(v[1] / 1e3, 3),
                           "wait_share": round(v[1] / (v[0] + v[1]), 4) if v[0] + v[1] > 0 else 0.0,
                           "peak_mem_gib": round(v[2], 3), "windows": int(v[3])}
                          for r, v in enumerate(self.pipe.rank_stats)],
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
            self.blocks[b] = BlockState(lat, sched, self._next_serial())
        self.stage.cache.lenient = True  # --reuse-context: no tails were cached for the preloaded blocks

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    # --- the tick --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def tick(self) -> TickResult:
        t0 = time.perf_counter()
        res = TickResult()
        with self.lock:
            self.shots = open_tick(self.prompts, self.queue, self.shots, res, self.blocks)
            b = self.queue.enter()
            if b is not None:
                self.prompts.enter(b)
                self.blocks[b] = BlockState(self.noise.block_noise(b, self.device),
                                            copy.deepcopy(self.base_scheduler), self._next_serial())
            res.entered = b
            plan = self.queue.plan()
            res.windows = len(plan)
            conds = {w.block: self.prompts.cond(w.block) for w in plan}
            self.prompts.set_boundary(*self.queue.next_boundary())
        fwd = 0.0
        for work in plan:
            ctx = self._plan(work.block)
            self._wait_for(work.block, *ctx.blocks)
            f0 = time.perf_counter()
            self._submit(work, ctx, conds[work.block])
            fwd += time.perf_counter() - f0
            self._apply_ready(wait=False)
            if self.on_step is not None:
                self.on_step(work)
        done = self.queue.advance()
        with self.lock:
            for b in done:
                self.blocks[b].cond = self.prompts.leave(b)
        self._collect()
        self._apply_ready(wait=False)
        res.finished, self.finished = self.finished, []
        self.stage.cache.lenient = False  # every block in flight has run once: its tail is cached
        with self.lock:
            res.seconds = time.perf_counter() - t0
            self.stats["ticks"] += 1
            self.stats["blocks"] += len(res.finished)
            self.stats["tick_ms"] = res.seconds * 1e3
            self.stats["forward_ms"] = fwd * 1e3 / max(1, len(plan))
        return res

    def drain(self) -> list[FinishedBlock]:
        """Wait for every prediction in flight (multi-rank) and return the blocks that finished."""
        while self.inflight:
            self._apply_one(wait=True)
        out, self.finished = self.finished, []
        return out

    def _wait_for(self, *blocks) -> None:
        """A window sees its own and its context blocks' latents as of the start of the tick: wait until no
        prediction of an earlier tick is outstanding for them."""
        while any(item[1] in blocks for item in self.inflight):
            self._apply_one(wait=True)

    def _apply_ready(self, wait: bool) -> None:
        while self.inflight and self._apply_one(wait):
            pass

    def _apply_one(self, wait: bool) -> bool:
        got = self.pipe.poll(wait)
        if got is None:
            return False
        serial, pred = got
        s, block, step, block_serial = self.inflight.popleft()
        if s != serial:
            raise RuntimeError(f"prediction {serial} arrived out of order (expected {s})")
        st = self.blocks.get(block)
        if st is None or st.serial != block_serial:
            return True  # the block was flushed by a cut after this window was sent
        st.latents = st.scheduler.step(pred, self.timesteps[step], st.latents, return_dict=False)[0]
        if step == self.cfg.steps - 1:
            st.clean = True
            self.recent[block] = st.latents
            for old in [b for b in self.recent if b < block - blocks_back(self.cfg.block_frames,
                                                                           self.cfg.context_frames)]:
                del self.recent[old]
            self._collect()
        return True

    def _collect(self) -> None:
        """Blocks whose last step was issued (they left the queue) and whose last prediction landed, in order."""
        for b in sorted(b for b, st in self.blocks.items() if st.clean and st.cond is not None):
            st = self.blocks.pop(b)
            self.finished.append(FinishedBlock(b, st.latents, st.cond, self.queue.tick,
                                               shot_start=b > 0 and b in self.shots))

    def shot_of(self, block: int) -> int:
        """The first block of `block`'s shot."""
        return max(s for s in self.shots if s <= block)

    def _plan(self, block: int) -> ContextPlan:
        cfg = self.cfg
        return plan_context(block, self.shot_of(block), cfg.block_frames, cfg.context_frames, cfg.sink_frames)

    def _context(self, ctx: ContextPlan) -> torch.Tensor | None:
        """The context frames to prepend as tokens (None with --reuse-context: they come from the cache): the end of
        each context block as of the start of the tick (blocks in flight are processed after this one within the
        tick; finished ones are clean)."""
        if not ctx.frames or self.cfg.reuse_context:
            return None
        parts = []
        for b, n in ctx.sources:
            st = self.blocks.get(b)
            lat = st.latents if st is not None else self.recent.get(b)
            if lat is None:
                raise RuntimeError(f"no latents for block {b}, context of a later block")
            parts.append(lat[:, :, -n:])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def _submit(self, work: Work, ctx: ContextPlan, cond: Cond) -> None:
        st = self.blocks[work.block]
        lat = st.latents
        prefix = self._context(ctx)
        x = lat if prefix is None else torch.cat([prefix, lat], dim=2)
        x = x.to(self.dtype)
        text = self.conds.get(cond)
        if self.cfg.use_cfg:
            x = torch.cat([x, x], dim=0)
        t = self.timesteps[work.step]
        timestep = t.expand(x.shape[0])
        serial = self._next_serial()
        expert = expert_for(float(t), self.boundary)
        meta = ItemMeta(serial=serial, block=work.block, step=work.step, frames=x.shape[2], shot=ctx.shot,
                        use_succ=work.succ is not None and self.cfg.context_frames > 0, expert=expert)
        # (TI2V's per-token timesteps are all t for text-to-video: the scalar timestep gives the same modulation)
        carry = prologue(self.models[expert], x, timestep, text)
        self.inflight.append((serial, work.block, work.step, st.serial))
        self.pipe.submit(meta, carry)

    def close(self) -> None:
        """Stop the other ranks (multi-rank)."""
        self.pipe.close()

    def retire(self) -> None:
        """Leave the other ranks running for another Engine on rank 0 (benchmarks)."""
        self.drain()
        if isinstance(self.pipe, DistPipe):
            self.pipe.retire()
