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

import zmq
import zmq.asyncio

from pipeline.config import EngineConfig

log = logging.getLogger("streamer.engine")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineDied(RuntimeError):
    pass


class EngineLink:
    def __init__(self, cfg: EngineConfig, ctx: zmq.asyncio.Context, on_message):
        self.cfg = cfg
        self.ctx = ctx
        self.on_message = on_message  # callable(kind: str, header: dict, payload: bytes | None)
        self._dir = tempfile.TemporaryDirectory(prefix="streamer-")
        self.addr = f"ipc://{self._dir.name}/engine.sock"
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
        r, w = os.pipe()
        os.set_inheritable(r, True)
        self._death_w = w
        world = self.cfg.ranks
        cfg = dataclasses.replace(self.cfg, extra={**self.cfg.extra, "scratch": self._dir.name})
        port = _free_port()
        for rank in range(world):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            if cfg.device == "cpu":
                env.setdefault("OMP_NUM_THREADS", "1")
            elif world > 1:
                # receives are posted ahead on NCCL; with lazy module loading a kernel's first launch waits for
                # the GPU to drain, i.e. for that receive: a deadlock. Load all kernels at start instead.
                env["CUDA_MODULE_LOADING"] = "EAGER"
            cmd = [sys.executable, "-m", "pipeline.worker", "--config", cfg.to_json(), "--death-fd", str(r)]
            if rank == 0:
                cmd += ["--link", self.addr]
            # the ranks' stdout goes to our stderr: the daemon's stdout may carry the video stream
            self.procs.append(subprocess.Popen(cmd, pass_fds=(r,), stdout=sys.stderr, env=env))
        os.close(r)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    async def watch(self) -> str:
        """Return (with a reason) as soon as any rank process exits."""
        while True:
            for i, p in enumerate(self.procs):
                rc = p.poll()
                if rc is not None:
                    return f"engine rank {i} (pid {p.pid}) exited with code {rc}"
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 5.0) -> None:
        if self.procs and self.alive():
            try:
                await self.sock.send_multipart([b"cmd", json.dumps({"cmd": "stop", "id": 0}).encode()],
                                               flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
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
    async def request(self, msg: dict, timeout: float = 10.0) -> dict:
        if not self.alive():
            raise EngineDied("engine is not running")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await self.sock.send_multipart([b"cmd", json.dumps({**msg, "id": rid}).encode()])
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(rid, None)

    async def pump(self) -> None:
        """Receive messages from rank 0 forever and dispatch them."""
        while True:
            parts = await self.sock.recv_multipart()
            if len(parts) < 2:
                continue
            kind = parts[0].decode(errors="replace")
            try:
                header = json.loads(parts[1])
            except ValueError:
                log.warning("engine sent a malformed %s message", kind)
                continue
            payload = parts[2] if len(parts) > 2 else None
            if kind == "reply":
                fut = self._waiting.get(header.pop("id", None))
                if fut is not None and not fut.done():
                    fut.set_result(header)
                continue
            self.on_message(kind, header, payload)
