"""The daemon's side of the engine: starts the engine rank process(es), owns the PAIR socket to rank 0,
turns requests into awaitable replies, and notices when a rank dies.

A death pipe ties the ranks to the daemon: the daemon holds the only write end, so if the daemon dies for any
reason the ranks read EOF and exit; no orphans.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time

import zmq
import zmq.asyncio

from common import faults
from pipeline.config import EngineConfig
from pipeline import wire
from pipeline.commands import Command, Ping, Stop
from pipeline.devices import runs_on_cpu

log = logging.getLogger("streamer.engine")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineDied(RuntimeError):
    pass


class EngineLink:
    ATTACH_TIMEOUT = 15.0  # attached rank 0 considered gone after this long without a message

    def __init__(self, cfg: EngineConfig, ctx: zmq.asyncio.Context, on_message, attach: str = ""):
        """attach: bind this address and wait for a rank 0 started elsewhere (torchrun) instead of starting ranks."""
        self.cfg = cfg
        self.ctx = ctx
        self.on_message = on_message  # callable(a pipeline.wire message)
        self._dir = tempfile.TemporaryDirectory(prefix="streamer-")
        self.attach = attach
        self.addr = attach or f"ipc://{self._dir.name}/engine.sock"
        self.last_seen: float | None = None
        self.bye = asyncio.Event()
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.addr)
        self.procs: list[subprocess.Popen] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._death_w: int | None = None
        self.exit_reason: str | None = None

    # --- processes -------------------------------------------------------------------------------------
    def start(self) -> None:
        """One process per rank; rank 0 links to us. Ranks meet through torch.distributed on a loopback port."""
        if self.attach:
            log.info("waiting for engine rank 0 (torchrun) to connect to %s", self.attach)
            return
        r, w = os.pipe()
        os.set_inheritable(r, True)
        self._death_w = w
        world = self.cfg.ranks
        cfg = dataclasses.replace(self.cfg, extra={**self.cfg.extra, "scratch": self._dir.name})
        port = _free_port()
        for rank in range(world):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):  # systemd talks to the daemon only
                env.pop(key, None)
            if runs_on_cpu(cfg.device):
                # CPU ranks: one thread each unless the operator says otherwise (oversubscribed torch threads
                # were many times slower on small machines)
                env.setdefault("OMP_NUM_THREADS", "1")
            cmd = [sys.executable, "-m", "pipeline.process.worker", "--config", cfg.to_json(), "--death-fd", str(r)]
            if rank == 0:
                cmd += ["--link", self.addr]
            # the ranks' stdout goes to our stderr: the daemon's stdout may carry the video stream
            self.procs.append(subprocess.Popen(cmd, pass_fds=(r,), stdout=sys.stderr, env=env))
        os.close(r)

    def alive(self) -> bool:
        if self.attach:
            return self.last_seen is not None and time.monotonic() - self.last_seen < self.ATTACH_TIMEOUT
        return all(p.poll() is None for p in self.procs)

    def dead_ranks(self) -> list[tuple[str, str]]:
        """(component, cause) for each rank process that has exited, the ones killed by a signal first."""
        dead = sorted((p.returncode, i, p.pid) for i, p in enumerate(self.procs) if p.poll() is not None)
        return [(f"engine rank {i}", f"process {pid} exited " + (f"(killed by signal {-rc})" if rc < 0 else
                                                                    f"with code {rc}")) for rc, i, pid in dead]

    def root_cause(self) -> tuple[str, str] | None:
        """(component, cause) of the first failure among the ranks: the earliest failure a rank recorded
        (`pipeline.process.worker.record_failure`) that was not the consequence of a peer's loss, else a rank killed by a
        signal (it could not say why), else the earliest recorded consequence, else None."""
        records = []
        for name in os.listdir(self._dir.name):
            if name.startswith("rank") and name.endswith(".error"):
                try:
                    with open(os.path.join(self._dir.name, name)) as f:
                        r = json.load(f)
                    records.append((bool(r.get("consequence")), float(r["t"]), str(r["component"]),
                                    str(r["error"])))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        causes = sorted(r for r in records if not r[0])
        if causes:
            return causes[0][2:]
        killed = [d for d in self.dead_ranks() if "signal" in d[1]]
        if killed:
            return killed[0]
        return min(records)[2:] if records else None

    async def watch(self) -> tuple[str, str]:
        """Return (component, cause) as soon as any rank process exits (or an attached rank 0 falls silent)."""
        while True:
            if self.attach:
                if self.last_seen is not None and not self.alive():
                    return "engine rank 0", f"silent for {self.ATTACH_TIMEOUT:.0f}s at {self.attach}"
                try:  # keep-alive: an attached rank 0 exits when the daemon falls silent
                    await self.sock.send_multipart(wire.encode(wire.Command.of(Ping())), flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                await asyncio.sleep(wire.PING_EVERY)
                continue
            dead = self.dead_ranks()
            if dead:
                return dead[0]
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 5.0) -> None:
        if self.attach or (self.procs and self.alive()):
            try:
                await self.sock.send_multipart(wire.encode(wire.Command.of(Stop())), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        if self.attach and self.last_seen is not None:  # no process to wait for: wait for its goodbye
            try:
                await asyncio.wait_for(self.bye.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("attached engine rank 0 did not confirm its stop within %.0fs", timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        while any(p.poll() is None for p in self.procs) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self.kill()

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._death_w is not None:
            os.close(self._death_w)
            self._death_w = None

    def close(self) -> None:
        self.kill()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(EngineDied("engine stopped"))
        self.sock.close()
        self._dir.cleanup()

    # --- messages --------------------------------------------------------------------------------------
    async def request(self, cmd: Command, timeout: float = 10.0) -> dict:
        """Send a command (pipeline.commands) to rank 0 and wait for its Reply's body."""
        if not self.alive():
            raise EngineDied("engine is not running")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await self.sock.send_multipart(wire.encode(wire.Command.of(cmd, id=rid)))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(rid, None)

    async def pump(self) -> None:
        """Receive messages from rank 0 forever and dispatch them; a malformed one raises (the daemon ends: the
        engine is not what it should be)."""
        while True:
            msg = wire.decode(await self.sock.recv_multipart())
            self.last_seen = time.monotonic()
            faults.point("engine link")
            if isinstance(msg, wire.Alive):
                continue
            if isinstance(msg, wire.Bye):
                self.bye.set()
            elif isinstance(msg, wire.Reply):
                fut = self._waiting.get(msg.id)
                if fut is not None and not fut.done():
                    fut.set_result(msg.body)
            else:
                self.on_message(msg)
