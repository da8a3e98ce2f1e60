"""R31 (no re-entrant wait), R32 (an exception in a handler, gate or timer) and the seed's rule for
a gate that changes the registry during fill (SPEC R22; R6, R8, R15, R19), on real fds
and every poller."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iohandler.impl import ClosedFdError, ListTracer, MainLoop, ReentrantWaitError
from tests.support import Pairs, add_stats, drain, record_count, snapshot


@pytest.fixture
def socks() -> Iterator[Pairs]:
    p = Pairs()
    yield p
    p.close()


class Log:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def cb(self, name: str, then: Callable[[], object] | None = None) -> Callable[[Any], bool]:
        def f(_: Any) -> bool:
            self.calls.append(name)
            if then is not None:
                then()
            return True

        f.__name__ = f.__qualname__ = name
        return f


def quiesce(loop: MainLoop) -> None:
    for _ in range(3):
        loop.main_loop_wait(nonblocking=True)


# -------------------------------------------------------------------------------- R31


NESTED: dict[str, Callable[[MainLoop], object]] = {
    "wait-nonblocking": lambda lp: lp.main_loop_wait(nonblocking=True),
    "wait-blocking": lambda lp: lp.main_loop_wait(),
    "run_until": lambda lp: lp.run_until(lambda: False),
    "run": lambda lp: lp.run(),
    "close": lambda lp: lp.close(),
}


@pytest.mark.parametrize("where", ["read", "write", "gate", "timer"])
@pytest.mark.parametrize("nested", sorted(NESTED))
def test_r31_reentrant_wait_refused_and_changes_nothing(loop: MainLoop, socks: Pairs, where: str, nested: str) -> None:
    """R31: main_loop_wait (and run, run_until, close) from a read handler, write handler, gate
    or timer of the same loop raises ReentrantWaitError, a RuntimeError, and the loop's whole
    state is the same after the refused call as before it (a stop() requested just before a
    refused run() is not forgotten); the outer iteration then completes."""
    a, pa = socks.pair()
    b, pb = socks.pair()
    pa.send(b"x")
    pb.send(b"x")
    refused: list[BaseException] = []
    log = Log()

    def inner(_: Any = None) -> bool:
        if nested.startswith("run"):
            loop.stop()
        before = snapshot(loop)
        try:
            NESTED[nested](loop)
        except ReentrantWaitError as e:
            refused.append(e)
        assert snapshot(loop) == before
        return True

    loop.set_fd_handler(b, log.cb("rb"))  # older: walked after a
    if where == "read":
        loop.set_fd_handler(a, inner)
    elif where == "write":
        loop.set_fd_handler(a, None, inner)
    elif where == "gate":
        loop.set_fd_handler(a, log.cb("ra"), can_read=inner)
    else:
        loop.set_fd_handler(a, log.cb("ra"))
        loop.call_later(0, inner)
    loop.main_loop_wait(nonblocking=True)
    assert len(refused) == 1 and isinstance(refused[0], RuntimeError)
    assert "while an iteration is running" in str(refused[0])
    assert "rb" in log.calls  # the outer walk went on
    assert not loop.closed
    loop.main_loop_wait(nonblocking=True)  # and the loop still works
    add_stats(bad_calls_total=1)


def test_r31_wait_from_another_thread_while_blocked_is_refused(loop: MainLoop) -> None:
    """R31: a second thread calling main_loop_wait while the loop blocks in its wait (the lock
    released) is refused too: one iteration at a time."""
    errors: list[BaseException] = []
    blocked = threading.Event()

    class Blocked(ListTracer):
        def poll(self, entries: list[tuple[int, int]]) -> None:
            blocked.set()

    loop.set_tracer(Blocked())
    t = threading.Thread(target=lambda: loop.main_loop_wait(timeout=5))
    t.start()
    assert blocked.wait(5)
    time.sleep(0.02)
    try:
        loop.main_loop_wait(nonblocking=True)
    except ReentrantWaitError as e:
        errors.append(e)
    loop.notify()
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    loop.set_tracer(None)
    loop.main_loop_wait(nonblocking=True)


# -------------------------------------------------------------------------------- R32


@pytest.mark.parametrize("role", ["read", "write"])
@pytest.mark.parametrize("exc_type", [KeyError, OSError, KeyboardInterrupt, SystemExit])
def test_r32_raising_handler_walk_state(loop: MainLoop, socks: Pairs, role: str, exc_type: type[BaseException]) -> None:
    """R32: list (newest first) e, x, c, b, a, all ready. e deletes a; x deletes itself and
    raises. The exception object reaches the caller unchanged with a note naming x's fd and
    handler; e and x ran, nothing after x did; x was reaped (re-adding it makes a new record at
    the head); a was deleted by e but the walk never reached it, so it is still unreaped
    (re-adding it revives it in place, R5); the next iteration runs c, b, a in order."""
    (a, pa), (b, pb), (c, pc), (x, px), (e, pe) = (socks.pair() for _ in range(5))
    log = Log()
    raised = exc_type("boom")

    def bad(_: Any) -> None:
        log.calls.append("x")
        loop.set_fd_handler(x, None, None)
        raise raised

    for s, name in ((a, "a"), (b, "b"), (c, "c")):
        loop.set_fd_handler(s, log.cb(name))
    loop.set_fd_handler(x, bad) if role == "read" else loop.set_fd_handler(x, None, bad)
    loop.set_fd_handler(e, log.cb("e", lambda: loop.set_fd_handler(a, None, None)))
    for p in (pa, pb, pc, px, pe):
        p.send(b"x")
    with pytest.raises(exc_type) as info:
        loop.main_loop_wait(nonblocking=True)
    assert info.value is raised
    assert any(f"the {role} handler" in n and f"of fd {x.fileno()}" in n for n in info.value.__notes__)
    assert log.calls == ["e", "x"]
    assert [r.fd for r in loop.records()] == [e.fileno(), c.fileno(), b.fileno()]
    assert record_count(loop) == 4  # e, c, b and the unreaped a; x reaped
    loop.set_fd_handler(a, log.cb("a2"))  # revival in place: a is still in the list
    loop.set_fd_handler(x, log.cb("x2"))  # a new record at the head
    assert [r.fd for r in loop.records()] == [x.fileno(), e.fileno(), c.fileno(), b.fileno(), a.fileno()]
    log.calls.clear()
    loop.set_fd_handler(e, None, None)
    loop.main_loop_wait(nonblocking=True)
    assert log.calls == ["x2", "c", "b", "a2"]
    add_stats(faults_injected_total=1)


def test_r32_raising_gate(loop: MainLoop, socks: Pairs) -> None:
    """R32: a gate that raises aborts the fill: no wait and no walk happen in that iteration, the
    exception propagates with a note naming the gate and fd, and the next iteration consults the
    remaining gates and dispatches normally."""
    (a, pa), (b, pb), (c, pc) = (socks.pair() for _ in range(3))
    log = Log()
    state = {"raise": True}

    def gate(_: Any) -> bool:
        log.calls.append("gate-b")
        if state["raise"]:
            raise ValueError("gate")
        return True

    loop.set_fd_handler(a, log.cb("a"), can_read=log.cb("gate-a"))
    loop.set_fd_handler(b, log.cb("b"), can_read=gate)
    loop.set_fd_handler(c, log.cb("c"), can_read=log.cb("gate-c"))
    for p in (pa, pb, pc):
        p.send(b"x")
    with pytest.raises(ValueError, match="gate") as info:
        loop.main_loop_wait(nonblocking=True)
    assert any("can_read gate" in n and f"of fd {b.fileno()}" in n for n in info.value.__notes__)
    assert log.calls == ["gate-c", "gate-b"]
    state["raise"] = False
    log.calls.clear()
    loop.main_loop_wait(nonblocking=True)
    assert log.calls == ["gate-c", "gate-b", "gate-a", "c", "b", "a"]
    add_stats(faults_injected_total=1)


def test_r32_raising_timer_leaves_other_timers_for_next_iteration(loop: MainLoop) -> None:
    """R32 (R37): a timer that raises propagates with a note; timers not yet run wait for the
    next iteration and then run."""
    ran: list[str] = []

    def bad() -> None:
        ran.append("bad")
        raise RuntimeError("timer")

    loop.call_later(0, bad)
    loop.call_later(0, ran.append, "after")
    with pytest.raises(RuntimeError, match="timer") as info:
        loop.main_loop_wait(nonblocking=True)
    assert any("timer callback" in n for n in info.value.__notes__)
    assert ran == ["bad"]
    loop.main_loop_wait(nonblocking=True)
    assert ran == ["bad", "after"]


def test_r32_closed_fd_error_waits_behind_a_handler_exception(loop: MainLoop, socks: Pairs) -> None:
    """R32 + R33: when a handler raises in the iteration that found a closed fd, the handler's
    exception propagates first and the ClosedFdError is raised at the end of the next one."""
    a, pa = socks.pair()
    r, w = socket.socketpair()
    fd = r.fileno()
    keep = os.dup(fd)  # the closed number keeps reporting on every poller
    try:
        loop.set_fd_handler(fd, lambda _: None)

        def bad(_: Any) -> None:
            raise KeyError("first")

        loop.set_fd_handler(a, bad)
        loop.main_loop_wait(nonblocking=True)
        w.send(b"x")
        pa.send(b"x")
        r.close()
        with pytest.raises(KeyError):
            loop.main_loop_wait(nonblocking=True)
        loop.set_fd_handler(a, None, None)
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == fd
        assert loop.main_loop_wait(nonblocking=True) >= 0
    finally:
        os.close(keep)
        w.close()


# ----------------------------------------------------------- gates changing the registry


def test_gate_changing_the_registry_follows_the_seed(loop: MainLoop, socks: Pairs) -> None:
    """R22 (with R6, R8, R15, R19): list c, g (gated), a, u; all readable. g's gate
    deletes c (already filled: still polled and reported ready, no call, reaped by this walk)
    and a (not yet filled: not polled, no call, reaped by this walk), updates u (not yet
    filled: filled with the new handler, called now) and c2 (filled: no call now), and adds n
    (at the head, behind the fill: not polled, not called now; the add's wakeup makes the next
    poll return at once). The next iteration polls and calls n and c2."""
    (u, pu), (a, pa), (g, pg), (c2, pc2), (c, pc) = (socks.pair() for _ in range(5))
    n, pn = socks.pair()
    log = Log()
    armed = [False]

    def gate(_: Any) -> bool:
        log.calls.append("gate")
        if armed[0]:
            armed[0] = False
            loop.set_fd_handler(c, None, None)
            loop.set_fd_handler(a, None, None)
            loop.set_fd_handler(u, log.cb("u-new"))
            loop.set_fd_handler(c2, log.cb("c2-new"))
            loop.set_fd_handler(n, log.cb("n"))
        return True

    loop.set_fd_handler(u, log.cb("u"))
    loop.set_fd_handler(a, log.cb("a"))
    loop.set_fd_handler(g, log.cb("g"), can_read=gate)
    loop.set_fd_handler(c2, log.cb("c2"))
    loop.set_fd_handler(c, log.cb("c"))
    quiesce(loop)
    for p in (pu, pa, pg, pc2, pc, pn):
        p.send(b"x")
    armed[0] = True
    log.calls.clear()
    tracer = ListTracer()
    loop.set_tracer(tracer)
    loop.main_loop_wait(nonblocking=True)
    ready = next(ev[1] for ev in tracer.events if ev[0] == "ready")
    ready_fds = [fd for fd, _ in ready]
    assert ready_fds == [c.fileno(), c2.fileno(), g.fileno(), u.fileno()]  # poll-set (list) order
    assert log.calls == ["gate", "g", "u-new"]
    assert record_count(loop) == 4  # c and a reaped by this walk
    assert [r.fd for r in loop.records()] == [n.fileno(), c2.fileno(), g.fileno(), u.fileno()]
    log.calls.clear()
    tracer.events.clear()
    assert loop.main_loop_wait(nonblocking=True) >= 1
    assert log.calls == ["gate", "n", "c2-new", "g", "u-new"]
    for s in (u, g, c2, n):
        drain(s)
