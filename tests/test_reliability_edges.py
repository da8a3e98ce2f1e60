"""R38 (the loop's own fds), R39 (waits longer than the kernel takes), R30's error messages."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest

from iohandler.impl import ClosedFdError, LoopClosedError, MainLoop, PollPoller
from iohandler.impl.loop import MAX_WAIT
from tests.support import FakeClock, Pairs

POLLERS = ["epoll", "poll", "selectors"]
MONTH = 30 * 86400.0


@pytest.mark.parametrize("poller", POLLERS)
def test_r38_the_wakeup_fd_is_refused_and_notify_still_wakes(poller: str) -> None:
    with MainLoop(poller) as loop:
        wfd = loop.wakeup_fd
        with pytest.raises(ValueError, match=rf"fd {wfd} is the loop's own wakeup"):
            loop.set_fd_handler(wfd, lambda _: None)
        loop.set_fd_handler(wfd, None, None)  # a delete of an fd with no record: a no-op (R4)
        assert dict(loop.snapshot().kernel).get(wfd)  # still polled
        threading.Timer(0.05, loop.notify).start()
        assert loop.main_loop_wait(timeout=5) == 1  # the notify ended the wait


@pytest.mark.parametrize("poller", ["epoll", "selectors"])
def test_r38_the_pollers_own_fd_is_refused(poller: str) -> None:
    with MainLoop(poller) as loop:
        pfd = loop.poller.fileno()
        assert pfd >= 0
        with pytest.raises(ValueError, match=rf"fd {pfd} is the loop's own {poller} poller's kernel object"):
            loop.set_fd_handler(pfd, lambda _: None)
        assert loop.records() == []


class _Capped(PollPoller):
    """poll(2) whose first two waits end at once with nothing, as a capped wait running out."""

    def __init__(self, loop_ref: list[MainLoop]) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.loop_ref = loop_ref

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        self.timeouts.append(timeout)
        if len(self.timeouts) < 3:
            return []
        self.loop_ref[0].notify()
        return super().wait(0)


@pytest.mark.parametrize("how", ["timer", "timeout"])
def test_r39_a_far_deadline_waits_in_capped_steps_until_it_really_passes(how: str) -> None:
    ref: list[MainLoop] = []
    poller = _Capped(ref)
    with MainLoop(poller) as loop:
        ref.append(loop)
        if how == "timer":
            loop.call_later(MONTH, lambda: None)
            ret = loop.main_loop_wait()
        else:
            ret = loop.main_loop_wait(timeout=MONTH)
        assert ret == 1  # not 0 after the first capped step: the wait went on
        assert len(poller.timeouts) == 3
        assert all(t is not None and t <= MAX_WAIT for t in poller.timeouts), poller.timeouts


class _Sleeper(PollPoller):
    """poll(2) in which nothing ever becomes ready and each wait takes its whole timeout on the
    test's clock: a long wait's steps, then its end, without waiting days."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        assert timeout is not None and len(self.timeouts) < 10, f"the wait goes on: {self.timeouts}"
        self.timeouts.append(timeout)
        self.clock.now += timeout
        return []


@pytest.mark.parametrize("rest", [0.5, 3600.0])
def test_r39_a_far_deadline_ends_when_it_has_really_passed(clock: FakeClock, rest: float) -> None:
    """Two capped steps, then the rest (below one second, or an hour), then 0 for a timeout."""
    poller = _Sleeper(clock)
    with MainLoop(poller) as loop:
        assert loop.main_loop_wait(timeout=2 * MAX_WAIT + rest) == 0
    assert poller.timeouts == [MAX_WAIT, MAX_WAIT, rest]


@pytest.mark.parametrize("poller", POLLERS)
def test_r39_a_timer_a_month_away_does_not_break_the_wait(poller: str) -> None:
    with MainLoop(poller) as loop:
        handle = loop.call_later(MONTH, lambda: None)
        threading.Timer(0.05, loop.notify).start()
        assert loop.main_loop_wait() == 1
        threading.Timer(0.05, loop.notify).start()
        assert loop.main_loop_wait(timeout=MONTH) == 1
        handle.cancel()


@pytest.mark.parametrize("call", ["timeout", "call_later", "call_every"])
def test_r30_a_number_too_large_for_a_float_is_refused_by_name(call: str) -> None:
    with MainLoop() as loop, pytest.raises(ValueError, match=r"(timeout|delay|interval) must be finite"):
        if call == "timeout":
            loop.main_loop_wait(timeout=10**400)
        elif call == "call_later":
            loop.call_later(10**400, lambda: None)
        else:
            loop.call_every(10**400, lambda: None)


class _BadFileno:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def fileno(self) -> Any:
        raise self.exc


@pytest.mark.parametrize("exc", [TypeError("t"), AttributeError("a"), RuntimeError("r"), OSError(9, "bad")])
def test_r30_any_fileno_failure_is_a_value_error_naming_fd_fileno(exc: Exception) -> None:
    with MainLoop() as loop:
        with pytest.raises(ValueError, match=r"fd\.fileno\(\) failed") as info:
            loop.set_fd_handler(_BadFileno(exc), lambda _: None)
        assert info.value.__cause__ is exc


def test_r30_a_closed_fd_on_a_closed_loop_is_loop_closed() -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    loop = MainLoop()
    loop.close()
    try:
        with pytest.raises(LoopClosedError):
            loop.set_fd_handler(fd, lambda _: None)
    finally:
        b.close()


def test_r38_the_pollers_new_fd_is_refused_after_a_rebuild(socks: Pairs) -> None:
    """A rebuild (here: after a quarantine while a dup keeps the file's epoll entry) gives the
    poller a new kernel object, and the refusal follows it."""
    a, peer = socks.pair()
    with MainLoop("epoll") as loop:
        loop.set_fd_handler(a, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        keep = os.dup(a.fileno())
        try:
            a.close()
            peer.send(b"x")
            with pytest.raises(ClosedFdError):
                loop.main_loop_wait(nonblocking=True)
            new = loop.poller.fileno()  # the rebuilt object's (its number may be the old one's)
            with pytest.raises(ValueError, match=rf"fd {new} is the loop's own epoll poller's kernel object"):
                loop.set_fd_handler(new, lambda _: None)
        finally:
            os.close(keep)


class _Zero:
    def fileno(self) -> int:
        return 0


@pytest.mark.parametrize("how", ["int", "fileno"])
def test_r30_fd_0_is_a_valid_fd(how: str, socks: Pairs) -> None:
    """The lower bound of R30 is 0 itself, as an int and from fileno(): a socket moved onto
    fd 0 is registered and called."""
    a, peer = socks.pair()
    stdin = os.dup(0)
    calls: list[int] = []
    fd: Any = 0 if how == "int" else _Zero()
    try:
        os.dup2(a.fileno(), 0)
        with MainLoop("epoll") as loop:
            loop.set_fd_handler(fd, lambda _: calls.append(0))
            peer.send(b"x")
            loop.main_loop_wait(nonblocking=True)
            loop.set_fd_handler(fd, None, None)
        assert calls == [0]
    finally:
        os.dup2(stdin, 0)
        os.close(stdin)
