"""The loop against the adversarial review of issue 20's fixes (notes: attack-loop), and the
trace difference `iohandler conform --exhaustive` found. Each test was seen red before its fix."""

from __future__ import annotations

import contextlib
import os
import resource
import socket

import pytest

from iohandler.impl import MainLoop
from iohandler.impl.kernel import _probe_kcmp, same_file_check
from tests.support import Pairs, drain, open_fds

POLLERS = ["epoll", "poll", "selectors"]


# ------------------------------------------- A: a re-deleted revived record is reaped (R19)


@pytest.mark.parametrize("poller", POLLERS)
def test_r19_a_revived_record_deleted_again_ahead_of_the_walk_is_reaped_when_passed(
    poller: str, socks: Pairs
) -> None:
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
