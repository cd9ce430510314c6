"""The daemon: owns every external socket, the encoder thread and the fan-out; the engine runs in rank processes.

Lifecycle: bind sockets (fail fast) → start the engine → progress until the model is loaded → stream forever →
on SIGINT/SIGTERM stop the engine, flush the encoder, finalise stdout, close sockets, exit 0. If an engine rank
dies, exit non-zero with a clear message (systemd restarts us).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import zmq
import zmq.asyncio

from pipeline.config import EngineConfig
from transports.fanout import FanOut
from transports.http import build_app, start_http
from transports.zmq_pub import VideoPublisher

from .control import ControlServer
from .engine_link import EngineDied, EngineLink
from .output import EncoderStage, StdoutTs, y4m_sink
from .protocol import Pause, Resume, SetPrompt, Status
from .sdnotify import Notifier
from .stats import StreamStats

log = logging.getLogger("streamer")


@dataclass
class ServeOptions:
    control: str = "tcp://127.0.0.1:5555"
    publish: str = "tcp://127.0.0.1:5556"
    http: str = "127.0.0.1:8080"  # "" or "off" disables HTTP
    stdout: str = ""  # "", "mpegts" or "y4m"
    keyframe_interval: float = 2.0
    crf: int = 23
    nvenc: bool = False
    progress: bool = True
    attach: str = ""  # ZMQ address to wait on for a rank 0 started by torchrun ("" = start the ranks ourselves)
    # browser viewers (streamer/web.py): STUN/TURN URLs ("" = host candidates only), host-candidate addresses
    # ("auto" = loopback while HTTP is on loopback), shared token for /offer and /control, viewer limit
    ice_servers: str = ""
    ice_username: str = ""
    ice_credential: str = ""
    ice_hosts: str = "auto"
    token: str = ""
    max_viewers: int = 32


class Daemon:
    def __init__(self, cfg: EngineConfig, opts: ServeOptions):
        self.cfg = cfg
        self.opts = opts
        self.ctx = zmq.asyncio.Context()
        self.notifier = Notifier.from_env(unset=True)
        self.stats = StreamStats(cfg)
        self.fanout = FanOut(on_subscribe=lambda sub: self.encoder and self.encoder.enc.request_keyframe())
        self.encoder: EncoderStage | None = None
        self.stdout_ts: StdoutTs | None = None
        self.engine: EngineLink | None = None
        self.publisher: VideoPublisher | None = None
        self.control: ControlServer | None = None
        self.http_runner = None
        self.web = None
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self.exit_reason = ""
        self.loaded = asyncio.Event()
        self._last_watchdog = 0.0
        self._progress = None

    # --- engine messages (event loop thread) -----------------------------------------------------------
    def on_engine(self, kind: str, header: dict, payload: bytes | None) -> None:
        if kind == "frames":
            frames = np.frombuffer(payload, np.uint8).reshape(header["frames"], header["height"], header["width"], 3)
            self.encoder.put(frames, header["block"], header["epoch"])
            self.stats.on_block(header, time.monotonic())
            self.publisher.send_event({"event": "block", "block": header["block"], "epoch": header["epoch"],
                                       "prompt": header["prompt"], "frames": header["frames"]})
            if self.stats.blocks == 1:
                self._end_progress()
                self.notifier.ready(f"streaming, first block {header['block']}")
                log.info("first block emitted: streaming")
            self._pet_watchdog()
        elif kind == "stats":
            self.stats.on_engine_stats(header)
            self._pet_watchdog()
            if self._progress is not None and self.stats.blocks == 0 and "ticks" in header:
                t, s = header["ticks"], self.cfg.steps
                self._progress(f"filling the pipeline: tick {t} of {s}" if t < s else "decoding the first block")
        elif kind == "event":
            self.publisher.send_event(header)
        elif kind == "progress":
            log.info("engine: %s", header.get("msg"))
            if self._progress is not None:
                self._progress(header.get("msg", ""))
            if header.get("done"):
                self.loaded.set()
        elif kind == "ready":
            pass
        elif kind == "hello":
            theirs = header.get("config", {})
            keys = ("height", "width", "fps", "steps", "block_frames", "context_frames", "seed", "model")
            diff = [f"{k}: ours {getattr(self.cfg, k)!r}, rank 0 {theirs.get(k)!r}" for k in keys
                    if theirs.get(k) != getattr(self.cfg, k)]
            if diff:
                self.exit_reason = "engine rank 0 runs another configuration (" + "; ".join(diff) + ")"
                self.exit_code = 2
                self.stop_event.set()
        elif kind == "fatal":
            self.exit_reason = f"engine failed: {header.get('error')}"
            self.exit_code = 1
            self.stop_event.set()

    def _start_progress(self):
        """A live spinner on an interactive terminal while the model loads and the pipeline fills."""
        if not (self.opts.progress and sys.stderr.isatty()):
            return
        from rich.console import Console

        status = Console(stderr=True).status("starting the engine")
        status.start()
        self._status = status
        self._progress = status.update

    def _end_progress(self):
        if getattr(self, "_status", None) is not None:
            self._status.stop()
            self._status = None
        self._progress = None

    def _pet_watchdog(self):
        iv = self.notifier.watchdog_interval()
        now = time.monotonic()
        if iv and now - self._last_watchdog >= iv / 2:
            self._last_watchdog = now
            self.notifier.watchdog()

    # --- control ---------------------------------------------------------------------------------------
    async def handle(self, req) -> dict:
        if isinstance(req, Status):
            return {"ok": True, **self.status()}
        if not self.loaded.is_set():
            return {"ok": False, "error": "engine is still loading"}
        try:
            if isinstance(req, SetPrompt):
                reply = await self.engine.request({"cmd": "set_prompt", "prompt": req.prompt, "mode": req.mode,
                                                   "blocks": req.blocks, "at_block": req.at_block})
                if reply.get("ok"):
                    self.publisher.send_event({"event": "prompt_accepted", **{k: reply[k] for k in
                                               ("epoch", "first_block", "mode")}, "prompt": req.prompt})
                return reply
            if isinstance(req, (Pause, Resume)):
                reply = await self.engine.request({"cmd": req.cmd})
                self.stats.paused = bool(reply.get("paused"))
                return reply
        except asyncio.TimeoutError:
            return {"ok": False, "error": "engine did not answer in time"}
        except EngineDied as e:
            return {"ok": False, "error": str(e)}
        return {"ok": False, "error": f"unsupported command {req.cmd!r}"}

    def status(self) -> dict:
        s = self.stats.status()
        s["viewers"] = len(self.fanout.subscribers)
        if self.encoder is not None:
            s["encoder"] = {"codec": self.encoder.enc.codec_name, "backlog_blocks": self.encoder.backlog(),
                            "encode_ms": round(self.encoder.encode_ms, 2)}
        s["loaded"] = self.loaded.is_set()
        return s

    def metrics(self) -> str:
        return self.stats.prometheus(viewers=len(self.fanout.subscribers),
                                     dropped=sum(s["dropped"] for s in self.fanout.stats()),
                                     encoder_bytes=self.encoder.enc.bytes_out if self.encoder else 0)

    # --- lifecycle -------------------------------------------------------------------------------------
    async def _bind(self):
        self.publisher = VideoPublisher(self.ctx, self.opts.publish)
        self.control = ControlServer(self.opts.control, self.handle, ctx=self.ctx)
        if self.opts.http and self.opts.http != "off":
            host, _, port = self.opts.http.rpartition(":")
            from .web import WebFrontend

            self.web = WebFrontend(self, host or "127.0.0.1")
            app = build_app(self.fanout, self.web.status, self.metrics, index_html_path=_viewer_page(),
                            extra_routes=self.web.routes())
            self.http_runner = await start_http(app, host or "127.0.0.1", int(port))

    async def _forward_video(self):
        sub = self.fanout.subscribe(maxsize=1024, name="zmq-pub")
        try:
            while True:
                pkt = await sub.aget(timeout=1.0)
                if pkt is not None:
                    self.publisher.send_packet(pkt)
        finally:
            self.fanout.unsubscribe(sub)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._bind()
        except (OSError, zmq.ZMQError) as e:
            log.error("cannot start: %s", e)
            await self._close()
            return 2
        c = self.cfg
        raw = y4m_sink(c.width, c.height, c.fps) if self.opts.stdout == "y4m" else None
        self.encoder = EncoderStage(c.width, c.height, c.fps, self.fanout, self.opts.keyframe_interval,
                                    self.opts.crf, prefer_hw=self.opts.nvenc, raw_sink=raw)
        if self.opts.stdout == "mpegts":
            self.stdout_ts = StdoutTs(self.fanout, c.width, c.height, c.fps)
        self.engine = EngineLink(c, self.ctx, self.on_engine, attach=self.opts.attach)
        self._start_progress()
        self.engine.start()
        tasks = [asyncio.create_task(x) for x in (self.engine.pump(), self.control.serve(), self._forward_video())]
        watch = asyncio.create_task(self.engine.watch())
        stop = asyncio.create_task(self.stop_event.wait())
        log.info("engine starting: model=%s %dx%d steps=%d block=%d context=%d ranks=%d", c.model, c.height, c.width,
                 c.steps, c.block_frames, c.context_frames, c.ranks)
        self.notifier.status("loading model")
        done, _ = await asyncio.wait({watch, stop}, return_when=asyncio.FIRST_COMPLETED)
        if watch in done or self.exit_code == 1:
            # a rank that died takes the others down with errors of their own: name the dead process first
            await asyncio.sleep(0.3)
            causes = self.engine.dead_ranks() or [watch.result() if watch in done else ""]
            self.exit_reason = "; ".join(x for x in [*causes, self.exit_reason] if x)
            self.exit_code = 1
        if self.exit_reason:
            log.error("%s; shutting down", self.exit_reason)
        watch.cancel()
        stop.cancel()
        self._end_progress()
        self.notifier.stopping()
        await self._shutdown(tasks)
        return self.exit_code

    def _on_signal(self, sig):
        log.info("received %s, stopping", signal.Signals(sig).name)
        self.stop_event.set()

    async def _shutdown(self, tasks):
        if self.engine is not None:
            await self.engine.stop(timeout=3.0)
            # let the last frames arrive from the pump before it is cancelled
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.encoder is not None:
            await asyncio.to_thread(self.encoder.close)
            if self.encoder.error:
                log.warning("%s", self.encoder.error)
        if self.stdout_ts is not None:
            await asyncio.to_thread(self.stdout_ts.close)
        await self._close()

    async def _close(self):
        if self.web is not None:
            await self.web.close()
        if self.http_runner is not None:
            await self.http_runner.cleanup()
        if self.control is not None:
            self.control.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.engine is not None:
            self.engine.close()
        self.fanout.close()
        self.notifier.close()
        self.ctx.term()


def _viewer_page():
    from pathlib import Path

    p = Path(__file__).resolve().parent.parent / "clients" / "index.html"
    return str(p) if p.exists() else None


def serve(cfg: EngineConfig, opts: ServeOptions) -> int:
    try:
        return asyncio.run(Daemon(cfg, opts).run())
    except KeyboardInterrupt:
        return 0
    finally:
        sys.stderr.flush()
