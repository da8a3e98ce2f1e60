"""R33 (an fd closed while registered) and R34 (fd-number reuse) on real fds, on every poller.

R33: the loop never spins on a closed fd (CPU time over 1 s of wall time is small), finds it
(POLLNVAL, EBADF/ENOENT from epoll_ctl, the file identity of a ready fd, or `check_fds()` for
an idle fd epoll forgot), removes the record and raises ClosedFdError naming the fd, once.
R34: after fd N is closed and the number reused by a new file, no handler registered for the old
file is ever called, whether the old record was live, deleted but unreaped, or deleted while the
poll set was fixed; and a handler registered for the new file is called only for the new file's
readiness (not for an old file that a dup keeps alive under the same number).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iohandler.impl import ClosedFdError, MainLoop, Tracer
from tests.support import NAMES, add_stats, record_count

WALL = 1.0  # seconds of wall time the CPU tests run for
CPU_LIMIT = 0.25  # a spinning loop burns ~WALL; an idle one a few ms


def _close_all(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _run_for(loop: MainLoop, wall: float) -> tuple[float, int, list[ClosedFdError], int]:
    """Blocking iterations (50 ms timeout) for `wall` seconds: CPU seconds used, iterations,
    ClosedFdErrors raised, walks (ret > 0)."""
    errors: list[ClosedFdError] = []
    walks = iterations = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < wall:
        iterations += 1
        try:
            if loop.main_loop_wait(timeout=0.05) > 0:
                walks += 1
        except ClosedFdError as e:
            errors.append(e)
    return time.process_time() - cpu0, iterations, errors, walks


@pytest.mark.parametrize("kind", ["pipe", "socket-hup"])
def test_r33_closed_while_registered_no_spin_reported_once(loop: MainLoop, kind: str) -> None:
    """R33: close a registered fd that has input pending (a pipe with bytes; a socket whose peer
    hung up). poll: NVAL at once -> removed, ClosedFdError(fd) once, then idle. epoll and
    selectors: the kernel forgot it silently -> idle; check_fds() finds it. Never a spin."""
    if kind == "pipe":
        r, w = os.pipe()
        os.write(w, b"x")
    else:
        s1, s2 = socket.socketpair()
        r, w = os.dup(s1.fileno()), os.dup(s2.fileno())
        s1.close()
        s2.close()
    calls: list[Any] = []
    loop.set_fd_handler(r, calls.append, calls.append, can_read=lambda _: True)
    loop.main_loop_wait(nonblocking=True)  # registered with the kernel
    calls.clear()
    _close_all(w, r)  # socket: r has seen its peer hang up (HUP) when it is closed
    cpu, iterations, errors, _ = _run_for(loop, WALL)
    add_stats(closed_fd_cpu_seconds_max=round(cpu, 4), faults_injected_total=1)
    assert cpu < CPU_LIMIT, f"{cpu:.3f}s CPU in {WALL}s wall, {iterations} iterations: spinning"
    assert calls == []
    if loop.poller_name == "poll":
        assert [e.fd for e in errors] == [r] and "was closed while registered" in str(errors[0])
    else:
        assert errors == []
        with pytest.raises(ClosedFdError, match=f"fd {r} was closed while registered") as info:
            loop.check_fds()
        assert info.value.fd == r
    assert loop.records() == []
    loop.check_fds()  # nothing left to report
    assert loop.main_loop_wait(nonblocking=True) == 0


def test_r33_closed_number_with_dup_alive_no_spin(loop: MainLoop) -> None:
    """R33: the fd is closed while registered but a dup keeps its file open and readable. epoll
    keeps reporting the closed number (its registration belongs to the file and can no longer be
    removed by number): the loop must neither call the handler nor spin; it removes the record,
    raises ClosedFdError once and rebuilds the kernel set."""
    a, b = socket.socketpair()
    fd = a.fileno()
    keep = os.dup(fd)  # a fork child or a dup: the file stays open
    calls: list[Any] = []
    try:
        loop.set_fd_handler(fd, calls.append, can_read=lambda _: True)
        loop.main_loop_wait(nonblocking=True)
        b.send(b"ready forever")
        a.close()
        cpu, iterations, errors, walks = _run_for(loop, WALL)
        add_stats(closed_fd_cpu_seconds_max=round(cpu, 4), faults_injected_total=1)
        assert cpu < CPU_LIMIT, f"{cpu:.3f}s CPU in {WALL}s wall, {iterations} iterations, {walks} walks"
        assert calls == []
        assert [e.fd for e in errors] == [fd]
        assert loop.records() == [] and record_count(loop) == 0
    finally:
        _close_all(keep)
        b.close()


def test_r33_epoll_reregistration_reports_enoent_ebadf() -> None:
    """R33: on epoll, a record whose fd was closed is found when its kernel registration next
    changes (update from another handler set: EPOLL_CTL_MOD -> ENOENT/EBADF)."""
    if "epoll" not in NAMES:
        pytest.skip("no epoll")
    with MainLoop("epoll") as loop:
        r, w = os.pipe()
        loop.set_fd_handler(r, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        _close_all(r, w)
        with pytest.raises(ClosedFdError, match=f"fd {r}"):
            loop.set_fd_handler(r, lambda _: None, lambda _: None)  # not open: refused (R30)
        assert [x.fd for x in loop.records()] == [r]  # the refused call changed nothing
        with pytest.raises(ClosedFdError, match=f"fd {r} was closed"):
            loop.check_fds()
        assert loop.records() == []


# ------------------------------------------------------------------------ R34: reuse


class _Handlers:
    """Handlers that know which file they were registered for: a call while the fd number
    names another file, or without input for their own file, is recorded as a violation."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.bad: list[str] = []

    def reader(self, name: str, fd: int) -> Callable[[Any], None]:
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)

        def cb(_: Any) -> None:
            self.calls.append(name)
            try:
                now = os.fstat(fd)
            except OSError:
                self.bad.append(f"{name}: called for closed fd {fd}")
                return
            if (now.st_dev, now.st_ino) != ident:
                self.bad.append(f"{name}: called for another file on fd {fd}")
                return
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                self.bad.append(f"{name}: called without input on fd {fd}")
                return
            if not data:
                self.bad.append(f"{name}: EOF")

        return cb


def _socket_fds() -> tuple[int, int]:
    a, b = socket.socketpair()
    a.setblocking(False)
    fa, fb = os.dup(a.fileno()), os.dup(b.fileno())
    a.close()
    b.close()
    os.set_blocking(fa, False)
    return fa, fb


def _in_use(number: int) -> bool:
    try:
        fcntl.fcntl(number, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def _reuse(number: int) -> tuple[int, int]:
    """A new socket pair whose first fd is `number` (closed by the caller just before)."""
    fa, fb = _socket_fds()
    if fa != number:
        os.dup2(fa, number)
        os.set_blocking(number, False)
        os.close(fa)
    return number, fb


@pytest.mark.parametrize("how", ["live", "deleted-unreaped", "deleted-during-wait"])
@pytest.mark.parametrize("dup", [False, True], ids=["no-dup", "dup-alive"])
def test_r34_reused_number_never_reaches_old_handler(loop: MainLoop, how: str, dup: bool) -> None:
    """R34 on every poller: old record live (closed without delete), deleted but not reaped, or
    deleted while the poll set was fixed (during the wait); with or without a dup keeping the
    old file open and readable. The new file is registered under the same number: the old
    handler is never called, the new one only for the new file's input, and nothing spins."""
    h = _Handlers()
    old, old_peer = _socket_fds()
    keep = os.dup(old) if dup else -1
    new_peer = -1
    try:
        loop.set_fd_handler(old, h.reader("old", old))
        loop.main_loop_wait(nonblocking=True)
        loop.main_loop_wait(nonblocking=True)
        if how == "deleted-unreaped":
            loop.set_fd_handler(old, None, None)  # flagged; no walk runs before the reuse
        if how == "deleted-during-wait":

            class DeleteDuringWait(Tracer):
                def poll(self, entries: list[tuple[int, int]]) -> None:
                    loop.set_fd_handler(old, None, None)  # the poll set is fixed: lazily removed

            loop.set_tracer(DeleteDuringWait())
            loop.main_loop_wait(nonblocking=True)
            loop.set_tracer(None)
        os.write(old_peer, b"old input")  # the old file is readable (through `keep` if dup)
        os.close(old)
        _, new_peer = _reuse(old)
        loop.set_fd_handler(old, h.reader("new", old))  # update, revival or new record
        for _ in range(3):
            with contextlib.suppress(ClosedFdError):
                loop.main_loop_wait(nonblocking=True)
        assert "old" not in h.calls and h.bad == []
        os.write(new_peer, b"new input")
        for _ in range(3):
            with contextlib.suppress(ClosedFdError):
                loop.main_loop_wait(nonblocking=True)
        assert h.calls.count("new") == 1 and h.bad == []
        cpu, iterations, _, walks = _run_for(loop, 0.3)
        assert cpu < CPU_LIMIT * 0.3 / WALL + 0.03, f"{cpu:.3f}s CPU, {iterations} iterations, {walks} walks"
        assert h.bad == [] and h.calls.count("new") == 1
        add_stats(faults_injected_total=1)
    finally:
        _close_all(old, old_peer, new_peer, keep)


# ----------------------------------------------------------------- R34: property test


_Script = list[tuple[str, bool]]
_KNOWN_HARD: list[_Script] = [
    # poll polls a reused number as the new file
    [("register", True), ("close", False), ("reuse", False), ("send-new", True)],
    # epoll keeps reporting a closed number while a dup is alive
    [("register", True), ("send-new", False), ("close+dup", True), ("send-old", True), ("send-old", True)],
    # ... and beside a fresh registration of the reused number
    [("register", True), ("close+dup", False), ("reuse", False), ("register", True), ("send-old", True)],
    # a delete after the close cannot remove the kernel registration (a dup keeps the file):
    # registering the reused number must not let the old file's input reach the new handler
    # (found by this property under the `dev` profile; it called gen2 on every iteration)
    [
        ("register", True),
        ("close+dup", False),
        ("delete", False),
        ("reuse", False),
        ("register", False),
        ("send-old", True),
    ],
    # a delete removes the kernel registration while the fd is still open (delete, then close)
    [
        ("register", True),
        ("delete", False),
        ("close+dup", True),
        ("reuse", False),
        ("register", True),
        ("send-old", True),
        ("send-new", True),
    ],
]


def _with_known_hard(f: Callable[..., None]) -> Callable[..., None]:
    for poller in NAMES:
        for script in _KNOWN_HARD:
            f = example(poller=poller, script=script)(f)
    return f


@_with_known_hard
# Cheap examples (a few ms each), and the interesting ones are specific sequences of 5 or more
# steps: at the profile's count the derandomized ci run missed an orphaned kernel registration
# (see _KNOWN_HARD) that 40 times as many examples find. About 15 s under `ci`.
@settings(max_examples=40 * settings().max_examples)
@given(
    poller=st.sampled_from(NAMES),
    script=st.lists(
        st.tuples(
            st.sampled_from(["register", "delete", "close", "close+dup", "reuse", "send-old", "send-new"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_r34_property_handlers_only_see_their_own_file(poller: str, script: list[tuple[str, bool]]) -> None:
    """R33/R34 as a property: any sequence of register / delete / close (with or without a dup
    alive) / reuse of the number by a new file / input on either file / iterations. Every
    handler call must be for the file it was registered for and have input to read; the loop
    may raise ClosedFdError (naming the number) but nothing else."""
    h = _Handlers()
    opened: list[int] = []
    fd = peer = -1
    old_peers: list[int] = []
    generation = 0
    with MainLoop(poller) as loop:
        try:
            fd, peer = _socket_fds()
            opened += [fd, peer]
            number = fd
            is_open = True
            for step, then_iterate in script:
                if step == "register" and is_open:
                    generation += 1
                    loop.set_fd_handler(number, h.reader(f"gen{generation}", number))
                elif step == "delete":
                    loop.set_fd_handler(number, None, None)
                elif step in ("close", "close+dup") and is_open:
                    if step == "close+dup":
                        opened.append(os.dup(number))
                    os.close(number)
                    is_open = False
                    old_peers.append(peer)
                elif step == "reuse" and not is_open and not _in_use(number):
                    # Only a free number: once closed it may be taken by anything, the loop's
                    # own rebuilt epoll object included, and dup2 would clobber that.
                    _, peer = _reuse(number)
                    opened.append(peer)
                    is_open = True
                elif step == "send-old" and old_peers:
                    with contextlib.suppress(OSError):
                        os.write(old_peers[-1], b"o")
                elif step == "send-new" and is_open:
                    os.write(peer, b"n")
                if then_iterate:
                    try:
                        loop.main_loop_wait(nonblocking=True)
                    except ClosedFdError as e:
                        assert e.fd == number
                assert h.bad == [], (step, h.bad)
            for _ in range(2):
                with contextlib.suppress(ClosedFdError):
                    loop.main_loop_wait(nonblocking=True)
            assert h.bad == []
        finally:
            _close_all(*opened, number if is_open else -1)
    add_stats(faults_injected_total=sum(op.startswith("close") for op, _ in script))


@given(
    poller=st.sampled_from(NAMES),
    n=st.integers(1, 6),
)
@settings(max_examples=10)
def test_r33_many_closed_fds_reported_together(poller: str, n: int) -> None:
    """R33: several fds closed while registered: each is removed; the first ClosedFdError names
    one and carries notes naming the others (poll); epoll forgets them and check_fds() reports."""
    with MainLoop(poller) as loop:
        fds = [_socket_fds() for _ in range(n)]
        for fa, _ in fds:
            loop.set_fd_handler(fa, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        for fa, fb in fds:
            os.write(fb, b"x")
            _close_all(fa, fb)
        named: set[int] = set()
        for _ in range(3):
            try:
                loop.main_loop_wait(nonblocking=True)
            except ClosedFdError as e:
                named.add(e.fd)
                notes = getattr(e, "__notes__", [])
                named.update(int(x.split("fd ")[1].split()[0]) for x in notes if x.startswith("also: fd "))
        with contextlib.suppress(ClosedFdError):
            loop.check_fds()
        assert loop.records() == []
        if poller == "poll":
            assert named == {fa for fa, _ in fds}
