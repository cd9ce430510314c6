"""Engine rank 0 as a process: loads the model, runs the tick loop forever, decodes finished blocks on its own
thread, and talks to the daemon over one ZMQ PAIR socket (JSON headers + raw frame bytes; never pickle).

Messages to the daemon: [b"progress", json], [b"ready", json], [b"frames", json, rgb bytes], [b"event", json],
[b"stats", json] (also the heartbeat), [b"reply", json], [b"fatal", json].
Messages from the daemon: [b"cmd", json] with an "id" that the reply echoes.
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

import zmq


class Link:
    """The worker's side of the daemon link. Only the IO thread touches the socket; others use `send`."""

    def __init__(self, addr: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(addr)
        self.outbox: queue.Queue = queue.Queue()
        self.handler = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="engine-io", daemon=True)

    def start(self):
        self._thread.start()

    def send(self, kind: bytes, header: dict, payload: bytes | None = None):
        parts = [kind, json.dumps(header).encode()]
        if payload is not None:
            parts.append(payload)
        self.outbox.put(parts)

    def _loop(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            while True:
                try:
                    self.sock.send_multipart(self.outbox.get_nowait(), copy=False)
                except queue.Empty:
                    break
            if poller.poll(5):
                parts = self.sock.recv_multipart()
                if self.handler is not None and len(parts) == 2 and parts[0] == b"cmd":
                    try:
                        msg = json.loads(parts[1])
                        reply = self.handler(msg)
                    except Exception as e:  # noqa: BLE001 - never let a command kill the IO thread
                        reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
                        msg = {}
                    reply["id"] = msg.get("id")
                    self.sock.send_multipart([b"reply", json.dumps(reply).encode()])

    def close(self):
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
    ap = argparse.ArgumentParser(prog="pipeline.worker")
    ap.add_argument("--config", required=True, help="EngineConfig as JSON")
    ap.add_argument("--link", default="", help="ZMQ address of the daemon's PAIR socket (rank 0 only)")
    ap.add_argument("--death-fd", type=int, default=-1)
    args = ap.parse_args(argv)
    if args.death_fd >= 0:
        watch_death_pipe(args.death_fd)
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        from .ranks import serve_rank

        return serve_rank(args.config)
    link = Link(args.link)
    link.start()
    try:
        from .config import EngineConfig
        from .runner import Runner

        cfg = EngineConfig.from_json(args.config)
        runner = Runner(cfg, link)
        link.handler = runner.handle
        runner.run()
        return 0
    except Exception as e:  # noqa: BLE001 - report anything fatal to the daemon in one line
        traceback.print_exc(file=sys.stderr)
        link.send(b"fatal", {"error": f"{type(e).__name__}: {e}"})
        return 1
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main())
