"""/metrics is written by prometheus_client: what a Prometheus scrape parses back is the daemon's figures, with the
metric names, types and per-rank labels it always had."""
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import EngineConfig
from pipeline.wire import Frames
from streamer.metrics import Metrics
from streamer.stats import StreamStats


def scrape(stats: StreamStats, now: float) -> dict:
    text = Metrics(lambda: stats.metric_rows(viewers=3, dropped=7, encoder_bytes=12345, now=now)).render()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_scrape_parses_back_to_the_daemons_figures():
    stats = StreamStats(EngineConfig(fps=8.0))
    stats.on_engine_stats({"tick_ms": 250.0, "depth": 4, "epoch": 2, "ranks": [
        {"rank": 0, "compute_s": 1.5, "wait_s": 0.25, "peak_mem_gib": 2.0},
        {"rank": 1, "compute_s": 1.0, "wait_s": 0.5, "peak_mem_gib": 1.0}]})
    for i in range(2):
        stats.on_block(Frames(block=i, epoch=2, prompt="p", frames=8, height=64, width=64, tick=i, decode_ms=1.0,
                              payload=b""), now=stats.started + i)
    fams = scrape(stats, stats.started + 2)

    def value(name, **labels):
        fam = fams[name.removesuffix("_total")]  # the parser names a counter's family without its suffix
        return next(s.value for s in fam.samples if s.name == name and s.labels == labels)

    assert fams["streamer_blocks_emitted"].type == "counter" and value("streamer_blocks_emitted_total") == 2
    assert value("streamer_frames_emitted_total") == 16
    assert fams["streamer_queue_depth"].type == "gauge" and value("streamer_queue_depth") == 4
    assert value("streamer_tick_seconds") == 0.25 and value("streamer_prompt_epoch") == 2
    assert value("streamer_subscribers") == 3 and value("streamer_dropped_packets_total") == 7
    assert value("streamer_encoded_bytes_total") == 12345
    assert value("streamer_rank_compute_seconds_total", rank="1") == 1.0
    assert value("streamer_rank_wait_seconds_total", rank="0") == 0.25
    assert value("streamer_rank_peak_memory_bytes", rank="0") == 2.0 * 2**30
    assert value("streamer_stalled") == 0
