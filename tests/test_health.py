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


def _publish(h, start: float, seconds: float, fps: float, frames: int = 8) -> float:
    """Blocks of `frames` frames at `fps` from `start` for `seconds`; -> the time of the last."""
    t = start
    while t < start + seconds:
        h.on_published(frames, t)
        t += frames / fps
    return t - frames / fps


def test_below_real_time_after_a_whole_window_slower_than_the_stream():
    h = OutputHealth(fps=16.0, slow_window_s=30.0)
    h.on_loaded(0.0)
    last = _publish(h, 1.0, 60.0, 16.0)  # real time: never below
    assert not h.below_real_time(last) and not h.snapshot(last)["below_real_time"]
    slow = OutputHealth(fps=16.0, slow_window_s=30.0)
    slow.on_loaded(0.0)
    last = _publish(slow, 1.0, 29.0, 14.0)  # 14 of 16 fps, as lowlatency with the Wan VAE on one H200
    assert not slow.below_real_time(last)  # not a whole window yet
    last = _publish(slow, last + 8 / 14.0, 10.0, 14.0)
    assert slow.below_real_time(last) and slow.snapshot(last)["below_real_time"]
    assert slow.fps_slow_window(last) == pytest.approx(14.0)
    last = _publish(slow, last + 0.5, 31.0, 16.5)  # a faster stream for a whole window: back to real time
    assert not slow.below_real_time(last)


def test_a_cut_refill_or_a_pause_is_not_below_real_time():
    h = OutputHealth(fps=16.0, slow_window_s=30.0)
    h.on_loaded(0.0)
    last = _publish(h, 1.0, 40.0, 16.0)
    # a cut: 1 s without output while the queue refills, then a paced engine catches up at twice the rate
    last = _publish(h, last + 1.0, 1.0, 32.0)
    last = _publish(h, last + 0.25, 20.0, 16.0)
    assert not h.below_real_time(last)
    h.on_paused(True, last + 0.1)
    assert not h.below_real_time(last + 100.0)
    h.on_paused(False, last + 100.0)
    again = _publish(h, last + 101.0, 20.0, 14.0)
    assert not h.below_real_time(again)  # the window restarts at the resume
    again = _publish(h, again + 8 / 14.0, 12.0, 14.0)
    assert h.below_real_time(again)
