"""Does watching cost generation? One daemon (tiny model by default), its generation rate and tick timings measured
with 0 WebRTC viewers, then with N aiortc viewers (default 8) connected through POST /offer, then with 0 again after
they left (to see drift), all on 127.0.0.1.

Each phase samples /status for --seconds: video frames emitted per second of wall time (frames_emitted delta),
the daemon's own fps figure, the engine tick / decode times and the encoder time per block, and the CPU used by the
daemon and its engine process; in the viewer phase also what each viewer received (decoded frames per second,
frames skipped, the server-side lag). Run it twice: paced (the daemon holds real time, the rate should stay at
--fps) and with --no-pace (the engine runs flat out, so any CPU the viewers take shows up as lost fps).

    OMP_NUM_THREADS=1 python benchmarks/viewers.py [--viewers 8] [--seconds 20] [--no-pace] [--out FILE.json]
    (extra arguments after -- go to `streamer serve`, e.g. -- --height 128 --width 128)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import aiohttp
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from transports.webrtc import restrict_host_addresses  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


class Viewer:
    def __init__(self, base: str):
        self.base = base
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames = 0
        self.task = None
        self.peer = None

    async def connect(self, session: aiohttp.ClientSession):
        got = asyncio.get_running_loop().create_future()
        self.pc.on("track", lambda t: got.done() or got.set_result(t))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with session.post(self.base + "/offer", json={"sdp": self.pc.localDescription.sdp, "type": "offer"}) as r:
            ans = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {ans}")
        self.peer = ans["peer"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type=ans["type"]))
        track = await asyncio.wait_for(got, 20)
        self.task = asyncio.ensure_future(self._read(track))

    async def _read(self, track):
        while True:
            await track.recv()
            self.frames += 1

    async def close(self):
        if self.task:
            self.task.cancel()
        await self.pc.close()


def _tick(st: dict) -> tuple[float, float]:
    tick = st.get("tick_ms")
    decode = st.get("decode_ms")
    ranks = st.get("ranks") or [{}]
    if tick is None:
        tick = ranks[0].get("tick_ms", 0.0)
    if decode is None:
        decode = ranks[0].get("decode_ms", 0.0)
    return float(tick or 0.0), float(decode or 0.0)


async def sample(session, base: str, seconds: float, procs: list[psutil.Process], viewers=()) -> dict:
    async def status():
        async with session.get(base + "/status") as r:
            return await r.json()

    for p in procs:
        p.cpu_percent(None)
    me = psutil.Process()
    me.cpu_percent(None)
    psutil.cpu_percent(None)
    t0, st0 = time.monotonic(), await status()
    v0 = [v.frames for v in viewers]
    ticks, decodes, encodes, fps = [], [], [], []
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(0.5)
        st = await status()
        tick, dec = _tick(st)
        ticks.append(tick)
        decodes.append(dec)
        encodes.append(float((st.get("encoder") or {}).get("encode_ms", 0.0)))
        fps.append(float(st.get("fps", 0.0)))
    t1, st1 = time.monotonic(), await status()
    cpu = sum(p.cpu_percent(None) for p in procs)
    machine = psutil.cpu_percent(None) * (os.cpu_count() or 1)
    client = me.cpu_percent(None)
    dt = t1 - t0
    out = {
        "seconds": round(dt, 2),
        "gen_fps": round((st1["frames_emitted"] - st0["frames_emitted"]) / dt, 3),
        "status_fps_mean": round(statistics.fmean(fps), 3),
        "tick_ms_mean": round(statistics.fmean(ticks), 2),
        "tick_ms_p90": round(sorted(ticks)[int(0.9 * (len(ticks) - 1))], 2),
        "decode_ms_mean": round(statistics.fmean(decodes), 2),
        "encode_ms_per_block_mean": round(statistics.fmean(encodes), 2),
        "daemon_cpu_percent": round(cpu, 1),
        "bench_process_cpu_percent": round(client, 1),  # the viewers (aiortc receivers) and the sampling
        "machine_cpu_percent": round(machine, 1),  # all cores, 100 per core: what else was running shows here
        "blocks": st1["blocks_emitted"] - st0["blocks_emitted"],
    }
    if viewers:
        rates = [(v.frames - n) / dt for v, n in zip(viewers, v0)]
        peers = {p["id"]: p for p in st1.get("webrtc", {}).get("peers", [])}
        out.update({
            "viewers": len(viewers),
            "viewer_fps_min": round(min(rates), 2), "viewer_fps_max": round(max(rates), 2),
            "viewers_connected": st1.get("webrtc", {}).get("viewers"),
            "skipped_packets": sum(p.get("skipped", 0) for p in peers.values()),
            "server_lag_ms_max": max((p.get("lag_ms") or 0.0) for p in peers.values()) if peers else None,
        })
    return out


async def run(args, extra) -> dict:
    http = free_port()
    base = f"http://127.0.0.1:{http}"
    cmd = [sys.executable, "-m", "streamer", "serve", "--control", f"tcp://127.0.0.1:{free_port()}",
           "--publish", f"tcp://127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{http}", "--log-level", "warning"]
    if args.no_pace:
        cmd.append("--no-pace")
    cmd += extra
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    daemon = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    restrict_host_addresses(["127.0.0.1"])
    viewers: list[Viewer] = []
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 120
            while True:
                assert daemon.poll() is None, "daemon exited"
                try:
                    async with s.get(base + "/status") as r:
                        st = await r.json()
                    if st.get("blocks_emitted", 0) > 0:
                        break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "daemon did not start streaming"
                await asyncio.sleep(0.3)
            dproc = psutil.Process(daemon.pid)
            procs = [dproc] + dproc.children(recursive=True)
            await asyncio.sleep(args.warmup)
            base_phase = await sample(s, base, args.seconds, procs)
            print(f"0 viewers: {base_phase}", file=sys.stderr)
            viewers = [Viewer(base) for _ in range(args.viewers)]
            await asyncio.gather(*(v.connect(s) for v in viewers))
            await asyncio.sleep(args.warmup)
            view_phase = await sample(s, base, args.seconds, procs, viewers)
            print(f"{len(viewers)} viewers: {view_phase}", file=sys.stderr)
            await asyncio.gather(*(v.close() for v in viewers))
            viewers = []
            await asyncio.sleep(args.warmup)
            after_phase = await sample(s, base, args.seconds, procs)
            print(f"0 viewers again: {after_phase}", file=sys.stderr)
            async with s.get(base + "/status") as r:
                st = await r.json()
    finally:
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        daemon.terminate()
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
    return {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
            "pace": not args.no_pace, "serve_args": extra, "config": st.get("config"),
            "target_fps": st.get("target_fps"), "viewers": args.viewers,
            "phases": {"0 viewers": base_phase, f"{args.viewers} viewers": view_phase, "0 viewers again": after_phase},
            "webrtc_after": st.get("webrtc")}


def table(res: dict) -> str:
    (k0, a), (k1, b), (k2, c) = list(res["phases"].items())
    rows = [("generated video fps (frames_emitted / wall s)", "gen_fps"),
            ("daemon /status fps (mean)", "status_fps_mean"),
            ("engine tick ms (mean)", "tick_ms_mean"), ("engine tick ms (p90)", "tick_ms_p90"),
            ("VAE decode ms / block (mean)", "decode_ms_mean"),
            ("x264 encode ms / block (mean)", "encode_ms_per_block_mean"),
            ("daemon + engine CPU % (100 = one core)", "daemon_cpu_percent"),
            ("benchmark process CPU % (the aiortc receivers)", "bench_process_cpu_percent"),
            ("whole machine CPU % (2 cores = 200)", "machine_cpu_percent")]
    lines = [f"| quantity | {k0} | {k1} | {k2} |", "|---|---|---|---|"]
    lines += [f"| {name} | {a[key]} | {b[key]} | {c[key]} |" for name, key in rows]
    lines.append(f"| fps received per viewer (min–max) | – | {b['viewer_fps_min']}–{b['viewer_fps_max']} | – |")
    lines.append(f"| packets skipped (all viewers) / max server lag ms | – | {b['skipped_packets']} / "
                 f"{b['server_lag_ms_max']} | – |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--no-pace", action="store_true", help="let the engine run flat out (shows lost fps)")
    ap.add_argument("--out", help="write the results as JSON here")
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = ap.parse_args(argv)
    res = asyncio.run(run(args, extra))
    print(f"machine: {res['machine']['cpu']} ({res['machine']['cores']} cores); pace={res['pace']}; "
          f"config={res['config']}")
    print(table(res))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
