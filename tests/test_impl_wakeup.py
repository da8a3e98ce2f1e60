"""The wakeup notifier on its own: the eventfd and the pipe fallback, coalescing, draining, close."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Iterator

import pytest

from iohandler.impl import MainLoop
from iohandler.impl.loop import Seams
from iohandler.impl.wakeup import Wakeup
from tests.support import open_fds

KINDS = [True, False]  # use_eventfd: the eventfd, then the pipe fallback


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def pending_writes(w: Wakeup, use_eventfd: bool) -> int:
    """How many writes reached the fd since the last drain (drains it)."""
    fd = w.fileno()
    if not readable(fd):
        return 0
    if use_eventfd:
        return os.eventfd_read(fd)
    return len(os.read(fd, 65536))


@pytest.fixture(params=KINDS, ids=["eventfd", "pipe"])
def wakeup(request: pytest.FixtureRequest) -> Iterator[tuple[Wakeup, bool]]:
    w = Wakeup(use_eventfd=request.param)
    yield w, request.param
    w.close()


def test_default_is_an_eventfd_and_false_forces_a_pipe() -> None:
    before = open_fds()
    default, pipe = Wakeup(), Wakeup(use_eventfd=False)
    try:
        assert os.readlink(f"/proc/self/fd/{default.fileno()}") == "anon_inode:[eventfd]"
        assert os.readlink(f"/proc/self/fd/{pipe.fileno()}").startswith("pipe:")
        assert len(open_fds() - before) == 3  # one eventfd, two pipe ends
    finally:
        default.close()
        pipe.close()


@pytest.mark.parametrize("use_eventfd", KINDS, ids=["eventfd", "pipe"])
def test_wakeup_fds_are_nonblocking_and_close_on_exec(use_eventfd: bool) -> None:
    before = open_fds()
    w = Wakeup(use_eventfd=use_eventfd)
    try:
        new = open_fds() - before
        assert len(new) == (1 if use_eventfd else 2)
        for fd in new:  # a blocking end would hang the loop on a full pipe or an empty read
            assert not os.get_blocking(fd)
            assert not os.get_inheritable(fd)
    finally:
        w.close()


def test_idle_wakeup_is_not_readable_and_consume_does_not_block(wakeup: tuple[Wakeup, bool]) -> None:
    w, _ = wakeup
    assert not readable(w.fileno())
    w.consume()  # nothing to read: no BlockingIOError
    assert not readable(w.fileno())


def test_notify_coalesces_until_consume(wakeup: tuple[Wakeup, bool]) -> None:
    w, use_eventfd = wakeup
    w.notify()
    w.notify()
    w.notify()
    assert pending_writes(w, use_eventfd) == 1  # one write for three notifications
    w.notify()  # still pending: consume() was not called, so no write
    assert pending_writes(w, use_eventfd) == 0
    w.consume()
    w.notify()
    assert pending_writes(w, use_eventfd) == 1


def test_wake_always_writes_and_notify_after_wake_does_not(wakeup: tuple[Wakeup, bool]) -> None:
    w, use_eventfd = wakeup
    w.wake()
    w.wake()
    assert pending_writes(w, use_eventfd) == 2
    w.wake()
    w.notify()  # wake() left a notification pending
    assert pending_writes(w, use_eventfd) == 1


def test_consume_drains_every_wake(wakeup: tuple[Wakeup, bool]) -> None:
    w, _ = wakeup
    for _ in range(5000):  # more than one read's worth on the pipe
        w.wake()
    assert readable(w.fileno())
    w.consume()
    assert not readable(w.fileno())
    w.notify()  # consume() cleared the pending flag
    assert readable(w.fileno())


def test_wake_on_a_full_pipe_does_not_raise() -> None:
    before = open_fds()
    w = Wakeup(use_eventfd=False)
    try:
        (wfd,) = open_fds() - before - {w.fileno()}
        with pytest.raises(BlockingIOError):
            while True:
                os.write(wfd, b"\0" * 4096)
        w.wake()  # full: the read end is readable already, which is all a wake needs
        w.consume()
        assert not readable(w.fileno())
    finally:
        w.close()


@pytest.mark.parametrize("use_eventfd", KINDS, ids=["eventfd", "pipe"])
def test_close_releases_the_fds_and_later_wakes_write_nowhere(use_eventfd: bool) -> None:
    before = open_fds()
    w = Wakeup(use_eventfd=use_eventfd)
    w.close()
    assert open_fds() == before
    assert w.fileno() == -1
    r, keep = os.pipe()  # likely takes a number the wakeup had
    try:
        w.wake()
        w.notify()
        w.close()  # idempotent: closes nothing it no longer owns
        os.write(keep, b"x")
        assert os.read(r, 10) == b"x"
    finally:
        os.close(r)
        os.close(keep)


def test_wakeup_works_on_fd_0() -> None:
    # A daemon that closed stdin gets fd 0 for its first new fd: 0 is a valid fd, not "closed".
    saved = os.dup(0)
    try:
        os.close(0)
        w = Wakeup(use_eventfd=True)
        assert w.fileno() == 0
        w.notify()
        assert readable(0)
        w.consume()
        assert not readable(0)
        w.close()
        assert 0 not in open_fds()
        w = Wakeup(use_eventfd=True)
        assert w.fileno() == 0
        w.after_fork_in_child()  # a forked child's copy on fd 0: still its to close
        w.close()
        assert 0 not in open_fds()
    finally:
        os.dup2(saved, 0)
        os.close(saved)


@pytest.mark.parametrize("use_eventfd", KINDS, ids=["eventfd", "pipe"])
def test_after_fork_in_child_wake_and_consume_touch_nothing_and_close_releases(use_eventfd: bool) -> None:
    # No fork needed: the hook's effect on one process's object (the fork itself: R41 tests).
    before = open_fds()
    w = Wakeup(use_eventfd=use_eventfd)
    own = open_fds() - before
    fd = w.fileno()
    w.after_fork_in_child()
    assert w.fileno() == -1
    w.wake()
    w.notify()
    assert not readable(fd)  # the parent's notifier was not written
    if use_eventfd:  # the parent notifies
        os.eventfd_write(fd, 1)
    else:
        os.write(max(own), b"\0")  # the pipe's write end (created after its read end)
    w.consume()  # not the child's to drain: the parent's notification stays
    assert readable(fd)
    w.close()
    assert open_fds() == before
    w.close()


SIGNAL_SCRIPT = """
import os, signal
from iohandler.impl.wakeup import Wakeup

w = Wakeup(use_eventfd={eventfd})
signal.signal(signal.SIGUSR1, lambda *_: w.wake())  # a signal handler's notify
name = "eventfd_write" if {eventfd} else "write"
real_write, real_close = getattr(os, name), os.close
target = w.fileno() if {eventfd} else max(set(map(int, os.listdir("/proc/self/fd"))))

def write(fd, data):  # the signal arrives while wake() holds the wakeup's lock
    if fd == target:
        setattr(os, name, real_write)
        os.kill(os.getpid(), signal.SIGUSR1)
    return real_write(fd, data)

def close(fd):  # and while close() holds it
    os.close = real_close
    os.kill(os.getpid(), signal.SIGUSR1)
    return real_close(fd)

setattr(os, name, write)
w.wake()
os.close = close
w.close()
print("ok")
"""


@pytest.mark.parametrize("use_eventfd", KINDS, ids=["eventfd", "pipe"])
def test_wake_from_a_signal_handler_inside_wake_or_close_does_not_deadlock(use_eventfd: bool) -> None:
    """The wakeup's lock is re-entrant: a signal handler runs on the thread it interrupts. In a
    subprocess, bounded: a deadlock shows as a timeout, not a hung test run."""
    code = SIGNAL_SCRIPT.format(eventfd=use_eventfd)
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("wake() from a signal handler deadlocked")
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr


class _ReadOnlyPendingWakeup(Wakeup):
    """A Wakeup seam (Seams.wakeup: "the Wakeup (or subclass)") that overrides `pending`, a
    read-only property until 71c4bc1, with a read-only property of its own: here one that
    says "never pending", so every wait counts as one that could block."""

    @property
    def pending(self) -> bool:
        return False


def test_a_wakeup_seam_may_keep_pending_read_only() -> None:
    """Wakeup.pending became a plain attribute that Wakeup.__init__, wake() and consume()
    assign: a subclass overriding it as a read-only property (as the base class had it) now
    fails in the loop's constructor ("property 'pending' ... has no setter")."""
    with MainLoop(seams=Seams(wakeup=_ReadOnlyPendingWakeup)) as loop:
        loop.notify()
        assert loop.main_loop_wait(timeout=1.0) == 1
