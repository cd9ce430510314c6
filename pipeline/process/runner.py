"""Rank 0's loop around the engine: load, warm up, tick forever, decode on a side thread, pace to real time,
answer commands. Sockets live in `worker.Link`; this only calls `link.send`.
"""
from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
import traceback

import torch
import torch.distributed as dist

from common import faults
from common.errors import ComponentFailed  # noqa: F401 - re-exported (pipeline.process.worker): a part of rank 0 failed

from ..config import EngineConfig
from ..decoders.wan_vae import StreamingDecoder
from ..decoders.tiny_graph import GraphedTinyDecoder
from ..decoders.tiny_vae import StreamingTinyDecoder, check_latent_space, latent_space_of, load_tiny_decoder
from ..dualparal.engine import DTYPES, Engine, FinishedBlock
from ..model.components import load_components, vae_configs
from ..pacing import LeadEstimator, Pacer
from ..prompts import PromptError
from .ranks import dist_env, init_dist, load_rank_slice
from .. import wire
from ..commands import Cancel, Pause, Ping, Resume, SetPrompt, Status, Stop
from ..compat import diffusers as diffusers_compat
from ..model.compile import compile_blocks
from ..model.lora import apply_loras
from ..model.quant import quantize_blocks
from ..model.sdpa import apply_backend, preferred_kernel
from ..model.text import PromptEncoder


class StopRequested(Exception):
    pass


class Decoder:
    """Decodes finished blocks in order on its own thread (and CUDA stream), so the ring never waits for a decode.
    on_error(exc) is called on its thread if decoding fails; the thread then stops.

    take_turns: the engine waits (wait_turn) until every block handed over is decoded (not until its frames are
    delivered: on_frames runs after the turn is given back), so decode and ticks run one after the other. A
    compiled decoder must: dynamo's tracing in one thread is not safe while another thread calls compiled code (on
    an H200 the engine's compiled blocks failed that way while the decoder compiled). A decoder that replays CUDA
    graphs (`graphed`) never traces after its warm-up, so it can decode beside the ticks. Either way the warm-up
    (compilation, capture) is done before the engine's first tick.

    Beside the ticks, the engine still waits while more than `BACKLOG` blocks are waiting or being decoded: a
    decoder slower than real time (a loaded CPU) would otherwise fall behind without bound, and every prompt change
    would wait behind the blocks decoded ahead of it (a user saw 100 s).
    """

    BACKLOG = 1  # blocks handed over and not yet decoded when the engine may start a tick beside the decoder

    def __init__(self, dec, cfg: EngineConfig, on_frames, on_error, take_turns: bool = False, on_warm=None):
        """on_warm(seconds): called on the decoder's thread once its warm-up is done (if it has one)."""
        self.dec = dec  # a StreamingDecoder or StreamingTinyDecoder (open_decoder)
        self.cfg = cfg
        self.on_frames = on_frames
        self.on_error = on_error
        self.on_warm = on_warm
        self.take_turns = take_turns
        self.q: queue.Queue = queue.Queue()
        self.device = dec.device
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.decode_ms = 0.0
        self._turn = threading.Condition()
        # the warm-up (compilation, graph capture) is the decoder's first turn, taken before the engine's first tick
        self._warming = dec.compiled or dec.graphed
        self._pending = 1 if self._warming else 0
        self._dead = False
        self.thread = threading.Thread(target=self._loop, name="decode", daemon=True)
        self.thread.start()

    def put(self, fb: FinishedBlock):
        event = None
        if self.stream is not None:
            event = torch.cuda.Event()
            event.record()
        with self._turn:
            self._pending += 1
        self.q.put((fb, event))

    def ready(self) -> bool:
        """May the engine tick now: the decoder has warmed up, and every block handed over is decoded (take_turns)
        or at most BACKLOG are not yet; or the decoder has stopped."""
        with self._turn:
            return self._ready()

    def _ready(self) -> bool:
        limit = 0 if self.take_turns else self.BACKLOG
        return (not self._warming and self._pending <= limit) or self._dead

    def wait_turn(self) -> None:
        """Return once ready()."""
        with self._turn:
            self._turn.wait_for(self._ready)

    def _done(self) -> None:
        with self._turn:
            self._pending -= 1
            self._warming = False
            self._turn.notify_all()

    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _loop(self):
        try:
            if self._warming:  # compile/capture before the engine's first tick, not when the first block is due
                t0 = time.perf_counter()
                with self._on_stream():
                    self.dec.warm_up(self.cfg.block_frames, self.cfg.latent_height, self.cfg.latent_width)
                self._done()
                if self.on_warm is not None:
                    self.on_warm(time.perf_counter() - t0)
            while (item := self.q.get()) is not None:
                fb, event = item
                t0 = time.perf_counter()
                faults.point("decoder")
                with self._on_stream():
                    if event is not None:
                        self.stream.wait_event(event)
                    frames = self.dec.decode_block(fb.latents, new_shot=fb.shot_start)
                self.decode_ms = (time.perf_counter() - t0) * 1e3
                self._done()  # the card is free again: the engine need not wait while the frames are sent on
                self.on_frames(fb, frames)
        except Exception as e:  # noqa: BLE001 - reported to the runner, which ends the engine
            traceback.print_exc(file=sys.stderr)
            self.on_error(e)
        finally:
            with self._turn:
                self._dead = True
                self._turn.notify_all()

    def close(self):
        self.q.put(None)
        self.thread.join(timeout=30)


def open_decoder(cfg: EngineConfig, vae, latent_channels: int, device):
    """The model's own VAE decoder, or with --tiny-vae the tiny one (the model's VAE is then not loaded)."""
    backend = "inductor" if cfg.compile else None
    if cfg.tiny_vae:
        net = load_tiny_decoder(cfg.tiny_vae, latent_channels).to(device, DTYPES[cfg.vae_dtype])
        if device.type == "cuda":
            return GraphedTinyDecoder(net, compile_backend=backend)
        return StreamingTinyDecoder(net, compile_backend=backend)
    return StreamingDecoder(vae, chunk_frames=cfg.decode_chunk, compile_backend=backend)


class Runner:
    def __init__(self, cfg: EngineConfig, link):
        self.cfg = cfg = cfg.validate().resolved(local_rank=dist_env()[2])
        self.link = link
        self.paused = threading.Event()
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.lead = LeadEstimator(cfg.fps, cfg.steps, fixed=cfg.lead)  # fed by the tick loop and the decoder
        self._lead_lock = threading.Lock()
        self.pacer = Pacer(cfg.fps, lead_s=self.lead.lead_s())
        self.pace = bool(cfg.extra.get("pace", True))
        self.engine: Engine | None = None
        self.penc: PromptEncoder | None = None
        self.failure: ComponentFailed | None = None
        self.prompt_q: queue.Queue = queue.Queue()
        self.paused_checks = 0

    # --- commands (IO thread) --------------------------------------------------------------------------
    def handle(self, msg: wire.Command) -> dict | None:
        """Answer a command (pipeline.commands.ENGINE, one method each) on the IO thread, or None when it is answered
        later (set_prompt: the text encoder runs on the prompts thread, not here)."""
        cmd = msg.command()
        handler = {Ping: self._ping, Stop: self._stop, SetPrompt: self._set_prompt, Cancel: self._cancel,
                   Pause: self._pause, Resume: self._resume, Status: self._status}[type(cmd)]
        if self.engine is None and not isinstance(cmd, (Ping, Stop)):
            return {"ok": False, "error": "engine is still loading"}
        return handler(msg, cmd)

    def _ping(self, msg, cmd: Ping) -> dict:
        return {"ok": True}

    def _stop(self, msg, cmd: Stop) -> dict:
        self.stop.set()
        self.wake.set()
        return {"ok": True}

    def _set_prompt(self, msg, cmd: SetPrompt) -> None:
        self.prompt_q.put((msg, cmd))
        return None

    def _cancel(self, msg, cmd: Cancel) -> dict:
        try:
            return {"ok": True, "cancelled": self.engine.cancel_prompts(cmd.epoch)}
        except PromptError as e:
            return {"ok": False, "error": str(e)}

    def _pause(self, msg, cmd: Pause) -> dict:
        self.paused.set()
        return {"ok": True, "paused": True}

    def _resume(self, msg, cmd: Resume) -> dict:
        self.paused.clear()
        self.pacer.reset()
        self.wake.set()
        return {"ok": True, "paused": False}

    def _status(self, msg, cmd: Status) -> dict:
        return {"ok": True, **self.snapshot()}

    def _prompts(self) -> None:
        """The prompts thread: embed each new prompt (a cache hit for the engine afterwards), then submit it."""
        while (item := self.prompt_q.get()) is not None:
            msg, cmd = item
            try:
                self.penc.encode(cmd.prompt)
                ch = self.engine.submit_prompt(cmd.prompt, cmd.mode, cmd.blocks, cmd.at_block,
                                               client=cmd.client)
                reply = {"ok": True, "epoch": ch.epoch, "first_block": ch.first_block, "mode": ch.mode}
                self.wake.set()
            except PromptError as e:
                reply = {"ok": False, "error": str(e)}
            except Exception as e:  # noqa: BLE001 - the text encoder failing is the engine failing
                self.link.reply(msg, {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"})
                self._failed("text encoder", e)
                return
            self.link.reply(msg, reply)

    def snapshot(self) -> dict:
        snap = self.engine.snapshot()
        snap["paused"] = self.paused.is_set()
        snap["paused_checks"] = self.paused_checks  # loops of the paused engine (it stays in step with the daemon)
        snap["decode_ms"] = self.decoder.decode_ms if hasattr(self, "decoder") else 0.0
        snap["pace_lead_s"] = round(self.pacer.lead_s, 3) if self.pace else None  # None: --no-pace
        return snap

    # --- loading ---------------------------------------------------------------------------------------
    def _progress(self, msg: str, done: bool = False):
        self.link.send(wire.Progress(msg=msg, done=done))

    def load(self):
        cfg = self.cfg
        diffusers_compat.self_test()
        if cfg.tiny_vae:  # before any weights load: a model with its own VAE cannot use it
            check_latent_space(*vae_configs(cfg.model), cfg.model, declared=latent_space_of(cfg.tiny_vae))
        device = torch.device(cfg.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        rank, world, _ = dist_env()
        if world > 1:
            init_dist(device, world, rank)
            self._progress(f"loading rank 0 of {world}: model {cfg.model!r} on {device} ({cfg.dtype})")
            source, experts, layers = load_rank_slice(cfg, rank, world, device)
            comps = load_components("tiny" if cfg.model == "tiny" else source, device=device,
                                    dtype=DTYPES[cfg.dtype], flow_shift=cfg.flow_shift,
                                    parts=("text",) if cfg.tiny_vae else ("vae", "text"),
                                    vae_dtype=DTYPES[cfg.vae_dtype])
        else:
            self._progress(f"loading model {cfg.model!r} on {device} ({cfg.dtype})")
            comps = load_components(cfg.model, device=device, dtype=DTYPES[cfg.dtype], flow_shift=cfg.flow_shift,
                                    vae_dtype=DTYPES[cfg.vae_dtype],
                                    parts=("transformer", "text") if cfg.tiny_vae else ("transformer", "vae", "text"))
            experts, layers = comps.transformers, None
            for model in experts:
                apply_backend(model, cfg.attention_backend, device, DTYPES[cfg.dtype])
            if cfg.lora:  # (a rank's slice gets its share in load_rank_slice)
                self._progress(f"fusing {len(cfg.lora)} LoRA(s)")
                for i, model in enumerate(experts):
                    apply_loras(model, cfg.lora, expert=i, experts=len(experts))
        transformer = experts[0]
        if cfg.quant == "fp8":
            for model in experts:
                quantize_blocks(model.blocks[slice(*layers) if layers else slice(None)], device)
        self._progress("encoding prompts")
        self.penc = PromptEncoder(comps.tokenizer, comps.text_encoder, comps.text_max_len, device=device,
                                  dtype=DTYPES[cfg.dtype])
        self.penc.encode(cfg.prompt)
        if cfg.engine == "causal":  # a causal checkpoint (pipeline/causal/): block after block, or a stream batch
            from ..causal.engine import CausalEngine
            from ..causal.stream import CausalStreamEngine

            kind = CausalStreamEngine if cfg.stream_batch else CausalEngine
            self.engine = kind(cfg, transformer, self.penc.encode, device=device, world=world, layers=layers)
            blocks = transformer.blocks
        else:
            self.engine = Engine(cfg, experts, comps.scheduler, self.penc.encode, device=device, world=world,
                                 layers=layers)
            blocks = self.engine.stage.blocks
        if cfg.compile:
            self._progress(f"compiling the transformer blocks (cache: {compile_blocks(blocks)})")
            if cfg.engine == "causal":  # every cache length the stream will see, compiled before the first frame
                t0 = time.perf_counter()
                n = self.engine.warm_up()
                self._progress(f"compiled the causal engine's window lengths ({n} warm-up ticks) in {time.perf_counter() - t0:.1f}s")
        dec = open_decoder(cfg, comps.vae, transformer.config.in_channels, device)
        # a compiled decoder takes turns with the ticks (see Decoder); a graph-replayed one need not
        turns = not cfg.decode_overlap or (dec.compiled and not dec.graphed)
        how = "compiled and captured" if dec.compiled and dec.graphed else "captured" if dec.graphed else "compiled"
        self.decoder = Decoder(dec, cfg, self._emit, on_error=lambda e: self._failed("decoder", e), take_turns=turns,
                               on_warm=lambda s: self._progress(f"decoder {how} in {s:.1f}s"))
        threading.Thread(target=self._prompts, name="prompts", daemon=True).start()
        last = [0.0]

        def heartbeat(work):
            if self.stop.is_set():
                raise StopRequested  # leave a long tick at the next window instead of finishing it
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                self.link.send(wire.Heartbeat(block=work.block, step=work.step))

        self.engine.on_step = heartbeat
        self._progress("model loaded", done=True)

    def _failed(self, component: str, exc: BaseException) -> None:
        """A side thread failed: leave the loop at the next window and raise it from run()."""
        if self.failure is None:
            self.failure = ComponentFailed(component, exc)
        self.stop.set()
        self.wake.set()

    # --- output ----------------------------------------------------------------------------------------
    def _emit(self, fb: FinishedBlock, frames):
        with self._lead_lock:
            self.lead.on_decode(self.decoder.decode_ms / 1e3)
        t, h, w, _ = frames.shape
        self.link.send(wire.Frames(block=fb.index, epoch=fb.cond.epoch, prompt=fb.cond.prompt, frames=t, height=h,
                                   width=w, tick=fb.tick, decode_ms=round(self.decoder.decode_ms, 2),
                                   payload=memoryview(frames).cast("B")))  # sent without a copy

    # --- the loop --------------------------------------------------------------------------------------
    def _wait(self, seconds: float):
        self.wake.clear()
        self.wake.wait(seconds)

    def run(self):
        with preferred_kernel(self.cfg.attention_backend):
            self.load()
            try:
                self._loop()
            except StopRequested:
                pass
            finally:
                self.prompt_q.put(None)
                self.engine.drain()  # predictions still in the ring (multi-rank)
                self.engine.close()  # tells the other ranks to stop
                self.decoder.close()
                if dist.is_initialized():
                    dist.destroy_process_group()
        if self.failure is not None:
            raise self.failure

    def _loop(self):
        first = True
        while not self.stop.is_set():
            if self.paused.is_set():
                self.paused_checks += 1
                self.link.send(wire.Stats(snapshot=self.snapshot()))
                self._wait(0.5)
                continue
            if self.pace:
                d = self.pacer.delay(time.monotonic())
                if d > 0:
                    self._wait(min(d, 0.5))
                    self.link.send(wire.Pacing())
                    continue
            self.decoder.wait_turn()
            if self.stop.is_set():
                break
            faults.point("engine")
            res = self.engine.tick()
            with self._lead_lock:
                self.lead.on_tick(res.seconds, res.windows)
                self.pacer.lead_s = self.lead.lead_s()
            for ch in res.applied:
                self.link.send(wire.PromptApplied(epoch=ch.epoch, mode=ch.mode, prompt=ch.prompt,
                                                  first_block=ch.first_block))
            if res.superseded:
                self.link.send(wire.PromptSuperseded(epochs=[ch.epoch for ch in res.superseded],
                                                     by=max(ch.epoch for ch in res.applied)))
            if res.flushed:
                self.link.send(wire.QueueFlushed(blocks=res.flushed))
            for fb in res.finished:
                if first:
                    self.link.send(wire.Ready(first_block=fb.index, ticks=self.engine.stats["ticks"]))
                    first = False
                self.decoder.put(fb)
                self.pacer.emitted(self.cfg.video_frames_of_block(fb.index), time.monotonic())
            self.link.send(wire.Stats(snapshot={**self.snapshot(), "tick_s": res.seconds}))
