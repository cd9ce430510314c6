"""The quality–speed–latency frontier: one table, one row per configuration of the few-step recipe.

    python benchmarks/frontier.py gpu --out frontier_gpu.json [--configs A,B]   # a GPU host: the real daemon
    python benchmarks/frontier.py toy --out frontier_toy.json [--configs A,B]   # any host: the toy world's pictures
    python benchmarks/frontier.py table frontier_gpu.json frontier_toy.json     # the Markdown table

gpu: for each configuration, the real daemon (`streamer serve`) on a random-weight Wan2.1-1.3B folder at 480x832
(built once, as benchmarks/daemon_gpu.py does), started twice:
- unpaced (`--no-pace`): frames published per second over --fps-seconds of steady output (from /status), tick and
  decode times, the engine's peak memory and the card's, the time from process start to the first frame;
- paced (real time): --rounds `soft` changes, then --rounds `cut` changes, each sent as a user would (ZMQ control,
  a REQ socket), with the stream read from the ZMQ publish socket: prompt -> publish and prompt -> display
  (benchmarks/frontier_metrics.py: a player that never stalls), medians.
toy: the same configurations on the toy world's real-time member (`toyworld-rt`, 64x64) through
benchmarks/quality.py: prompt accuracy on random prompts, seam ratio, drift, and blocks until a soft change is clean
(2 recognised blocks in a row). torch.compile changes no arithmetic that matters here and is not re-scored.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.frontier_metrics import fps_between, reaction, summary  # noqa: E402

FEW_STEP = ["--steps", "4", "--guidance", "1", "--flow-shift", "5", "--fps", "16"]


def _geom(b: int, c: int, sink: int = 0) -> list[str]:
    return ["--block-frames", str(b), "--context-frames", str(c), "--sink-frames", str(sink)]


def _levers(names: str) -> list[str]:
    """'reuse+compile+tiny' -> the serve options of those levers (the others off: recomputed context, eager, the
    model's own VAE)."""
    got = set(names.split("+")) - {"full"}
    return (["--reuse-context" if "reuse" in got else "--no-reuse-context",
             "--compile" if "compile" in got else "--no-compile"] + (["tiny"] if "tiny" in got else []))


# name -> serve options on top of FEW_STEP: "<levers> <block frames>/<context frames>[+sink]"; "tiny" means the
# tiny decoder (random TAEHV weights on the GPU, the model's own on the toy world)
CONFIGS = {
    f"{lev} {b}/{c}{'+sink' if k else ''}": _geom(b, c, k) + _levers(lev)
    for lev, b, c, k in (
        ("full", 4, 4, 0), ("full", 2, 2, 0), ("full", 8, 8, 0),
        ("compile", 4, 4, 0), ("compile+tiny", 4, 4, 0), ("compile+tiny", 2, 2, 0),
        ("compile", 2, 2, 0), ("compile", 2, 1, 0), ("compile+tiny", 2, 1, 0),
        ("reuse+compile", 4, 4, 0), ("reuse+compile", 2, 2, 0),
        ("reuse+compile+tiny", 8, 8, 0), ("reuse+compile+tiny", 4, 4, 0), ("reuse+compile+tiny", 2, 2, 0),
        ("reuse+compile+tiny", 2, 4, 0), ("reuse+compile+tiny", 4, 8, 0), ("reuse+compile+tiny", 2, 4, 1),
        ("reuse+compile+tiny", 4, 4, 1), ("reuse+tiny", 2, 2, 0),
        # each lever alone, for the pictures (torch.compile does not change them)
        ("reuse", 2, 2, 0), ("reuse", 2, 4, 0), ("reuse", 2, 4, 1), ("reuse", 4, 4, 0), ("full", 2, 4, 0),
        ("tiny", 2, 2, 0), ("tiny", 4, 4, 0), ("full", 2, 1, 0), ("tiny", 2, 1, 0),
        # blocks of one latent frame: the lowest reaction the pacer allows (a block is 0.25 s at 16 fps)
        ("compile+tiny", 1, 1, 0), ("compile", 1, 1, 0), ("full", 1, 1, 0), ("tiny", 1, 1, 0))}
# the causal engine (issue 24): blocks of 3 latent frames over a window of 18, each block 4 steps + a clean re-run
CONFIGS.update({f"causal{'+compile' if c else ''}+tiny 3/18": _geom(3, 18) + ["--engine", "causal"]
                + (["--compile"] if c else ["--no-compile"]) + ["tiny"] for c in (False, True)})
# its stream batch: the blocks at the 4 steps in one forward, a cache per step (pipeline/causal/stream.py)
CONFIGS["causal+stream+compile+tiny 3/18"] = _geom(3, 18) + ["--engine", "causal", "--stream-batch", "--compile",
                                                            "tiny"]


def _serve_args(name: str, tiny_path: str) -> list[str]:
    out = []
    for a in CONFIGS[name]:
        out += ["--tiny-vae", tiny_path] if a == "tiny" else [a]
    return out


# --- gpu ---------------------------------------------------------------------------------------------------------
class Daemon:
    """`streamer serve` on free loopback ports, its published frames recorded by a ZMQ subscriber thread."""

    def __init__(self, model_dir: str, args: list[str], log_path: str, env: dict, size=(480, 832)):
        import zmq

        from benchmarks.daemon_gpu import free_port

        self.http, control, publish = free_port(), free_port(), free_port()
        self.control = f"tcp://127.0.0.1:{control}"
        cmd = [sys.executable, "-m", "streamer", "serve", "--model", model_dir, "--height", str(size[0]),
               "--width", str(size[1]),
               "--http", f"127.0.0.1:{self.http}", "--control", self.control,
               "--publish", f"tcp://127.0.0.1:{publish}", *FEW_STEP, *args]
        self.command = " ".join(cmd[3:])
        self.frames: list[tuple[float, float, int]] = []  # (arrival, pts seconds, epoch)
        self.cond = threading.Condition()
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"video.h264")
        self._sub.setsockopt(zmq.RCVTIMEO, 200)
        self._sub.connect(f"tcp://127.0.0.1:{publish}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._log = open(log_path, "ab")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log, env=env)

    def _read(self):
        import zmq

        while not self._stop.is_set():
            try:
                _, header, _ = self._sub.recv_multipart()
            except zmq.Again:
                continue
            now = time.monotonic()
            h = json.loads(header)
            with self.cond:
                self.frames.append((now, h["pts"] * h["fps_den"] / h["fps_num"], h["epoch"]))
                self.cond.notify_all()

    def wait(self, pred, timeout: float) -> bool:
        """Wait until pred(frames) holds (or the daemon exits, or the timeout passes)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.frames):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self.cond.wait(min(left, 1.0))
        return True

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/status", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> int | str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = "killed after 60 s"
        self._stop.set()
        self._thread.join(timeout=5)
        self._sub.close(0)
        self._ctx.term()
        self._log.close()
        return code


def _engine_figures(st: dict) -> dict:
    ranks = st.get("ranks") or [{}]
    return {"tick_ms": st.get("tick_ms"), "decode_ms": st.get("decode_ms"),
            "encode_ms": (st.get("encoder") or {}).get("encode_ms"), "peak_gib": ranks[0].get("peak_mem_gib"),
            "pace_lead_s": st.get("pace_lead_s")}


def unpaced(model_dir, args, a, log, env) -> dict:
    from benchmarks.daemon_gpu import gpu_memory

    d = Daemon(model_dir, args + ["--no-pace"], log, env, (a.height, a.width))
    out: dict = {"command": d.command}
    try:
        if not d.wait(lambda f: len(f) > 0, a.start_timeout):
            out["error"] = f"no frame within {a.start_timeout:.0f}s (exit code {d.proc.poll()})"
            return out
        out["first_frame_s"] = round(d.frames[0][0] - d.t_start, 2)
        time.sleep(a.warm)
        samples, mem = [], []
        t_end = time.monotonic() + a.fps_seconds
        while time.monotonic() < t_end and d.proc.poll() is None:
            st = d.status()
            samples.append((time.monotonic(), st["frames_published"]))
            mem.append(max(gpu_memory() or [0]))
            time.sleep(0.5)
        fps = fps_between(samples, samples[0][0], samples[-1][0]) if samples else None
        with d.cond:
            subs = [f for f in d.frames if samples and samples[0][0] <= f[0] <= samples[-1][0]]
        span = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0
        out.update({"fps": round(fps, 2) if fps else None, "fps_subscriber": round(len(subs) / span, 2) if span
                    else None, "gpu_mib": max(mem) if mem else None, **_engine_figures(d.status())})
    finally:
        out["exit_code"] = d.stop()
    return out


def paced(model_dir, args, a, log, env, block_s: float) -> dict:
    from clients.client import ControlClient

    d = Daemon(model_dir, args, log, env, (a.height, a.width))
    out: dict = {"command": d.command, "rounds": []}
    rnd = random.Random(0)
    try:
        if not d.wait(lambda f: len(f) > 0, a.start_timeout):
            out["error"] = f"no frame within {a.start_timeout:.0f}s (exit code {d.proc.poll()})"
            return out
        time.sleep(a.warm)
        client = ControlClient(d.control, timeout=30.0)
        try:
            for i, mode in enumerate(["soft"] * a.rounds + ["cut"] * a.rounds):
                t_req = time.monotonic()
                reply = client.set_prompt(f"prompt {i % 2} of the frontier", mode)
                if not reply.get("ok"):
                    out["rounds"].append({"mode": mode, "error": reply.get("error")})
                    continue
                e = reply["epoch"]
                seen = d.wait(lambda f: any(x[0] >= t_req and x[2] >= e for x in f[-400:]), 30.0)
                out["rounds"].append({"mode": mode, "t_request": t_req, "epoch": e, "seen": seen})
                time.sleep(a.settle + rnd.uniform(0.0, block_s))  # decorrelate requests from the block phase
            out["status"] = _engine_figures(d.status())
        finally:
            client.close()
    finally:
        out["exit_code"] = d.stop()
    with d.cond:
        frames = list(d.frames)
    for r in out["rounds"]:
        if "epoch" in r:
            r.update(reaction(frames, r["t_request"], r["epoch"]) or {})
            r["t_request"] = round(r["t_request"] - frames[0][0], 3)  # seconds after the first frame
    for mode in ("soft", "cut"):
        rs = [r for r in out["rounds"] if r.get("mode") == mode]
        out[mode] = {k: summary(r.get(k + "_s") for r in rs) for k in ("display", "display_joined", "publish",
                                                                        "buffered")}
    return out


def gpu(a) -> dict:
    from benchmarks.daemon_gpu import build_model, build_tiny_vae

    res: dict = {"configs": {}}
    model_dir = a.model or os.path.join(a.model_dir, "wan2.1-1.3b")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not a.model and not os.path.isfile(os.path.join(model_dir, "model_index.json")):
        os.makedirs(a.model_dir, exist_ok=True)
        res["build_model_s"] = round(build_model(model_dir, "wan2.1-1.3b"), 1)
    tiny = os.path.join(a.model_dir, "taew2_1_random.safetensors")
    os.makedirs(a.model_dir, exist_ok=True)
    if not os.path.isfile(tiny):
        build_tiny_vae(tiny)
    try:
        res["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip()
    except OSError:
        res["gpu"] = None
    for name in a.configs:
        args = _serve_args(name, tiny)
        b = int(args[args.index("--block-frames") + 1])
        log = os.path.join(a.log_dir, f"frontier_{name.replace(' ', '_').replace('/', '-')}.log")
        row = {"args": args}
        res["configs"][name] = row
        t0 = time.monotonic()
        row["unpaced"] = unpaced(model_dir, args, a, log, env)
        row["paced"] = paced(model_dir, args, a, log, env, block_s=4 * b / 16.0)
        row["seconds"] = round(time.monotonic() - t0, 1)
        _write(a.out, res)
        u, p = row["unpaced"], row["paced"]
        print(f"{name}: {u.get('fps')} fps unpaced, soft {p.get('soft', {}).get('display')}, "
              f"cut {p.get('cut', {}).get('display')} ({row['seconds']}s)", flush=True)
    return res


# --- toy ---------------------------------------------------------------------------------------------------------
def _toy_args(name: str) -> tuple[list[str], tuple]:
    """quality.py options for a configuration (compile dropped), and the key that identifies its pictures."""
    opts, key = [], []
    args = CONFIGS[name]
    i = 0
    while i < len(args):
        x = args[i]
        if x in ("--block-frames", "--context-frames", "--sink-frames"):
            opts += [x, args[i + 1]]
            key.append((x, args[i + 1]))
            i += 2
            continue
        if x in ("--reuse-context", "--no-reuse-context"):
            opts.append(x)
            key.append(x)
        if x == "tiny":
            opts += ["--tiny-vae", "model"]
            key.append("tiny")
        i += 1
    return opts, tuple(key)


def toy(a) -> dict:
    from benchmarks import quality
    from pipeline.modelinfo import resolve_model
    from pipeline.settings import TINY_VAE_FILE

    res: dict = {"model": a.model, "configs": {}}
    done: dict = {}
    for name in a.configs:
        if "--engine" in CONFIGS[name]:
            res["configs"][name] = {"not_scored": "the toy world has no causal member"}
            continue
        opts, key = _toy_args(name)
        if key in done:
            res["configs"][name] = {"same_pictures_as": done[key]}
            continue
        opts = [os.path.join(resolve_model(a.model), TINY_VAE_FILE) if o == "model" else o for o in opts]
        out = os.path.join(a.log_dir, f"toy_{name.replace(' ', '_').replace('/', '-')}.json")
        q = quality.main(["--model", a.model, *opts, "--blocks", str(a.blocks), "--scenes", str(a.scenes),
                          "--scene-blocks", str(a.scene_blocks), "--modes", "soft,cut", "--changes", str(a.changes),
                          "--out", out])
        rnd = (q.get("latency_random") or {}).get("soft") or {}
        res["configs"][name] = {
            "options": opts, "accuracy": q["prompt_following"]["all"],
            "random_prompts": q["scenes"]["accuracy"]["all"] if q.get("scenes") else None,
            "seam_ratio": q["seams"]["ratio"], "seam_ratio_latent": q["seams"].get("latent_ratio"),
            "drift": q["drift"]["delta"],
            "soft_clean_blocks": q["latency"]["soft"]["latency_blocks"],
            "cut_clean_blocks": q["latency"]["cut"]["latency_blocks"],
            "soft_clean_median": rnd.get("median"), "soft_clean_within_1": rnd.get("within_1"),
            "max_jump_px": q["smoothness"]["per_block"]["mean_max_jump"],
            "psnr_vs_vae_db": (q.get("vae_psnr_vs_float32") or {}).get("mean_db")}
        done[key] = name
        _write(a.out, res)
        print(f"{name}: {res['configs'][name]}", flush=True)
    _write(a.out, res)  # (the rows that were not scored, too)
    return res


# --- table -------------------------------------------------------------------------------------------------------
def table(gpu_res: dict, toy_res: dict) -> str:
    def f(v, nd=2):
        return "–" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)

    rows = ["| configuration | fps unpaced | soft → display | cut → display | peak GiB | first frame | "
            "accuracy (random prompts) | seams | seams, latent-aligned | drift | soft clean after (median, blocks) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(list(gpu_res.get("configs", {})) + list(toy_res.get("configs", {}))))
    for name in names:
        g = gpu_res.get("configs", {}).get(name, {})
        t = toy_res.get("configs", {}).get(name, {})
        t = toy_res["configs"].get(t["same_pictures_as"], t) if "same_pictures_as" in t else t
        u, p = g.get("unpaced", {}), g.get("paced", {})
        def sec(v):
            return "–" if v is None else f"{v:.2f} s"
        rows.append(f"| {name} | {f(u.get('fps'), 1)} | {sec(p.get('soft', {}).get('display', {}).get('median'))} | "
                    f"{sec(p.get('cut', {}).get('display', {}).get('median'))} | {f(u.get('peak_gib'), 1)} | "
                    f"{sec(u.get('first_frame_s'))} | {f(t.get('random_prompts'), 3)} | {f(t.get('seam_ratio'), 3)} "
                    f"| {f(t.get('seam_ratio_latent'), 3)} | {f(t.get('drift'), 3)} | {f(t.get('soft_clean_median', t.get('soft_clean_blocks')))} |")
    return "\n".join(rows)


def _write(path: str, res: dict) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for what in ("gpu", "toy"):
        p = sub.add_parser(what)
        p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names: " + ", ".join(CONFIGS))
        p.add_argument("--out", default=f"frontier_{what}.json")
        p.add_argument("--log-dir", default=".")
    g = sub.choices["gpu"]
    g.add_argument("--model-dir", default="/tmp/daemon-gpu-model", help="where the random-weight model is built")
    g.add_argument("--model", default="", help="serve this model instead (e.g. tiny, for a check on a CPU)")
    g.add_argument("--height", type=int, default=480)
    g.add_argument("--width", type=int, default=832)
    g.add_argument("--rounds", type=int, default=5, help="soft changes, then as many cuts")
    g.add_argument("--fps-seconds", type=float, default=8.0)
    g.add_argument("--warm", type=float, default=4.0, help="seconds of output before measuring")
    g.add_argument("--settle", type=float, default=1.5, help="seconds after a change shows before the next")
    g.add_argument("--start-timeout", type=float, default=240.0)
    t = sub.choices["toy"]
    t.add_argument("--model", default="toyworld-rt")
    t.add_argument("--blocks", type=int, default=40)
    t.add_argument("--scenes", type=int, default=48,
                   help="random prompts scored (16 left one badly drawn scene worth 0.06 of accuracy, RESULTS §9)")
    t.add_argument("--scene-blocks", type=int, default=8)
    t.add_argument("--changes", type=int, default=12, help="random soft and cut changes timed per configuration "
                                                             "(the median is the table's 'soft clean after')")
    tb = sub.add_parser("table")
    tb.add_argument("gpu_json")
    tb.add_argument("toy_json")
    a = ap.parse_args(argv)
    if a.what == "table":
        with open(a.gpu_json) as g_, open(a.toy_json) as t_:
            print(table(json.load(g_), json.load(t_)))
        return
    a.configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = [c for c in a.configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s): {', '.join(unknown)}")
    os.makedirs(a.log_dir, exist_ok=True)
    (gpu if a.what == "gpu" else toy)(a)


if __name__ == "__main__":
    main()
