"""The timer queue on its own: deadline order, FIFO ties, lazy cancellation, the pop_due cut-off."""

from __future__ import annotations

import pytest

from iohandler.impl.timers import TimerHandle, TimerQueue


def noop() -> None:
    pass


def handle(deadline: float, interval: float | None = None) -> TimerHandle:
    return TimerHandle(deadline, interval, noop, ())


def drain(q: TimerQueue, now: float) -> list[TimerHandle]:
    last = q.seq
    out = []
    while (h := q.pop_due(now, last)) is not None:
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
    periodic.cancel()
    assert repr(periodic) == f"<TimerHandle {noop!r} at 3.000000 every 0.25s cancelled>"


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


def test_pop_due_includes_the_deadline_itself_and_not_later_ones() -> None:
    q = TimerQueue()
    q.push(now := handle(5.0))
    q.push(later := handle(5.5))
    assert q.pop_due(4.999, q.seq) is None
    assert q.pop_due(5.0, q.seq) is now
    assert q.pop_due(5.0, q.seq) is None  # not due, although pushed before the cut-off
    assert q.next_deadline() == later.deadline


def test_pop_due_leaves_timers_pushed_after_the_cut_off() -> None:
    q = TimerQueue()
    q.push(before := handle(2.0))
    last = q.seq
    q.push(after := handle(1.0))  # due first, but armed after the iteration began
    assert q.pop_due(10.0, last) is None
    assert q.pop_due(10.0, q.seq) is after
    assert q.pop_due(10.0, q.seq) is before


def test_cancelled_timers_are_skipped_by_next_deadline_and_pop_due() -> None:
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
def test_pop_due_with_only_cancelled_timers_due(cancel_last: bool) -> None:
    q = TimerQueue()
    q.push(a := handle(1.0))
    q.push(b := handle(1.0))
    a.cancel()
    if cancel_last:
        b.cancel()
    assert drain(q, 1.0) == ([] if cancel_last else [b])
    assert q.pop_due(1.0, q.seq) is None
