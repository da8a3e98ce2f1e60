"""MainLoop's kernel and error paths, deterministically, on real fds: epoll_ctl failures and how
they are translated (ENOENT, EBADF, EPERM, the ENOENT retry for a file reopened under its number),
the kernel-set rebuild and the fds it cannot register again, the identity check of ready fds,
quarantine, timer re-arming, and errors that name what is wrong (SPEC.md R30, R33, R34, R37).

Where the kernel cannot be made to fail on demand, a Poller subclass injects the error: MainLoop
accepts a Poller instance, and the Poller contract says what a failing `modify` leaves behind.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import socket
import tempfile
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iohandler.impl import (
    READ_EVENTS,
    WRITE_EVENTS,
    ClosedFdError,
    EpollPoller,
    LoopClosedError,
    MainLoop,
    PollPoller,
    Tracer,
    UnpollableFdError,
)
from tests.support import NAMES, FakeClock, Pairs, epoll_kernel_set, open_fds, pairs

needs_epoll = pytest.mark.skipif("epoll" not in NAMES, reason="epoll is Linux-only")


@pytest.fixture
def owned() -> Iterator[list[int]]:
    """Raw fds a test opens; closed at the end (those still open)."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


@pytest.fixture
def socks() -> Iterator[Pairs]:
    with pairs() as p:
        yield p


def _pipe(owned: list[int]) -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    owned += [r, w]
    return r, w


def _reuse_number(fd: int, owned: list[int]) -> int:
    """Close `fd` and put a fresh pipe's read end under its number; the new pipe's write end."""
    r, w = _pipe(owned)
    os.close(fd)
    os.dup2(r, fd)
    os.close(r)
    return w


def _reader(calls: list[Any], tag: str) -> Callable[[Any], None]:
    """A read handler that logs `tag` and drains its fd (the opaque)."""

    def cb(fd: int) -> None:
        calls.append(tag)
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 4096)

    return cb


def _quiet(loop: MainLoop, times: int = 2) -> None:
    """No spinning: later iterations find nothing."""
    for _ in range(times):
        assert loop.main_loop_wait(nonblocking=True) == 0


class FlakyPoller(PollPoller):
    """poll(2), but `modify` of a chosen fd fails with queued errnos, one per call, and then
    leaves the fd unregistered (as the Poller contract says of a failed modify)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: dict[int, list[int]] = {}

    def modify(self, fd: int, events: int) -> None:
        queued = self.errors.get(fd)
        if queued:
            code = queued.pop(0)
            super().modify(fd, 0)
            raise OSError(code, os.strerror(code))
        super().modify(fd, events)


class CountingEpoll(EpollPoller):
    """epoll that counts rebuilds of its kernel object (each costs O(registered))."""

    def __init__(self) -> None:
        super().__init__()
        self.rebuilds = 0

    def rebuild(self) -> list[int]:
        self.rebuilds += 1
        return super().rebuild()


# ------------------------------------------------------------- _sync: the fresh registration


@pytest.mark.parametrize("name", NAMES)
def test_fresh_registration_of_a_closed_fd_is_refused_and_named(name: str, owned: list[int]) -> None:
    """A gated record never polled yet (gate closed) whose fd closes: when the gate opens, the
    fill finds the file gone before asking the kernel, removes the record, names the fd."""
    r, _ = _pipe(owned)
    gate = {"open": False}
    calls: list[Any] = []
    with MainLoop(name) as loop:
        loop.set_fd_handler(r, calls.append, can_read=lambda _: gate["open"], opaque=r)
        loop.main_loop_wait(nonblocking=True)  # gate closed: not polled
        os.close(r)
        gate["open"] = True
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == r
        assert f"fd {r} was closed while registered; its handlers were removed" in str(info.value)
        assert loop.records() == [] and calls == []
        _quiet(loop)


# ---------------------------------------------------- _sync: the kernel refuses a change


def _gated_reader_writer(loop: MainLoop, fd: int, gate: dict[str, bool], calls: list[Any]) -> None:
    # A pipe's read end is never writable: the write handler only widens the registration, so a
    # gate change is an EPOLL_CTL_MOD of a live registration.
    loop.set_fd_handler(
        fd, _reader(calls, "read"), lambda _: calls.append("write"), can_read=lambda _: gate["open"], opaque=fd
    )


@needs_epoll
def test_epoll_mod_of_a_closed_fd_is_ebadf_and_named(owned: list[int]) -> None:
    r, _ = _pipe(owned)
    gate = {"open": True}
    calls: list[Any] = []
    poller = EpollPoller()
    with MainLoop(poller) as loop:
        _gated_reader_writer(loop, r, gate, calls)
        loop.main_loop_wait(nonblocking=True)
        assert poller.registered()[r] == READ_EVENTS | WRITE_EVENTS
        os.close(r)
        gate["open"] = False  # MOD to OUT only: the number is closed
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        err = info.value
        assert err.fd == r
        assert f"fd {r} was closed while registered; its handlers were removed" in str(err)
        assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.EBADF
        assert loop.records() == [] and calls == []
        assert r not in poller.registered()
        _quiet(loop)


@needs_epoll
def test_epoll_mod_of_a_reused_number_is_enoent_and_never_re_registered(owned: list[int]) -> None:
    """The number now names another file, which is readable. The kernel says ENOENT (no
    registration for the new file); the loop must not 'register afresh' for the old handlers."""
    r, _ = _pipe(owned)
    gate = {"open": True}
    calls: list[Any] = []
    poller = EpollPoller()
    with MainLoop(poller) as loop:
        _gated_reader_writer(loop, r, gate, calls)
        loop.main_loop_wait(nonblocking=True)
        w2 = _reuse_number(r, owned)
        os.write(w2, b"new file's data")
        gate["open"] = False
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        err = info.value
        assert err.fd == r
        assert (
            f"fd {r} was closed while registered and its number now names another file; its handlers were removed"
        ) in str(err)
        assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.ENOENT
        assert loop.records() == [] and r not in poller.registered()
        gate["open"] = True
        _quiet(loop)
        assert calls == []


@needs_epoll
def test_epoll_same_file_reopened_under_its_number_is_registered_afresh(owned: list[int]) -> None:
    """The file under the number is the same (same inode: the pipe reopened through /proc), but
    it is another open file, so epoll dropped the old registration: MOD says ENOENT. Same file,
    so the loop registers it afresh, and the handler keeps working."""
    r, w = _pipe(owned)
    calls: list[Any] = []
    poller = EpollPoller()
    with MainLoop(poller) as loop:
        loop.set_fd_handler(r, _reader(calls, "read"), opaque=r)
        loop.main_loop_wait(nonblocking=True)
        again = os.open(f"/proc/self/fd/{r}", os.O_RDONLY | os.O_NONBLOCK)
        owned.append(again)
        os.close(r)  # the last fd of the registered open file: epoll drops its registration
        os.dup2(again, r)
        loop.set_fd_handler(r, _reader(calls, "read"), lambda _: calls.append("write"), opaque=r)
        assert loop.main_loop_wait(nonblocking=True) == 1  # the wakeup only; no error
        assert poller.registered()[r] == READ_EVENTS | WRITE_EVENTS
        os.write(w, b"x")
        assert loop.main_loop_wait(nonblocking=True) == 1
        assert calls == ["read"]
        assert [rec.fd for rec in loop.records()] == [r]


# ------------------------------------------------------ _sync: injected kernel errors


def _flaky_loop(socks: Pairs, *codes: int) -> tuple[MainLoop, FlakyPoller, socket.socket, socket.socket]:
    poller = FlakyPoller()
    loop = MainLoop(poller)
    a, peer = socks.pair()
    poller.errors[a.fileno()] = list(codes)
    return loop, poller, a, peer


def test_enoent_then_a_failed_retry_reports_the_retry_error(socks: Pairs) -> None:
    loop, poller, a, _ = _flaky_loop(socks, errno.ENOENT, errno.EBADF)
    with loop:
        loop.set_fd_handler(a, lambda _: None)
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        err = info.value
        assert err.fd == a.fileno()
        assert f"fd {a.fileno()}: {os.strerror(errno.EBADF)}" in str(err)
        assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.EBADF
        assert loop.records() == [] and a.fileno() not in poller.registered()
        _quiet(loop)


def test_enoent_then_a_successful_retry_registers(socks: Pairs) -> None:
    loop, poller, a, peer = _flaky_loop(socks, errno.ENOENT)
    calls: list[Any] = []
    with loop:
        loop.set_fd_handler(a, lambda s: calls.append(s.recv(16)), opaque=a)
        assert loop.main_loop_wait(nonblocking=True) == 1  # the wakeup
        assert poller.registered()[a.fileno()] == READ_EVENTS
        peer.send(b"x")
        assert loop.main_loop_wait(nonblocking=True) == 1
        assert calls == [b"x"]


def test_ebadf_for_an_open_file_is_a_closed_fd_error_not_unpollable(socks: Pairs) -> None:
    loop, _, a, _ = _flaky_loop(socks, errno.EBADF)
    with loop:
        loop.set_fd_handler(a, lambda _: None)
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert not isinstance(info.value, UnpollableFdError)
        assert info.value.fd == a.fileno()
        assert f"fd {a.fileno()}: {os.strerror(errno.EBADF)}" in str(info.value)
        assert loop.records() == []


def test_eperm_is_unpollable_and_named(socks: Pairs) -> None:
    loop, _, a, _ = _flaky_loop(socks, errno.EPERM)
    with loop:
        loop.set_fd_handler(a, lambda _: None)
        with pytest.raises(UnpollableFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == a.fileno()
        assert f"fd {a.fileno()}: poll cannot poll it" in str(info.value)
        assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EPERM
        assert loop.records() == []
        _quiet(loop)


def test_a_failing_removal_does_not_fail_the_delete(socks: Pairs) -> None:
    """Dropping a registration is best effort (the fd may be closed already): a delete never
    raises because the poller could not remove it."""
    poller = FlakyPoller()
    a, _ = socks.pair()
    with MainLoop(poller) as loop:
        loop.set_fd_handler(a, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        poller.errors[a.fileno()] = [errno.EBADF, errno.EBADF]
        loop.set_fd_handler(a, None)
        assert loop.records() == [] and a.fileno() not in poller.registered()
        _quiet(loop)  # and the fill does not ask the poller again
        assert poller.errors[a.fileno()] == [errno.EBADF]


def test_a_record_never_polled_never_reaches_the_poller(socks: Pairs) -> None:
    """A gated record whose gate is closed from the start is not polled and costs no kernel
    call: a poller that would fail for its fd is never asked."""
    poller = FlakyPoller()
    a, _ = socks.pair()
    poller.errors[a.fileno()] = [errno.EBADF]
    with MainLoop(poller) as loop:
        loop.set_fd_handler(a, lambda _: None, can_read=lambda _: False)
        loop.main_loop_wait(nonblocking=True)
        loop.main_loop_wait(nonblocking=True)
        assert [r.fd for r in loop.records()] == [a.fileno()]
        assert poller.errors[a.fileno()] == [errno.EBADF]


# ------------------------------------------------------------- rebuilding the kernel set


@needs_epoll
def test_renewal_rebuild_reports_a_silently_closed_fd_first(owned: list[int]) -> None:
    """A number re-registered for a new file makes the loop rebuild the epoll set; a record whose
    fd was closed meanwhile (epoll forgot it without a word) cannot be registered again: it is
    removed and its ClosedFdError, naming it, is the one raised. The renewed record works."""
    ra, wa = _pipe(owned)
    rc, _ = _pipe(owned)
    calls: list[Any] = []
    with MainLoop("epoll") as loop:
        loop.set_fd_handler(ra, _reader(calls, "a"), opaque=ra)
        loop.set_fd_handler(rc, _reader(calls, "old c"), opaque=rc)
        loop.main_loop_wait(nonblocking=True)
        os.close(ra)
        os.close(wa)
        wc2 = _reuse_number(rc, owned)
        loop.set_fd_handler(rc, _reader(calls, "new c"), opaque=rc)
        os.write(wc2, b"x")
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == ra
        assert f"fd {ra} was closed while registered" in str(info.value)
        assert calls == ["new c"]
        assert [rec.fd for rec in loop.records()] == [rc]
        _quiet(loop)
        os.write(wc2, b"y")
        assert loop.main_loop_wait(nonblocking=True) == 1
        assert calls == ["new c", "new c"]


@needs_epoll
def test_a_number_reused_again_before_the_renewal_is_not_registered(owned: list[int]) -> None:
    """set_fd_handler saw a second file under the number, then a third took it before the fill:
    the renewal checks the file again and refuses the third."""
    r, _ = _pipe(owned)
    calls: list[Any] = []
    with MainLoop("epoll") as loop:
        loop.set_fd_handler(r, _reader(calls, "first"), opaque=r)
        loop.main_loop_wait(nonblocking=True)
        _reuse_number(r, owned)
        loop.set_fd_handler(r, _reader(calls, "second"), opaque=r)
        w3 = _reuse_number(r, owned)
        os.write(w3, b"third file's data")
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == r and "now names another file" in str(info.value)
        assert loop.records() == [] and calls == []
        _quiet(loop)


@needs_epoll
def test_renewal_rebuilds_once_not_at_every_fill(owned: list[int]) -> None:
    r, _ = _pipe(owned)
    calls: list[Any] = []
    poller = CountingEpoll()
    with MainLoop(poller) as loop:
        loop.set_fd_handler(r, _reader(calls, "old"), can_read=lambda _: True, opaque=r)
        loop.main_loop_wait(nonblocking=True)
        w2 = _reuse_number(r, owned)
        loop.set_fd_handler(r, _reader(calls, "new"), can_read=lambda _: True, opaque=r)
        loop.main_loop_wait(nonblocking=True)
        assert poller.rebuilds == 1
        for _ in range(3):  # the gate makes every fill visit the record
            os.write(w2, b"x")
            assert loop.main_loop_wait(nonblocking=True) == 1
        assert calls == ["new"] * 3 and poller.rebuilds == 1


@needs_epoll
def test_an_epoll_object_on_fd_0_is_rebuilt_too(socks: Pairs) -> None:
    """A daemon that closed stdin gets its epoll object as fd 0. A quarantined fd whose file a
    dup keeps open still has its registration dropped (by rebuilding) before the error is raised."""
    a, peer = socks.pair()
    fd = a.fileno()
    keep = os.dup(fd)
    stdin = os.dup(0)
    os.close(0)
    try:
        poller = EpollPoller()
        assert poller.fileno() == 0
        with MainLoop(poller) as loop:
            loop.set_fd_handler(a, lambda _: None)
            loop.main_loop_wait(nonblocking=True)
            peer.send(b"x")
            a.close()
            with pytest.raises(ClosedFdError):
                loop.main_loop_wait(nonblocking=True)
            assert fd not in epoll_kernel_set(poller.fileno())
    finally:
        os.dup2(stdin, 0)
        os.close(stdin)
        os.close(keep)


# ------------------------------------------------------------------ identity of ready fds


@pytest.mark.parametrize("name", NAMES)
def test_every_ready_fd_is_checked_not_only_the_first(name: str, socks: Pairs) -> None:
    """A healthy ready record before (newer than) a ready one closed under a live dup: the
    check goes on past the healthy one."""
    x, xp = socks.pair()
    h, hp = socks.pair()
    calls: list[Any] = []
    xfd = x.fileno()
    keep = os.dup(xfd)
    try:
        with MainLoop(name) as loop:
            loop.set_fd_handler(x, lambda s: calls.append("x"), opaque=x)
            loop.set_fd_handler(h, lambda s: calls.append(("h", s.recv(16))), opaque=h)
            loop.main_loop_wait(nonblocking=True)
            xp.send(b"x")
            hp.send(b"h")
            x.close()
            with pytest.raises(ClosedFdError) as info:
                loop.main_loop_wait(nonblocking=True)
            assert info.value.fd == xfd
            assert calls == [("h", b"h")]
            assert [r.fd for r in loop.records()] == [h.fileno()]
            _quiet(loop)
    finally:
        os.close(keep)


class _DuringWait(Tracer):
    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def poll(self, entries: list[tuple[int, int]]) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()


@pytest.mark.parametrize("name", NAMES)
def test_delete_then_close_during_the_wait_is_no_error_but_a_later_closed_fd_is(name: str, socks: Pairs) -> None:
    """During the wait (poll set fixed) one handler is deleted and its fd closed: the usual
    delete-then-close, no error. An older record whose fd is closed without a delete is still
    found, after the deleted one in the walk's order."""
    y, yp = socks.pair()
    d, dp = socks.pair()
    yfd, dfd = y.fileno(), d.fileno()
    keeps = [os.dup(yfd), os.dup(dfd)]  # epoll and selectors keep reporting the numbers
    calls: list[Any] = []
    try:
        with MainLoop(name) as loop:
            loop.set_fd_handler(y, lambda _: calls.append("y"))
            loop.set_fd_handler(d, lambda _: calls.append("d"))
            loop.main_loop_wait(nonblocking=True)
            yp.send(b"y")
            dp.send(b"d")

            def delete_and_close() -> None:
                loop.set_fd_handler(dfd, None)
                d.close()
                y.close()

            loop.set_tracer(_DuringWait(delete_and_close))
            with pytest.raises(ClosedFdError) as info:
                loop.main_loop_wait(nonblocking=True)
            assert info.value.fd == yfd
            assert not getattr(info.value, "__notes__", [])  # nothing about the deleted one
            assert calls == [] and loop.records() == []
            _quiet(loop)
    finally:
        for k in keeps:
            os.close(k)


# -------------------------------------------------------------------------- the fill


@pytest.mark.parametrize("name", NAMES)
def test_a_raising_gate_leaves_every_later_record_for_the_next_fill(name: str, socks: Pairs) -> None:
    """Records not yet registered when a gate raises are registered by the next fill."""
    c, cp = socks.pair()
    b, bp = socks.pair()
    a, _ = socks.pair()
    calls: list[Any] = []
    raised = {"done": False}

    def gate(_: Any) -> bool:
        if not raised["done"]:
            raised["done"] = True
            raise RuntimeError("gate")
        return False

    with MainLoop(name) as loop:
        loop.set_fd_handler(c, lambda s: calls.append(("c", s.recv(16))), opaque=c)
        loop.set_fd_handler(b, lambda s: calls.append(("b", s.recv(16))), opaque=b)
        loop.set_fd_handler(a, calls.append, can_read=gate)  # newest: its gate runs first
        bp.send(b"b")
        cp.send(b"c")
        with pytest.raises(RuntimeError, match="gate") as info:
            loop.main_loop_wait(nonblocking=True)
        assert any(f"can_read gate {gate!r} of fd {a.fileno()}" in n for n in info.value.__notes__)
        loop.main_loop_wait(nonblocking=True)
        assert sorted(calls) == [("b", b"b"), ("c", b"c")]


@pytest.mark.parametrize("name", NAMES)
def test_records_a_gate_changes_behind_the_fill_are_visited_in_list_order(name: str, socks: Pairs) -> None:
    x, _ = socks.pair()
    y, _ = socks.pair()
    g, _ = socks.pair()
    consulted: list[str] = []

    def gate(tag: str, then: Callable[[], None] | None = None) -> Callable[[Any], bool]:
        def consult(_: Any) -> bool:
            consulted.append(tag)
            if then is not None:
                then()
            return False

        return consult

    with MainLoop(name) as loop:
        nop: Callable[[Any], None] = lambda _: None  # noqa: E731
        gx, gy = gate("x"), gate("y")
        loop.set_fd_handler(x, nop, can_read=gx)
        loop.set_fd_handler(y, nop, can_read=gy)
        loop.main_loop_wait(nonblocking=True)

        def update_x_then_y() -> None:
            loop.set_fd_handler(x, nop, can_read=gx)
            loop.set_fd_handler(y, nop, can_read=gy)

        # G's gate updates both older records, X first: the fill visits them newest first.
        loop.set_fd_handler(g, nop, can_read=gate("g", update_x_then_y))
        consulted.clear()
        loop.main_loop_wait(nonblocking=True)
        assert consulted == ["g", "y", "x"]


# --------------------------------------------------------------------- record keeping


@pytest.mark.parametrize("name", NAMES)
def test_deleting_one_gated_record_keeps_the_others_gates_consulted(name: str, socks: Pairs) -> None:
    a, _ = socks.pair()
    b, _ = socks.pair()
    consulted: list[str] = []

    def gate(tag: str) -> Callable[[Any], bool]:
        def consult(_: Any) -> bool:
            consulted.append(tag)
            return False

        return consult

    with MainLoop(name) as loop:
        loop.set_fd_handler(a, lambda _: None, can_read=gate("a"))
        loop.set_fd_handler(b, lambda _: None, can_read=gate("b"))
        loop.main_loop_wait(nonblocking=True)
        loop.set_fd_handler(b, None)
        consulted.clear()
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        assert consulted == ["a"] * 3


class _Opaque:
    pass


@pytest.mark.parametrize("name", NAMES)
def test_a_reaped_gated_record_is_released(name: str, socks: Pairs) -> None:
    """No leak: after a delete and the walk that reaps it, the loop holds nothing of a gated
    record (its opaque can be collected)."""
    a, _ = socks.pair()
    opaque = _Opaque()
    ref = weakref.ref(opaque)
    with MainLoop(name) as loop:
        loop.set_fd_handler(a, lambda _: None, can_read=lambda _: True, opaque=opaque)
        loop.main_loop_wait(nonblocking=True)
        loop.set_fd_handler(a, None)
        loop.notify()  # a walk (ret > 0) reaps
        loop.main_loop_wait(nonblocking=True)
        del opaque
        gc.collect()
        assert ref() is None


@pytest.mark.parametrize("name", NAMES)
def test_a_record_deleted_and_reaped_in_one_walk_is_released_at_once(name: str, socks: Pairs) -> None:
    """A newer record's handler deletes an older one; the same walk reaps it, and from then on
    the loop holds nothing of it (not even until the next fill)."""
    old, _ = socks.pair()
    new, new_peer = socks.pair()
    opaque = _Opaque()
    ref = weakref.ref(opaque)
    with MainLoop(name) as loop:

        def delete_old(s: socket.socket) -> None:
            s.recv(16)
            loop.set_fd_handler(old, None)

        loop.set_fd_handler(old, lambda _: None, opaque=opaque)
        loop.set_fd_handler(new, delete_old, opaque=new)
        loop.main_loop_wait(nonblocking=True)
        new_peer.send(b"x")
        assert loop.main_loop_wait(nonblocking=True) == 1
        del opaque
        gc.collect()
        assert ref() is None


class ConfirmingPoll(PollPoller):
    """poll(2) with a `confirm` (the Poller hook for "ready fd still names the registered
    file"): it logs each question with the generation of the confirm asked, and confirms. A
    rebuild installs a new one, as epoll's does."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0
        self.asked: list[tuple[int, int, int]] = []
        self._renew()

    def _renew(self) -> None:
        self.generation += 1
        generation = self.generation

        def confirm(fd: int, events: int) -> None:
            self.asked.append((generation, fd, events))

        self.confirm = confirm

    def rebuild(self) -> list[int]:
        failed = super().rebuild()
        self._renew()
        return failed


def test_the_loop_asks_the_pollers_current_confirmer_about_ready_fds(socks: Pairs, owned: list[int]) -> None:
    a, peer = socks.pair()
    r, _ = _pipe(owned)
    poller = ConfirmingPoll()
    calls: list[Any] = []
    with MainLoop(poller) as loop:
        loop.set_fd_handler(a, lambda s: calls.append(s.recv(16)), opaque=a)
        loop.set_fd_handler(r, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        peer.send(b"x")
        loop.main_loop_wait(nonblocking=True)
        assert poller.asked == [(1, a.fileno(), READ_EVENTS)] and calls == [b"x"]
        _reuse_number(r, owned)
        loop.set_fd_handler(r, lambda _: None)  # another file: the kernel set is rebuilt
        loop.main_loop_wait(nonblocking=True)
        assert poller.generation == 2
        peer.send(b"y")
        loop.main_loop_wait(nonblocking=True)
        assert poller.asked[1:] == [(2, a.fileno(), READ_EVENTS)] and calls == [b"x", b"y"]


# ------------------------------------------------------------------------------ timers


def _ticks(loop: MainLoop, clock: FakeClock, at: float, fired: list[float]) -> int:
    clock.now = 1000.0 + at
    before = len(fired)
    loop.main_loop_wait(nonblocking=True)
    return len(fired) - before


@pytest.mark.parametrize(
    ("ticks", "why"),
    [
        ([(9.9, 0), (10.5, 1), (19.9, 0), (20.2, 1)], "late: the next deadline is still 20"),
        ([(100, 1), (100, 0), (109.9, 0), (110, 1)], "after a long stall: once, no catch-up for 20..100"),
        ([(20, 1), (20, 0), (30, 1)], "one period late: the next deadline would be now, so skip it"),
    ],
    ids=["keeps-its-phase", "no-burst-after-a-stall", "exactly-one-period-late"],
)
def test_interval_timer(clock: FakeClock, ticks: list[tuple[float, int]], why: str) -> None:
    """call_every(10): (time of the iteration, how many times it fires there)."""
    fired: list[float] = []
    with MainLoop() as loop:
        loop.call_every(10, lambda: fired.append(clock.now))
        assert [(at, _ticks(loop, clock, at, fired)) for at, _ in ticks] == ticks, why


def test_call_later_waits_for_its_delay(clock: FakeClock) -> None:
    fired: list[float] = []
    with MainLoop() as loop:
        loop.call_later(5, fired.append, 1.0)
        assert _ticks(loop, clock, 4.9, fired) == 0
        assert _ticks(loop, clock, 5, fired) == 1
        assert _ticks(loop, clock, 50, fired) == 0


# ---------------------------------------------------------- construction, state, errors


def _fd_kinds() -> dict[int, str]:
    """Open fds -> "pipe", "anon_inode", ... (without listdir's own, gone by then)."""
    kinds = {}
    for fd in open_fds():
        with contextlib.suppress(FileNotFoundError):
            kinds[fd] = os.readlink(f"/proc/self/fd/{fd}").split(":")[0]
    return kinds


@pytest.mark.parametrize("use_eventfd", [True, False])
def test_the_wakeup_is_an_eventfd_or_a_pipe_as_asked(use_eventfd: bool) -> None:
    before = _fd_kinds()
    with MainLoop("poll", use_eventfd=use_eventfd) as loop:  # poll: no fd of its own
        new = sorted(kind for fd, kind in _fd_kinds().items() if before.get(fd) != kind)
        assert new == (["anon_inode"] if use_eventfd else ["pipe", "pipe"])
        loop.notify()
        assert loop.main_loop_wait(nonblocking=True) == 1
    assert _fd_kinds() == before


def test_closed_is_a_bool() -> None:
    loop = MainLoop()
    assert loop.closed is False
    loop.close()
    assert loop.closed is True


def test_fd_zero_is_a_valid_number() -> None:
    with MainLoop() as loop:
        loop.set_fd_handler(0, None)  # a delete of an unknown fd: a no-op, not a bad argument
        assert loop.records() == []


def test_errors_name_the_argument_and_what_was_wrong(socks: Pairs) -> None:
    with MainLoop() as loop:
        with pytest.raises(TypeError, match=r"^fd must be an int or have fileno\(\), got bool$"):
            loop.set_fd_handler(True, lambda _: None)
        with pytest.raises(TypeError, match=r"^delay must be a number of seconds, got str$"):
            loop.call_later("1", lambda: None)  # type: ignore[arg-type]
    loop = MainLoop()
    loop.close()
    a, _ = socks.pair()
    with pytest.raises(LoopClosedError, match=r"^the loop is closed$"):
        loop.set_fd_handler(a, None)
    with pytest.raises(LoopClosedError, match=r"^the loop is closed$"):
        loop.call_later(1, lambda: None)


@needs_epoll
def test_epoll_refusal_of_a_regular_file_suggests_poll() -> None:
    with (
        tempfile.TemporaryFile() as f,
        MainLoop("epoll") as loop,
        pytest.raises(UnpollableFdError, match=r"use poller='poll'\)$"),
    ):
        loop.set_fd_handler(f, lambda _: None)


@pytest.mark.parametrize("count", [2, 3])
def test_a_fill_visits_its_records_in_list_order_so_their_errors_come_newest_first(count: int) -> None:
    """R8: the fill goes down the list, newest first, also when only registrations changed and
    no gate is involved; so the errors of one fill (fds closed before their registration
    reached the kernel, R33) are raised newest first, the others as notes in that order."""
    pipes = [os.pipe() for _ in range(count)]
    try:
        with MainLoop("epoll") as loop:
            for r, _ in pipes:
                loop.set_fd_handler(r, print)
            for r, _ in pipes:
                os.close(r)
            with pytest.raises(ClosedFdError) as info:
                loop.main_loop_wait(nonblocking=True)
            newest_first = [r for r, _ in reversed(pipes)]
            notes = getattr(info.value, "__notes__", [])
            assert [info.value.fd, *(int(n.split("fd ")[1].split()[0]) for n in notes)] == newest_first, notes
            assert loop.records() == []
    finally:
        for _, w in pipes:
            os.close(w)
