"""Output health as pure logic: states, recent and lifetime rates, and when silence becomes a stall."""
import pytest

from streamer.health import OutputHealth


def test_states_from_loading_to_streaming():
    h = OutputHealth(fps=16.0)
    assert h.state(0.0) == "loading"
    h.on_loaded(10.0)
    assert h.state(500.0) == "filling"  # the first block may take long (pipeline fill): never a stall
    h.on_published(29, 20.0)
    assert h.state(20.5) == "streaming"


def test_rates_count_published_frames_over_the_gaps_between_blocks():
    h = OutputHealth(fps=16.0, window_s=10.0)
    h.on_loaded(0.0)
    for i in range(20):  # 32 frames every 2 s: 16 fps
        h.on_published(32, 10.0 + 2.0 * i)
    now = 10.0 + 2.0 * 19 + 0.5
    assert h.fps_recent(now) == pytest.approx(16.0)
    assert h.fps_lifetime() == pytest.approx(16.0)
    for i in range(10):  # then half the rate: the recent window follows, the lifetime average lags
        h.on_published(32, 48.0 + 4.0 * (i + 1))
    assert h.fps_recent(88.5) == pytest.approx(8.0)
    assert 8.0 < h.fps_lifetime() < 16.0


def test_silence_becomes_a_stall_after_several_expected_gaps():
    h = OutputHealth(fps=16.0, min_stall_s=10.0, stall_gaps=4.0)
    h.on_loaded(0.0)
    h.on_engine(tick_s=3.0, ticks_to_output=1)
    h.on_published(32, 5.0)
    h.on_published(32, 8.0)
    assert h.stall_after() == pytest.approx(12.0)  # 4 × max(32/16 s of play, one 3 s tick)
    assert h.state(8.0 + 11.9) == "streaming"
    assert h.state(8.0 + 12.1) == "stalled"
    assert h.fps_recent(8.0 + 12.1) == 0.0
    assert h.last_block_age(8.0 + 12.1) == pytest.approx(12.1)
    h.on_published(32, 21.0)
    assert h.state(21.1) == "streaming"


def test_a_cut_refill_gets_its_ticks_before_it_counts_as_a_stall():
    h = OutputHealth(fps=16.0)
    h.on_loaded(0.0)
    h.on_engine(tick_s=2.0, ticks_to_output=1)
    h.on_published(32, 1.0)
    h.on_engine(ticks_to_output=8)  # after a cut the head is 8 ticks from clean
    assert h.stall_after() == pytest.approx(4 * 8 * 2.0)
    assert h.state(1.0 + 60.0) == "streaming"
    assert h.state(1.0 + 65.0) == "stalled"


def test_a_pause_is_not_a_stall_and_the_clock_restarts_at_resume():
    h = OutputHealth(fps=16.0, min_stall_s=10.0)
    h.on_loaded(0.0)
    h.on_published(32, 1.0)
    h.on_paused(True, 2.0)
    assert h.state(500.0) == "paused"
    h.on_paused(False, 500.0)
    assert h.state(505.0) == "streaming"
    assert h.state(511.0) == "stalled"


def test_snapshot_has_the_fields_status_and_metrics_report():
    h = OutputHealth(fps=8.0)
    h.on_loaded(0.0)
    snap = h.snapshot(1.0)
    assert snap["state"] == "filling" and snap["last_block_age_s"] is None and snap["blocks_published"] == 0
    h.on_published(5, 2.0)
    snap = h.snapshot(3.0)
    assert snap["last_block_age_s"] == 1.0 and snap["frames_published"] == 5 and snap["fps_window_s"] == 10.0
