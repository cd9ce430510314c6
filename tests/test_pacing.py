from pipeline.pacing import LeadEstimator, Pacer, quantile


def test_fast_engine_is_held_to_real_time_plus_lead():
    p = Pacer(fps=10, lead_s=1.0)
    p.emitted(40, now=0.0)  # 4 s of video produced instantly
    assert p.delay(0.0) == 3.0
    assert p.delay(2.5) == 0.5
    assert p.delay(3.0) == 0.0


def test_slow_engine_never_waits_and_does_not_burst_after_falling_behind():
    p = Pacer(fps=10, lead_s=1.0)
    p.emitted(10, now=0.0)
    p.emitted(10, now=5.0)  # 2 s of video in 5 s: behind
    assert p.delay(5.0) == 0.0
    p.emitted(30, now=5.1)  # a burst after re-anchoring is paced again
    assert p.delay(5.1) > 1.5


def test_reset_forgets_history():
    p = Pacer(fps=8)
    p.emitted(100, now=0.0)
    p.reset()
    assert p.delay(0.0) == 0.0


def test_lead_is_cautious_until_enough_full_ticks_were_seen_and_fill_ticks_do_not_count():
    est = LeadEstimator(fps=16, steps=4)
    for _ in range(10):
        est.on_tick(0.05, windows=2)  # filling: fewer windows than steps
    assert est.lead_s() == 2.0  # no full tick yet
    est.on_tick(0.25, windows=4)
    for _ in range(2):
        est.on_tick(0.3, windows=4)
    assert abs(est.lead_s() - (2 * 0.3 + 0.1)) < 1e-9  # three full ticks: twice the slowest, plus the margin
    est.on_tick(0.3, windows=4)
    assert abs(est.lead_s() - (0.3 + 0.1)) < 1e-9  # no decode times yet: the tick plus the margin


def test_lead_is_a_high_tick_quantile_plus_the_decode_spread_plus_the_margin():
    est = LeadEstimator(fps=16, steps=4, window=20)
    for i in range(20):
        est.on_tick(0.5 + 0.01 * i, windows=4)  # 0.50 .. 0.69: p95 (nearest rank) = 0.68
        est.on_decode(0.2 + 0.005 * i)  # 0.200 .. 0.295: p95 - p5 = 0.290 - 0.200
    assert abs(est.lead_s() - (0.68 + 0.09 + 0.1)) < 1e-9
    for _ in range(20):  # the window moves on: only recent ticks count
        est.on_tick(0.2, windows=4)
        est.on_decode(0.1)
    assert abs(est.lead_s() - 0.3) < 1e-9


def test_lead_is_clamped_to_one_frame_and_two_seconds():
    fast = LeadEstimator(fps=8, steps=2, margin_s=0.0)
    slow = LeadEstimator(fps=8, steps=2)
    for _ in range(4):
        fast.on_tick(0.001, windows=2)
        slow.on_tick(5.0, windows=2)
    assert fast.lead_s() == 1 / 8 and slow.lead_s() == 2.0


def test_a_fixed_lead_is_used_as_given():
    est = LeadEstimator(fps=16, steps=4, fixed=3.5)
    assert not est.auto and est.lead_s() == 3.5
    for _ in range(10):
        est.on_tick(0.1, windows=4)
    assert est.lead_s() == 3.5


def test_quantile_is_nearest_rank():
    assert quantile([3, 1, 2], 0.0) == 1 and quantile([3, 1, 2], 1.0) == 3 and quantile([3, 1, 2], 0.5) == 2
    assert quantile(range(1, 101), 0.95) == 95 and quantile(range(1, 101), 0.05) == 5


def test_the_lead_option_is_an_engine_setting_checked_at_start(tmp_path):
    import pytest

    from pipeline.config import ConfigError
    from pipeline.resolve import resolve

    assert resolve({"model": "tiny"})[0].lead == 0.0  # auto
    assert resolve({"model": "tiny", "lead": 0.75})[0].lead == 0.75
    toml = tmp_path / "s.toml"
    toml.write_text("lead = 3\n")
    assert resolve({"model": "tiny", "config": str(toml)})[0].lead == 3.0
    for bad in (-0.5, 30.5):
        with pytest.raises(ConfigError, match=r"--lead must be 0 \(auto\) or a number of seconds up to 30"):
            resolve({"model": "tiny", "lead": bad})
