import asyncio
import threading
from fractions import Fraction

from transports.fanout import FanOut
from transports.packet import EncodedPacket

GOP = 10


def pkt(i):
    return EncodedPacket(data=b"\0\0\0\1" + i.to_bytes(4, "big"), pts=i, fps=Fraction(8),
                         keyframe=(i % GOP == 0), block=i // 8, epoch=0, width=16, height=16)


def publish_range(fo, start, stop):
    t = threading.Thread(target=lambda: [fo.publish(pkt(i)) for i in range(start, stop)])
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "publish blocked"


def drain(sub):
    out = []
    while (p := sub.get_nowait()) is not None:
        out.append(p)
    return out


def test_slow_subscriber_never_blocks_and_resumes_at_keyframe():
    fo = FanOut()
    slow = fo.subscribe(maxsize=8, name="slow")
    fast = fo.subscribe(maxsize=1000, name="fast")
    publish_range(fo, 0, 205)  # slow never reads during this
    assert fo.published == 205
    got_fast = drain(fast)
    assert [p.pts for p in got_fast] == list(range(205))
    assert slow.dropped > 0 and slow.overflows > 0
    assert slow.qsize() <= 8
    queued = drain(slow)
    assert queued[0].keyframe
    assert [p.pts for p in queued] == list(range(queued[0].pts, queued[0].pts + len(queued)))
    # it reads again: whatever comes next continues cleanly
    publish_range(fo, 205, 212)
    more = drain(slow)
    assert [p.pts for p in queued + more] == list(range(queued[0].pts, 212))


def test_overflowed_subscriber_skips_to_next_keyframe():
    fo = FanOut()
    sub = fo.subscribe(maxsize=5)
    publish_range(fo, 0, 12)  # overflow at pts 5 -> waits for key 10
    out = drain(sub)
    assert [p.pts for p in out] == [10, 11]
    assert out[0].keyframe and sub.overflows == 1


def test_late_subscriber_starts_at_keyframe_and_hook_runs():
    seen = []
    fo = FanOut(on_subscribe=seen.append)
    publish_range(fo, 0, 3)
    sub = fo.subscribe(name="late")
    assert seen == [sub]
    publish_range(fo, 3, 25)
    first = sub.get(timeout=5)
    assert first.keyframe and first.pts == 10
    assert sub.dropped == 7  # pts 3..9


def test_unsubscribe_closes_and_stops_delivery():
    fo = FanOut()
    sub = fo.subscribe()
    fo.unsubscribe(sub)
    publish_range(fo, 0, 5)
    assert sub.closed and sub.get(timeout=1) is None
    assert fo.subscribers == ()


def test_async_subscriber_gets_packets_from_another_thread():
    async def main():
        fo = FanOut()
        sub = fo.subscribe(name="async")
        assert await sub.aget(timeout=0.01) is None  # nothing yet
        t = threading.Thread(target=lambda: [fo.publish(pkt(i)) for i in range(50)])
        t.start()
        got = []
        while len(got) < 50:
            p = await sub.aget(timeout=10)
            assert p is not None
            got.append(p.pts)
        t.join()
        waiter = asyncio.ensure_future(sub.aget())
        await asyncio.sleep(0)
        threading.Thread(target=lambda: fo.unsubscribe(sub)).start()
        return got, await asyncio.wait_for(waiter, 10)

    got, after_close = asyncio.run(main())
    assert got == list(range(50))
    assert after_close is None
