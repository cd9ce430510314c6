"""The daemon: owns every external socket, the encoder thread and the fan-out; the engine runs in rank processes.

Lifecycle: bind sockets (fail fast) → start the engine → progress until the model is loaded → stream forever →
on SIGINT/SIGTERM stop the engine, flush the encoder, finalise stdout, close sockets, exit 0.

Any component that fails ends the daemon (systemd restarts it): an engine rank or rank 0's decoder, the encoder,
the fan-out, the stdout writer, the ZMQ publisher, the control socket, HTTP or WebRTC. `fail()` records the first
cause; the daemon logs one line naming the component and the cause, and exits 1 (2 for a configuration the engine
refused). The systemd watchdog is pinged only while blocks are being published (`streamer.health`).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import signal
import sys
import time

import numpy as np
import zmq
import zmq.asyncio

from pipeline import wire
from pipeline.config import EngineConfig
from transports.fanout import FanOut
from transports.http import build_app, start_http
from transports.push import push_format
from transports.video_format import VideoFormat
from transports.zmq_pub import VideoPublisher

from .control import ControlServer
from .engine_link import EngineDied, EngineLink
from .metrics import Metrics
from .options import ServeOptions
from .output import EncoderThread, y4m_sink
from .progress import StartupProgress
from .prompt_watch import PromptWatch, WaitRefused
from .protocol import Cancel, Pause, Resume, SetPrompt, Status
from .sdnotify import Notifier
from .sinks import Sink, build_sinks
from .stats import StreamStats

log = logging.getLogger("streamer")


class Daemon:
    def __init__(self, cfg: EngineConfig, opts: ServeOptions, engine: EngineLink | None = None):
        """engine: ranks already started (`streamer serve` starts them first, so that their imports and model load
        overlap the daemon's own start); None: the daemon starts them."""
        self.cfg = cfg
        self.opts = opts
        self.ctx = engine.ctx if engine is not None else zmq.asyncio.Context()
        self.notifier = Notifier.from_env(unset=True)
        self.stats = StreamStats(cfg)
        self.watch = PromptWatch(lambda ev: self.publisher.send_event(ev))  # reaction time, waiting set_prompts
        self._metrics = Metrics(self._metric_rows)
        self.fanout = FanOut(on_subscribe=lambda sub: self.request_keyframe())
        self.encoder: EncoderThread | None = None
        self.sinks: list[Sink] = []  # the outputs of the encoded stream (streamer.sinks)
        self.engine: EngineLink | None = engine
        self.publisher: VideoPublisher | None = None
        self.control: ControlServer | None = None
        self.http_runner = None
        self.web = None
        self.stop_event = asyncio.Event()
        self.exit_code = 0
        self.exit_reason = ""
        self.loaded = asyncio.Event()
        self.progress: StartupProgress | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[asyncio.Task, str] = {}
        self._stopping = False
        self.failed_component = ""
        self._on_engine = {wire.Frames: self._frames, wire.Stats: self._stats, wire.Progress: self._progress_msg,
                           wire.Hello: self._hello, wire.Fatal: self._fatal, wire.PromptApplied: self._event,
                           wire.PromptSuperseded: self._event, wire.QueueFlushed: self._event}  # Ready, Heartbeat, Pacing: liveness only

    # --- engine messages (event loop thread) -----------------------------------------------------------
    def on_engine(self, msg) -> None:
        """A message from engine rank 0 (pipeline.wire), on the event loop."""
        handler = self._on_engine.get(type(msg))
        if handler is not None:
            handler(msg)

    def _frames(self, m: wire.Frames) -> None:
        frames = np.frombuffer(m.payload, np.uint8).reshape(m.frames, m.height, m.width, 3)
        self.encoder.put(frames, m.block, m.epoch)
        self.stats.on_block(m, time.monotonic())
        self.publisher.send_event({"event": "block", "block": m.block, "epoch": m.epoch, "prompt": m.prompt,
                                   "frames": m.frames})

    def _stats(self, m: wire.Stats) -> None:
        self.stats.on_engine_stats(m.snapshot)
        if self.stats.health.blocks == 0 and "ticks" in m.snapshot:
            t, s = m.snapshot["ticks"], self.cfg.steps
            if "tick_s" in m.snapshot:  # (paused engines send stats without ticking)
                log.info("engine: filling the pipeline: tick %d took %.2fs", t, m.snapshot["tick_s"])
            self.progress.update(f"filling the pipeline: tick {t} of {s}" if t < s else "decoding the first block",
                                 m.snapshot.get("tick_ms", 0.0) / 1e3)

    def _progress_msg(self, m: wire.Progress) -> None:
        log.info("engine: %s", m.msg)
        self.progress.update(m.msg)
        if m.done:
            self.loaded.set()
            self.stats.health.on_loaded(time.monotonic())

    def _hello(self, m: wire.Hello) -> None:
        if self.opts.attach and self.opts.token and not hmac.compare_digest(m.token.encode(),
                                                                            self.opts.token.encode()):
            self.fail("engine rank 0", f"the peer attached at {self.opts.attach} did not present the token", code=2)
            return
        keys = ("height", "width", "fps", "steps", "block_frames", "context_frames", "seed", "model", "engine")
        diff = [f"{k}: ours {getattr(self.cfg, k)!r}, rank 0 {m.config.get(k)!r}" for k in keys
                if m.config.get(k) != getattr(self.cfg, k)]
        if diff:
            self.fail("engine rank 0", "it runs another configuration (" + "; ".join(diff) + ")", code=2)

    def _fatal(self, m: wire.Fatal) -> None:
        self.fail(m.component or "engine rank 0", m.error, code=2 if m.config else 1)

    def _event(self, m) -> None:
        self.publisher.send_event({"event": m.kind.decode(), **dataclasses.asdict(m)})

    def request_keyframe(self) -> None:
        """Any thread: the shared encoder's next frame is a keyframe (a new subscriber, a viewer's PLI)."""
        if self.encoder is not None:
            self.encoder.request_keyframe()

    def on_published(self, block: int, frames: int, epoch: int = 0, now: float | None = None) -> None:
        """A block's packets went to every consumer at `now` (event loop thread)."""
        now = time.monotonic() if now is None else now
        self.stats.on_published(frames, now)
        self.watch.published(block, epoch, now)
        if self.stats.health.blocks == 1:
            self.progress.end()
            self.notifier.ready(f"streaming, first block {block}")
            log.info("first block published: streaming")

    # --- failures ------------------------------------------------------------------------------------------
    def fail(self, component: str, cause: BaseException | str, code: int = 1) -> None:
        """Component `component` failed: end the daemon. The first failure is the one reported. Loop thread only;
        threads call `fail_threadsafe`."""
        if self.exit_reason or self._stopping:
            return
        self.exit_reason = _reason(component, cause)
        self.failed_component = component
        self.exit_code = code
        self.stop_event.set()

    def fail_threadsafe(self, component: str, cause: BaseException | str) -> None:
        self._soon(self.fail, component, cause)

    def _soon(self, fn, *args) -> None:
        """fn(*args) on the event loop, from any thread (dropped once the loop is closed)."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass

    def _spawn(self, component: str, coro) -> asyncio.Task:
        """A task that runs for the daemon's life: if it raises, or returns, the daemon ends."""
        task = asyncio.ensure_future(coro)
        self._tasks[task] = component
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        component = self._tasks.pop(task, "task")
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        self.fail(component, exc if exc is not None else "stopped unexpectedly")

    # --- health --------------------------------------------------------------------------------------------
    async def _health(self) -> None:
        """Ping the watchdog only while blocks are published; say so once when output stalls, and once when it
        falls below real time (and when it is back)."""
        stalled = slow = False

        def healthy() -> bool:
            nonlocal stalled, slow
            h, now = self.stats.health, time.monotonic()
            if h.below_real_time(now) != slow:
                slow = not slow
                if slow:
                    log.warning("output below real time: %.1f fps published over the last %.0fs for a %.4g fps "
                                "stream; players will stall (a faster preset, --tiny-vae or a lower --fps keeps up)",
                                h.fps_slow_window(now), h.slow_window_s, h.target_fps)
                else:
                    log.info("output back to real time")
            st = h.state(now)
            if (st == "stalled") != stalled:
                stalled = st == "stalled"
                if stalled:
                    age = h.last_block_age(now) or 0.0
                    log.error("output stalled: no block published for %.0fs", age)
                    self.notifier.status(f"stalled: no block published for {age:.0f}s")
                else:
                    log.info("output resumed")
                    self.notifier.status("streaming")
            return not stalled

        await self.notifier.watchdog_loop(healthy)

    # --- control ---------------------------------------------------------------------------------------
    async def handle(self, req, client: str = "") -> dict:
        """One validated control request (streamer.protocol) from `client`: the ZMQ socket and HTTP alike."""
        if isinstance(req, Status):
            return {"ok": True, **self.status()}
        if not self.loaded.is_set():
            return {"ok": False, "error": "engine is still loading"}
        handler = {SetPrompt: self._set_prompt, Cancel: self._cancel, Pause: self._pause_resume,
                   Resume: self._pause_resume}.get(type(req))
        if handler is None:
            return {"ok": False, "error": f"unsupported command {req.cmd!r}"}
        try:
            return await handler(req, client)
        except asyncio.TimeoutError:
            return {"ok": False, "error": "engine did not answer in time"}
        except EngineDied as e:
            return {"ok": False, "error": str(e)}

    async def _cancel(self, req: Cancel, client: str) -> dict:
        reply = await self.engine.request(req.for_engine())
        if reply.get("ok") and reply.get("cancelled"):
            self.watch.cancelled(reply["cancelled"])
            self.publisher.send_event({"event": "prompt_cancelled", "epochs": reply["cancelled"]})
        return reply

    async def _pause_resume(self, req, client: str) -> dict:
        reply = await self.engine.request(req.for_engine())
        self.stats.set_paused(bool(reply.get("paused")), time.monotonic())
        return reply

    async def _set_prompt(self, req: SetPrompt, client: str) -> dict:
        """Submit a change; a change "now" is timed until it is on the stream (streamer.reaction), and with
        req.wait the reply waits for that (streamer.prompt_watch)."""
        requested_at = time.monotonic()
        with contextlib.ExitStack() as held:
            if req.wait:
                try:
                    held.enter_context(self.watch.slot())
                except WaitRefused as e:
                    return {"ok": False, "error": str(e)}
            reply = await self.engine.request(req.for_engine(client))
            if not reply.get("ok"):
                return reply
            self.publisher.send_event({"event": "prompt_accepted", **{k: reply[k] for k in
                                       ("epoch", "first_block", "mode")}, "prompt": req.prompt})
            if req.at_block is not None:  # scheduled: not a reaction (and never waited for: streamer.protocol)
                return reply
            waiter = self.watch.accepted(reply["epoch"], reply["mode"], requested_at, wait=bool(req.wait))
            if waiter is None:
                return reply
            return {**reply, **await self.watch.wait(waiter, reply["epoch"])}

    def status(self) -> dict:
        s = self.stats.status()
        s["reaction"] = self.watch.snapshot()
        s["subscribers"] = [sub.name for sub in self.fanout.subscribers]  # consumers of the encoded stream
        if self.encoder is not None:
            s["encoder"] = {k: v for k, v in self.encoder.stats().items() if k != "bytes"}
        s["loaded"] = self.loaded.is_set()
        s["outputs"] = [sink.status() for sink in self.sinks]  # once each (the WebRTC hub lists every peer)
        s["push"] = [o for o in s["outputs"] if o["kind"] == "push"]  # (by kind too, as before the outputs list)
        s.update({"webrtc": o for o in s["outputs"] if o["kind"] == "webrtc"})
        s["watchdog"] = {"interval_s": self.notifier.watchdog_interval(), "pings": self.notifier.pings,
                         "health_checks": self.notifier.checks}
        return s

    def _metric_rows(self) -> list:
        return self.stats.metric_rows(viewers=len(self.fanout.subscribers),
                                      dropped=sum(s["dropped"] for s in self.fanout.stats()),
                                      encoder_bytes=self.encoder.stats()["bytes"] if self.encoder else 0) + [
            ("streamer_prompt_reaction_seconds", "histogram", "Seconds from a prompt change requested now to its "
             "first block on the stream (published)", {"mode": self.watch.tracker.histogram()})]

    def metrics(self) -> str:
        return self._metrics.render()

    # --- lifecycle -------------------------------------------------------------------------------------
    async def _bind(self):
        for url in self.opts.push:  # a push URL we cannot use is a start-up error, like a port we cannot bind
            try:
                push_format(url)
            except ValueError as e:
                raise OSError(str(e)) from None
        self.publisher = VideoPublisher(self.ctx, self.opts.publish)
        self.control = ControlServer(self.opts.control, self.handle, ctx=self.ctx,
                                     on_error=lambda e: self.fail("control", e), token=self.opts.token)
        if self.opts.http and self.opts.http != "off":
            host, _, port = self.opts.http.rpartition(":")
            from .web import WebFrontend

            self.web = WebFrontend(self.opts, host or "127.0.0.1", self.fanout, self.request_keyframe, self.handle,
                                   self.status, self.fail_threadsafe)
            app = build_app(self.fanout, self.web.status, self.metrics, index_html_path=_viewer_page(),
                            extra_routes=self.web.routes(), on_error=lambda e: self.fail("http", e),
                            middlewares=[self.web.guard])
            self.http_runner = await start_http(app, host or "127.0.0.1", int(port))
        http = (f"http://{host or '127.0.0.1'}:{port}/ (the viewer; /stream.ts, /status, /metrics)"
                if self.web is not None else "off")
        log.info("listening: control %s, video (ZMQ PUB) %s, HTTP %s", self.opts.control, self.opts.publish, http)

    async def run(self) -> int:
        self._loop = loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._bind()
        except (OSError, zmq.ZMQError) as e:
            log.error("cannot start: %s", e)
            await self._close()
            return 2
        c = self.cfg
        fmt = VideoFormat(c.width, c.height, c.fps)
        raw = y4m_sink(fmt) if self.opts.stdout == "y4m" else None
        self.encoder = EncoderThread(fmt, self.fanout, self.opts.keyframe_interval,
                                    self.opts.crf, prefer_hw=self.opts.nvenc, raw_sink=raw,
                                    on_published=lambda b, n, e: self._soon(self.on_published, b, n, e,
                                                                            time.monotonic()),
                                    on_error=self.fail_threadsafe)
        self.sinks = build_sinks(self.opts, fmt, self.fanout, self.publisher, self._spawn, self.fail_threadsafe,
                                 hub=self.web.hub if self.web is not None else None)
        self.progress = StartupProgress(self.notifier, self.opts.progress)
        if self.engine is None:
            self.engine = EngineLink(c, self.ctx, self.on_engine, attach=self.opts.attach)
            self.engine.start()
        self.engine.on_message = self.on_engine
        self._spawn("engine link", self.engine.pump())
        self._spawn("control", self.control.serve())
        self._spawn("health", self._health())
        watch = asyncio.ensure_future(self.engine.watch())
        stop = asyncio.ensure_future(self.stop_event.wait())
        log.info("engine starting: model=%s %dx%d steps=%d block=%d context=%d ranks=%d", c.model, c.height, c.width,
                 c.steps, c.block_frames, c.context_frames, c.ranks)
        self.progress.update("loading model")
        done, _ = await asyncio.wait({watch, stop}, return_when=asyncio.FIRST_COMPLETED)
        if watch in done:
            self.fail(*watch.result())
        if self.failed_component.startswith(ENGINE_COMPONENTS):
            # a rank that fails takes the others down with errors of their own: name the first cause
            await asyncio.sleep(0.3)
            root = self.engine.root_cause()
            if root is not None:
                self.exit_reason = _reason(*root)
        self._stopping = True
        if self.exit_reason:
            log.error("%s; shutting down", self.exit_reason)
        watch.cancel()
        stop.cancel()
        self.progress.end()
        self.notifier.stopping(self.exit_reason or None)
        await self._shutdown()
        return self.exit_code

    def _on_signal(self, sig):
        log.info("received %s, stopping", signal.Signals(sig).name)
        self.stop_event.set()

    async def _shutdown(self):
        failed = bool(self.exit_code)
        self.watch.close("the daemon is stopping")  # waiting set_prompt requests get their answer first
        await self.watch.drained(1.0)
        if self.engine is not None:
            await self.engine.stop(timeout=1.0 if failed else 3.0)
            # let the last frames arrive from the pump before it is cancelled
            await asyncio.sleep(0.05)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.encoder is not None:  # flush what is queued (bounded: a failed daemon does not wait for it)
            await asyncio.to_thread(self.encoder.close, 1.0 if failed else 10.0)
        for sink in self.sinks:  # each within its deadline (a failed daemon does not wait for flushes)
            try:
                await sink.stop(1.0 if failed else 5.0)
            except Exception as e:  # noqa: BLE001 - stopping goes on with the others
                log.warning("stopping %s: %s: %s", sink.name, type(e).__name__, e)
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
        self.ctx.destroy(linger=0)


ENGINE_COMPONENTS = ("engine", "decoder")  # what the engine ranks run (rank 0 also decodes)


def _reason(component: str, cause: BaseException | str) -> str:
    """One line: '<component> failed: <cause>'."""
    text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
    return f"{component} failed: {' '.join(str(text).split())}"


def _viewer_page():
    from .web import PAGE_DIR

    p = PAGE_DIR / "index.html"
    return str(p) if p.exists() else None


def serve(cfg: EngineConfig, opts: ServeOptions, engine: EngineLink | None = None) -> int:
    try:
        return asyncio.run(Daemon(cfg, opts, engine).run())
    except KeyboardInterrupt:
        return 0
    finally:
        sys.stderr.flush()
