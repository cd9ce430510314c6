"""streamer.reaction: reaction time of prompt changes, as pure logic over explicit times."""
import math

from streamer.reaction import BUCKETS, ReactionTracker, Resolved


def test_a_change_resolves_at_the_first_published_block_that_carries_it():
    r = ReactionTracker()
    assert r.requested(1, "soft", requested_at=10.0) == []
    assert r.on_published(block=5, epoch=0, now=10.5) == []  # still the old prompt
    assert r.snapshot()["pending"] == 1
    assert r.on_published(block=6, epoch=1, now=11.25) == [Resolved(1, "soft", 6, 1.25)]
    assert r.on_published(block=7, epoch=1, now=11.5) == []  # once only
    s = r.snapshot()
    assert (s["last_s"], s["median_s"], s["count"], s["pending"]) == (1.25, 1.25, 1, 0)
    assert s["by_mode"]["soft"] == {"last_s": 1.25, "median_s": 1.25, "count": 1}
    assert s["by_mode"]["cut"] == {"last_s": None, "median_s": None, "count": 0}


def test_a_later_change_that_supersedes_an_earlier_one_resolves_both():
    r = ReactionTracker()
    r.requested(3, "queue", 1.0)
    r.requested(4, "cut", 2.0)
    got = r.on_published(block=20, epoch=4, now=5.0)  # the cut flushed the queue change's blocks
    assert got == [Resolved(3, "queue", 20, 4.0), Resolved(4, "cut", 20, 3.0)]
    s = r.snapshot()
    assert s["count"] == 2 and s["median_s"] == 3.5 and s["last_s"] == 3.0
    assert s["by_mode"]["queue"]["count"] == 1 and s["by_mode"]["cut"]["last_s"] == 3.0


def test_an_older_epoch_on_the_stream_does_not_resolve_a_newer_change():
    r = ReactionTracker()
    r.requested(2, "soft", 0.0)
    r.requested(5, "soft", 0.0)
    assert [x.epoch for x in r.on_published(1, 3, 1.0)] == [2]
    assert r.snapshot()["pending"] == 1
    assert [x.epoch for x in r.on_published(2, 5, 2.0)] == [5]


def test_a_cancelled_change_is_dropped_and_never_counted():
    r = ReactionTracker()
    r.requested(7, "soft", 0.0)
    assert r.drop([7, 8]) == [7]
    assert r.on_published(1, 9, 1.0) == []
    assert r.snapshot()["count"] == 0 and r.snapshot()["pending"] == 0


def test_a_change_registered_after_its_block_went_out_gets_that_blocks_time():
    """The engine's acknowledgement can in principle arrive after the block that carries the change was published."""
    r = ReactionTracker()
    r.on_published(10, 0, 1.0)
    r.on_published(11, 3, 2.0)  # the first block of epoch 3
    r.on_published(12, 3, 3.0)
    assert r.requested(3, "soft", requested_at=0.5) == [Resolved(3, "soft", 11, 1.5)]
    assert r.snapshot()["pending"] == 0
    assert r.requested(4, "soft", requested_at=3.5) == []  # not on the stream yet


def test_median_is_over_the_last_window_and_memory_is_bounded():
    r = ReactionTracker(window=3, max_pending=4)
    for i, secs in enumerate([10.0, 1.0, 2.0, 3.0], start=1):
        r.requested(i, "soft", 0.0)
        r.on_published(i, i, secs)
    s = r.snapshot()
    assert s["count"] == 4 and s["median_s"] == 2.0 and s["last_s"] == 3.0  # 10.0 fell out of the window
    for e in range(10, 20):
        r.requested(e, "cut", 0.0)
    assert r.snapshot()["pending"] == 4 and r.forgotten == 6
    assert [x.epoch for x in r.on_published(50, 100, 60.0)] == [16, 17, 18, 19]


def test_histogram_buckets_are_cumulative_per_mode():
    r = ReactionTracker()
    for e, (mode, secs) in enumerate([("soft", 0.3), ("soft", 0.04), ("cut", 45.0), ("soft", 2.0)], start=1):
        r.requested(e, mode, 0.0)
        r.on_published(e, e, secs)
    h = r.histogram()
    buckets, total = h["soft"]
    assert len(buckets) == len(BUCKETS) + 1 and buckets[-1] == (math.inf, 3)
    assert dict(buckets)[0.05] == 1 and dict(buckets)[0.5] == 2 and dict(buckets)[2.0] == 3
    assert abs(total - 2.34) < 1e-9
    assert h["cut"][0][-2] == (30.0, 0) and h["cut"][0][-1] == (math.inf, 1)  # over the last bucket
    assert h["queue"][0][-1] == (math.inf, 0)
