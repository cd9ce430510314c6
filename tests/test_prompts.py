"""Prompt epochs, modes and acknowledgements as pure logic."""
import pytest

from pipeline.prompts import PromptError, PromptSchedule
from pipeline.dualparal.schedule import BlockQueue


class Sim:
    """Drives a PromptSchedule exactly as the engine does, without a model."""

    def __init__(self, steps=3, prompt="a"):
        self.q = BlockQueue(steps)
        self.p = PromptSchedule(prompt)
        self.emitted = []  # (block, cond)
        self.events = []
        self.tick()  # first tick: block 0 enters

    def tick(self):
        br = self.p.begin_tick(self.q.head, self.q.next_enter)
        self.events += br.applied
        if br.flush_from is not None:
            self.q.flush_from(br.flush_from)
        b = self.q.enter()
        if b is not None:
            self.p.enter(b)
        self.p.set_boundary(*self.q.next_boundary())
        for blk in self.q.advance():
            self.emitted.append((blk, self.p.leave(blk)))

    def run(self, n):
        for _ in range(n):
            self.tick()

    def cond_of(self, block):
        return dict(self.emitted)[block]


def test_soft_change_lands_at_the_next_emitted_block():
    s = Sim(steps=3)
    s.run(5)
    ch = s.p.submit("b", "soft")
    assert ch.first_block == s.q.head  # the head at the next tick start is the next block emitted
    s.run(6)
    assert s.cond_of(ch.first_block).parts == (("b", 1.0),)
    assert s.cond_of(ch.first_block).epoch == ch.epoch
    assert s.cond_of(ch.first_block - 1).parts == (("a", 1.0),)
    assert [e.epoch for e in s.events] == [ch.epoch]


def test_queue_change_affects_only_new_blocks():
    s = Sim(steps=4)
    s.run(6)
    ch = s.p.submit("b", "queue")
    assert ch.first_block == s.q.next_enter and ch.first_block == s.q.head + 3
    s.run(10)
    assert s.cond_of(ch.first_block).prompt == "b"
    assert s.cond_of(ch.first_block - 1).prompt == "a"


def test_blend_ramps_over_k_blocks():
    s = Sim(steps=2)
    s.run(3)
    ch = s.p.submit("b", "blend", blocks=4)
    s.run(10)
    n = ch.first_block
    weights = [dict(s.cond_of(n + j).parts).get("b", 0.0) for j in range(5)]
    assert weights == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert dict(s.cond_of(n - 1).parts) == {"a": 1.0}
    assert all(s.cond_of(n + j).epoch == ch.epoch for j in range(5))


def test_cut_flushes_and_refills_from_the_acknowledged_block():
    s = Sim(steps=3)
    s.run(5)
    ch = s.p.submit("b", "cut")
    s.run(8)
    blocks = [b for b, _ in s.emitted]
    assert blocks == sorted(set(blocks)), "each index emitted once, in order"
    assert blocks == list(range(len(blocks)))
    assert s.cond_of(ch.first_block).prompt == "b"
    assert s.cond_of(ch.first_block - 1).prompt == "a"


def test_at_block_schedules_in_the_future_and_rejects_the_past():
    s = Sim(steps=3)
    s.run(4)
    head, enter = s.q.head, s.q.next_enter  # the start of the next tick
    with pytest.raises(PromptError, match="past"):
        s.p.submit("x", "soft", at_block=head - 1)
    with pytest.raises(PromptError, match="already entered"):
        s.p.submit("x", "queue", at_block=enter - 1)
    ch = s.p.submit("b", "soft", at_block=head + 5)
    assert ch.first_block == head + 5
    s.run(12)
    assert s.cond_of(head + 4).prompt == "a"
    assert s.cond_of(head + 5).prompt == "b"


def test_epochs_increase_and_unknown_mode_is_rejected():
    s = Sim()
    a = s.p.submit("b", "queue")
    b = s.p.submit("c", "soft")
    assert b.epoch == a.epoch + 1
    with pytest.raises(PromptError):
        s.p.submit("d", "sideways")


def test_scheduled_changes_are_bounded_but_immediate_ones_always_land():
    from pipeline.prompts import MAX_AHEAD, MAX_PER_CLIENT, MAX_SCHEDULED

    s = PromptSchedule("a")
    s.set_boundary(10, 14)
    with pytest.raises(PromptError, match=f"more than {MAX_AHEAD} blocks ahead"):
        s.submit("x", "soft", at_block=10 + MAX_AHEAD + 1)
    for i in range(MAX_PER_CLIENT):
        s.submit(f"p{i}", "soft", at_block=100 + i, client="mallory")
    with pytest.raises(PromptError, match="this client has"):
        s.submit("one more", "soft", at_block=500, client="mallory")
    s.submit("another client", "soft", at_block=500, client="alice")
    for i in range(MAX_SCHEDULED - MAX_PER_CLIENT - 1):
        s.submit(f"q{i}", "soft", at_block=600, client=f"c{i}")
    with pytest.raises(PromptError, match=f"{MAX_SCHEDULED} scheduled changes are pending"):
        s.submit("full", "queue", at_block=700, client="bob")
    for mode in ("soft", "cut", "queue", "blend"):  # a full schedule never blocks a change for now
        assert s.submit("now", mode, client="mallory").epoch > 0


def test_cancel_withdraws_pending_changes_only():
    s = PromptSchedule("a")
    s.set_boundary(0, 0)
    a = s.submit("x", "soft", at_block=5)
    b = s.submit("y", "queue", at_block=6)
    now = s.submit("z", "soft")
    assert s.cancel(a.epoch) == [a.epoch]
    with pytest.raises(PromptError, match=f"no pending change has epoch {a.epoch}"):
        s.cancel(a.epoch)
    assert s.cancel() == [b.epoch]  # every scheduled one; the immediate change stays
    assert [p.epoch for p in s.pending] == [now.epoch]
    s.begin_tick(0, 0)
    with pytest.raises(PromptError):
        s.cancel(now.epoch)  # it took effect


def test_a_cut_supersedes_an_earlier_blend_that_had_not_begun():
    s = Sim(steps=4)
    s.run(6)
    blend = s.p.submit("b", "blend", blocks=2)  # waits for the next block to enter, 3 after the head
    cut = s.p.submit("c", "cut")  # the next block emitted: the blend's first block is flushed before it enters
    assert cut.first_block < blend.first_block
    br = s.p.begin_tick(s.q.head, s.q.next_enter)
    assert [c.epoch for c in br.applied] == [cut.epoch]
    assert [c.epoch for c in br.superseded] == [blend.epoch] and s.p.pending == []
    s.q.flush_from(br.flush_from)
    s.p.enter(s.q.enter())
    s.p.set_boundary(*s.q.next_boundary())
    for blk in s.q.advance():
        s.emitted.append((blk, s.p.leave(blk)))
    s.run(12)
    after = [c for b, c in s.emitted if b >= cut.first_block]
    assert len(after) >= 10 and all(c.parts == (("c", 1.0),) and c.epoch == cut.epoch for c in after)


@pytest.mark.parametrize("older", ["queue", "blend"])
def test_a_newer_soft_change_is_not_undone_by_an_older_one_due_later(older):
    s = Sim(steps=4)
    s.run(6)
    first = s.p.submit("b", older)  # due when the next block enters
    soft = s.p.submit("c", "soft")  # due at once, for every block in flight
    s.run(12)
    assert [e.epoch for e in s.events] == [soft.epoch]
    after = [c for b, c in s.emitted if b >= soft.first_block]
    assert len(after) >= 10 and all(c.parts == (("c", 1.0),) for c in after)
    assert first.epoch not in [e.epoch for e in s.events]


def test_scheduled_changes_are_never_superseded():
    s = Sim(steps=3)
    s.run(5)
    head = s.q.head
    soft = s.p.submit("b", "soft")  # applies, then the cut at the same boundary overwrites its blocks
    queue = s.p.submit("c", "queue")  # not begun when the newer cut applies: superseded
    later = s.p.submit("d", "soft", at_block=head + 1)  # scheduled: waits for its block whatever comes before
    cut = s.p.submit("e", "cut")
    s.run(12)
    assert [e.epoch for e in s.events] == [soft.epoch, cut.epoch, later.epoch]
    assert queue.epoch not in [e.epoch for e in s.events]
    assert s.cond_of(head).parts == (("e", 1.0),)
    assert all(c.parts == (("d", 1.0),) for b, c in s.emitted if b > head)
