"""The real daemon on a real GPU, as a user runs it: `streamer serve --model DIR` with its default --device.

1. Builds (once; cached in --model-dir) a random-weight diffusers folder of a Wan architecture, with no downloads:
   the real transformer and VAE architectures, a stand-in one-layer UMT5 text encoder with Wan's 4096-wide output,
   and the project's offline tokenizer padding to Wan's 512 tokens.
2. Starts the daemon and, from the moment its HTTP server answers, reads /stream.ts and samples /status every
   second (and nvidia-smi's memory figures).
3. After the first bytes of video, records --seconds more of the stream, stops the daemon with SIGTERM, decodes the
   recording with PyAV and writes JSON: the time from process start to the first frame and its pieces (from the
   daemon's log), the decoded frame count and rate, the /status samples, the engine-alone rate from the daemon's own
   tick times, memory, the exit code.

Default configuration: `--preset realtime` at 480×832, exactly as a user runs it (the preset's own block and
context sizes; --steps, --block-frames, ... override it only where given). Usage (GPU host): python benchmarks/daemon_gpu.py --out $OUT/daemon_gpu.json --log $OUT/daemon.log
Anything after `--` goes to `streamer serve` (e.g. `-- --gpus 2`).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TEXT_DIM, TEXT_LEN = 4096, 512  # Wan's text embedding width and prompt length


def build_model(path: str, arch: str) -> float:
    """A diffusers WanPipeline folder with random weights of `arch`; returns the seconds it took."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    from pipeline.model.archs import A14B_BOUNDARY, EXPERTS, random_transformer, random_wan_vae
    from pipeline.model.components import Components, save_components
    from pipeline.model.random_wan import _build_tokenizer, wan_scheduler

    t0 = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = _build_tokenizer()
    tokenizer.model_max_length = TEXT_LEN
    text_cfg = UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=128, d_ff=1024, num_layers=1,
                          num_decoder_layers=0, num_heads=32, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, is_encoder_decoder=False,
                          use_cache=False)
    torch.manual_seed(0)
    comps = Components(transformer=random_transformer(arch, device=dev, dtype=torch.bfloat16),
                       vae=random_wan_vae(device=dev, wan22=arch == "wan2.2-5b"),
                       text_encoder=UMT5EncoderModel(text_cfg).to(torch.bfloat16),
                       tokenizer=tokenizer, scheduler=wan_scheduler(3.0), text_max_len=TEXT_LEN)
    tmp = path + ".partial"
    parts = dict(comps.__dict__)
    if EXPERTS.get(arch, 1) > 1:  # Wan2.2-A14B: the low-noise expert (other weights) and the switch
        parts["transformer"] = comps.transformer.cpu()  # (both experts at once need not fit on the GPU)
        parts["transformer_2"] = random_transformer(arch, device=dev, dtype=torch.bfloat16, seed=1).cpu()
        parts["boundary_ratio"] = A14B_BOUNDARY
    if arch == "wan2.2-5b":
        parts["expand_timesteps"] = True
    save_components(parts, tmp)
    os.replace(tmp, path)
    del comps
    if dev == "cuda":
        torch.cuda.empty_cache()
    return time.perf_counter() - t0


def build_tiny_vae(path: str, wan22: bool = False) -> None:
    """A random-weight tiny decoder checkpoint in the TAEHV layout (`--tiny-vae random`): taew2_1's, or with `wan22`
    taew2_2's (48 channels, 2x2 pixel patch)."""
    from safetensors.torch import save_file

    from pipeline.decoders.tiny_vae import random_tiny_decoder, tiny_decoder_checkpoint

    net = random_tiny_decoder(48, patch=2) if wan22 else random_tiny_decoder(16)
    save_file(tiny_decoder_checkpoint(net), path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def gpu_memory() -> list[int] | None:
    """MiB in use per GPU (nvidia-smi), or None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return [int(x) for x in out.split()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def rss_mib(pid: int | None) -> float | None:
    """The resident memory of process `pid` and all its descendants (the engine's processes), MiB (Linux /proc);
    None where unknown."""
    if pid is None:
        return None
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    total, todo, seen = 0.0, [pid], False
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
                seen = True
        except (OSError, StopIteration, ValueError):
            continue
    return round(total, 1) if seen else None


class Sampler(threading.Thread):
    """/status and GPU memory once a second until stopped."""

    def __init__(self, base: str, t_start: float, pid: int | None = None):
        super().__init__(daemon=True)
        self.base, self.t_start, self.pid = base, t_start, pid
        self.samples: list[dict] = []
        self.config: dict = {}  # the daemon's resolved configuration (its /status)
        self.mem_peak: list[int] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            try:
                st = get_json(self.base + "/status")
            except (OSError, ValueError):
                continue
            enc = st.get("encoder") or {}
            self.config = st.get("config", self.config)
            self.samples.append({
                "t": round(time.monotonic() - self.t_start, 2), "state": st.get("state"), "fps": st.get("fps"),
                "fps_lifetime": st.get("fps_lifetime"), "blocks_published": st.get("blocks_published"),
                "frames_published": st.get("frames_published"), "blocks_emitted": st.get("blocks_emitted"),
                "tick_ms": st.get("tick_ms"), "decode_ms": st.get("decode_ms"), "encode_ms": enc.get("encode_ms"),
                "encoder_backlog": enc.get("backlog_blocks"), "last_block_age_s": st.get("last_block_age_s"),
                "below_real_time": st.get("below_real_time"),
                "ranks": st.get("ranks"), "rss_mib": rss_mib(self.pid)})
            mem = gpu_memory()
            if mem:
                self.samples[-1]["gpu_mib"] = mem
                self.mem_peak = [max(a, b) for a, b in zip(mem, self.mem_peak or [0] * len(mem))]


def record_stream(url: str, path: str, seconds: float, t_start: float, deadline: float, proc) -> dict:
    """Read /stream.ts into `path` until `seconds` after its first byte. Retries the connection until `deadline`,
    or until the daemon (`proc`) has exited: a daemon that failed at start is reported at once, not after the
    deadline."""
    while True:
        try:
            resp = urllib.request.urlopen(url, timeout=600)
            break
        except OSError:
            if proc.poll() is not None:
                raise OSError(f"the daemon exited with code {proc.returncode} before it served {url}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    out = {"connected_s": round(time.monotonic() - t_start, 3)}
    first = None
    n = 0
    with open(path, "wb") as f:
        while True:
            chunk = resp.read1(1 << 16)
            if not chunk:
                break
            now = time.monotonic()
            if first is None:
                first = now
                out["first_byte_s"] = round(now - t_start, 3)
            f.write(chunk)
            n += len(chunk)
            if now - first >= seconds:
                break
    resp.close()
    out["bytes"] = n
    out["recorded_s"] = round(time.monotonic() - first, 3) if first else 0.0
    return out


def decode(path: str) -> dict:
    import av

    frames, size, pts = 0, None, []
    with av.open(path) as c:
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            frames += 1
            size = (frame.width, frame.height)
            if frame.pts is not None:
                pts.append(float(frame.pts * stream.time_base))
    span = (max(pts) - min(pts)) if len(pts) > 1 else 0.0
    return {"frames": frames, "size": size, "media_span_s": round(span, 3)}


def main():
    argv = sys.argv[1:]
    serve_extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="wan2.1-1.3b")
    ap.add_argument("--model-dir", default="/tmp/daemon-gpu-model")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--preset", default="realtime", help="the serve preset, as a user runs it ('' for none); the "
                    "options below override it only where given")
    for name, typ in (("steps", int), ("guidance", float), ("block-frames", int), ("context-frames", int),
                      ("fps", float)):
        ap.add_argument(f"--{name}", type=typ, default=None)
    ap.add_argument("--tiny-vae", default="", help="decode with this tiny decoder checkpoint ('random': random "
                    "weights in the TAEHV layout, built once in --model-dir)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of /stream.ts recorded after its first byte")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds allowed until the first frame")
    ap.add_argument("--out", default="daemon_gpu.json")
    ap.add_argument("--log", default="daemon_gpu.log", help="the daemon's stderr")
    ap.add_argument("--ts", default="", help="keep the recording here (default: next to --out, deleted)")
    a = ap.parse_args(argv)

    res: dict = {"args": vars(a), "serve_extra": serve_extra}
    model_dir = os.path.join(a.model_dir, a.arch)
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # as it was before torch was imported here (it sets variables)
    if not os.path.isfile(os.path.join(model_dir, "model_index.json")):
        os.makedirs(a.model_dir, exist_ok=True)
        res["build_model_s"] = round(build_model(model_dir, a.arch), 1)
    if a.tiny_vae == "random":
        wan22 = a.arch == "wan2.2-5b"
        a.tiny_vae = os.path.join(a.model_dir, f"taew2_{2 if wan22 else 1}_random.safetensors")
        if not os.path.isfile(a.tiny_vae):
            build_tiny_vae(a.tiny_vae, wan22)
    if a.tiny_vae:
        serve_extra = ["--tiny-vae", a.tiny_vae, *serve_extra]
    http, control, publish = free_port(), free_port(), free_port()
    given = [x for name in ("steps", "guidance", "block_frames", "context_frames", "fps")
             if getattr(a, name) is not None for x in ("--" + name.replace("_", "-"), str(getattr(a, name)))]
    cmd = [sys.executable, "-m", "streamer", "serve", "--model", model_dir, "--height", str(a.height),
           "--width", str(a.width), *(["--preset", a.preset] if a.preset else []), *given,
           "--http", f"127.0.0.1:{http}", "--control", f"tcp://127.0.0.1:{control}",
           "--publish", f"tcp://127.0.0.1:{publish}", *serve_extra]
    res["command"] = " ".join(cmd[1:])
    res["gpus"] = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True).stdout.strip().splitlines() if gpu_memory() is not None else []
    base = f"http://127.0.0.1:{http}"
    ts_path = a.ts or os.path.splitext(a.out)[0] + ".ts"
    with open(a.log, "wb") as log:
        t_start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, env=env)
        sampler = Sampler(base, t_start, proc.pid)
        sampler.start()
        try:
            res["stream"] = record_stream(base + "/stream.ts", ts_path, a.seconds, t_start,
                                          deadline=t_start + a.start_timeout, proc=proc)
        except OSError as e:
            res["stream"] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            sampler.stop.set()
            sampler.join(timeout=10)
            proc.send_signal(signal.SIGTERM)
            try:
                res["exit_code"] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                res["exit_code"] = "killed after 60 s"
    res["status_samples"] = sampler.samples
    res["config"] = sampler.config
    res["gpu_memory_peak_mib"] = sampler.mem_peak
    if os.path.isfile(ts_path) and os.path.getsize(ts_path):
        res["decoded"] = decode(ts_path)
        if not a.ts:
            os.remove(ts_path)
    if os.path.isfile(a.log):
        res["startup"] = startup_from_log(a.log)
    summarize(res, a)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res["summary"], indent=2))


STARTUP_MARKS = (("engine_starting", "INFO streamer: engine starting"),
                 ("loading", "INFO streamer: engine: loading"), ("encoding", "INFO streamer: engine: encoding prompts"),
                 ("loaded", "INFO streamer: engine: model loaded"), ("decoder", "INFO streamer: engine: decoder "),
                 ("first_block", "INFO streamer: first block published"))


def startup_from_log(path: str) -> dict:
    """Start-up in pieces, from the daemon's log lines (their timestamps, seconds): imports, weights, the first
    prompt encoding, model loaded → decoder warmed up, each fill tick, the last fill tick → first block published."""
    import datetime
    import re

    marks, ticks = {}, []
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (.*)", line)
            if not m:
                continue
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for name, text in STARTUP_MARKS:
                if text in m.group(2) and name not in marks:
                    marks[name] = t
            tick = re.search(r"filling the pipeline: tick \d+ took ([0-9.]+)s", m.group(2))
            if tick and "first_block" not in marks:
                ticks.append(float(tick.group(1)))

    def span(a, b):
        return round(marks[b] - marks[a], 2) if a in marks and b in marks else None
    return {"imports_s": span("engine_starting", "loading"), "weights_s": span("loading", "encoding"),
            "prompt_encoding_s": span("encoding", "loaded"), "decoder_warm_up_s": span("loaded", "decoder"),
            "fill_ticks_s": ticks, "loaded_to_first_block_s": span("loaded", "first_block")}


def summarize(res: dict, a) -> None:
    """The figures RESULTS.md quotes: medians over the samples taken while streaming."""
    streaming = [s for s in res["status_samples"] if s.get("state") == "streaming"]
    s: dict = {}
    rec, dec = res.get("stream", {}), res.get("decoded", {})
    s["first_frame_s"] = rec.get("first_byte_s")
    s["frames_decoded"] = dec.get("frames")
    if dec.get("frames") and rec.get("recorded_s"):
        s["fps_received"] = round(dec["frames"] / rec["recorded_s"], 2)

    def med(key):
        vals = [x[key] for x in streaming if isinstance(x.get(key), (int, float))]
        return round(statistics.median(vals), 2) if vals else None
    s["fps_status_median"] = med("fps")
    s["tick_ms_median"] = med("tick_ms")
    s["decode_ms_median"] = med("decode_ms")
    s["encode_ms_median"] = med("encode_ms")
    frames_per_block = 4 * (res.get("config") or {}).get("block_frames", 0)
    if s["tick_ms_median"] and frames_per_block:
        s["engine_fps_from_ticks"] = round(frames_per_block / (s["tick_ms_median"] / 1e3), 2)
        if s["fps_status_median"]:
            s["e2e_over_engine"] = round(s["fps_status_median"] / s["engine_fps_from_ticks"], 3)
    # flat memory over a long run: the card (nvidia-smi, all processes) and the daemon's resident memory one minute
    # into streaming and at the end
    later = [x for x in streaming if x["t"] >= streaming[0]["t"] + 60]
    if later:
        for key in ("gpu_mib", "rss_mib"):
            a_, b_ = later[0].get(key), later[-1].get(key)
            if a_ is not None and b_ is not None:
                s[f"{key}_after_1min_and_end"] = [a_, b_]
                s["memory_span_s"] = round(later[-1]["t"] - later[0]["t"], 1)
    ranks = (streaming[-1].get("ranks") if streaming else None) or []
    s["engine_peak_gib"] = [r.get("peak_mem_gib") for r in ranks]
    s["gpu_memory_peak_mib"] = res.get("gpu_memory_peak_mib")
    s["exit_code"] = res.get("exit_code")
    s["startup"] = res.get("startup")
    res["summary"] = s


if __name__ == "__main__":
    main()
