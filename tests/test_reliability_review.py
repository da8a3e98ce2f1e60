"""The loop against the adversarial review of issue 20's fixes (notes: attack-loop), and the
trace difference `iohandler conform --exhaustive` found. Each test was seen red before its fix."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from iohandler.impl import ClosedFdError, MainLoop
from iohandler.impl.kernel import _probe_kcmp, same_file_check
from tests.support import Pairs, drain, open_fds

POLLERS = ["epoll", "poll", "selectors"]


# ------------------------------------------- A: a re-deleted revived record is reaped (R19)


@pytest.mark.parametrize("poller", POLLERS)
def test_r19_a_revived_record_deleted_again_ahead_of_the_walk_is_reaped_when_passed(poller: str, socks: Pairs) -> None:
    """specs/vectors/rules/r19-redeleted-after-revival-reaped-when-passed.json, on the loop:
    t deleted behind a walk, revived in place (R5), deleted again by a newer record's handler
    before the walk reaches it: the walk passes it and reaps it, so t registered again is a
    new record at the head (R2), not the old one revived in place."""
    (s, s_peer), (t, _), (u, u_peer) = socks.pair(), socks.pair(), socks.pair()

    def delete_t(sock: socket.socket) -> None:
        loop.set_fd_handler(t, None, None)
        drain(sock)

    with MainLoop(poller) as loop:
        loop.set_fd_handler(s, lambda _: delete_t(s), None)
        loop.set_fd_handler(t, lambda _: None, None)
        s_peer.send(b"x")
        loop.main_loop_wait(nonblocking=True)  # t deleted behind the walk (it is newer than s)
        loop.set_fd_handler(t, lambda _: None, None)  # revived in place (R5)
        loop.set_fd_handler(u, lambda _: delete_t(u), None)
        u_peer.send(b"x")
        loop.main_loop_wait(nonblocking=True)  # u deletes t; the walk then passes t: reaped
        assert [h.fd for h in loop.records()] == [u.fileno(), s.fileno()]
        loop.set_fd_handler(t, lambda _: None, None)
        assert [h.fd for h in loop.records()] == [t.fileno(), u.fileno(), s.fileno()]


# ------------------------------------ B: witnesses and the kcmp probe let their fds go (R34)


@pytest.mark.parametrize("poller", POLLERS)
def test_r34_deleting_a_gated_anonymous_record_lets_its_witness_go_in_an_idle_loop(poller: str) -> None:
    """A record behind a closed gate (R10) is not in the kernel set; its witness is all it
    holds, and a delete lets it go at once: an idle loop never walks to reap the record."""
    if same_file_check() is None:
        pytest.skip("kcmp(2) is missing or refused here: no witnesses are kept (R34)")
    with MainLoop(poller) as loop:
        before = open_fds()
        efds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(20)]
        for e in efds:
            loop.set_fd_handler(e, lambda _: None, can_read=lambda _: False)
        loop.main_loop_wait(nonblocking=True)  # filled: gates closed, nothing polled
        for e in efds:
            loop.set_fd_handler(e, None, None)
        for e in efds:
            os.close(e)
        for _ in range(5):
            assert loop.main_loop_wait(nonblocking=True) == 0  # idle: no walk, no reap
        assert open_fds() - before == set()


def test_r34_the_kcmp_probe_closes_what_it_opened_when_an_open_fails() -> None:
    """Exactly two fds free: the probe's eventfd and dup succeed, its second eventfd fails
    (EMFILE); both that it opened are closed."""
    before = open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(before) + 8, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                filler.append(os.dup(0))
        os.close(filler.pop())
        os.close(filler.pop())
        with pytest.raises(OSError):
            _probe_kcmp()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert open_fds() == before


# ------------------------------- C: the original exception leaves, whatever describing does (R32)


class _Hostile:
    """A bound method of this is described through a repr that raises KeyboardInterrupt; the
    object itself as the callable: that repr, then a __getattr__ (__qualname__) raising SystemExit."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __repr__(self) -> str:
        raise KeyboardInterrupt("from repr")

    def __getattr__(self, name: str) -> object:
        raise SystemExit(f"from __getattr__({name})")

    def __call__(self, *_: object) -> bool:
        raise self.exc

    def method(self, *_: object) -> bool:
        raise self.exc


class _Original(Exception):
    pass


def _frozen_notes() -> _Original:
    e = _Original("the original")
    e.__notes__ = ("frozen",)  # type: ignore[assignment]  # add_note refuses a tuple (TypeError)
    return e


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("where", ["read", "write", "gate", "timer"])
@pytest.mark.parametrize("how", ["repr-raises-keyboardinterrupt", "callable-repr-and-getattr-raise", "notes-frozen"])
def test_r32_the_original_exception_leaves_whatever_describing_or_noting_raises(
    poller: str, where: str, how: str, socks: Pairs
) -> None:
    if how == "notes-frozen":

        def raise_it(*_: object) -> bool:
            raise _frozen_notes()

        cb: object = raise_it
    else:
        hostile = _Hostile(_Original("the original"))
        cb = hostile.method if how == "repr-raises-keyboardinterrupt" else hostile
    with MainLoop(poller) as loop:
        a, b = socks.pair()
        b.send(b"x")
        if where == "read":
            loop.set_fd_handler(a, cb)  # type: ignore[arg-type]
        elif where == "write":
            loop.set_fd_handler(a, None, cb)  # type: ignore[arg-type]
        elif where == "gate":
            loop.set_fd_handler(a, print, can_read=cb)  # type: ignore[arg-type]
        else:
            loop.call_later(0, cb)  # type: ignore[arg-type]
        with pytest.raises(_Original, match="the original") as e:
            loop.main_loop_wait(timeout=1.0)
        notes = list(getattr(e.value, "__notes__", []))
        if how == "notes-frozen":
            assert notes == ["frozen"]
        else:
            assert len(notes) == 1 and "_Hostile" in notes[0], notes
        loop.set_fd_handler(a, None)
        assert loop.main_loop_wait(nonblocking=True) >= 0  # still usable


# ------------------------------ E: pty masters, files fstat cannot tell apart (R33, R34)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 100)
    except BlockingIOError:
        return b""


def _iterate(loop: MainLoop, n: int) -> list[int]:
    """`n` short waits; the fds of the ClosedFdErrors they raised."""
    raised: list[int] = []
    for _ in range(n):
        try:
            loop.main_loop_wait(timeout=0.02)
        except ClosedFdError as e:
            raised.append(e.fd)
    return raised


@contextlib.contextmanager
def _ptys(owned: list[int]) -> Iterator[None]:
    try:
        yield
    finally:
        for fd in owned:
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("reregister", [False, True])
def test_r34_a_pty_master_closed_without_a_delete_never_reaches_the_pty_that_took_its_number(
    poller: str, reregister: bool
) -> None:
    """Every pty master has the /dev/ptmx node's (st_dev, st_ino): the loop tells them apart by
    the open file (its witness, R34). A dup keeps the old master alive with input pending; the
    new master takes the number with input of its own. The old handler is never called; the
    record is removed with ClosedFdError; registering the number again is a fresh kernel
    registration: the new handler gets the new pty's input, never the old one's (no spin)."""
    if same_file_check() is None:
        pytest.skip("kcmp(2) is missing or refused here: pty masters cannot be told apart (R34)")
    owned: list[int] = []
    with _ptys(owned), MainLoop(poller) as loop:
        m1, s1 = os.openpty()
        owned += [s1]
        old_calls: list[bytes] = []
        loop.set_fd_handler(m1, lambda _: old_calls.append(_read(m1)))
        loop.main_loop_wait(nonblocking=True)
        keep = os.dup(m1)
        owned.append(keep)
        os.close(m1)
        m2, s2 = os.openpty()
        owned += [m2, s2]
        assert m2 == m1, "the number was not reused"
        os.set_blocking(m2, False)
        os.write(s1, b"old\n")  # input on the old master, reachable only through `keep`
        new_calls: list[bytes] = []
        if reregister:
            loop.set_fd_handler(m2, lambda _: new_calls.append(_read(m2)))
            assert _iterate(loop, 5) == []
            assert new_calls == []  # the old pty's input does not reach it
            os.write(s2, b"new\n")
            _iterate(loop, 5)
            assert b"".join(new_calls).startswith(b"new")
        else:
            os.write(s2, b"new\n")
            assert _iterate(loop, 5) == [m1]
            loop.check_fds()  # nothing left to find
        assert old_calls == []


# ----------------------------------- F: signal handlers and the wait (R35, what is promised)


@contextlib.contextmanager
def _sigalrm(handler: Callable[[int, object], None]) -> Iterator[None]:
    old = signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("how", ["notify", "call_later"])
def test_r35_a_signal_handlers_hand_off_during_the_kernel_wait_ends_it(poller: str, how: str) -> None:
    """The promised case: the signal arrives while the wait is in the kernel (0.1 s into a 5 s
    wait); its Python handler's notify() or call_later(0) ends the wait at once."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Python signal handlers run only in the main thread")
    ran: list[int] = []
    with MainLoop(poller) as loop:

        def on_alarm(_: int, __: object) -> None:
            if how == "notify":
                loop.notify()
            else:
                loop.call_later(0, ran.append, 1)

        with _sigalrm(on_alarm):
            loop.main_loop_wait(nonblocking=True)
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            t0 = time.monotonic()
            loop.main_loop_wait(timeout=5.0)
            elapsed = time.monotonic() - t0
        assert elapsed < 2.0, f"the wait went on for {elapsed:.2f} s after the signal"
        if how == "call_later":
            if not ran:
                loop.main_loop_wait(nonblocking=True)
            assert ran == [1]


@pytest.mark.parametrize("poller", POLLERS)
def test_r35_the_documented_remedy_a_wakeup_fd_registered_with_the_loop_ends_the_wait(poller: str) -> None:
    """What R35 tells a program that needs every signal to end the wait: point
    signal.set_wakeup_fd at an fd registered with the loop; the signal itself (its handler does
    nothing) then makes that fd readable, whenever it arrives."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal.set_wakeup_fd works only in the main thread")
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    got: list[bytes] = []
    prev = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        with MainLoop(poller) as loop, _sigalrm(lambda *_: None):
            loop.set_fd_handler(r, lambda _: got.append(os.read(r, 64)))
            loop.main_loop_wait(nonblocking=True)
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            t0 = time.monotonic()
            loop.main_loop_wait(timeout=5.0)
            elapsed = time.monotonic() - t0
            loop.set_fd_handler(r, None)
    finally:
        signal.set_wakeup_fd(prev)
        os.close(r)
        os.close(w)
    assert elapsed < 2.0
    assert got and got[0][:1] == bytes([signal.SIGALRM])
