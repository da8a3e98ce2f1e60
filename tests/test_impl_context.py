"""The loop's AioContext (impl/context.py) on every poller: bottom halves as QEMU 2.3's async.c
(list order, what a walk visits, when `scheduled` is cleared, deferred freeing, nested walks,
the walk's value, the timeout), context fd handlers as aio-posix.c (new node at the head, no
revival, unlink or flag on delete, no gate), the phase order of one iteration, threads, bad
input and exceptions."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iohandler.impl import (
    IN,
    OUT,
    POLLERS,
    READ_EVENTS,
    WRITE_EVENTS,
    BottomHalf,
    ClosedFdError,
    ListTracer,
    LoopClosedError,
    LoopForkedError,
    MainLoop,
    ReentrantWaitError,
    Seams,
    UnpollableFdError,
)
from iohandler.impl.driver import run_vector as impl_run_vector
from iohandler.impl.timers import TimerQueue
from iohandler.impl.wakeup import Wakeup
from iohandler.specs.vector import FORMAT_V3, bundled_vectors_dir, load_vector, vector_files
from tests.support import Pairs


def recorder(log: list[Any], name: object) -> Callable[[Any], None]:
    def cb(opaque: Any) -> None:
        log.append(name)

    return cb


def receiver(log: list[Any], name: object, sock: socket.socket) -> Callable[[Any], None]:
    """A read handler: logs `name` and drains what the peer sent."""

    def cb(opaque: Any) -> None:
        log.append(name)
        sock.recv(10)

    return cb


# ------------------------------------------------------------------------------ bottom halves


def test_bh_list_is_newest_first_and_walk_runs_it_in_list_order(loop: MainLoop) -> None:
    log: list[Any] = []
    a = loop.bh_new(recorder(log, "a"))
    b = loop.bh_new(recorder(log, "b"))
    c = loop.context.bh_new(recorder(log, "c"))
    assert loop.context.bottom_halves() == [c, b, a]
    a.schedule()
    c.schedule()
    b.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert log == ["c", "b", "a"]
    assert not (a.scheduled or b.scheduled or c.scheduled)


def test_callback_gets_opaque_and_sees_scheduled_cleared(loop: MainLoop) -> None:
    seen: list[Any] = []
    bh: BottomHalf

    def cb(opaque: Any) -> None:
        seen.append((opaque, bh.scheduled))

    token = object()
    bh = loop.bh_new(cb, token)
    assert bh.opaque is token and bh.callback is cb
    bh.schedule()
    bh.schedule()  # a scheduled BH: nothing more
    loop.main_loop_wait(nonblocking=True)
    assert seen == [(token, False)]


def test_self_schedule_runs_in_the_next_walk_not_this_one(loop: MainLoop) -> None:
    runs: list[int] = []
    bh: BottomHalf

    def cb(_: Any) -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            bh.schedule()

    bh = loop.bh_new(cb)
    bh.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert runs == [0]
    loop.main_loop_wait(nonblocking=True)
    assert runs == [0, 1]
    loop.main_loop_wait()  # scheduled: the timeout is 0, this returns at once
    assert runs == [0, 1, 2]


def test_scheduling_an_older_bh_from_a_callback_runs_it_in_the_same_walk(loop: MainLoop) -> None:
    log: list[Any] = []
    older = loop.bh_new(recorder(log, "older"))

    def cb(_: Any) -> None:
        log.append("newer")
        older.schedule()

    newer = loop.bh_new(cb)
    newer.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert log == ["newer", "older"]


def test_bh_created_and_scheduled_by_a_callback_waits_for_the_next_walk(loop: MainLoop) -> None:
    log: list[Any] = []
    made: list[BottomHalf] = []

    def cb(_: Any) -> None:
        bh = loop.bh_new(recorder(log, "new"))
        bh.schedule()
        made.append(bh)

    loop.bh_new(cb).schedule()
    loop.main_loop_wait(nonblocking=True)
    assert log == [] and made[0].scheduled
    loop.main_loop_wait(nonblocking=True)
    assert log == ["new"]


def test_cancel_and_schedule_again(loop: MainLoop) -> None:
    log: list[Any] = []
    bh = loop.bh_new(recorder(log, "x"))
    bh.schedule()
    bh.cancel()
    assert not bh.scheduled
    assert loop.main_loop_wait(nonblocking=True) == 1  # the schedule's notify still counts
    assert log == []
    bh.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert log == ["x"]


def test_delete_is_freed_by_the_next_walk(loop: MainLoop) -> None:
    log: list[Any] = []
    a = loop.bh_new(recorder(log, "a"))
    b = loop.bh_new(recorder(log, "b"))
    a.schedule()
    a.delete()
    assert a.deleted and not a.scheduled
    assert loop.context.bottom_halves() == [b, a]  # flagged, still in the list
    b.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert log == ["b"]
    assert loop.context.bottom_halves() == [b]


def test_a_deleted_bh_still_schedules_and_never_runs(loop: MainLoop) -> None:
    """R44, as QEMU: schedule of a deleted BH marks it and notifies; it never runs, never
    counts for the timeout; cancel and delete again change nothing more."""
    log: list[Any] = []
    bh = loop.bh_new(recorder(log, "x"))
    bh.delete()
    bh.schedule()
    assert bh.scheduled and bh.deleted
    assert loop.context.compute_timeout() is None
    assert loop.main_loop_wait(nonblocking=True) == 1  # the notify
    assert log == [] and loop.context.bottom_halves() == []
    bh.schedule()  # freed: the handle keeps its flags (still scheduled: nothing)
    bh.cancel()
    bh.delete()
    bh.schedule_idle()
    assert loop.main_loop_wait(nonblocking=True) == 0
    assert log == []


def test_delete_inside_a_walk_is_not_freed_until_the_walk_ends(loop: MainLoop) -> None:
    log: list[Any] = []
    seen: list[list[BottomHalf]] = []
    older = loop.bh_new(recorder(log, "older"))

    def cb(_: Any) -> None:
        older.delete()
        seen.append(loop.context.bottom_halves())

    newer = loop.bh_new(cb)
    older.schedule()
    newer.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert log == []  # deleted before the walk reached it
    assert seen == [[newer, older]]
    assert loop.context.bottom_halves() == [newer]


def test_nested_walk_through_context_poll(loop: MainLoop) -> None:
    log: list[Any] = []
    inner_seen: list[Any] = []
    victim = loop.bh_new(recorder(log, "victim"))
    later = loop.bh_new(recorder(log, "later"))

    def outer(_: Any) -> None:
        later.schedule()
        victim.delete()
        progress = loop.context.poll()  # a nested walk: runs `later`, frees nothing
        inner_seen.append((progress, list(log), loop.context.bottom_halves()))

    top = loop.bh_new(outer)
    top.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert inner_seen == [(True, ["later"], [top, later, victim])]
    assert log == ["later"]  # not run twice by the outer walk
    assert loop.context.bottom_halves() == [top, later]


def test_nested_main_loop_wait_stays_refused(loop: MainLoop) -> None:
    errors: list[BaseException] = []

    def cb(_: Any) -> None:
        try:
            loop.main_loop_wait(nonblocking=True)
        except ReentrantWaitError as e:
            errors.append(e)

    loop.bh_new(cb).schedule()
    loop.main_loop_wait(nonblocking=True)
    assert len(errors) == 1


def test_poll_progress_does_not_count_idle_bhs(loop: MainLoop) -> None:
    log: list[Any] = []
    bh = loop.bh_new(recorder(log, "x"))
    assert loop.context.poll() is False
    bh.schedule_idle()
    assert bh.idle and bh.scheduled
    assert loop.context.poll() is False
    assert log == ["x"] and not bh.idle
    bh.schedule()
    assert loop.context.poll() is True


def test_schedule_idle_then_schedule_keeps_idle(loop: MainLoop) -> None:
    bh = loop.bh_new(lambda _: None)
    bh.schedule_idle()
    bh.schedule()  # already scheduled: nothing, as in QEMU 2.3
    assert bh.idle
    assert loop.context.poll() is False


def test_compute_timeout(loop: MainLoop) -> None:
    ctx = loop.context
    assert ctx.compute_timeout() is None
    idle = loop.bh_new(lambda _: None)
    idle.schedule_idle()
    assert ctx.compute_timeout() == 0.01
    busy = loop.bh_new(lambda _: None)
    busy.schedule()
    assert ctx.compute_timeout() == 0.0
    busy.delete()
    assert ctx.compute_timeout() == 0.01
    idle.cancel()
    assert ctx.compute_timeout() is None
    ctx.call_later(5.0, lambda: None)
    t = ctx.compute_timeout()
    assert t is not None and 4.0 < t <= 5.0


def test_compute_timeout_inside_a_walk_sees_the_bhs_not_yet_run(loop: MainLoop) -> None:
    """R50 from a BH callback: an older BH the walk has not reached yet is still scheduled, so
    the timeout is 0 (found by the context lockstep: the walk's "maybe scheduled" flag hid it)."""
    seen: list[float | None] = []
    older = loop.bh_new(lambda _: None)
    newer = loop.bh_new(lambda _: seen.append(loop.context.compute_timeout()))
    older.schedule()
    newer.schedule()
    loop.main_loop_wait(nonblocking=True)
    assert seen == [0.0]
    assert not older.scheduled


def test_only_idle_bhs_bound_the_wait_to_10_ms(loop: MainLoop) -> None:
    log: list[Any] = []
    loop.bh_new(recorder(log, "idle")).schedule_idle()
    t0 = time.monotonic()
    ret = loop.main_loop_wait()
    elapsed = time.monotonic() - t0
    assert log == ["idle"]
    assert ret == 0  # schedule_idle does not notify
    assert 0.005 < elapsed < 1.0


def test_context_timer_runs_in_the_context_dispatch(loop: MainLoop) -> None:
    log: list[Any] = []
    loop.context.call_later(0.0, log.append, "ctx-timer")
    loop.call_later(0.0, log.append, "main-timer")
    loop.main_loop_wait()
    assert log == ["ctx-timer", "main-timer"]


def test_phase_order_bh_context_handler_fd_handler_timers(loop: MainLoop, socks: Pairs) -> None:
    log: list[Any] = []
    ctx_sock, ctx_peer = socks.pair()
    rec_sock, rec_peer = socks.pair()
    loop.set_fd_handler(rec_sock, read=receiver(log, "read", rec_sock))
    loop.context.set_fd_handler(ctx_sock, receiver(log, "aio_read", ctx_sock), None)
    loop.main_loop_wait(nonblocking=True)  # the registrations' notify
    loop.bh_new(recorder(log, "bh")).schedule()
    loop.call_later(0.0, log.append, "timer")
    ctx_peer.send(b"x")
    rec_peer.send(b"x")
    tracer = ListTracer()
    loop.set_tracer(tracer)
    ret = loop.main_loop_wait()
    assert log == ["bh", "aio_read", "read", "timer"]
    assert ret == 3  # the record, the context fd, the BH's notify
    kinds = [e[0] for e in tracer.events]
    assert kinds == ["poll", "aio_poll_set", "ready", "bh", "aio_read", "read"]
    assert tracer.events[1] == ("aio_poll_set", [(ctx_sock.fileno(), READ_EVENTS)])


# ------------------------------------------------------------------------- context handlers


def test_context_handlers_new_node_at_head_update_in_place(loop: MainLoop, socks: Pairs) -> None:
    a, _ = socks.pair()
    b, _ = socks.pair()
    ctx = loop.context
    r1, r2 = recorder([], 1), recorder([], 2)
    ctx.set_fd_handler(a, r1, None)
    ctx.set_fd_handler(b, r1, None)
    ctx.set_fd_handler(a, r2, None, "op")  # update: stays where it is
    assert [(h.fd, h.read, h.opaque) for h in ctx.handlers()] == [(b.fileno(), r1, None), (a.fileno(), r2, "op")]
    kernel = loop.snapshot().kernel
    assert a.fileno() in kernel and b.fileno() in kernel
    before = kernel[a.fileno()]
    ctx.set_fd_handler(a, None, r1)
    assert loop.snapshot().kernel[a.fileno()] != before  # the interest changed at once
    if loop.poller_name != "selectors":  # selectors keeps its own flags
        assert before == READ_EVENTS and loop.snapshot().kernel[a.fileno()] == WRITE_EVENTS


def test_delete_outside_a_walk_unlinks_at_once(loop: MainLoop, socks: Pairs) -> None:
    a, _ = socks.pair()
    loop.context.set_fd_handler(a, lambda _: None, None)
    loop.context.set_fd_handler(a, None, None)
    assert loop.context.handlers() == []
    assert a.fileno() not in loop.snapshot().kernel
    loop.context.set_fd_handler(a, None, None)  # unknown fd: nothing


def test_delete_inside_a_walk_flags_and_a_new_registration_is_a_new_node(loop: MainLoop, socks: Pairs) -> None:
    a, pa = socks.pair()
    b, pb = socks.pair()
    log: list[Any] = []
    seen: list[Any] = []
    ctx = loop.context

    def on_b(_: Any) -> None:  # b is newer: its handler runs first
        log.append("b")
        b.recv(10)
        ctx.set_fd_handler(a, None, None)  # flagged: the walk is in progress
        ctx.set_fd_handler(a, recorder(log, "a-new"), None)  # a new node, at the head
        seen.append([(h.fd, h.deleted) for h in ctx.handlers()])

    ctx.set_fd_handler(a, recorder(log, "a-old"), None)
    ctx.set_fd_handler(b, on_b, None)
    pa.send(b"x")
    pb.send(b"x")
    loop.main_loop_wait()
    # The old node of a is never called (deleted), the new one has no revents this time.
    assert log == ["b"]
    assert seen == [[(a.fileno(), False), (b.fileno(), False), (a.fileno(), True)]]
    assert [(h.fd, h.deleted) for h in ctx.handlers()] == [(a.fileno(), False), (b.fileno(), False)]
    loop.main_loop_wait()
    assert log == ["b", "a-new"]


def test_write_check_sees_the_current_handler(loop: MainLoop, socks: Pairs) -> None:
    a, pa = socks.pair()
    log: list[Any] = []

    def read(_: Any) -> None:
        log.append("r")
        a.recv(10)
        loop.context.set_fd_handler(a, read, recorder(log, "w2"))

    loop.context.set_fd_handler(a, read, recorder(log, "w1"))
    pa.send(b"x")  # readable; a socket with room is writable
    loop.main_loop_wait()
    assert log == ["r", "w2"]


def test_context_handler_has_no_gate_and_hup_reaches_read(loop: MainLoop, socks: Pairs) -> None:
    a, pa = socks.pair()
    log: list[Any] = []
    loop.context.set_fd_handler(a, recorder(log, "r"), None)
    pa.close()
    socks.socks.remove(pa)
    loop.main_loop_wait()
    assert log == ["r"]


def test_context_poll_dispatches_handlers_with_progress(loop: MainLoop, socks: Pairs) -> None:
    a, pa = socks.pair()
    log: list[Any] = []
    loop.context.set_fd_handler(a, receiver(log, "r", a), None)
    pa.send(b"x")
    assert loop.context.poll(blocking=True) is True
    assert log == ["r"]
    assert loop.context.poll() is False  # the registration's notify is consumed, not progress


def test_context_poll_blocking_wakes_on_a_worker_schedule(loop: MainLoop) -> None:
    log: list[Any] = []
    bh = loop.bh_new(recorder(log, "w"))
    t = threading.Timer(0.05, bh.schedule)
    t.start()
    try:
        assert loop.context.poll(blocking=True) is True
    finally:
        t.join()
    assert log == ["w"]


def test_registration_during_the_wait_is_dispatched_by_the_context_poll(loop: MainLoop, socks: Pairs) -> None:
    """R47: the main wait's set is fixed (the new fd is not in it), but the context's dispatch
    polls again, so a handler added during the wait runs in the same iteration."""
    a, pa = socks.pair()
    log: list[Any] = []
    pa.send(b"x")

    class During(ListTracer):
        def poll(self, entries: list[tuple[int, int]]) -> None:
            super().poll(entries)
            loop.context.set_fd_handler(a, receiver(log, "r", a), None)
            loop.set_tracer(None)

    loop.set_tracer(During())
    assert loop.main_loop_wait() == 1  # the notify; a was not in this wait's poll set
    assert log == ["r"]
    assert a.fileno() not in loop.snapshot().kernel  # the kernel's set changes at the next fill
    loop.main_loop_wait(nonblocking=True)
    assert a.fileno() in loop.snapshot().kernel


# ------------------------------------------------------------------------------- threads


def test_worker_schedule_wakes_a_blocked_loop(loop: MainLoop) -> None:
    result: list[int] = []
    done = loop.bh_new(lambda box: result.append(box[0]), [0])

    def work() -> None:
        done.opaque[0] = 42
        done.schedule()

    t = threading.Thread(target=work)
    t0 = time.monotonic()
    t.start()
    loop.run_until(lambda: result)
    t.join()
    assert result == [42]
    assert time.monotonic() - t0 < 5.0


class CountingWakeup(Wakeup):
    writes = 0

    def wake(self) -> None:
        CountingWakeup.writes += 1
        super().wake()


def test_schedule_on_the_loop_thread_makes_no_system_call() -> None:
    CountingWakeup.writes = 0
    with MainLoop(seams=Seams(wakeup=CountingWakeup)) as loop:
        later = loop.bh_new(lambda _: None)
        seen: list[Any] = []

        def cb(_: Any) -> None:
            later.schedule()
            snap = loop.snapshot()
            seen.append((snap.notified, snap.wakeup_pending))

        loop.bh_new(cb).schedule()  # outside the lock: the notifier is written
        assert CountingWakeup.writes == 1
        loop.main_loop_wait()
        assert seen == [(False, False)]  # R45: inside the context's dispatch, nothing at all
        assert CountingWakeup.writes == 1
        assert loop.main_loop_wait(nonblocking=True) == 0  # no notify is pending
        with loop.lock:  # outside the dispatch, on a thread holding the lock: the flag
            loop.bh_new(lambda _: None).schedule()
        assert CountingWakeup.writes == 1
        assert loop.main_loop_wait() == 1  # counted once, as a readable notifier


def test_notifies_from_an_fd_handler_count_but_not_from_a_bh(loop: MainLoop, socks: Pairs) -> None:
    """R45: aio_notify is skipped inside the context's dispatch only."""
    a, pa = socks.pair()
    target = loop.bh_new(lambda _: None)
    calls: list[int] = []

    def on_read(_: Any) -> None:
        a.recv(10)
        calls.append(1)
        target.schedule()  # the fd-handler walk: not dispatching, so it notifies

    loop.set_fd_handler(a, read=on_read)
    loop.main_loop_wait(nonblocking=True)
    pa.send(b"x")
    loop.main_loop_wait()
    assert calls == [1]
    assert loop.main_loop_wait(nonblocking=True) == 1
    loop.bh_new(lambda _: loop.notify()).schedule()
    loop.main_loop_wait(nonblocking=True)  # the BH's notify() is skipped
    assert loop.main_loop_wait(nonblocking=True) == 0


# ------------------------------------------------------------------------ bad input (R30)


def state(loop: MainLoop) -> tuple[Any, ...]:
    snap = loop.snapshot()
    return (
        loop.context.bottom_halves(),
        loop.context.handlers(),
        snap.kernel,
        snap.notified,
        snap.wakeup_pending,
        snap.records,
    )


def test_bh_new_refuses_a_non_callable(loop: MainLoop) -> None:
    before = state(loop)
    with pytest.raises(TypeError, match="callback"):
        loop.bh_new(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callback"):
        loop.bh_new(None)  # type: ignore[arg-type]
    assert state(loop) == before


def test_bh_new_names_what_it_wants(loop: MainLoop) -> None:
    with pytest.raises(TypeError) as info:
        loop.bh_new(3)  # type: ignore[arg-type]
    assert str(info.value) == "callback must be callable, got int"


def test_context_set_fd_handler_refuses_bad_input(loop: MainLoop, socks: Pairs) -> None:
    a, _ = socks.pair()
    loop.context.set_fd_handler(a, lambda _: None, None)
    loop.main_loop_wait(nonblocking=True)
    before = state(loop)
    with pytest.raises(ValueError, match="fd must be >= 0"):
        loop.context.set_fd_handler(-1, lambda _: None, None)
    with pytest.raises(TypeError, match="read must be callable"):
        loop.context.set_fd_handler(a, 1, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="write must be callable"):
        loop.context.set_fd_handler(a, None, "w")  # type: ignore[arg-type]
    closed, other = socket.socketpair()
    n = closed.fileno()
    closed.close()
    other.close()
    with pytest.raises(ClosedFdError):
        loop.context.set_fd_handler(n, lambda _: None, None)
    with pytest.raises(ValueError, match="wakeup"):
        loop.context.set_fd_handler(loop.wakeup_fd, lambda _: None, None)
    b, _ = socks.pair()
    loop.set_fd_handler(b, read=lambda _: None)
    with pytest.raises(ValueError, match="fd-handler list"):
        loop.context.set_fd_handler(b, lambda _: None, None)
    with pytest.raises(ValueError, match="context handler"):
        loop.set_fd_handler(a, read=lambda _: None)
    loop.set_fd_handler(b, None, None)
    loop.main_loop_wait(nonblocking=True)
    assert state(loop) == before
    if loop.poller_name != "poll":
        with tempfile.TemporaryFile() as f, pytest.raises(UnpollableFdError):
            loop.context.set_fd_handler(f, lambda _: None, None)
        assert state(loop) == before


def test_a_deleted_record_leaves_its_fd_to_the_context(loop: MainLoop, socks: Pairs) -> None:
    a, pa = socks.pair()
    log: list[Any] = []
    loop.set_fd_handler(a, read=lambda _: None)
    loop.main_loop_wait(nonblocking=True)
    loop.set_fd_handler(a, None, None)
    loop.context.set_fd_handler(a, receiver(log, "ctx", a), None)
    pa.send(b"x")
    loop.main_loop_wait()
    assert log == ["ctx"]


# ------------------------------------------------------------------- exceptions (R32), close


def test_bh_exception_leaves_the_list_consistent(loop: MainLoop) -> None:
    log: list[Any] = []
    older = loop.bh_new(recorder(log, "older"))
    gone = loop.bh_new(recorder(log, "gone"))

    def boom(_: Any) -> None:
        gone.delete()
        raise KeyError("boom")

    bad = loop.bh_new(boom)
    older.schedule()
    bad.schedule()
    with pytest.raises(KeyError) as info:
        loop.main_loop_wait(nonblocking=True)
    assert any("bottom half callback" in n for n in info.value.__notes__)
    assert log == []
    assert older.scheduled and not bad.scheduled
    assert loop.context.bottom_halves() == [bad, older]  # `gone` freed: no walk in progress
    loop.main_loop_wait(nonblocking=True)
    assert log == ["older"]


def test_exception_with_an_unprintable_callback_keeps_the_original(loop: MainLoop) -> None:
    class Ugly:
        def __repr__(self) -> str:
            raise AttributeError("no repr")

        def __call__(self, _: Any) -> None:
            raise KeyError("original")

    loop.bh_new(Ugly()).schedule()
    with pytest.raises(KeyError, match="original"):
        loop.main_loop_wait(nonblocking=True)


def test_context_handler_exception_finishes_the_node_in_hand(loop: MainLoop, socks: Pairs) -> None:
    a, pa = socks.pair()
    log: list[Any] = []

    def boom(_: Any) -> None:
        a.recv(10)
        loop.context.set_fd_handler(a, None, None)
        raise ValueError("boom")

    loop.context.set_fd_handler(a, boom, None)
    pa.send(b"x")
    with pytest.raises(ValueError) as info:
        loop.main_loop_wait()
    assert any("context read handler" in n for n in info.value.__notes__)
    assert loop.context.handlers() == []
    loop.context.set_fd_handler(a, receiver(log, "again", a), None)
    pa.send(b"y")
    loop.main_loop_wait()
    assert log == ["again"]


def test_close_with_bhs_scheduled() -> None:
    log: list[Any] = []
    loop = MainLoop()
    bh = loop.bh_new(recorder(log, "x"))
    idle = loop.bh_new(recorder(log, "idle"))
    bh.schedule()
    idle.schedule_idle()
    loop.close()
    assert log == [] and not bh.scheduled
    assert loop.context.bottom_halves() == []
    with pytest.raises(LoopClosedError):
        bh.schedule()
    with pytest.raises(LoopClosedError):
        idle.schedule_idle()
    with pytest.raises(LoopClosedError):
        loop.bh_new(lambda _: None)
    with pytest.raises(LoopClosedError):
        loop.context.poll()
    r, w = os.pipe()
    try:
        with pytest.raises(LoopClosedError):
            loop.context.set_fd_handler(r, lambda _: None, None)
        with pytest.raises(LoopClosedError):
            loop.context.set_fd_handler(r, None, None)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(LoopClosedError):
        loop.context.call_later(0.0, lambda: None)
    bh.cancel()
    bh.delete()  # cleanup after close is allowed
    assert bh.deleted


def test_a_forked_child_refuses_to_schedule() -> None:
    """R41: the child's copy of the loop is closed; a BH of it says so (LoopForkedError)."""
    with MainLoop() as loop:
        bh = loop.bh_new(lambda _: None)
        pid = os.fork()
        if pid == 0:  # the child: exit code 0 only if the schedule was refused as forked
            code = 1
            try:
                bh.schedule()
            except LoopForkedError:
                code = 0
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        bh.schedule()  # the parent's loop is untouched
        assert loop.main_loop_wait(nonblocking=True) == 1


def test_close_from_another_thread_while_a_worker_schedules() -> None:
    loop = MainLoop()
    runs: list[int] = []
    bh = loop.bh_new(lambda _: runs.append(1))
    refused: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:  # until the close refuses it (or the test gives up)
        while not stop.is_set():
            try:
                bh.schedule()
            except LoopClosedError as e:
                refused.append(e)
                return
            time.sleep(0.0005)

    t = threading.Thread(target=worker)
    t.start()
    runner = threading.Thread(target=loop.run)
    runner.start()
    time.sleep(0.05)
    loop.close()
    runner.join(5)
    t.join(5)
    stop.set()
    t.join(5)
    assert not runner.is_alive() and not t.is_alive()
    assert runs and refused


@pytest.mark.parametrize("flags", [IN, OUT])
def test_poll_set_trace_lists_context_fds_newest_first(loop: MainLoop, socks: Pairs, flags: int) -> None:
    a, _ = socks.pair()
    b, _ = socks.pair()
    cb = recorder([], "x")
    read, write = (cb, None) if flags == IN else (None, cb)
    loop.context.set_fd_handler(a, read, write)
    loop.context.set_fd_handler(b, read, write)
    tracer = ListTracer()
    loop.set_tracer(tracer)
    loop.main_loop_wait(nonblocking=True)
    ev = READ_EVENTS if flags == IN else WRITE_EVENTS
    assert ("aio_poll_set", [(b.fileno(), ev), (a.fileno(), ev)]) in tracer.events


def test_fd_closed_while_registered_on_poll_is_removed(socks: Pairs) -> None:
    with MainLoop("poll") as loop:
        r, w = os.pipe()
        os.close(w)
        loop.context.set_fd_handler(r, lambda _: os.read(r, 1), None)
        os.close(r)
        with pytest.raises(ClosedFdError):
            loop.main_loop_wait()
        assert loop.context.handlers() == []
        assert loop.main_loop_wait(nonblocking=True) == 0


# ------------------------------------------------------------------------------ the README


def test_readme_worker_thread_example_runs_as_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """README's bottom-half example, run as it is written there, prints what it says."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Bottom halves and the context", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "done.schedule()" in code and "threading.Thread" in code
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    expected = code.rsplit("# ", 1)[1].strip()  # the comment after the last print
    assert printed.strip() == expected == "[499500]"


# --------------------------------------------------------------- the format-v3 vectors (R42-R50)


@pytest.mark.parametrize("poller", sorted(POLLERS))
def test_the_loop_driver_reproduces_every_context_vector(poller: str) -> None:
    """Every bundled v3 vector (specs/vectors/context, traces from the model) on the real loop
    through impl.driver, in process, on every poller."""
    paths = [p for p in vector_files([bundled_vectors_dir()]) if load_vector(p).format == FORMAT_V3]
    assert len(paths) >= 40
    failed = [p.name for p in paths if impl_run_vector(load_vector(p), poller) != list(load_vector(p).expect or ())]
    assert failed == []


# ----------------------------------------------------- closed and reused context fds (R33, R34)


def _pipe_handler(loop: MainLoop, calls: list[Any]) -> tuple[int, int]:
    """A pipe whose read end has a context read handler that logs; the registration's notify is
    consumed by one iteration."""
    r, w = os.pipe()
    loop.context.set_fd_handler(r, lambda _: calls.append("old handler"), None)
    loop.main_loop_wait(nonblocking=True)
    return r, w


def test_a_reused_context_fd_never_reaches_the_old_handler(loop: MainLoop) -> None:
    """R33/R34 for context handlers: the number now names a new, readable pipe; the old handler
    is never called for it, the iteration removes it with ClosedFdError, the loop goes on."""
    calls: list[Any] = []
    r, w = _pipe_handler(loop, calls)
    os.close(r)
    os.close(w)
    r2, w2 = os.pipe()
    try:
        assert r2 == r  # the lowest free number
        os.write(w2, b"new data")
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(timeout=1.0)
        assert info.value.fd == r
        assert calls == []
        assert loop.context.handlers() == []
        for _ in range(2):
            loop.main_loop_wait(timeout=0.05)
        assert calls == []
        loop.check_fds()  # nothing left to find
    finally:
        os.close(r2)
        os.close(w2)


def test_a_closed_context_fd_is_reported_by_the_next_iteration(loop: MainLoop) -> None:
    """Closed with no reuse: epoll forgets it silently, poll reports NVAL, selectors folds NVAL
    into IN; on every poller the handler is never called and the iteration raises ClosedFdError."""
    calls: list[Any] = []
    r, w = _pipe_handler(loop, calls)
    os.close(r)
    os.close(w)
    with pytest.raises(ClosedFdError):
        loop.main_loop_wait(timeout=1.0)
    assert calls == []
    assert loop.context.handlers() == []
    assert loop.main_loop_wait(nonblocking=True) == 0


@pytest.mark.parametrize("reuse", [False, True], ids=["closed", "reused"])
def test_check_fds_finds_closed_and_reused_context_fds(loop: MainLoop, reuse: bool) -> None:
    calls: list[Any] = []
    r, w = _pipe_handler(loop, calls)
    os.close(r)
    os.close(w)
    fds = os.pipe() if reuse else ()
    try:
        with pytest.raises(ClosedFdError) as info:
            loop.check_fds()
        assert info.value.fd == r
        assert loop.context.handlers() == []
        loop.check_fds()
        assert loop.main_loop_wait(nonblocking=True) == 0
        assert calls == []
    finally:
        for fd in fds:
            os.close(fd)


def test_a_context_handler_that_closes_a_later_nodes_fd(loop: MainLoop) -> None:
    """A handler earlier in the walk closes a later node's fd and a new pipe takes the number:
    the later node's old handler is not called for it (checked at its turn, as records are)."""
    calls: list[Any] = []
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()  # newer: walked first
    new: list[int] = []

    def first(_: Any) -> None:
        os.read(r2, 10)
        os.close(r1)
        os.close(w1)
        nr, nw = os.pipe()
        new.extend((nr, nw))
        os.write(nw, b"y")

    loop.context.set_fd_handler(r1, lambda _: calls.append("old"), None)
    loop.context.set_fd_handler(r2, first, None)
    loop.main_loop_wait(nonblocking=True)
    os.write(w1, b"x")
    os.write(w2, b"x")
    try:
        with pytest.raises(ClosedFdError):
            loop.main_loop_wait(timeout=1.0)
        assert new[0] == r1
        assert calls == []
        assert [h.fd for h in loop.context.handlers()] == [r2]
    finally:
        loop.context.set_fd_handler(r2, None, None)
        for fd in (r2, w2, *new):
            os.close(fd)


# ------------------------------------------------------ exceptions leave no stale revents (R32)


@pytest.mark.parametrize("how", ["main_loop_wait", "context.poll"])
def test_a_raising_bh_leaves_no_stale_revents(loop: MainLoop, how: str) -> None:
    """A BH raises while a context fd is ready; the fd is drained before the next iteration,
    which must not call its handler for readiness that no longer exists (in QEMU revents never
    outlive one aio_poll)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    calls: list[Any] = []

    def reader(_: Any) -> None:
        try:
            calls.append(os.read(r, 100))
        except BlockingIOError:
            calls.append("called with nothing to read")

    def boom(_: Any) -> None:
        raise RuntimeError("bh boom")

    try:
        loop.context.set_fd_handler(r, reader, None)
        loop.main_loop_wait(nonblocking=True)
        loop.bh_new(boom).schedule()
        os.write(w, b"x")
        with pytest.raises(RuntimeError, match="bh boom"):
            if how == "main_loop_wait":
                loop.main_loop_wait(timeout=1.0)
            else:
                loop.context.poll()
        os.read(r, 100)  # drained elsewhere
        loop.main_loop_wait(timeout=0.05)
        assert loop.context.poll() is False
        assert calls == []
    finally:
        loop.context.set_fd_handler(r, None, None)
        os.close(r)
        os.close(w)


# ------------------------------------------- no lost wakeup from a signal handler (R45, R35)


@pytest.mark.parametrize("poller", sorted(POLLERS))
def test_a_schedule_after_the_loop_read_its_flag_is_not_lost(poller: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """R45/R35: a schedule() on the loop's thread outside the wait only sets the notified flag,
    so one landing after the loop read the flag and scanned the BHs (here: inside the context
    timers' deadline, the last step of compute_timeout, where a signal handler can run) must
    still end the wait at once."""
    with MainLoop(poller) as loop:
        ran: list[float] = []
        bh = loop.bh_new(lambda _: ran.append(time.monotonic()))
        loop.context.call_later(3600, lambda: None)  # the only timer: its deadline is asked last
        loop.main_loop_wait(nonblocking=True)
        real = TimerQueue.next_deadline
        fired: list[int] = []

        def next_deadline(self: TimerQueue) -> float | None:
            if not fired:
                fired.append(1)
                bh.schedule()  # what a SIGALRM handler doing bh.schedule() does here
            return real(self)

        monkeypatch.setattr(TimerQueue, "next_deadline", next_deadline)
        t0 = time.monotonic()
        loop.main_loop_wait(timeout=2.0)
        assert fired
        assert ran and ran[0] - t0 < 1.0
        assert time.monotonic() - t0 < 1.0


def test_context_poll_blocking_is_woken_by_a_signal_handlers_schedule(loop: MainLoop) -> None:
    """QEMU's aio_poll sets dispatching to !blocking: during a blocking poll's wait aio_notify
    writes the notifier, so a schedule() from a signal handler on the polling thread wakes it."""
    signal = pytest.importorskip("signal")
    ran: list[float] = []
    bh = loop.bh_new(lambda _: ran.append(time.monotonic()))
    loop.context.call_later(5.0, lambda: None)  # bounds the wait
    loop.context.poll()
    old = signal.signal(signal.SIGALRM, lambda s, f: bh.schedule())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        assert loop.context.poll(blocking=True) is True
        assert time.monotonic() - t0 < 2.0
        assert ran
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------- R31 inside a top-level context.poll(), and its callers


@pytest.mark.parametrize("where", ["bh", "handler"])
@pytest.mark.parametrize("call", ["close", "main_loop_wait", "run"])
def test_a_top_level_context_poll_refuses_reentry_from_its_callbacks(
    loop: MainLoop, socks: Pairs, where: str, call: str
) -> None:
    """R31 whatever started the walk: close(), main_loop_wait() and run() from a BH callback or
    a context handler of a context.poll() called outside main_loop_wait are refused, and the
    context stays consistent (the BH the walk did not reach runs at the next poll)."""
    log: list[Any] = []
    errors: list[BaseException] = []
    a, pa = socks.pair()

    def stopped_run() -> None:
        loop.stop()  # should run() be let in, it returns at once
        loop.run()

    calls: dict[str, Callable[[], object]] = {
        "close": loop.close,
        "main_loop_wait": lambda: loop.main_loop_wait(timeout=0.05),
        "run": stopped_run,
    }

    def reenter(_: Any) -> None:
        log.append(where)
        if where == "handler":
            a.recv(10)
        try:
            calls[call]()
        except ReentrantWaitError as e:
            errors.append(e)

    older = loop.bh_new(recorder(log, "older"))
    older.schedule()
    if where == "bh":
        loop.bh_new(reenter).schedule()
    else:
        loop.context.set_fd_handler(a, reenter, None)
        pa.send(b"x")
    assert loop.context.poll() is True
    assert len(errors) == 1, log
    assert not loop.closed
    assert loop.context.poll() in (True, False)
    assert "older" in log
    assert loop.main_loop_wait(nonblocking=True) >= 0


def test_context_poll_from_another_thread_while_the_loop_runs_is_refused_clearly(loop: MainLoop) -> None:
    """Decided (R46): aio_poll belongs to the loop's thread while an iteration runs there; from
    another thread then it raises ReentrantWaitError saying so (its callbacks would run off the
    loop's thread, beside the loop's own wait). With no iteration running, another thread's
    context.poll() takes the lock and runs."""
    ran: list[str] = []
    bh = loop.bh_new(lambda _: ran.append(threading.current_thread().name))
    bh.schedule()
    t = threading.Thread(target=lambda: loop.context.poll(), name="poller")
    t.start()
    t.join(5)
    assert ran == ["poller"]
    runner = threading.Thread(target=loop.run)
    runner.start()
    try:
        time.sleep(0.1)
        for _ in range(5):
            with pytest.raises(ReentrantWaitError, match="another thread"):
                loop.context.poll()
    finally:
        loop.stop()
        runner.join(5)
    assert not runner.is_alive()


def test_context_poll_from_a_tracers_poll_hook_is_refused(loop: MainLoop) -> None:
    errors: list[BaseException] = []

    class Hook(ListTracer):
        def poll(self, entries: list[tuple[int, int]]) -> None:
            try:
                loop.context.poll()
            except ReentrantWaitError as e:
                errors.append(e)

    loop.set_tracer(Hook())
    loop.main_loop_wait(nonblocking=True)
    assert len(errors) == 1


def test_a_context_fd_closed_under_a_dup_and_reused_neither_spins_nor_calls(loop: MainLoop) -> None:
    """R33/R34: a dup keeps the old, readable file open, so epoll keeps reporting the number;
    the number now names an idle pipe. The loop must not spin on it (iterations returning > 0
    with nothing run), must not call the old handler, and removes the node with ClosedFdError
    (poll follows numbers and sees an idle pipe: check_fds() finds it)."""
    calls: list[Any] = []
    r, w = os.pipe()
    os.write(w, b"x")  # stays unread: the old file is readable for good
    loop.context.set_fd_handler(r, lambda _: calls.append("old"), None)
    loop.main_loop_wait(nonblocking=True)
    assert calls == ["old"]
    d = os.dup(r)
    os.close(r)
    r2, w2 = os.pipe()
    try:
        assert r2 == r
        busy = 0
        raised = 0
        for _ in range(5):
            try:
                busy += loop.main_loop_wait(timeout=0.05) > 0
            except ClosedFdError:
                raised += 1
        try:
            loop.check_fds()
        except ClosedFdError:
            raised += 1
        assert raised == 1
        assert busy == 0
        assert calls == ["old"]
        assert loop.context.handlers() == []
    finally:
        for fd in (d, w, r2, w2):
            os.close(fd)


@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="eventfd is Linux's")
def test_a_reused_anonymous_context_fd_never_reaches_the_old_handler(loop: MainLoop) -> None:
    """R34 for anonymous files, which fstat cannot tell apart: an eventfd closed and its number
    taken by a new, readable eventfd. epoll's confirm, poll's witnesses, and on selectors the
    context's own witness tell; the old handler is never called."""
    calls: list[Any] = []
    e = os.eventfd(0, os.EFD_NONBLOCK)
    loop.context.set_fd_handler(e, lambda _: calls.append("old"), None)
    loop.main_loop_wait(nonblocking=True)
    os.close(e)
    e2 = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        assert e2 == e
        os.eventfd_write(e2, 1)
        with pytest.raises(ClosedFdError):
            loop.main_loop_wait(timeout=1.0)
        assert calls == []
        assert loop.context.handlers() == []
        assert loop.main_loop_wait(timeout=0.05) == 0
    finally:
        os.close(e2)


# ----------------------------------------------- the context's shortcut flag (review of the loop's cost)

IN_USE = "in_use"  # by name: the field may be renamed, made private or read-only by a fix


def _switch_off(loop: MainLoop) -> None:
    """What a user's "reset" or a test's tidy-up would do. Refusing the assignment (read-only,
    or no such public field) is one way to keep the rules true."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(loop.context, IN_USE, False)


def test_the_context_s_in_use_flag_cannot_switch_bottom_halves_off() -> None:
    """R42, R43, R47, R50: a scheduled BH runs at the next iteration and bounds its wait to 0.
    The loop looks at the context only once it has been given work (a flag of its own): no
    public assignment can switch that off (an adversarial review found `in_use` public and
    writable, the BH then never ran)."""
    with MainLoop() as loop:
        ran: list[object] = []
        bh = loop.bh_new(ran.append, "bh")
        _switch_off(loop)
        bh.schedule()
        loop.main_loop_wait(timeout=1.0)
        assert ran == ["bh"], "a scheduled bottom half did not run at the next iteration"


def test_the_context_s_idle_timeout_bounds_the_wait_whatever_in_use_says() -> None:
    """R50: an idle-scheduled BH bounds the wait to 10 ms. With `in_use` assigned False the loop
    waits the caller's whole timeout and the idle BH never runs."""
    with MainLoop() as loop:
        ran: list[object] = []
        bh = loop.bh_new(ran.append, "idle")
        _switch_off(loop)
        bh.schedule_idle()  # never notifies (R42): only R50's timeout brings it round
        t0 = time.monotonic()
        loop.main_loop_wait(timeout=2.0)
        waited = time.monotonic() - t0
        assert ran == ["idle"] and waited < 1.0, (ran, waited)


def test_the_context_can_be_weakly_referenced() -> None:
    """AioContext got __slots__ without "__weakref__": `weakref.ref(loop.context)` (a cache
    keyed by the loop's context, a finalizer on it) worked before and now raises TypeError."""
    with MainLoop() as loop:
        ref = weakref.ref(loop.context)
        assert ref() is loop.context
