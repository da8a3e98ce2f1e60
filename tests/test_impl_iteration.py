"""One iteration and the run loop (MainLoop.main_loop_wait, run, run_until): the wait's timeout, the loop state other
calls see during an iteration, stray kernel reports (R33), the exact error texts (R31, R32),
run/run_until/stop.

The poller is wrapped so the test sees what the loop asked of it (the wait's timeout, the epoll
object's identity) without any timing assertion."""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import iohandler.impl.loop as impl_loop
from iohandler.impl import IN, POLLERS, LoopClosedError, MainLoop, ReentrantWaitError
from iohandler.impl.loop import SPIN_LIMIT, SPIN_PAUSE
from iohandler.impl.pollers import Poller, make_poller
from tests.support import FakeClock, Pairs, wakeup_pending, wrapped_by_mutation

NAMES = sorted(POLLERS)


class Recording(Poller):
    """Delegates to a real poller and records every wait's timeout and result."""

    def __init__(self, inner: Poller) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]  # a ClassVar on real pollers
        self.tracks_files = inner.tracks_files  # type: ignore[misc]
        self.polls_regular_files = inner.polls_regular_files  # type: ignore[misc]
        self.timeouts: list[float | None] = []
        self.results: list[list[tuple[int, int]]] = []

    def modify(self, fd: int, events: int) -> None:
        self.inner.modify(fd, events)

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        events = self.inner.wait(timeout)
        self.results.append(list(events))
        return events

    def close(self) -> None:
        self.inner.close()

    def registered(self) -> dict[int, int]:
        return self.inner.registered()

    def fileno(self) -> int:
        return self.inner.fileno()

    def rebuild(self) -> list[int]:
        return self.inner.rebuild()


@pytest.fixture(params=NAMES)
def rec(request: pytest.FixtureRequest) -> Iterator[tuple[MainLoop, Recording]]:
    poller = Recording(make_poller(request.param))
    with MainLoop(poller) as loop:
        yield loop, poller


# ------------------------------------------------------------------------- the wait's timeout


def test_a_due_timer_makes_the_wait_not_block(rec: tuple[MainLoop, Recording]) -> None:
    loop, poller = rec
    fired: list[int] = []
    loop.call_later(0, fired.append, 1)
    loop.main_loop_wait()
    assert fired == [1]
    assert poller.timeouts == [0.0]  # due now: no blocking at all, not a minimum wait


def test_a_far_timer_does_not_lengthen_a_shorter_timeout(rec: tuple[MainLoop, Recording]) -> None:
    loop, poller = rec
    loop.call_later(1000, lambda: None)
    assert loop.main_loop_wait(timeout=0.001) == 0
    assert poller.timeouts == [0.001]
    loop.main_loop_wait(nonblocking=True)
    assert poller.timeouts[-1] == 0.0


def test_a_near_timer_shortens_a_longer_timeout(rec: tuple[MainLoop, Recording]) -> None:
    loop, poller = rec
    loop.call_later(0.001, lambda: None)
    loop.main_loop_wait(timeout=1000)
    t = poller.timeouts[0]
    assert t is not None and t <= 0.001


def test_no_timers_no_timeout_blocks_until_notified(rec: tuple[MainLoop, Recording]) -> None:
    loop, poller = rec
    loop.notify()
    assert loop.main_loop_wait() == 1
    assert poller.timeouts == [None]


def test_run_recomputes_the_timeout_every_iteration(rec: tuple[MainLoop, Recording]) -> None:
    """A due timer makes one wait not block; the next waits go back to the far timer's
    deadline (not a busy loop)."""
    loop, poller = rec
    loop.call_every(1000, lambda: None)
    loop.call_later(0, lambda: None)
    left = [4]  # called before each of 3 iterations and after the last

    def predicate() -> bool:
        left[0] -= 1
        loop.notify()  # the waits return at once all the same
        return left[0] <= 0

    loop.run_until(predicate)
    assert poller.timeouts[0] == 0.0
    assert len(poller.timeouts) == 3
    assert all(t is not None and t > 100 for t in poller.timeouts[1:])


# ------------------------------------------------------------------- the registration's wakeup


def test_a_registration_between_waits_is_a_flag_not_a_write(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    """Nobody is in the kernel when the loop is not waiting: the notify is a flag the next
    iteration reads (no eventfd write, nothing left readable), with the same effect: that wait
    does not block and its ret counts the wakeup, once, even with the fd also written."""
    loop, poller = rec
    a, _ = pair
    loop.set_fd_handler(a, lambda _: None)
    assert not wakeup_pending(loop)
    assert loop.main_loop_wait(timeout=5) == 1
    assert poller.timeouts == [0.0]
    loop.set_fd_handler(a, None, lambda _: None)  # an update notifies too
    loop.notify()  # the fd as well: still one wakeup
    assert loop.main_loop_wait(timeout=5) == 1 + 1  # a is writable, + the wakeup
    assert not wakeup_pending(loop)
    assert poller.timeouts[1] == 0.0
    loop.set_fd_handler(a, None)  # a delete does not notify (R7)
    assert loop.main_loop_wait(timeout=0.01) == 0


def test_a_registration_by_a_callback_makes_the_next_wait_return(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    loop, poller = rec
    a, b = pair
    c, d = socket.socketpair()
    try:

        def on_read(_: Any) -> None:
            a.recv(16)
            loop.set_fd_handler(c, lambda _: None)

        loop.set_fd_handler(a, on_read)
        loop.main_loop_wait(nonblocking=True)
        b.send(b"x")
        assert loop.main_loop_wait(timeout=5) == 1  # a; the handler registers c
        assert loop.main_loop_wait(timeout=5) == 1  # the registration's wakeup; c is idle
        assert poller.timeouts[-1] == 0.0
    finally:
        c.close()
        d.close()


def test_a_registration_from_another_thread_wakes_a_blocked_wait(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    """The loop is waiting, so the flag would be read too late: the eventfd is written."""
    loop, poller = rec
    a, _ = pair

    def register_once_waiting() -> None:
        while not loop.snapshot().waiting:
            time.sleep(0.001)
        loop.set_fd_handler(a, None, lambda _: None)

    t = threading.Thread(target=register_once_waiting)
    t.start()
    try:
        assert loop.main_loop_wait(timeout=10) == 1  # the wakeup; a waits for the next fill
    finally:
        t.join()
    assert poller.results == [[(loop.wakeup_fd, IN)]]  # the fd ended the wait, not the timeout


# ------------------------------------------------------------- state seen during an iteration


def test_timer_added_by_a_callback_sends_no_wakeup(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    """The loop is not waiting while its callbacks run: a timer they add needs no wakeup."""
    loop, _ = rec
    a, b = pair

    def on_read(_: Any) -> None:
        a.recv(16)
        loop.call_later(1000, lambda: None)

    loop.set_fd_handler(a, on_read)
    loop.main_loop_wait(nonblocking=True)  # consumes the registration's wakeup
    b.send(b"x")
    assert loop.main_loop_wait(nonblocking=True) == 1
    assert loop.main_loop_wait(nonblocking=True) == 0  # no wakeup pending


def test_delete_in_a_callback_drops_the_kernel_registration_at_once(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    """After the wait the poll set is no longer fixed: a delete from a callback stops polling
    the fd at once (before the fd's usual close)."""
    loop, poller = rec
    a, b = pair
    c, d = socket.socketpair()
    seen: list[dict[int, int]] = []

    def on_read(_: Any) -> None:
        a.recv(16)
        loop.set_fd_handler(c, None)
        seen.append(poller.registered())

    try:
        loop.set_fd_handler(a, on_read)
        loop.set_fd_handler(c, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        assert c.fileno() in poller.registered()
        b.send(b"x")
        loop.main_loop_wait(nonblocking=True)
        assert seen and c.fileno() not in seen[0]
    finally:
        c.close()
        d.close()


def test_iteration_flags_are_cleared_after_a_gate_raises(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    """A gate that raises aborts the fill before the wait; the delete that follows is not
    inside an iteration and drops the registration at once."""
    loop, poller = rec
    a, _ = pair
    c, d = socket.socketpair()
    try:
        loop.set_fd_handler(c, lambda _: None)
        loop.main_loop_wait(nonblocking=True)

        def gate(_: Any) -> bool:
            raise ValueError("gate")

        loop.set_fd_handler(a, lambda _: None, can_read=gate)
        with pytest.raises(ValueError, match="gate"):
            loop.main_loop_wait(nonblocking=True)
        loop.set_fd_handler(c, None)
        assert c.fileno() not in poller.registered()
    finally:
        c.close()
        d.close()


# ------------------------------------------------------------------ stray kernel reports


@pytest.mark.parametrize("reaped", [False, True], ids=["flagged", "reaped"])
def test_a_registration_that_outlived_its_number_is_dropped(reaped: bool) -> None:
    """epoll: a closed fd whose file a dup keeps open keeps reporting under the old number
    (pollers.py). Events for a number the loop does not poll make it rebuild its kernel set
    once; then the reports stop, whether the record is still flagged or already reaped."""
    poller = Recording(make_poller("epoll"))
    a, b = socket.socketpair()
    with MainLoop(poller) as loop:
        fd = a.fileno()
        calls: list[Any] = []
        loop.set_fd_handler(fd, calls.append)
        loop.main_loop_wait(nonblocking=True)
        keep = os.dup(fd)
        try:
            a.close()  # the registration survives: `keep` holds the file
            loop.set_fd_handler(fd, None)  # cannot remove it by number any more
            if reaped:
                loop.notify()
                loop.main_loop_wait(nonblocking=True)  # a walk reaps the record
            epfd = poller.fileno()
            b.send(b"x")
            assert loop.main_loop_wait(nonblocking=True) == 0
            assert poller.results[-1] == [(fd, 1)]  # reported, but not dispatched
            assert poller.fileno() != epfd  # rebuilt (the new object is made before the old closes)
            assert loop.main_loop_wait(nonblocking=True) == 0
            assert poller.results[-1] == []  # and quiet from then on
            assert calls == []
        finally:
            os.close(keep)
            b.close()


def test_normal_iterations_keep_the_kernel_object(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    """Rebuilding the kernel set is for strays only (it costs a system call per fd)."""
    loop, poller = rec
    a, b = pair
    loop.set_fd_handler(a, lambda _: a.recv(16))
    loop.main_loop_wait(nonblocking=True)
    epfd = poller.fileno()
    for _ in range(3):
        b.send(b"x")
        assert loop.main_loop_wait(nonblocking=True) == 1
    loop.set_fd_handler(a, None)
    loop.main_loop_wait(nonblocking=True)
    assert poller.fileno() == epfd


# -------------------------------------------------------------------------- error texts


def test_error_texts(rec: tuple[MainLoop, Recording]) -> None:
    loop, _ = rec
    refused: list[BaseException] = []

    def inner() -> None:
        for call in (loop.main_loop_wait, loop.run, lambda: loop.run_until(lambda: True), loop.close):
            try:
                call()
            except ReentrantWaitError as e:
                refused.append(e)

    loop.call_later(0, inner)
    loop.main_loop_wait(nonblocking=True)
    assert [str(e) for e in refused] == [
        "main_loop_wait called while an iteration is running (from a callback, a gate or a "
        "timer, or from another thread)",
        "run/run_until called while an iteration is running",
        "run/run_until called while an iteration is running",
        "close() called while an iteration is running",
    ]
    assert not loop.closed
    loop.close()
    with pytest.raises(LoopClosedError) as info:
        loop.main_loop_wait(nonblocking=True)
    assert str(info.value) == "the loop is closed"


@pytest.mark.parametrize("role", ["read", "write"])
def test_a_raising_handler_is_named_in_the_note(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket], role: str
) -> None:
    loop, _ = rec
    a, b = pair

    def boom(_: Any) -> None:
        raise KeyError("boom")

    if role == "read":
        loop.set_fd_handler(a, boom)
        b.send(b"x")
    else:
        loop.set_fd_handler(a, None, boom)
    with pytest.raises(KeyError) as info:
        loop.main_loop_wait(nonblocking=True)
    assert info.value.__notes__ == [f"iohandler: raised by the {role} handler {boom!r} of fd {a.fileno()}"]


# --------------------------------------------------------------------------- run, stop


def test_run_and_run_until_can_run_again_after_stop(
    rec: tuple[MainLoop, Recording], pair: tuple[socket.socket, socket.socket]
) -> None:
    """stop() ends one run; the next run (or run_until) runs normally."""
    loop, _ = rec
    a, b = pair
    hits: list[int] = []

    def on_read(_: Any) -> None:
        a.recv(16)
        hits.append(1)
        loop.stop()

    loop.set_fd_handler(a, on_read)
    for run in (loop.run, loop.run, lambda: loop.run_until(lambda: False), loop.run):
        b.send(b"x")
        run()
    assert len(hits) == 4


def test_stop_before_run_returns_at_once_and_is_forgotten(rec: tuple[MainLoop, Recording]) -> None:
    loop, poller = rec
    loop.stop()
    loop.run()
    loop.stop()
    loop.run_until(lambda: False)
    assert poller.timeouts == []  # no iteration ran
    loop.call_later(0, loop.stop)
    loop.run()  # the stop above was forgotten: this one iterates until the timer stops it
    assert poller.timeouts


def test_run_until_checks_the_predicate_before_each_iteration(rec: tuple[MainLoop, Recording]) -> None:
    loop, poller = rec
    loop.run_until(lambda: True)
    assert poller.timeouts == []
    left = [3]

    def predicate() -> bool:
        left[0] -= 1
        loop.notify()  # keep each wait short
        return left[0] < 0

    loop.run_until(predicate)
    assert len(poller.timeouts) == 3


# ------------------------------------------------------------------ the spin throttle (R40)


def test_r40_after_spin_limit_idle_iterations_warn_once_then_pause_each_wait(clock: FakeClock, socks: Pairs) -> None:
    """A gate that registers another fd makes every wait return at once with nothing run (R7):
    from the SPIN_LIMIT-th such iteration on, each wait is preceded by one SPIN_PAUSE, the first
    with QEMU's warning, pointing at the caller; an iteration that runs a handler ends it."""
    x, _ = socks.pair()
    other, peer = socks.pair()
    got: list[bytes] = []
    with MainLoop("epoll") as loop:

        def read(s: socket.socket) -> None:
            got.append(s.recv(1))

        def gate(_: object) -> bool:  # updates an older record: filled after this (R22)
            loop.set_fd_handler(other, read, opaque=other)
            return False

        loop.set_fd_handler(other, read, opaque=other)
        loop.set_fd_handler(x, lambda _: None, can_read=gate)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(SPIN_LIMIT):
                loop.main_loop_wait()
            assert clock.sleeps == []
            for _ in range(3):
                loop.main_loop_wait()
            assert clock.sleeps == [SPIN_PAUSE] * 3
            peer.send(b"y")
            loop.main_loop_wait()  # paused once more, then runs the reader: the spin ends
            assert got == [b"y"] and clock.sleeps == [SPIN_PAUSE] * 4
            loop.main_loop_wait()  # idle again: the count starts again at 1
            assert clock.sleeps == [SPIN_PAUSE] * 4
            for _ in range(SPIN_LIMIT - 1):
                loop.main_loop_wait()
            assert clock.sleeps == [SPIN_PAUSE] * 4
            loop.main_loop_wait()
        assert clock.sleeps == [SPIN_PAUSE] * 5  # the limit again; no second warning
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            RuntimeWarning,
            f"iohandler: the loop spun for {SPIN_LIMIT} iterations (main-loop: WARNING: I/O thread spun "
            "for 1000 iterations); pausing 1 ms before each wait until a handler runs",
        )
    ]
    if not wrapped_by_mutation(impl_loop):  # else each call has one more frame: stacklevel is off
        assert caught[0].filename == __file__  # the warning points at main_loop_wait's caller


def test_r40_nonblocking_iterations_neither_count_nor_pause(clock: FakeClock, socks: Pairs) -> None:
    x, _ = socks.pair()
    other, _ = socks.pair()
    with MainLoop("epoll") as loop:

        def gate(_: object) -> bool:
            loop.set_fd_handler(other, print)  # notifies: every wait returns at once (R7)
            return False

        loop.set_fd_handler(x, lambda _: None, can_read=gate)
        for _ in range(SPIN_LIMIT + 5):
            loop.main_loop_wait(nonblocking=True)
        assert clock.sleeps == []
        loop.main_loop_wait()
        assert clock.sleeps == []  # the nonblocking ones did not count towards the limit


@pytest.mark.parametrize("role", ["read", "write"])
def test_r40_iterations_that_run_a_handler_are_not_spins(clock: FakeClock, socks: Pairs, role: str) -> None:
    """A wait that returns at once because a handler has work is not a spin, whichever handler
    runs: no pause however long it goes on."""
    a, peer = socks.pair()
    with MainLoop("epoll") as loop:
        if role == "read":
            peer.send(b"x" * (SPIN_LIMIT + 10))
            loop.set_fd_handler(a, lambda s: s.recv(1), opaque=a)
        else:
            loop.set_fd_handler(a, None, lambda _: None)  # a socket is writable at once
        for _ in range(SPIN_LIMIT + 5):
            assert loop.main_loop_wait() >= 1
    assert clock.sleeps == []
