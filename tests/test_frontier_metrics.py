"""The frontier's reaction-time arithmetic (benchmarks/frontier_metrics.py) on synthetic streams."""
import pytest

from benchmarks.frontier_metrics import first_of_epoch, fps_between, reaction, summary


def _stream(arrivals, fps=4.0, per_block=4, epochs=None):
    """Blocks of `per_block` frames arriving at the given times (all frames of a block at once)."""
    out = []
    for k, t in enumerate(arrivals):
        for i in range(per_block):
            pts = (k * per_block + i) / fps
            out.append((t, pts, (epochs or {}).get(k, 0)))
    return out


def test_a_stream_that_runs_ahead_costs_a_viewer_since_the_start_its_lead():
    # block 0 arrives at t=10; blocks 1.. arrive 0.5 s before a player anchored at block 0 needs them
    arrivals = [10.0] + [10.0 + k - 0.5 for k in range(1, 12)]
    frames = _stream(arrivals, epochs={k: 1 for k in range(9, 12)})
    r = reaction(frames, t_request=17.7, epoch=1)
    assert r["publish_s"] == pytest.approx(18.5 - 17.7)  # block 9 arrives at 18.5
    assert r["display_s"] == pytest.approx(19.0 - 17.7)  # ... and is shown at 10 + pts 9.0
    # a viewer that joined at 12.7 got blocks 4.. (block 4 at 13.5, pts 4): anchored 0.5 s earlier
    assert r["display_joined_s"] == pytest.approx(18.5 - 17.7)
    assert r["buffered_s"] == pytest.approx(10.0 + 8.75 - 17.7)  # block 8's last frame shows at 18.75


def test_a_late_block_makes_the_viewer_wait_and_stay_later():
    arrivals = [0.0, 1.0, 2.0, 4.5, 5.5]  # block 3 is 1.5 s late (a cut's refill)
    frames = _stream(arrivals, epochs={3: 2, 4: 2})
    r = reaction(frames, t_request=2.2, epoch=2)
    assert r["publish_s"] == pytest.approx(2.3)
    assert r["display_s"] == pytest.approx(2.3)  # shown on arrival: the player waited
    assert first_of_epoch(frames, 2, after=0.0)[0] == 4.5
    assert reaction(frames, t_request=5.0, epoch=3) is None


def test_summary_and_rate():
    assert summary([0.5, None, 1.5, 1.0]) == {"median": 1.0, "min": 0.5, "max": 1.5, "n": 3}
    assert summary([None])["n"] == 0
    assert fps_between([(0.0, 0), (1.0, 16), (2.0, 40), (9.0, 50)], 0.0, 2.0) == pytest.approx(20.0)
    assert fps_between([(0.0, 0)], 0.0, 2.0) is None
