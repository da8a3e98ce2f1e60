"""The timer queue on its own: deadline order, FIFO ties, cancellation (callback dropped at once,
heap compacted when cancelled entries dominate), the due cut-off."""

from __future__ import annotations

import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iohandler.impl.timers import COMPACT_MIN, TimerHandle, TimerQueue
from tests.harness import budget


def noop() -> None:
    pass


def handle(deadline: float, interval: float | None = None) -> TimerHandle:
    return TimerHandle(deadline, interval, noop, ())


def drain(q: TimerQueue, now: float) -> list[TimerHandle]:
    last = q.seq
    out = []
    while (h := q.due(now, last)) is not None:
        q.fire(h, now)
        out.append(h)
    return out


def test_handle_starts_live_and_cancel_is_idempotent() -> None:
    h = handle(1.0)
    assert h.cancelled is False
    h.cancel()
    h.cancel()
    assert h.cancelled is True


def test_handle_repr_names_callback_deadline_interval_and_state() -> None:
    one_shot = handle(2.5)
    assert repr(one_shot) == f"<TimerHandle {noop!r} at 2.500000>"
    periodic = handle(3.0, 0.25)
    assert repr(periodic) == f"<TimerHandle {noop!r} at 3.000000 every 0.25s>"


def test_seq_counts_the_pushes() -> None:
    q = TimerQueue()
    assert q.seq == 0
    for n in range(1, 4):
        q.push(handle(1.0))
        assert q.seq == n


def test_due_timers_pop_in_deadline_order_equal_deadlines_fifo() -> None:
    q = TimerQueue()
    late, first, second, third = handle(3.0), handle(1.0), handle(1.0), handle(1.0)
    for h in (late, first, second, third):
        q.push(h)
    assert drain(q, 2.0) == [first, second, third]
    assert drain(q, 3.0) == [late]
    assert q.next_deadline() is None


def test_due_includes_the_deadline_itself_and_not_later_ones() -> None:
    q = TimerQueue()
    q.push(now := handle(5.0))
    q.push(later := handle(5.5))
    assert q.due(4.999, q.seq) is None
    assert q.due(5.0, q.seq) is now
    assert q.due(5.0, q.seq) is now  # looked at, not taken: it stays due until fired
    q.fire(now, 5.0)
    assert q.due(5.0, q.seq) is None  # later is not due, although pushed before the cut-off
    assert q.next_deadline() == later.deadline


def test_due_leaves_timers_pushed_after_the_cut_off() -> None:
    q = TimerQueue()
    q.push(before := handle(2.0))
    last = q.seq
    q.push(after := handle(1.0))  # due first, but armed after the iteration began
    assert q.due(10.0, last) is None
    assert q.due(10.0, q.seq) is after
    q.fire(after, 10.0)
    assert q.due(10.0, q.seq) is before


def test_cancelled_timers_are_skipped_by_next_deadline_and_due() -> None:
    q = TimerQueue()
    assert q.next_deadline() is None
    a, b, c = handle(1.0), handle(2.0), handle(3.0)
    for h in (a, b, c):
        q.push(h)
    a.cancel()
    b.cancel()
    assert q.next_deadline() == 3.0
    c.cancel()
    assert q.next_deadline() is None
    q.push(d := handle(4.0))
    d.cancel()
    q.push(e := handle(5.0))
    assert drain(q, 10.0) == [e]


@pytest.mark.parametrize("cancel_last", [False, True])
def test_due_with_only_cancelled_timers_due(cancel_last: bool) -> None:
    q = TimerQueue()
    q.push(a := handle(1.0))
    q.push(b := handle(1.0))
    a.cancel()
    if cancel_last:
        b.cancel()
    assert drain(q, 1.0) == ([] if cancel_last else [b])
    assert q.due(1.0, q.seq) is None


# ---------------------------------------------------- cancelled timers are dropped (issue 14, 8)


class Payload:
    """A timer argument whose lifetime a weakref can watch."""


def test_cancel_drops_the_callback_and_its_arguments_at_once() -> None:
    q = TimerQueue()
    arg = Payload()
    gone = weakref.ref(arg)

    def cb(p: Payload) -> None:
        pass

    cb_gone = weakref.ref(cb)
    h = TimerHandle(3600.0, None, cb, (arg,))
    q.push(h)
    del arg, cb
    assert gone() is not None  # a live timer holds its arguments
    h.cancel()
    assert gone() is None and cb_gone() is None  # not at the deadline, an hour from now
    assert h.call is None and h.callback is None and h.args is None
    assert q.next_deadline() is None


def test_cancelled_timers_do_not_accumulate_in_the_heap() -> None:
    q = TimerQueue()
    live = handle(10.0)
    q.push(live)
    most = 0
    for i in range(20_000):
        h = handle(3600.0 + i)
        q.push(h)
        h.cancel()
        most = max(most, len(q.heap))
    assert most <= 2 * COMPACT_MIN + 2, most  # compacted whenever cancelled entries dominate
    assert drain(q, 10.0) == [live]


def test_cancel_after_the_timer_left_the_heap_is_not_counted() -> None:
    q = TimerQueue()
    q.push(a := handle(1.0))
    assert drain(q, 1.0) == [a]
    a.cancel()  # fired already: nothing in the heap to account for
    assert q.cancelled == 0
    q.push(b := handle(2.0))
    b.cancel()
    b.cancel()  # idempotent: counted once
    assert q.cancelled == 1
    assert q.next_deadline() is None
    assert q.cancelled == 0


def test_handle_repr_after_cancel_names_no_callback() -> None:
    h = handle(3.0, 0.25)
    h.cancel()
    assert repr(h) == "<TimerHandle cancelled at 3.000000 every 0.25s>"


@settings(max_examples=budget(dev=50, ci=200, thorough=2000))
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.integers(0, 20)),
            st.tuples(st.just("cancel"), st.integers(0, 400)),
            st.tuples(st.just("pop"), st.integers(0, 20)),
        ),
        max_size=400,
    )
)
def test_compaction_keeps_the_queue_equal_to_a_sorted_list(ops: list[tuple[str, int]]) -> None:
    """Against a reference (every live timer, sorted by deadline then push order), whatever mix
    of pushes, cancels and pops triggers compactions: same timers due, same order."""
    q = TimerQueue()
    pushed: list[TimerHandle] = []
    ref: list[tuple[float, int, TimerHandle]] = []
    for op, n in ops:
        if op == "push":
            h = handle(float(n))
            q.push(h)
            pushed.append(h)
            ref.append((h.deadline, q.seq, h))
            # Just after a push: compacted, or cancelled entries are at most half the heap.
            assert len(q.heap) <= max(COMPACT_MIN, 2 * len(ref))
        elif op == "cancel" and pushed:
            h = pushed[n % len(pushed)]
            h.cancel()
            ref = [e for e in ref if e[2] is not h]
        elif op == "pop":
            ref.sort(key=lambda e: (e[0], e[1]))
            due = [e[2] for e in ref if e[0] <= n]
            assert drain(q, float(n)) == due
            ref = [e for e in ref if e[0] > n]
    assert q.next_deadline() == (min(e[0] for e in ref) if ref else None)


def test_fire_marks_a_one_shot_done_and_the_next_look_drops_it() -> None:
    q = TimerQueue()
    calls: list[int] = []
    q.push(h := TimerHandle(1.0, None, calls.append, (7,)))
    q.fire(h, 1.0)
    assert calls == [7]
    assert h.call is None and not h.cancelled
    assert repr(h) == "<TimerHandle done at 1.000000>"
    assert q.due(1.0, q.seq) is None
    assert q.heap == []
    q.fire(h, 1.0)  # fired already: nothing happens
    assert calls == [7]


def test_fire_moves_a_periodic_timer_behind_timers_armed_before_it() -> None:
    q = TimerQueue()
    q.push(p := handle(1.0, 1.0))
    q.push(o := handle(1.5))
    last = q.seq
    assert q.due(1.2, last) is p
    q.fire(p, 1.2)
    assert p.deadline == 2.0
    assert q.due(1.2, last) is None  # re-armed, with a sequence number past the cut-off
    assert [h for _, _, h in sorted(q.heap)] == [o, p]
    assert q.next_deadline() == 1.5
    q.fire(p, 5.0)  # fell behind: re-armed from now, no catch-up burst
    assert p.deadline == 6.0


def test_an_exception_from_the_callback_names_it_and_the_tick_counts() -> None:
    q = TimerQueue()

    def boom() -> None:
        raise KeyError("x")

    q.push(h := TimerHandle(1.0, None, boom, ()))
    with pytest.raises(KeyError) as info:
        q.fire(h, 1.0)
    assert any("raised by timer callback" in n for n in info.value.__notes__)
    assert q.due(1.0, q.seq) is None  # a one-shot that raised has run: not run again


def test_compaction_happens_exactly_when_cancelled_entries_are_more_than_half() -> None:
    """The policy of the module docstring, at its boundary: a heap of more than COMPACT_MIN
    entries is rebuilt from its live ones once cancelled entries are more than half of it."""
    q = TimerQueue()
    n = 2 * (COMPACT_MIN // 2 + 2)  # even, and more than COMPACT_MIN
    hs = [handle(1.0 + i) for i in range(n)]
    for h in hs:
        q.push(h)
    for h in hs[n // 2 :]:  # the later half: none reaches the top, so only a compaction drops them
        h.cancel()
    assert q.cancelled == n // 2
    assert q.next_deadline() == 1.0
    assert len(q.heap) == n  # exactly half: kept
    hs[n // 2 - 1].cancel()
    assert q.next_deadline() == 1.0
    assert len(q.heap) == n // 2 - 1  # more than half: rebuilt from the live ones
    assert q.cancelled == 0
    hs[0].cancel()  # live entries still belong to the queue: a cancel is counted
    assert q.cancelled == 1


def test_the_cancelled_count_follows_only_cancelled_entries_leaving() -> None:
    q = TimerQueue()
    q.push(a := handle(1.0))
    q.push(c := handle(2.0))
    q.push(b := handle(3.0))
    b.cancel()
    assert drain(q, 1.0) == [a]  # a live entry leaves: the count of cancelled ones stays
    assert q.cancelled == 1
    assert drain(q, 2.0) == [c]
    assert q.next_deadline() is None  # b leaves
    assert q.cancelled == 0


def test_a_rearmed_periodic_timer_is_a_push_after_the_cut_off() -> None:
    """seq counts pushes, a periodic timer's re-arm included, so a timer armed after the
    iteration's cut-off stays after it whatever the periodic timers did."""
    q = TimerQueue()
    q.push(handle(5.0))
    q.push(handle(5.0))
    q.push(p := handle(1.0, 1.0))
    last = q.seq
    assert q.due(1.0, last) is p
    q.fire(p, 1.0)
    assert q.due(1.0, last) is None  # p is re-armed at 2.0: a push
    assert q.seq == last + 1
    q.push(late := handle(1.0))  # armed by a callback, say
    assert q.due(1.0, last) is None
    assert q.due(1.0, q.seq) is late


def test_a_push_compacts_exactly_when_cancelled_entries_are_more_than_half() -> None:
    q = TimerQueue()
    n = COMPACT_MIN + 37  # odd, more than COMPACT_MIN
    hs = [handle(1.0 + i) for i in range(n)]
    for h in hs:
        q.push(h)
    k = (n + 1) // 2
    for h in hs[n - k :]:
        h.cancel()
    q.push(handle(1000.0))
    assert len(q.heap) == n + 1 == 2 * q.cancelled  # exactly half: kept
    hs[n - k - 1].cancel()
    q.push(handle(1001.0))
    assert len(q.heap) == n - k - 1 + 2  # more than half: rebuilt at the push
    assert q.cancelled == 0


def test_a_heap_of_exactly_compact_min_entries_is_not_compacted() -> None:
    q = TimerQueue()
    hs = [handle(1.0 + i) for i in range(COMPACT_MIN - 1)]
    for h in hs:
        q.push(h)
    for h in hs[1:]:
        h.cancel()
    q.push(handle(1000.0))  # COMPACT_MIN entries, nearly all cancelled: skipping is cheaper
    assert len(q.heap) == COMPACT_MIN
    assert q.next_deadline() == 1.0
    assert len(q.heap) == COMPACT_MIN


def test_cancel_after_a_fired_timer_was_compacted_away_is_harmless() -> None:
    q = TimerQueue()
    q.push(first := handle(0.5))
    q.fire(first, 0.5)  # fired: its entry stays until the top is settled, or a compaction
    hs = [handle(2.0 + i) for i in range(2 * COMPACT_MIN)]
    for h in hs:
        q.push(h)
    for h in hs[1:]:
        h.cancel()
    q.compact()
    assert [e[2] for e in q.heap] == [hs[0]]
    first.cancel()  # no longer in any heap: nothing to count
    assert q.cancelled == 0
