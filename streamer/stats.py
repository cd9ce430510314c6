"""Stream statistics for /status, /metrics and the status command (pure: fed by the daemon, no sockets).

Blocks *emitted* are those the engine finished; blocks *published* are those encoded and handed to every consumer.
Rates and the health state (`streamer.health`) come from what is published."""
from __future__ import annotations

import time

from pipeline.config import EngineConfig

from .health import OutputHealth


class StreamStats:
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.started = time.monotonic()
        self.blocks = 0
        self.frames = 0
        self.last_block: int | None = None
        self.epoch = 0
        self.prompt = cfg.prompt
        self.engine: dict = {}
        self.first_block_s: float | None = None
        self.health = OutputHealth(cfg.fps)

    def on_block(self, block, now: float) -> None:
        """`block`: a pipeline.wire.Frames (its header fields are what counts here)."""
        self.blocks += 1
        self.frames += int(block.frames)
        self.last_block = int(block.block)
        self.epoch = int(block.epoch)
        self.prompt = block.prompt
        if self.first_block_s is None:
            self.first_block_s = now - self.started

    def on_published(self, frames: int, now: float) -> None:
        self.health.on_published(frames, now)

    @property
    def paused(self) -> bool:
        return self.health.paused

    def set_paused(self, paused: bool, now: float) -> None:
        self.health.on_paused(bool(paused), now)

    def on_engine_stats(self, header: dict) -> None:
        """`header`: the engine's snapshot (pipeline.wire.Stats)."""
        self.engine.update(header)
        if "paused" in header:
            self.set_paused(header["paused"], time.monotonic())
        tick_ms = header.get("tick_ms")
        self.health.on_engine(tick_s=None if tick_ms is None else tick_ms / 1e3,
                              ticks_to_output=header.get("ticks_to_output"))

    def status(self, now: float | None = None) -> dict:
        e = self.engine
        now = time.monotonic() if now is None else now
        health = self.health.snapshot(now)
        return {
            **health,
            "fps": health["fps_recent"],
            "block": self.last_block,
            "blocks_emitted": self.blocks,
            "frames_emitted": self.frames,
            "target_fps": self.cfg.fps,
            "prompt": e.get("prompt", self.prompt),
            "epoch": e.get("epoch", self.epoch),
            "queue_depth": e.get("depth", 0),
            "next_block": e.get("head"),
            "paused": self.paused,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "time_to_first_block_s": None if self.first_block_s is None else round(self.first_block_s, 3),
            "tick_ms": round(e.get("tick_ms", 0.0), 2),
            "ticks": e.get("ticks", 0),
            "paused_checks": e.get("paused_checks", 0),
            "decode_ms": round(e.get("decode_ms", 0.0), 2),
            "pace_lead_s": e.get("pace_lead_s"),  # the pacer's lead in use (None: not pacing, or not known yet)
            "ranks": e.get("ranks", []),
            "config": {"model": self.cfg.model, "height": self.cfg.height, "width": self.cfg.width,
                       "steps": self.cfg.steps, "guidance": self.cfg.guidance,
                       "block_frames": self.cfg.block_frames, "context_frames": self.cfg.context_frames,
                       "seed": self.cfg.seed, "ranks": self.cfg.ranks, "engine": self.cfg.engine,
                       "stream_batch": self.cfg.stream_batch,
                       "family": self.cfg.model_family().name,
                       "experts": len(self.cfg.model_family().experts)},
        }

    def metric_rows(self, viewers: int, dropped: int, encoder_bytes: int, now: float | None = None) -> list:
        """/metrics' figures as (name, kind, help, value) rows; value is a number, or {rank: number} for the
        per-rank rows (label `rank`). streamer/metrics.py renders them through prometheus_client."""
        e = self.engine
        now = time.monotonic() if now is None else now
        h = self.health
        age = h.last_block_age(now)
        rows = [
            ("streamer_blocks_emitted_total", "counter", "Blocks emitted", self.blocks),
            ("streamer_frames_emitted_total", "counter", "Video frames emitted", self.frames),
            ("streamer_blocks_published_total", "counter", "Blocks encoded and handed to every consumer", h.blocks),
            ("streamer_frames_published_total", "counter", "Video frames encoded and handed to every consumer",
             h.frames),
            ("streamer_fps", "gauge", f"Published frames per second over the last {h.window_s:g} s",
             round(h.fps_recent(now), 4)),
            ("streamer_fps_lifetime", "gauge", "Published frames per second since the first block",
             round(h.fps_lifetime(), 4)),
            ("streamer_last_block_age_seconds", "gauge", "Seconds since the last published block (-1: none yet)",
             -1 if age is None else round(age, 3)),
            ("streamer_stalled", "gauge", "1 while no block has been published for several expected gaps",
             int(h.state(now) == "stalled")),
            ("streamer_below_real_time", "gauge", "1 while fewer frames per second than the stream's rate were "
             f"published over the last {h.slow_window_s:g} s", int(h.below_real_time(now))),
            ("streamer_tick_seconds", "gauge", "Duration of the last engine tick", e.get("tick_ms", 0.0) / 1e3),
            ("streamer_forward_seconds", "gauge", "Mean block forward time, last tick", e.get("forward_ms", 0.0) / 1e3),
            ("streamer_queue_depth", "gauge", "Blocks in flight", e.get("depth", 0)),
            ("streamer_pace_lead_seconds", "gauge", "Seconds of video the paced engine may run ahead of the wall "
             "clock (0: not pacing)", e.get("pace_lead_s") or 0.0),
            ("streamer_prompt_epoch", "gauge", "Current prompt epoch", e.get("epoch", self.epoch)),
            ("streamer_paused", "gauge", "1 while paused", int(self.paused)),
            ("streamer_subscribers", "gauge", "Consumers of the encoded stream", viewers),
            ("streamer_dropped_packets_total", "counter", "Packets skipped for slow consumers", dropped),
            ("streamer_encoded_bytes_total", "counter", "H.264 bytes produced", encoder_bytes),
        ]
        ranks = e.get("ranks", [])
        for name, key, scale, kind, help_ in (
                ("streamer_rank_compute_seconds_total", "compute_s", 1, "counter", "Compute time on the rank"),
                ("streamer_rank_wait_seconds_total", "wait_s", 1, "counter", "Time the rank waited for input"),
                ("streamer_rank_peak_memory_bytes", "peak_mem_gib", 2**30, "gauge", "Peak GPU memory of the rank")):
            rows.append((name, kind, help_, {r.get("rank", i): r.get(key, 0.0) * scale for i, r in enumerate(ranks)}))
        return rows
