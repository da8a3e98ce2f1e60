"""MainLoop on real fds, on every poller: the seed's rules, wakeup, timers, and the reliability
rules (bad arguments, re-entrancy, raising callbacks, closed fds)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import iohandler.impl.loop as impl_loop
from iohandler.impl import (
    ERR,
    HUP,
    IN,
    OUT,
    POLLERS,
    ClosedFdError,
    EpollPoller,
    ListTracer,
    LoopClosedError,
    MainLoop,
    Record,
    ReentrantWaitError,
    Registry,
    Seams,
    Tracer,
    UnpollableFdError,
)
from iohandler.impl.args import fd_number as args_fd_number
from tests.support import Pairs as Fds

NAMES = sorted(POLLERS)
R = IN | HUP | ERR
W = OUT | ERR


@pytest.fixture
def fds() -> Iterator[Fds]:
    f = Fds()
    yield f
    f.close()


class Log:
    """Handlers that record (name, opaque) and optionally do something."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def handler(self, name: str, then: Callable[[], object] | None = None) -> Callable[[Any], None]:
        def cb(opaque: Any) -> None:
            self.calls.append((name, opaque))
            if then is not None:
                then()

        cb.__name__ = cb.__qualname__ = name
        return cb


def drain_wakeup(loop: MainLoop) -> None:
    loop.main_loop_wait(nonblocking=True)


# ------------------------------------------------------------------------ registration


def test_read_handler_gets_opaque(loop: MainLoop, fds: Fds) -> None:
    a, b = fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("r"), opaque="A")
    assert loop.main_loop_wait(nonblocking=True) == 1  # the registration's wakeup only
    assert log.calls == []
    b.send(b"x")
    assert loop.main_loop_wait(nonblocking=True) == 1
    assert log.calls == [("r", "A")]


def test_newest_record_first(loop: MainLoop, fds: Fds) -> None:
    log = Log()
    socks = [fds.pair() for _ in range(4)]
    for i, (a, _) in enumerate(socks):
        loop.set_fd_handler(a.fileno(), log.handler(f"r{i}"))
    for _, b in reversed(socks):  # readiness order must not matter
        b.send(b"x")
    assert loop.main_loop_wait(nonblocking=True) == 5
    assert [c[0] for c in log.calls] == ["r3", "r2", "r1", "r0"]
    assert [r.fd for r in loop.records()] == [a.fileno() for a, _ in reversed(socks)]


def test_update_keeps_position_and_skips_this_walk(loop: MainLoop, fds: Fds) -> None:
    (a, pa), (b, pb) = fds.pair(), fds.pair()
    log = Log()
    ra2 = log.handler("ra2")
    loop.set_fd_handler(a, log.handler("ra"))
    loop.set_fd_handler(b, log.handler("rb", lambda: loop.set_fd_handler(a, ra2)))
    drain_wakeup(loop)
    pa.send(b"x")
    pb.send(b"x")
    loop.main_loop_wait(nonblocking=True)
    assert [c[0] for c in log.calls] == ["rb"]  # a was updated during the walk: skipped
    loop.set_fd_handler(b, log.handler("rb"))  # from now on b leaves a alone
    assert [r.fd for r in loop.records()] == [b.fileno(), a.fileno()]
    loop.main_loop_wait(nonblocking=True)  # both filled anew: both called, b first
    assert [c[0] for c in log.calls] == ["rb", "rb", "ra2"]


def test_delete_flags_until_a_walk_reaps(loop: MainLoop, fds: Fds) -> None:
    (a, _), (b, pb) = fds.pair(), fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("ra"))
    loop.set_fd_handler(b, log.handler("rb"))
    drain_wakeup(loop)
    loop.set_fd_handler(a, None, None)
    assert [r.fd for r in loop.records()] == [b.fileno()]
    assert loop.main_loop_wait(nonblocking=True) == 0  # delete sends no wakeup; no walk
    # not reaped yet: re-adding revives a in place, behind b
    loop.set_fd_handler(a, log.handler("ra"))
    assert [r.fd for r in loop.records()] == [b.fileno(), a.fileno()]
    loop.set_fd_handler(a, None, None)
    pb.send(b"x")
    assert loop.main_loop_wait(nonblocking=True) == 2  # the walk reaps a
    loop.set_fd_handler(a, log.handler("ra"))
    assert [r.fd for r in loop.records()] == [a.fileno(), b.fileno()]  # new record: head


def test_delete_unknown_fd_is_noop(loop: MainLoop) -> None:
    loop.set_fd_handler(12345, None, None, can_read=lambda _: True)
    assert loop.records() == []


def test_deleted_before_its_turn_is_never_called(loop: MainLoop, fds: Fds) -> None:
    (a, pa), (b, pb) = fds.pair(), fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("ra"))
    loop.set_fd_handler(b, log.handler("rb", lambda: loop.set_fd_handler(a, None, None)))
    drain_wakeup(loop)
    pa.send(b"x")
    pb.send(b"x")
    loop.main_loop_wait(nonblocking=True)
    assert [c[0] for c in log.calls] == ["rb"]
    loop.set_fd_handler(a, log.handler("ra"))  # reaped in that walk: a new record at the head
    assert [r.fd for r in loop.records()] == [a.fileno(), b.fileno()]


def test_deleted_after_walk_passed_stays_until_next_walk(loop: MainLoop, fds: Fds) -> None:
    (a, pa), (b, _) = fds.pair(), fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("ra", lambda: loop.set_fd_handler(b, None, None)))
    loop.set_fd_handler(b, log.handler("rb"))  # b is newer: walked first, then a deletes it
    drain_wakeup(loop)
    pa.send(b"x")
    loop.main_loop_wait(nonblocking=True)
    loop.set_fd_handler(b, log.handler("rb"))  # still there: revived in place, behind... b
    assert [r.fd for r in loop.records()] == [b.fileno(), a.fileno()]
    loop.set_fd_handler(b, None, None)
    loop.main_loop_wait(nonblocking=True)  # a is still readable: a walk, b reaped (a deletes
    loop.set_fd_handler(b, log.handler("rb"))  # b again, harmlessly)
    assert [r.fd for r in loop.records()] == [b.fileno(), a.fileno()]


def test_reap_timing_is_observable_through_order(loop: MainLoop, fds: Fds) -> None:
    (a, pa), (b, _) = fds.pair(), fds.pair()
    log = Log()
    loop.set_fd_handler(b, log.handler("rb"))
    loop.set_fd_handler(a, log.handler("ra"))  # a newer than b
    drain_wakeup(loop)
    loop.set_fd_handler(b, None, None)
    pa.send(b"x")
    loop.main_loop_wait(nonblocking=True)  # walk reaps b
    loop.set_fd_handler(b, log.handler("rb"))
    assert [r.fd for r in loop.records()] == [b.fileno(), a.fileno()]


def test_read_callback_revival_runs_new_write(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    log = Log()

    def revive() -> None:
        loop.set_fd_handler(a, None, None)
        loop.set_fd_handler(a, log.handler("r2"), log.handler("w2"))

    pa.send(b"x")
    loop.set_fd_handler(a, log.handler("r", revive), log.handler("w"))
    loop.main_loop_wait(nonblocking=True)
    assert [c[0] for c in log.calls] == ["r", "w2"]


def test_read_deleting_own_record_prevents_write(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    log = Log()
    pa.send(b"x")
    loop.set_fd_handler(a, log.handler("r", lambda: loop.set_fd_handler(a, None, None)), log.handler("w"))
    loop.main_loop_wait(nonblocking=True)
    assert [c[0] for c in log.calls] == ["r"]
    assert loop.records() == []


def test_added_during_walk_not_visited(loop: MainLoop, fds: Fds) -> None:
    (a, pa), (b, pb) = fds.pair(), fds.pair()
    log = Log()
    pb.send(b"x")
    loop.set_fd_handler(a, log.handler("ra", lambda: loop.set_fd_handler(b, log.handler("rb"))))
    drain_wakeup(loop)
    pa.send(b"x")
    loop.main_loop_wait(nonblocking=True)
    assert [c[0] for c in log.calls] == ["ra"]
    # the set notified during the walk: the next poll returns at once, and b is polled now
    assert loop.main_loop_wait(nonblocking=True) == 3
    assert [c[0] for c in log.calls] == ["ra", "rb", "ra"]


def test_write_handler_and_err_reaches_both(loop: MainLoop) -> None:
    r, w = os.pipe()
    try:
        log = Log()
        loop.set_fd_handler(w, log.handler("rd"), log.handler("wr"))
        loop.main_loop_wait(nonblocking=True)
        assert [c[0] for c in log.calls] == ["wr"]
        os.close(r)
        r = -1
        log.calls.clear()
        loop.main_loop_wait(nonblocking=True)  # ERR: both handlers
        assert [c[0] for c in log.calls] == ["rd", "wr"]
    finally:
        os.close(w)
        if r >= 0:
            os.close(r)


# ------------------------------------------------------------------------------ gates


def test_closed_gate_without_writer_is_not_polled(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    log = Log()
    tracer = ListTracer()
    loop.set_tracer(tracer)
    state = {"open": False}
    gate = lambda _: state["open"]  # noqa: E731
    loop.set_fd_handler(a, log.handler("r"), can_read=gate)
    pa.send(b"x")
    pa.close()  # even a hangup must not wake it: it is not polled at all
    assert loop.main_loop_wait(nonblocking=True) == 1  # the wakeup only
    assert log.calls == []
    assert tracer.events[:2] == [("gate", a.fileno(), gate), ("poll", [])]
    state["open"] = True
    tracer.events.clear()
    loop.main_loop_wait(nonblocking=True)
    assert log.calls == [("r", None)]
    assert tracer.events[1] == ("poll", [(a.fileno(), R)])


def test_gate_consulted_once_per_iteration_in_list_order(loop: MainLoop, fds: Fds) -> None:
    (a, _), (b, pb) = fds.pair(), fds.pair()
    seen: list[str] = []

    def gate(name: str) -> Callable[[Any], bool]:
        def consult(_: Any) -> bool:
            seen.append(name)
            return True

        return consult

    loop.set_fd_handler(a, lambda _: None, can_read=gate("a"))
    loop.set_fd_handler(b, lambda _: None, can_read=gate("b"))
    loop.set_fd_handler(a.fileno() + 1000, None, None, can_read=gate("x"))
    pb.send(b"x")
    for _ in range(3):
        loop.main_loop_wait(nonblocking=True)
    assert seen == ["b", "a"] * 3  # never at dispatch


def test_gate_without_reader_is_never_consulted(loop: MainLoop, fds: Fds) -> None:
    a, _ = fds.pair()
    calls: list[int] = []
    loop.set_fd_handler(a, None, lambda _: None, can_read=lambda _: calls.append(1))
    loop.main_loop_wait(nonblocking=True)
    assert calls == []


def test_hup_reaches_reader_through_writer_when_gate_closed(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("r"), log.handler("w"), can_read=lambda _: False)
    pa.close()
    loop.main_loop_wait(nonblocking=True)
    if loop.poller_name == "selectors":
        assert [c[0] for c in log.calls] == ["w"]  # documented: selectors folds HUP away
    else:
        assert [c[0] for c in log.calls] == ["r", "w"]


# ------------------------------------------------------------------ during the wait


class DuringWait(Tracer):
    def __init__(self, action: Callable[[], object]) -> None:
        self.action: Callable[[], object] | None = action
        self.ready_fds: list[int] = []

    def poll(self, entries: list[tuple[int, int]]) -> None:
        if self.action is not None:
            action, self.action = self.action, None
            action()

    def ready(self, entries: list[tuple[int, int]], walk: bool) -> None:
        self.ready_fds = [fd for fd, _ in entries]


def test_delete_after_fill_still_polled_no_callback_reaped(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("r"))
    drain_wakeup(loop)
    pa.send(b"x")
    tracer = DuringWait(lambda: loop.set_fd_handler(a, None, None))
    loop.set_tracer(tracer)
    assert loop.main_loop_wait(nonblocking=True) == 1
    assert tracer.ready_fds == [a.fileno()] and log.calls == []
    loop.set_fd_handler(a, log.handler("r"))  # reaped: a new record
    assert len(loop.records()) == 1


def test_add_after_fill_not_polled(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    log = Log()
    pa.send(b"x")
    tracer = DuringWait(lambda: loop.set_fd_handler(a, log.handler("r")))
    loop.set_tracer(tracer)
    assert loop.main_loop_wait(nonblocking=True) == 1  # the set's wakeup only
    assert tracer.ready_fds == [] and log.calls == []
    loop.main_loop_wait(nonblocking=True)
    assert log.calls == [("r", None)]


# ---------------------------------------------------------------------- wakeup, threads


@pytest.mark.parametrize("use_eventfd", [True, False])
def test_notify_counts_once(use_eventfd: bool) -> None:
    with MainLoop(use_eventfd=use_eventfd) as loop:
        assert loop.main_loop_wait(nonblocking=True) == 0
        loop.notify()
        loop.notify()
        assert loop.main_loop_wait(nonblocking=True) == 1
        assert loop.main_loop_wait(nonblocking=True) == 0


def test_notify_from_thread_wakes_blocking_wait(loop: MainLoop) -> None:
    timer = threading.Timer(0.05, loop.notify)
    timer.start()
    t0 = time.monotonic()
    assert loop.main_loop_wait(timeout=5) == 1
    assert time.monotonic() - t0 < 2
    timer.join()


def test_set_from_thread_while_blocked_takes_effect(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    pa.send(b"x")
    log = Log()
    timer = threading.Timer(0.05, lambda: loop.set_fd_handler(a, log.handler("r")))
    timer.start()
    assert loop.main_loop_wait(timeout=5) == 1  # woken by the set's notify
    timer.join()
    loop.main_loop_wait(timeout=5)
    assert log.calls == [("r", None)]


def test_run_until_and_stop(loop: MainLoop) -> None:
    hits: list[int] = []
    loop.call_every(0.001, lambda: hits.append(1))
    loop.run_until(lambda: len(hits) >= 3)
    assert len(hits) >= 3
    threading.Timer(0.05, loop.stop).start()
    loop.run()  # returns: stop() from another thread


# ------------------------------------------------------------------------------ timers


def test_timer_shortens_a_blocking_wait(loop: MainLoop) -> None:
    fired: list[str] = []
    loop.call_later(0.05, fired.append, "t")
    t0 = time.monotonic()
    assert loop.main_loop_wait() == 0
    assert fired == ["t"] and time.monotonic() - t0 < 2


def test_timers_run_after_dispatch_and_cancel(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    order: list[str] = []
    loop.set_fd_handler(a, lambda _: order.append("read"))
    loop.call_later(0, order.append, "timer")
    gone = loop.call_later(0, order.append, "cancelled")
    gone.cancel()
    pa.send(b"x")
    loop.main_loop_wait(nonblocking=True)
    assert order == ["read", "timer"]


def test_periodic_timer_and_cancel_from_inside(loop: MainLoop) -> None:
    hits: list[int] = []

    def tick() -> None:
        hits.append(1)
        if len(hits) == 3:
            handle.cancel()

    handle = loop.call_every(0.001, tick)
    deadline = time.monotonic() + 2
    while len(hits) < 3 and time.monotonic() < deadline:
        loop.main_loop_wait(timeout=0.1)
    time.sleep(0.01)
    loop.main_loop_wait(nonblocking=True)
    assert len(hits) == 3


def test_wait_timeout_without_timers(loop: MainLoop) -> None:
    t0 = time.monotonic()
    assert loop.main_loop_wait(timeout=0.02) == 0
    assert time.monotonic() - t0 < 2


def test_timer_arguments_are_checked(loop: MainLoop) -> None:
    with pytest.raises(ValueError, match="delay"):
        loop.call_later(-1, lambda: None)
    with pytest.raises(ValueError, match="interval"):
        loop.call_every(0, lambda: None)
    with pytest.raises(TypeError, match="callback"):
        loop.call_later(1, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        loop.main_loop_wait(timeout=float("nan"))


# --------------------------------------------------------------------- bad arguments


def test_bad_arguments_leave_the_loop_unchanged(loop: MainLoop, fds: Fds) -> None:
    a, _ = fds.pair()
    loop.set_fd_handler(a, lambda _: None)
    before = loop.records()
    cb = lambda _: None  # noqa: E731
    with pytest.raises(ValueError, match=r"fd must be >= 0, got -1"):
        loop.set_fd_handler(-1, cb)
    with pytest.raises(ValueError, match=r"fd must be >= 0, got -1"):
        loop.set_fd_handler(-1, None, None)
    with pytest.raises(TypeError, match="bool"):
        loop.set_fd_handler(True, cb)
    with pytest.raises(TypeError, match="fileno"):
        loop.set_fd_handler("3", cb)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2\\*\\*31"):
        loop.set_fd_handler(2**40, cb)
    with pytest.raises(TypeError, match="read must be callable"):
        loop.set_fd_handler(a, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="write must be callable"):
        loop.set_fd_handler(a, cb, "w")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="can_read must be callable"):
        loop.set_fd_handler(a, cb, can_read=True)  # type: ignore[arg-type]
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(ClosedFdError, match=f"fd {r} is not open") as info:
        loop.set_fd_handler(r, cb)
    assert info.value.fd == r
    assert loop.records() == before


def test_regular_file(loop: MainLoop) -> None:
    with open(__file__, "rb") as f:
        if loop.poller_name == "poll":
            loop.set_fd_handler(f, lambda _: None)  # poll: always readable
            assert loop.main_loop_wait(nonblocking=True) == 2
        else:
            with pytest.raises(UnpollableFdError, match="regular file"):
                loop.set_fd_handler(f, lambda _: None)
            assert loop.records() == []


def test_closed_loop_refuses(fds: Fds) -> None:
    a, _ = fds.pair()
    loop = MainLoop()
    loop.close()
    loop.close()  # idempotent
    loop.notify()  # harmless
    with pytest.raises(LoopClosedError):
        loop.set_fd_handler(a, lambda _: None)
    with pytest.raises(LoopClosedError):
        loop.main_loop_wait(nonblocking=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("use_eventfd", [True, False])
def test_close_releases_own_fds_only(name: str, use_eventfd: bool, fds: Fds) -> None:
    a, _ = fds.pair()
    before = set(os.listdir("/proc/self/fd"))
    with MainLoop(name, use_eventfd=use_eventfd) as loop:
        loop.set_fd_handler(a, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
    assert set(os.listdir("/proc/self/fd")) == before
    a.getsockname()  # the user's fd is still open


# ------------------------------------------------------------- re-entrancy, exceptions


def test_reentrant_wait_is_refused(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    errors: list[BaseException] = []

    def nested(_: Any) -> None:
        try:
            loop.main_loop_wait(nonblocking=True)
        except ReentrantWaitError as e:
            errors.append(e)

    loop.set_fd_handler(a, nested)
    pa.send(b"x")
    loop.main_loop_wait(nonblocking=True)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "while an iteration is running" in str(errors[0])
    loop.set_fd_handler(a, None, None)
    loop.main_loop_wait(nonblocking=True)  # the loop still works


def test_reentrant_wait_from_a_gate_is_refused(loop: MainLoop, fds: Fds) -> None:
    a, _ = fds.pair()
    loop.set_fd_handler(a, lambda _: None, can_read=lambda _: loop.main_loop_wait(nonblocking=True))
    with pytest.raises(ReentrantWaitError):
        loop.main_loop_wait(nonblocking=True)


def test_raising_callback_keeps_state_and_next_iteration_works(loop: MainLoop, fds: Fds) -> None:
    (a, pa), (b, pb), (c, pc) = fds.pair(), fds.pair(), fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("ra"))
    loop.set_fd_handler(b, log.handler("rb"))

    def boom(_: Any) -> None:
        log.calls.append(("rc", None))
        loop.set_fd_handler(c, None, None)
        raise KeyError("boom")

    loop.set_fd_handler(c, boom, log.handler("wc"))
    for p in (pa, pb, pc):
        p.send(b"x")
    with pytest.raises(KeyError) as info:
        loop.main_loop_wait(nonblocking=True)
    assert any("read handler" in n and f"fd {c.fileno()}" in n for n in info.value.__notes__)
    assert [x[0] for x in log.calls] == ["rc"]  # the rest of the walk is left for next time
    assert [r.fd for r in loop.records()] == [b.fileno(), a.fileno()]
    loop.set_fd_handler(c, log.handler("rc2"))  # c was reaped: a new record at the head
    assert [r.fd for r in loop.records()] == [c.fileno(), b.fileno(), a.fileno()]
    drain_wakeup(loop)
    assert [x[0] for x in log.calls][-3:] == ["rc2", "rb", "ra"]


def test_raising_gate_propagates_and_next_iteration_works(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    state = {"raise": True}
    log = Log()

    def gate(_: Any) -> bool:
        if state["raise"]:
            raise ValueError("gate")
        return True

    loop.set_fd_handler(a, log.handler("r"), can_read=gate)
    pa.send(b"x")
    with pytest.raises(ValueError, match="gate") as info:
        loop.main_loop_wait(nonblocking=True)
    assert any("can_read gate" in n for n in info.value.__notes__)
    state["raise"] = False
    loop.main_loop_wait(nonblocking=True)
    assert log.calls == [("r", None)]


def test_raising_timer_propagates_with_note(loop: MainLoop) -> None:
    def bad() -> None:
        raise OSError("timer")

    loop.call_later(0, bad)
    with pytest.raises(OSError, match="timer") as info:
        loop.main_loop_wait(nonblocking=True)
    assert any("timer callback" in n for n in info.value.__notes__)
    assert loop.main_loop_wait(nonblocking=True) == 0


# ------------------------------------------------------------------------ closed fds


def test_fd_closed_while_registered_does_not_spin(loop: MainLoop) -> None:
    r, w = os.pipe()
    log = Log()
    loop.set_fd_handler(r, log.handler("r"))
    drain_wakeup(loop)
    os.write(w, b"x")
    os.close(r)
    os.close(w)
    if loop.poller_name != "poll":  # epoll (selectors too, on Linux) forgot it silently
        assert loop.main_loop_wait(nonblocking=True) == 0
        with pytest.raises(ClosedFdError, match=f"fd {r} was closed"):
            loop.check_fds()
    else:
        with pytest.raises(ClosedFdError, match=f"fd {r} was closed") as info:
            loop.main_loop_wait(nonblocking=True)  # NVAL (poll) / reported, identity check
        assert info.value.fd == r
    assert loop.records() == [] and log.calls == []
    assert loop.main_loop_wait(nonblocking=True) == 0  # quiet from now on
    assert loop.main_loop_wait(nonblocking=True) == 0


def test_reused_fd_number_never_reaches_old_handler(loop: MainLoop) -> None:
    r, w = os.pipe()
    log = Log()
    loop.set_fd_handler(r, log.handler("old"))
    drain_wakeup(loop)
    os.close(r)
    r2, w2 = os.pipe()  # the lowest free number: usually r again
    try:
        if r2 != r:
            os.dup2(r2, r)
        os.write(w2, b"x")
        for _ in range(3):
            try:
                loop.main_loop_wait(nonblocking=True)
            except ClosedFdError as e:
                assert e.fd == r
        assert log.calls == []
        # registering the number anew (for the file it names now) works
        loop.set_fd_handler(r, log.handler("new"))
        loop.main_loop_wait(nonblocking=True)
        assert log.calls == [("new", None)]
    finally:
        for fd in {r, r2, w, w2}:
            with contextlib.suppress(OSError):
                os.close(fd)


def test_gate_toggle_on_closed_fd_is_reported_on_epoll(fds: Fds) -> None:
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    with MainLoop("epoll") as loop:
        r, w = os.pipe()
        state = {"open": True}
        loop.set_fd_handler(r, lambda _: None, can_read=lambda _: state["open"])
        drain_wakeup(loop)
        os.close(r)
        os.close(w)
        state["open"] = False
        loop.main_loop_wait(nonblocking=True)  # DEL of a forgotten fd: nothing to say
        state["open"] = True
        with pytest.raises(ClosedFdError):  # ADD: the file is gone
            loop.main_loop_wait(nonblocking=True)
        assert loop.records() == []


def test_tracer_reports_phases_in_order(loop: MainLoop, fds: Fds) -> None:
    a, pa = fds.pair()
    tracer = ListTracer()
    r, w = (lambda _: None), (lambda _: None)
    gate = lambda _: True  # noqa: E731
    loop.set_fd_handler(a, r, w, can_read=gate)
    pa.send(b"x")
    loop.set_tracer(tracer)
    loop.main_loop_wait(nonblocking=True)
    fd = a.fileno()
    expect_rev = IN | OUT
    assert tracer.events == [
        ("gate", fd, gate),
        ("poll", [(fd, R | W)]),
        ("ready", [(fd, expect_rev)], True),
        ("read", fd, r),
        ("write", fd, w),
    ]


def test_deleted_record_revived_before_the_walk_reaches_it(loop: MainLoop, fds: Fds) -> None:
    (a, _), (b, _), (c, pc) = fds.pair(), fds.pair(), fds.pair()
    log = Log()
    loop.set_fd_handler(a, log.handler("ra"))
    loop.set_fd_handler(b, log.handler("rb"))
    loop.set_fd_handler(c, log.handler("rc", lambda: loop.set_fd_handler(a, log.handler("ra2"))))
    drain_wakeup(loop)
    loop.set_fd_handler(a, None, None)  # flagged; the walk has not reached it when c revives it
    pc.send(b"x")
    loop.main_loop_wait(nonblocking=True)
    assert [r.fd for r in loop.records()] == [c.fileno(), b.fileno(), a.fileno()]
    assert [x[0] for x in log.calls] == ["rc"]


def test_gate_updating_a_later_record_counts_in_this_fill(loop: MainLoop, fds: Fds) -> None:
    (a, _), (b, _) = fds.pair(), fds.pair()
    log = Log()
    wa = log.handler("wa")
    armed = [False]

    def gate(_: Any) -> bool:
        if armed[0]:
            armed[0] = False
            loop.set_fd_handler(a, None, wa)  # a is behind b: this fill reaches it next
        return True

    loop.set_fd_handler(a, log.handler("ra"))
    loop.set_fd_handler(b, log.handler("rb"), can_read=gate)
    loop.main_loop_wait(nonblocking=True)  # both registered, nothing readable
    armed[0] = True
    loop.main_loop_wait(nonblocking=True)
    assert [x[0] for x in log.calls] == ["wa"]


def test_timer_added_from_thread_shortens_a_blocking_wait(loop: MainLoop) -> None:
    fired: list[int] = []
    adder = threading.Timer(0.05, lambda: loop.call_later(0.01, fired.append, 1))
    adder.start()
    t0 = time.monotonic()
    while not fired and time.monotonic() - t0 < 3:
        loop.main_loop_wait(timeout=3)
    adder.join()
    assert fired == [1] and time.monotonic() - t0 < 2


# ------------------------------------------------------------ snapshot(): every field


def test_snapshot_shows_every_record_field_and_the_loop_state(socks: Fds) -> None:
    """snapshot() is the seam tests and debuggers read instead of private fields: each field is
    what the loop holds, deleted records included (newest first)."""
    fds = socks
    with MainLoop("epoll") as loop:
        (a, _), (b, _), (c, _) = fds.pair(), fds.pair(), fds.pair()

        def r(_: object) -> None:
            pass

        def w(_: object) -> None:
            pass

        def g(_: object) -> bool:
            return True

        loop.set_fd_handler(a, r, opaque="A")
        loop.set_fd_handler(b, None, w, opaque="B")
        loop.main_loop_wait(nonblocking=True)
        loop.set_fd_handler(c, r, can_read=g, opaque="C")  # not filled yet: dirty, stale
        loop.set_fd_handler(a, None, None)  # deleted, not yet reaped
        snap = loop.snapshot()
        assert [v.fd for v in snap.records] == [c.fileno(), b.fileno(), a.fileno()]
        vc, vb, va = snap.records
        assert (vc.seq, vb.seq, va.seq) == (3, 2, 1) and snap.seq == 3
        assert (vc.read, vc.write, vc.can_read, vc.opaque) == (r, None, g, "C")
        assert (vb.read, vb.write, vb.can_read, vb.opaque) == (None, w, None, "B")
        assert (va.deleted, vb.deleted, vc.deleted) == (True, False, False)
        assert (vc.stale, vc.dirty, vc.gated, vc.kev, vc.renew) == (True, True, True, 0, False)
        assert (vb.stale, vb.dirty, vb.gated, vb.kev) == (False, False, False, OUT | ERR)
        assert va.kev == 0 and va.dirty is True  # a delete drops the kernel registration at once
        st = os.fstat(b.fileno())
        assert vb.ident == (st.st_dev, st.st_ino)
        assert snap.kernel == {loop.wakeup_fd: IN | HUP | ERR, b.fileno(): OUT | ERR}
        assert snap.wakeup_fd == loop.wakeup_fd
        assert (snap.notified, snap.wakeup_pending) == (True, False)  # a registration's flag
        assert (snap.waiting, snap.running, snap.stopping, snap.closed) == (False,) * 4
        assert snap.fd_errors == 0
        handle = loop.call_later(60, r, None)
        ((deadline, n, h),) = loop.snapshot().timers
        assert h is handle and deadline == handle.deadline and n >= 1
        loop.stop()
        assert loop.snapshot().stopping is True
    assert loop.snapshot().closed is True


def test_an_update_without_a_gate_leaves_the_gated_set(socks: Fds) -> None:
    """A record whose gate is taken away by an update is no longer consulted at each fill."""
    a, _ = socks.pair()
    with MainLoop("epoll") as loop:
        loop.set_fd_handler(a, print, can_read=lambda _: True)
        assert [v.gated for v in loop.snapshot().records] == [True]
        loop.set_fd_handler(a, print)
        assert [v.gated for v in loop.snapshot().records] == [False]
        loop.set_fd_handler(a, print, can_read=lambda _: True)
        loop.set_fd_handler(a, None, print)  # no read handler: the gate is never consulted
        assert [v.gated for v in loop.snapshot().records] == [False]


def test_a_record_deleted_again_after_a_revival_is_reaped(socks: Fds) -> None:
    """delete, revive (R5), and a walk that reaps past the revived record (another record is
    deleted behind it); then delete it again: the next walk reaps it (its first entry in the
    reap queue went stale at the revival, and was dropped by that walk)."""
    c, _ = socks.pair()
    a, _ = socks.pair()
    b, peer = socks.pair()
    with MainLoop("epoll") as loop:
        loop.set_fd_handler(c, print)
        loop.set_fd_handler(a, print)
        loop.set_fd_handler(b, lambda s: s.recv(1), opaque=b)  # newest: walked first
        loop.main_loop_wait(nonblocking=True)
        loop.set_fd_handler(a, None, None)
        loop.set_fd_handler(a, print)  # revived in place
        loop.set_fd_handler(c, None, None)
        peer.send(b"x")
        loop.main_loop_wait(nonblocking=True)  # reaps c, passing a's stale entry
        assert [v.fd for v in loop.snapshot().records] == [b.fileno(), a.fileno()]
        loop.set_fd_handler(a, None, None)
        peer.send(b"y")
        loop.main_loop_wait(nonblocking=True)
        assert [v.fd for v in loop.snapshot().records] == [b.fileno()]  # reaped


def test_a_common_registration_takes_the_inline_checks_only(monkeypatch: pytest.MonkeyPatch, socks: Fds) -> None:
    """An int fd in range (0 included) with callables or None is checked inline (registration
    is a hot path, bench/); the full checks (impl/args.py) are for everything else."""
    full: list[str] = []

    def fd_number(fd: object) -> int:
        full.append("fd")
        return args_fd_number(fd)

    def check_callable(name: str, value: object) -> None:
        full.append(name)

    monkeypatch.setattr(impl_loop, "fd_number", fd_number)
    monkeypatch.setattr(impl_loop, "check_callable", check_callable)
    a, _ = socks.pair()
    with MainLoop("poll") as loop:
        for fd in (a.fileno(), 0):
            loop.set_fd_handler(fd, print, print, can_read=callable)
            loop.set_fd_handler(fd, None, print)
            loop.set_fd_handler(fd, print, None)
            loop.set_fd_handler(fd, None, None)
        assert full == []
        loop.set_fd_handler(a, print)  # an object with fileno(): the full check of fd
        assert full == ["fd"]


@pytest.mark.parametrize("poller", ["epoll", "poll", "selectors"])
def test_an_update_of_a_file_with_a_known_identity_is_not_renewed(poller: str, socks: Fds) -> None:
    """A socket's (st_dev, st_ino) names it: an update whose fd still has that identity keeps
    its kernel registration on every poller (renewal is for anonymous files, and for numbers
    that now name another file)."""
    a, peer = socks.pair()
    got: list[bytes] = []
    with MainLoop(poller) as loop:
        loop.set_fd_handler(a, print)
        loop.main_loop_wait(nonblocking=True)
        kernel_object = loop.poller.fileno()
        loop.set_fd_handler(a, lambda s: got.append(s.recv(1)), opaque=a)
        assert [v.renew for v in loop.snapshot().records] == [False]
        peer.send(b"x")
        loop.main_loop_wait(nonblocking=True)
        assert got == [b"x"] and loop.poller.fileno() == kernel_object


@pytest.mark.parametrize("hooked", [False, True])
def test_the_before_walk_seam_sees_the_ready_records_in_walk_order(socks: Fds, hooked: bool) -> None:
    """Seams.before_walk gets the ready records, newest first, before each walk; with it every
    ready fd is checked by fstat, not by the poller's confirm (a hook may change anything)."""
    poller = EpollPoller()
    confirmed: list[int] = []
    real = poller.confirm
    assert real is not None

    def confirm(fd: int, events: int) -> object:
        confirmed.append(fd)
        return real(fd, events)

    poller.confirm = confirm
    walks: list[list[int]] = []

    def hook(ready: list[Record]) -> None:
        walks.append([r.fd for r in ready])

    older, older_peer = socks.pair()
    newer, newer_peer = socks.pair()
    got: list[bytes] = []
    with MainLoop(poller, seams=Seams(before_walk=hook) if hooked else None) as loop:
        for s in (older, newer):
            loop.set_fd_handler(s, lambda s: got.append(s.recv(1)), opaque=s)
        older_peer.send(b"o")
        newer_peer.send(b"n")
        assert loop.main_loop_wait(nonblocking=True) == 3  # two ready, one registration wakeup
    assert got == [b"n", b"o"]
    if hooked:
        assert walks == [[newer.fileno(), older.fileno()]] and confirmed == []
    else:
        assert walks == [] and confirmed == [newer.fileno(), older.fileno()]


def test_the_registry_seam_holds_the_loops_records_and_must_start_empty(socks: Fds) -> None:
    a, _ = socks.pair()
    reg = Registry()
    with MainLoop("epoll", seams=Seams(registry=reg)) as loop:
        loop.set_fd_handler(a, print)
        assert list(reg.by_fd) == [a.fileno()]
    used = Registry()
    used.add(a.fileno())
    with pytest.raises(ValueError, match=r"^seams\.registry must be empty$"):
        MainLoop("epoll", seams=Seams(registry=used))
