"""Stream statistics for /status, /metrics and the status command (pure: fed by the daemon, no sockets)."""
from __future__ import annotations

import time
from collections import deque

from pipeline.config import EngineConfig


class StreamStats:
    def __init__(self, cfg: EngineConfig, window: int = 16):
        self.cfg = cfg
        self.started = time.monotonic()
        self.blocks = 0
        self.frames = 0
        self.last_block: int | None = None
        self.epoch = 0
        self.prompt = cfg.prompt
        self.paused = False
        self.engine: dict = {}
        self.first_block_s: float | None = None
        self._times: deque = deque(maxlen=window)  # (t, frames) per emitted block

    def on_block(self, header: dict, now: float) -> None:
        self.blocks += 1
        self.frames += int(header["frames"])
        self.last_block = int(header["block"])
        self.epoch = int(header["epoch"])
        self.prompt = header.get("prompt", self.prompt)
        if self.first_block_s is None:
            self.first_block_s = now - self.started
        self._times.append((now, int(header["frames"])))

    def on_engine_stats(self, header: dict) -> None:
        if header.get("heartbeat") or header.get("pacing"):
            return
        self.engine.update(header)
        self.paused = bool(header.get("paused", self.paused))

    def fps(self) -> float:
        """Video frames per second over the recent blocks (what the engine sustains)."""
        if len(self._times) < 2:
            return 0.0
        (t0, _), (t1, _) = self._times[0], self._times[-1]
        frames = sum(f for _, f in list(self._times)[1:])
        return frames / (t1 - t0) if t1 > t0 else 0.0

    def status(self) -> dict:
        e = self.engine
        return {
            "block": self.last_block,
            "blocks_emitted": self.blocks,
            "frames_emitted": self.frames,
            "fps": round(self.fps(), 3),
            "target_fps": self.cfg.fps,
            "prompt": e.get("prompt", self.prompt),
            "epoch": e.get("epoch", self.epoch),
            "queue_depth": e.get("depth", 0),
            "next_block": e.get("head"),
            "paused": self.paused,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "time_to_first_block_s": None if self.first_block_s is None else round(self.first_block_s, 3),
            "tick_ms": round(e.get("tick_ms", 0.0), 2),
            "decode_ms": round(e.get("decode_ms", 0.0), 2),
            "ranks": e.get("ranks", []),
            "config": {"model": self.cfg.model, "height": self.cfg.height, "width": self.cfg.width,
                       "steps": self.cfg.steps, "guidance": self.cfg.guidance,
                       "block_frames": self.cfg.block_frames, "context_frames": self.cfg.context_frames,
                       "seed": self.cfg.seed, "ranks": self.cfg.ranks},
        }

    def prometheus(self, viewers: int, dropped: int, encoder_bytes: int) -> str:
        e = self.engine
        rows = [
            ("streamer_blocks_emitted_total", "counter", "Blocks emitted", self.blocks),
            ("streamer_frames_emitted_total", "counter", "Video frames emitted", self.frames),
            ("streamer_fps", "gauge", "Video frames per second over recent blocks", round(self.fps(), 4)),
            ("streamer_tick_seconds", "gauge", "Duration of the last engine tick", e.get("tick_ms", 0.0) / 1e3),
            ("streamer_forward_seconds", "gauge", "Mean block forward time, last tick", e.get("forward_ms", 0.0) / 1e3),
            ("streamer_queue_depth", "gauge", "Blocks in flight", e.get("depth", 0)),
            ("streamer_prompt_epoch", "gauge", "Current prompt epoch", e.get("epoch", self.epoch)),
            ("streamer_paused", "gauge", "1 while paused", int(self.paused)),
            ("streamer_subscribers", "gauge", "Consumers of the encoded stream", viewers),
            ("streamer_dropped_packets_total", "counter", "Packets skipped for slow consumers", dropped),
            ("streamer_encoded_bytes_total", "counter", "H.264 bytes produced", encoder_bytes),
        ]
        out = []
        for name, kind, help_, value in rows:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        per_rank = [("streamer_rank_compute_seconds_total", "compute_s", 1, "counter", "Compute time on the rank"),
                    ("streamer_rank_wait_seconds_total", "wait_s", 1, "counter", "Time the rank waited for input"),
                    ("streamer_rank_peak_memory_bytes", "peak_mem_gib", 2**30, "gauge", "Peak GPU memory of the rank")]
        for name, key, scale, kind, help_ in per_rank:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            out += [f'{name}{{rank="{r.get("rank", i)}"}} {r.get(key, 0.0) * scale}'
                    for i, r in enumerate(e.get("ranks", []))]
        return "\n".join(out) + "\n"
