"""The block schedule as pure logic."""
from pipeline.dualparal.schedule import BlockQueue


def run_ticks(q, n):
    log = []
    for _ in range(n):
        entered = q.enter()
        plan = q.plan()
        done = q.advance()
        log.append((entered, plan, done))
    return log


def test_fill_then_one_block_per_tick():
    S = 4
    q = BlockQueue(S)
    log = run_ticks(q, 10)
    # block k enters at tick k and leaves at the end of tick k + S - 1
    assert [e for e, _, _ in log] == list(range(10))
    assert [d for _, _, d in log] == [[], [], [], [0], [1], [2], [3], [4], [5], [6]]
    assert q.depth == S - 1


def test_steps_are_consecutive_and_processed_tail_to_head():
    q = BlockQueue(5)
    log = run_ticks(q, 7)
    _, plan, _ = log[6]  # steady state: blocks 2..6 in flight
    assert [w.block for w in plan] == [6, 5, 4, 3, 2]
    assert [w.step for w in plan] == [0, 1, 2, 3, 4]


def test_context_indices():
    q = BlockQueue(3)
    log = run_ticks(q, 4)
    _, plan, _ = log[3]
    by = {w.block: w for w in plan}
    assert by[3].prev == 2 and by[3].succ is None  # tail: no successor
    assert by[2].succ == 3 and by[1].succ == 2
    assert by[1].prev == 0  # 0 already left the queue: its final latents give the context
    _, plan0, _ = log[0]
    assert plan0[0].prev is None  # the stream's first block has no previous context


def test_flush_refills_from_the_flushed_index():
    q = BlockQueue(3)
    run_ticks(q, 5)  # in flight: 3, 4 (2 just left), next to enter 5
    assert q.blocks() == [(3, 2), (4, 1)]
    dropped = q.flush_from(3)
    assert dropped == [3, 4]
    assert q.head == 3 and q.next_enter == 3
    log = run_ticks(q, 3)
    assert [e for e, _, _ in log] == [3, 4, 5]
    assert log[2][2] == [3]  # 3 re-entered and needs S ticks again


def test_next_boundary_predicts_the_next_tick_start():
    q = BlockQueue(3)
    for _ in range(6):
        q.enter()
        predicted = q.next_boundary()
        q.advance()
        assert predicted == (q.head, q.next_enter)


def test_single_step_schedule():
    q = BlockQueue(1)
    log = run_ticks(q, 3)
    assert [d for _, _, d in log] == [[0], [1], [2]]
    assert all(w.succ is None for _, p, _ in log for w in p)
