from pipeline.pacing import Pacer


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
