import os
import socket
import subprocess
import sys
import time

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_rank(rank: int, world: int, port: int, cfg_json: str):
    """In a process of mp.spawn: join the gloo group of `world` CPU ranks. Ranks 1.. serve their slice until rank 0
    says stop and return None; rank 0 gets (EngineConfig, its models, its layers) with the group initialised."""
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pipeline.config import EngineConfig
    from pipeline.process.ranks import init_dist, load_rank_slice, serve_rank

    if rank != 0:
        if serve_rank(cfg_json) != 0:
            raise SystemExit(1)
        return None
    cfg = EngineConfig.from_json(cfg_json)
    init_dist(torch.device("cpu"), world, 0)
    _, models, layers = load_rank_slice(cfg, 0, world, torch.device("cpu"))
    return cfg, models, layers


_HANDED_OUT: set[int] = set()


def _port_slice() -> range:
    """The ports this test process hands out: below the kernel's ephemeral range, where outgoing connections (ZMQ,
    gloo, torchrun's store) take their local ports, so a port chosen here cannot be taken by one of those between
    the choice and the daemon's bind (a daemon once found the publish port it was given held by one); each xdist
    worker gets a slice of its own."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 10000, max(ephemeral_low, 12000)
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or 0) % workers
    size = (high - low) // workers
    return range(low + worker * size, low + (worker + 1) * size)


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range (see _port_slice), never the same one
    twice in this process."""
    import random

    ports = _port_slice()
    for _ in range(1000):
        port = random.choice(ports)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {ports} that was not handed out before")


class DaemonProc:
    """A real `streamer serve` subprocess on ephemeral loopback ports."""

    def __init__(self, *extra, http=True, stdout=subprocess.DEVNULL, env=None, model="tiny", token=""):
        if model and "--model" not in extra:  # the random tiny model keeps daemon tests fast (model=None: default)
            extra = ("--model", model, *extra)
        self.token = token  # the daemon's, for the control requests made here
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.http_port = free_port()
        args = [sys.executable, "-m", "streamer", "serve", "--control", self.control, "--publish", self.publish,
                "--http", f"127.0.0.1:{self.http_port}" if http else "off", *extra]
        e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
        self.stderr_path = f"/tmp/streamer-test-{os.getpid()}-{self.http_port}.log"
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=stdout, stderr=self._err, env=e)

    def log(self) -> str:
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_streaming(self, timeout=90.0):
        from clients.client import ControlClient

        c = ControlClient(self.control, timeout=2.0, token=self.token)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"daemon exited early:\n{self.log()}"
                try:
                    st = c.status()
                    if st.get("blocks_emitted", 0) > 0:
                        return st
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                time.sleep(0.3)
        finally:
            c.close()
        raise AssertionError(f"daemon did not stream within {timeout}s:\n{self.log()}")

    def wait_status(self, pred, what: str, timeout=120.0) -> dict:
        """Poll /status-equivalent (the control socket's status) until pred(status) holds; the timeout only
        catches hangs."""
        from clients.client import ControlClient

        deadline = time.monotonic() + timeout
        with ControlClient(self.control, timeout=10.0, token=self.token) as c:
            while True:
                assert self.proc.poll() is None, f"daemon exited while waiting for {what}:\n{self.log()}"
                st = c.status()
                if pred(st):
                    return st
                assert time.monotonic() < deadline, f"no {what} within {timeout}s: {st}\n{self.log()}"
                time.sleep(0.1)  # polling interval, not synchronisation: the loop waits for the condition

    def stop(self, timeout=15.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._err.close()


@pytest.fixture(scope="module")
def daemon():
    d = DaemonProc()
    d.wait_streaming()
    yield d
    rc = d.stop()
    assert rc == 0, d.log()
