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
    assert value("streamer_stalled") == 0 and value("streamer_below_real_time") == 0


def test_below_real_time_is_a_gauge():
    """An 8-fps stream that published 6 fps for 40 s: the gauge says 1, as /status' below_real_time does."""
    stats = StreamStats(EngineConfig(fps=8.0))
    t0 = stats.started
    stats.health.on_loaded(t0)
    for i in range(31):
        stats.on_published(8, t0 + 1 + i * 8 / 6.0)
    now = t0 + 1 + 30 * 8 / 6.0
    fams = scrape(stats, now)
    assert next(s.value for s in fams["streamer_below_real_time"].samples) == 1
    assert stats.status(now)["below_real_time"] is True


def test_reaction_histogram_parses_back_with_a_mode_label():
    from streamer.reaction import ReactionTracker

    r = ReactionTracker()
    for epoch, (mode, seconds) in enumerate([("soft", 0.4), ("soft", 1.2), ("cut", 3.5)], start=1):
        r.requested(epoch, mode, 0.0)
        r.on_published(epoch, epoch, seconds)
    rows = [("streamer_prompt_reaction_seconds", "histogram", "Reaction", {"mode": r.histogram()})]
    fams = {f.name: f for f in text_string_to_metric_families(Metrics(lambda: rows).render())}
    fam = fams["streamer_prompt_reaction_seconds"]
    assert fam.type == "histogram"

    def sample(suffix, **labels):
        return next(s.value for s in fam.samples if s.name == "streamer_prompt_reaction_seconds" + suffix
                    and s.labels == labels)

    assert sample("_count", mode="soft") == 2 and abs(sample("_sum", mode="soft") - 1.6) < 1e-9
    assert sample("_bucket", mode="soft", le="0.5") == 1 and sample("_bucket", mode="soft", le="1.5") == 2
    assert sample("_bucket", mode="cut", le="3.0") == 0 and sample("_bucket", mode="cut", le="+Inf") == 1
    assert sample("_count", mode="queue") == 0  # every mode is there from the start
