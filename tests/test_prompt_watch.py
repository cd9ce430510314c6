"""streamer.prompt_watch: events and waiting set_prompt replies on an event loop, without sockets."""
import asyncio

import pytest

from streamer.prompt_watch import PromptWatch, WaitRefused


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))  # the timeout only catches hangs


def test_a_waiter_is_answered_when_its_change_is_published_and_an_event_goes_out():
    async def main():
        events = []
        w = PromptWatch(events.append)
        with w.slot():
            fut = w.accepted(4, "cut", requested_at=100.0, wait=True)
            assert w.snapshot()["waiting"] == 1 and w.snapshot()["pending"] == 1
            task = asyncio.ensure_future(w.wait(fut, 4))
            w.published(block=30, epoch=3, now=100.5)  # the old prompt: nothing yet
            await asyncio.sleep(0)
            assert not task.done()
            w.published(block=31, epoch=4, now=101.25)
            got = await task
        return got, events, w.snapshot()

    got, events, snap = run(main())
    assert got == {"on_stream": {"block": 31, "reaction_s": 1.25}}
    assert events == [{"event": "prompt_on_stream", "epoch": 4, "block": 31, "mode": "cut", "reaction_s": 1.25}]
    assert snap["waiting"] == 0 and snap["pending"] == 0 and snap["by_mode"]["cut"]["count"] == 1


def test_a_change_without_waiter_is_still_timed():
    async def main():
        events = []
        w = PromptWatch(events.append)
        assert w.accepted(1, "soft", 0.0) is None
        w.published(5, 1, 2.0)
        return events, w.snapshot()

    events, snap = run(main())
    assert events[0]["reaction_s"] == 2.0 and snap["last_s"] == 2.0 and snap["count"] == 1


def test_a_waiter_whose_change_does_not_reach_the_stream_in_time_gets_an_error():
    async def main():
        w = PromptWatch(lambda ev: None, limit_s=0.01)
        with w.slot():
            return await w.wait(w.accepted(2, "soft", 0.0, wait=True), 2), w

    got, w = run(main())
    assert got["ok"] is False and "change 2 did not reach the stream within 0.01 s" in got["error"]
    assert w.snapshot()["pending"] == 1  # still accepted: it is timed when it arrives


def test_a_cancelled_change_answers_its_waiter_with_an_error():
    async def main():
        w = PromptWatch(lambda ev: None)
        with w.slot():
            fut = w.accepted(6, "queue", 0.0, wait=True)
            w.cancelled([6])
            return await w.wait(fut, 6), w.snapshot()

    got, snap = run(main())
    assert got == {"ok": False, "error": "change 6 was cancelled before it reached the stream"}
    assert snap["pending"] == 0


def test_close_answers_every_waiter_and_refuses_new_ones():
    async def main():
        w = PromptWatch(lambda ev: None)

        async def one(epoch):
            with w.slot():
                return await w.wait(w.accepted(epoch, "soft", 0.0, wait=True), epoch)

        tasks = [asyncio.ensure_future(one(e)) for e in (1, 2)]
        while w.waiting < 2:
            await asyncio.sleep(0)
        with w.slot():  # a request whose change the engine accepts after close()
            w.close("the daemon is stopping")
            late = await w.wait(w.accepted(3, "soft", 0.0, wait=True), 3)
        assert late["ok"] is False and "stopping before change 3" in late["error"]
        assert await w.drained(30.0)
        with pytest.raises(WaitRefused, match="stopping"):
            with w.slot():
                pass
        return [t.result() for t in tasks]

    for got in run(main()):
        assert got["ok"] is False and "the daemon is stopping before change" in got["error"]


def test_waiting_requests_are_capped():
    async def main():
        w = PromptWatch(lambda ev: None, max_waiting=1)
        with w.slot():
            with pytest.raises(WaitRefused, match=r"too many requests wait .*\(limit 1\)"):
                with w.slot():
                    pass
        with w.slot():  # free again
            return w.waiting

    assert run(main()) == 1
