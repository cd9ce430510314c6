"""Hostile clients against a real daemon (tiny model, this machine, loopback only), each section against a baseline
of the same run. Writes JSON to --out as it goes.

- fuzz: --zmq-messages seeded random control messages (mutated valid requests, random bytes and JSON, oversized
  frames, wrong frame counts) on ZMQ and --http-messages on HTTP POST /control; every one must get an error reply
  (or a 4xx), the daemon must stay up and the stream keep flowing;
- memory: 16 hostile peers (8 ZMQ flooding bad requests, 8 HTTP holding slow uploads) for --memory-seconds; the
  daemon's RSS (with its engine process) before, at the end and after they leave;
- stalled: 8 /stream.ts readers, 8 SUB sockets and 8 WebRTC peers that never read; the published frame rate
  (unpaced engine) against the same daemon without them;
- soak: --soak-seconds of prompt changes every 5 s and /stream.ts viewers coming and going; RSS, file descriptors
  and threads at the start and the end.

    python benchmarks/abuse.py --out abuse.json [--sections fuzz,memory,stalled,soak]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import psutil
import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from clients.client import ControlClient  # noqa: E402
from conftest import DaemonProc  # noqa: E402

GOOD = [b'{"cmd":"status"}', b'{"cmd":"set_prompt","prompt":"a blue square moving up","mode":"soft"}',
        b'{"cmd":"set_prompt","prompt":"x","mode":"blend","blocks":3}', b'{"cmd":"pause"}', b'{"cmd":"resume"}',
        b'{"cmd":"cancel","all":true}', b'{"cmd":"set_prompt","prompt":"y","mode":"queue","at_block":50}']


def mutate(rng: random.Random) -> bytes:
    """A hostile message: a valid request with bytes flipped, cut, repeated or spliced; random JSON; random bytes."""
    kind = rng.randrange(6)
    base = bytearray(rng.choice(GOOD))
    if kind == 0:
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        return bytes(base)
    if kind == 1:
        return bytes(base[:rng.randrange(len(base))])
    if kind == 2:
        return json.dumps({"cmd": rng.choice(["set_prompt", "status", "x", 1, None]), "prompt": rng.choice(
            ["", " ", "a" * rng.randrange(1, 5000), 3, [], {"a": 1}]), "mode": rng.choice(["soft", "cut", 7, "z"]),
            "at_block": rng.choice([-1, 0, 2**62, 1.5, "3", None]), "id": rng.choice([1, "i", [], 2**70])}).encode()
    if kind == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    if kind == 4:
        return b"[" * rng.randrange(1, 5000)
    return base * rng.randrange(2, 50)


def rss_mb(proc: psutil.Process) -> float:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def published(d: DaemonProc) -> int:
    with ControlClient(d.control, timeout=30) as c:
        return c.status()["frames_published"]


def rate(d: DaemonProc, seconds: float) -> float:
    a, t0 = published(d), time.monotonic()
    time.sleep(seconds)
    return (published(d) - a) / (time.monotonic() - t0)


def fuzz(d: DaemonProc, n_zmq: int, n_http: int, seed: int) -> dict:
    rng = random.Random(seed)
    ctx = zmq.Context.instance()
    replied = errors = ok = 0
    before = published(d)
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(d.control)
    for i in range(n_zmq):
        msg = mutate(rng)
        if rng.random() < 0.02:
            frames = [b"", msg, b"extra"]
        else:
            frames = [b"", msg]
        s.send_multipart(frames)
        if s.poll(30_000):
            reply = json.loads(s.recv_multipart()[-1])
            replied += 1
            errors += reply.get("ok") is False
            ok += reply.get("ok") is True
        else:  # an oversized frame costs the sender its connection (no reply): reconnect
            s.close()
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(d.control)
    s.close()
    with ControlClient(d.control, timeout=30) as c:  # the fuzz may have paused the stream (a valid request)
        c.resume()
    statuses: dict[int, int] = {}
    base = f"http://127.0.0.1:{d.http_port}/control"
    for i in range(n_http):
        req = urllib.request.Request(base, data=mutate(rng), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        statuses[code] = statuses.get(code, 0) + 1
    alive = d.proc.poll() is None
    with ControlClient(d.control, timeout=30) as c:
        c.resume()
    deadline = time.monotonic() + 60
    while published(d) <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    flowing = published(d) > before
    return {"zmq_sent": n_zmq, "zmq_replied": replied, "zmq_error_replies": errors, "zmq_ok_replies": ok,
            "zmq_dropped_oversized": n_zmq - replied, "http_sent": n_http, "http_statuses": statuses,
            "http_5xx": sum(v for k, v in statuses.items() if k >= 500), "daemon_alive": alive,
            "stream_kept_flowing": flowing}


def memory(d: DaemonProc, seconds: float) -> dict:
    """The daemon process is what the peers talk to: its RSS is the figure; the engine process's (which no peer
    reaches, and which grows on its own early in its life) is reported beside it."""
    proc = psutil.Process(d.proc.pid)

    def own():
        return proc.memory_info().rss / 2**20

    base, engine_base = own(), rss_mb(proc) - own()
    stop = threading.Event()

    def zmq_flood():
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 1000)  # the attacker's own queue: 60 MB, not the daemon's
        s.connect(d.control)
        junk = b"{" + b"x" * 60_000
        while not stop.is_set():
            try:
                s.send_multipart([b"", junk], flags=zmq.NOBLOCK)
            except zmq.Again:
                time.sleep(0.01)
        s.close()

    def slow_upload():
        while not stop.is_set():
            try:
                c = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
                c.sendall(b"POST /control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 60000\r\n\r\n")
                while not stop.is_set():
                    c.sendall(b"x")
                    time.sleep(0.5)
            except OSError:
                time.sleep(0.2)
    threads = [threading.Thread(target=zmq_flood, daemon=True) for _ in range(8)]
    threads += [threading.Thread(target=slow_upload, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    peak = base
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        peak = max(peak, own())
        time.sleep(1.0)
    end = own()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    time.sleep(5.0)  # let the daemon close what they left
    after = own()
    return {"peers": 16, "seconds": seconds, "daemon_rss_base_mb": round(base, 1),
            "daemon_rss_peak_mb": round(peak, 1), "daemon_rss_end_mb": round(end, 1),
            "daemon_rss_after_mb": round(after, 1), "growth_mb": round(peak - base, 1),
            "engine_rss_base_mb": round(engine_base, 1), "engine_rss_after_mb": round(rss_mb(proc) - after, 1),
            "daemon_alive": d.proc.poll() is None}


def stalled(d: DaemonProc, seconds: float) -> dict:
    baseline = rate(d, seconds)
    socks = []
    for _ in range(8):  # /stream.ts readers that never read
        c = socket.create_connection(("127.0.0.1", d.http_port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET /stream.ts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        socks.append(c)
    subs = []
    for _ in range(8):  # SUB sockets that never read
        s = zmq.Context.instance().socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.setsockopt(zmq.RCVHWM, 10)
        s.connect(d.publish)
        subs.append(s)
    loop = asyncio.new_event_loop()  # runs beside the measurement: the peers connect, then never read
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    peers = asyncio.run_coroutine_threadsafe(_webrtc_peers(d, 8), loop).result(timeout=120)
    connected = asyncio.run_coroutine_threadsafe(_connected(peers), loop).result(timeout=120)
    with_them = rate(d, seconds)

    async def close_all():
        await asyncio.gather(*(p.close() for p in peers))
    asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=60)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(timeout=10)
    for c in socks:
        c.close()
    for s in subs:
        s.close(linger=0)
    return {"baseline_fps": round(baseline, 2), "with_stalled_fps": round(with_them, 2),
            "webrtc_connected": connected,
            "ratio": round(with_them / baseline, 3) if baseline else None, "daemon_alive": d.proc.poll() is None}


async def _connected(peers, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(p.connectionState == "connected" for p in peers):
        await asyncio.sleep(0.2)
    return sum(p.connectionState == "connected" for p in peers)


async def _webrtc_peers(d: DaemonProc, n: int) -> list:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    peers = []
    for _ in range(n):
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")  # its track is never read
        await pc.setLocalDescription(await pc.createOffer())
        body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{d.http_port}/offer", data=body,
                                     headers={"Content-Type": "application/json"})
        ans = json.loads(await asyncio.get_running_loop().run_in_executor(
            None, lambda: urllib.request.urlopen(req, timeout=30).read()))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type=ans["type"]))
        peers.append(pc)
    return peers


def soak(d: DaemonProc, seconds: float) -> dict:
    proc = psutil.Process(d.proc.pid)

    def sample():
        procs = [proc] + proc.children(recursive=True)
        return {"rss_mb": round(rss_mb(proc), 1), "fds": sum(p.num_fds() for p in procs),
                "threads": sum(p.num_threads() for p in procs)}
    rng = random.Random(1)
    time.sleep(10.0)  # settle
    start = sample()
    t0 = time.monotonic()
    changes = viewers = 0
    prompts = ["a red circle moving left on a black background", "a blue square moving up on a gray background",
               "a white triangle moving down on a navy background"]
    with ControlClient(d.control, timeout=30) as c:
        while time.monotonic() - t0 < seconds:
            c.set_prompt(rng.choice(prompts), mode=rng.choice(["soft", "queue", "blend", "cut"]))
            changes += 1
            v = socket.create_connection(("127.0.0.1", d.http_port))
            v.sendall(b"GET /stream.ts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            v.recv(65536)
            v.close()
            viewers += 1
            time.sleep(5.0)
    time.sleep(10.0)
    end = sample()
    return {"seconds": seconds, "prompt_changes": changes, "viewers": viewers, "start": start, "end": end,
            "rss_change": round(end["rss_mb"] / start["rss_mb"] - 1, 4),
            "fds_change": round(end["fds"] / start["fds"] - 1, 4),
            "threads_change": round(end["threads"] / start["threads"] - 1, 4), "daemon_alive": d.proc.poll() is None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="fuzz,memory,stalled,soak")
    ap.add_argument("--zmq-messages", type=int, default=10_000)
    ap.add_argument("--http-messages", type=int, default=2_000)
    ap.add_argument("--memory-seconds", type=float, default=60.0)
    ap.add_argument("--stalled-seconds", type=float, default=20.0)
    ap.add_argument("--soak-seconds", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="abuse.json")
    a = ap.parse_args()
    res = {"args": vars(a), "machine": f"{os.cpu_count()} cores"}
    sections = a.sections.split(",")
    for name in sections:
        d = DaemonProc("--no-pace") if name == "stalled" else DaemonProc()
        try:
            d.wait_streaming()
            t0 = time.monotonic()
            if name == "fuzz":
                res[name] = fuzz(d, a.zmq_messages, a.http_messages, a.seed)
            elif name == "memory":
                res[name] = memory(d, a.memory_seconds)
            elif name == "stalled":
                res[name] = stalled(d, a.stalled_seconds)
            elif name == "soak":
                res[name] = soak(d, a.soak_seconds)
            res[name]["wall_s"] = round(time.monotonic() - t0, 1)
        finally:
            res.setdefault(name, {})["exit_code"] = d.stop(timeout=60)
        print(name, json.dumps(res[name]), flush=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
