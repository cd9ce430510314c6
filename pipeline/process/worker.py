"""Engine rank 0 as a process: loads the model, runs the tick loop forever, decodes finished blocks on its own
thread, and talks to the daemon over one ZMQ PAIR socket (JSON headers + raw frame bytes; never pickle).

Messages both ways are pipeline.wire's.
A death pipe (the read end of a pipe whose write end only the daemon holds) ends this process when the daemon dies.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
import traceback
from collections import deque

import zmq

from common.cache import use_bytecode_cache
from common.errors import ConfigError

from .. import wire


SNDHWM = 16  # messages queued in ZMQ for the daemon; beyond them `Link` holds the rest in its outbox


class Link:
    """The worker's side of the daemon link. Only the IO thread touches the socket; others use `send`."""

    ALIVE_EVERY = 2.0  # seconds between our liveness messages

    def __init__(self, addr: str, daemon_timeout: float | None = None):
        """daemon_timeout: exit when nothing has come from the daemon for this long (ranks started by torchrun,
        which have no death pipe; the daemon pings every few seconds)."""
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.setsockopt(zmq.SNDHWM, SNDHWM)
        self.sock.connect(addr)
        self.outbox: queue.Queue = queue.Queue()
        self.handler = None
        self.daemon_timeout = daemon_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="engine-io", daemon=True)

    def start(self):
        self._thread.start()

    def send(self, msg) -> None:
        """Queue a pipeline.wire message; any thread."""
        self.outbox.put(wire.encode(msg))

    def _loop(self):
        try:
            self._serve()
        except Exception:  # noqa: BLE001 - without this thread the daemon hears nothing: end the process
            traceback.print_exc(file=sys.stderr)
            print("engine: the link to the daemon failed, exiting", file=sys.stderr)
            sys.stderr.flush()
            os._exit(1)

    def _serve(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        last_alive = last_heard = time.monotonic()
        held: deque = deque()  # a message the socket could not take yet (it goes first next time)
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_alive >= self.ALIVE_EVERY:  # from this thread: proves the process, not the engine, lives
                self.send(wire.Alive())
                last_alive = now
            if self.daemon_timeout and now - last_heard > self.daemon_timeout:
                print(f"engine: no word from the daemon for {self.daemon_timeout:.0f}s, exiting", file=sys.stderr)
                os._exit(3)
            while held or not self.outbox.empty():
                # never block on a send: with the daemon gone, a PAIR socket's queue fills and a blocking send
                # would never return to the timeout check above (orphaned ranks started by torchrun)
                msg = held.popleft() if held else self.outbox.get_nowait()
                try:
                    self.sock.send_multipart(msg, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    held.appendleft(msg)
                    break
            if poller.poll(5):
                parts = self.sock.recv_multipart()
                last_heard = time.monotonic()
                try:
                    cmd = wire.decode(parts)
                    if not isinstance(cmd, wire.Command):
                        raise wire.WireError(f"{parts[0][:20]!r} is not a command")
                except wire.WireError as e:
                    print(f"engine: ignoring a malformed command from the daemon: {e}", file=sys.stderr)
                    continue
                if self.handler is not None:
                    self._answer(cmd)

    def _answer(self, cmd) -> None:
        try:
            reply = self.handler(cmd)  # None: the handler replies later itself (reply())
        except Exception as e:  # noqa: BLE001 - never let a command kill the IO thread
            reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        if reply is not None:
            self.reply(cmd, reply)

    def reply(self, cmd, body: dict) -> None:
        self.send(wire.Reply(id=cmd.id, body=body))

    def close(self):
        self.send(wire.Bye())
        # flush what is queued, then stop
        deadline = time.monotonic() + 2.0
        while not self.outbox.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sock.close()
        self.ctx.term()


def watch_death_pipe(fd: int):
    def run():
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os._exit(3)  # the daemon is gone: nobody would consume what we make

    threading.Thread(target=run, name="death-pipe", daemon=True).start()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pipeline.process.worker")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="EngineConfig as JSON (how the daemon starts its ranks)")
    src.add_argument("--serve-config", metavar="FILE.toml",
                     help="the daemon's settings file (ranks started by torchrun; same file on every host)")
    ap.add_argument("--link", default="", help="ZMQ address of the daemon's engine socket (rank 0 only)")
    ap.add_argument("--death-fd", type=int, default=-1)
    ap.add_argument("--daemon-timeout", type=float, default=30.0, metavar="S",
                    help=f"rank 0 started by torchrun exits when the daemon has been silent this long (it pings every "
                         f"{wire.PING_EVERY:g} s; at least {wire.MIN_DAEMON_TIMEOUT:g}, default 30)")
    args = ap.parse_args(argv)
    if not args.daemon_timeout >= wire.MIN_DAEMON_TIMEOUT:
        ap.error(f"--daemon-timeout must be at least {wire.MIN_DAEMON_TIMEOUT:g} seconds (the daemon pings every "
                 f"{wire.PING_EVERY:g}), got {args.daemon_timeout}")
    if args.death_fd >= 0:
        watch_death_pipe(args.death_fd)
    try:
        config, token = (args.config, "") if args.config else _config_from_file(args.serve_config)
    except ConfigError as e:
        print(f"pipeline.process.worker: error: {e}", file=sys.stderr)
        return 2
    use_bytecode_cache()  # before torch and diffusers are imported
    rank = int(os.environ.get("RANK", "0"))
    scratch = json.loads(config).get("extra", {}).get("scratch") or ""
    if json.loads(config).get("compile"):  # before torch is imported: inductor fixes its cache folder early
        from ..model.compile import cache_dir

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and json.loads(config).get("device") != "cpu":
        # receives are posted ahead on NCCL; with lazy module loading the first launch of a kernel waits for the
        # GPU to drain, i.e. for that receive: a deadlock. Load every kernel at start (before CUDA initialises).
        os.environ.setdefault("CUDA_MODULE_LOADING", "EAGER")
    if rank != 0:
        try:
            from .ranks import serve_rank

            return serve_rank(config)
        except Exception as e:  # noqa: BLE001 - recorded for the daemon, which names the first cause
            return record_failure(scratch, rank, f"engine rank {rank}", e)
    if not args.link:
        print("pipeline.process.worker: error: rank 0 needs --link (the daemon's engine socket)", file=sys.stderr)
        return 2
    link = Link(args.link, daemon_timeout=None if args.death_fd >= 0 else args.daemon_timeout)
    link.start()
    try:
        from ..config import EngineConfig
        from .runner import ComponentFailed, Runner

        cfg = EngineConfig.from_json(config)
        link.send(wire.Hello(config=json.loads(config), token=token))
        runner = Runner(cfg, link)
        link.handler = runner.handle
        runner.run()
        return 0
    except Exception as e:  # noqa: BLE001 - report anything fatal to the daemon in one line
        component, cause = (e.component, e.cause) if isinstance(e, ComponentFailed) else ("engine rank 0", e)
        code = record_failure(scratch, 0, component, cause)
        link.send(wire.Fatal(component=component, error=f"{type(cause).__name__}: {cause}",
                             config=isinstance(cause, ConfigError)))
        return code
    finally:
        link.close()


def record_failure(scratch: str, rank: int, component: str, exc: BaseException) -> int:
    """Print the traceback, and leave one line for the daemon (`scratch`/rank<r>.error: when, which component,
    why), which names the earliest failure of all ranks. Returns the exit code: 2 for a configuration error."""
    from ..config import ConfigError

    from ..dualparal.ring import RingBroken

    if not isinstance(exc, ConfigError):
        traceback.print_exception(exc, file=sys.stderr)
    if scratch and os.path.isdir(scratch):
        # a broken ring is the consequence of another rank's failure: the daemon names a cause first
        consequence = any(isinstance(e, RingBroken) for e in _chain(exc))
        record = {"t": time.time(), "component": component, "error": f"{type(exc).__name__}: {exc}",
                  "consequence": consequence}
        tmp = os.path.join(scratch, f".rank{rank}.error")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(scratch, f"rank{rank}.error"))
    return 2 if isinstance(exc, ConfigError) else 1


def _chain(exc: BaseException):
    """The exception and the ones it was raised from or during."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


def _config_from_file(path: str) -> tuple[str, str]:
    """(the EngineConfig a daemon started with `streamer serve --config FILE` would give its ranks, the token that
    rank 0 presents to that daemon)."""
    from ..resolve import resolve

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg, values = resolve({"config": path})
    if cfg.ranks != world:
        raise ConfigError(f"{path} asks for {cfg.ranks} rank(s) (gpus/ranks), but torchrun started {world}")
    return cfg.to_json(), values["token"]


if __name__ == "__main__":
    code = main()
    if code:
        # a failed rank may hold broken communicators whose destructors abort the process at exit (SIGABRT), which
        # would hide the exit code; everything worth keeping was already reported
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
