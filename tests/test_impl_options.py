"""MainLoop(check_files=False): an epoll-only opt-out of the per-event identity check (R33)."""

from __future__ import annotations

import socket

import pytest

from iohandler.impl import ClosedFdError, MainLoop


def test_poll_keeps_checking() -> None:
    # R33: on poll a closed registered fd is NVAL on every call; without the check the loop would
    # spin. The opt-out must not reach a poller that follows fd numbers.
    a, b = socket.socketpair()
    with MainLoop("poll", check_files=False) as loop:
        calls: list[object] = []
        loop.set_fd_handler(a.fileno(), calls.append, opaque="a")
        loop.main_loop_wait(nonblocking=True)
        fd = a.fileno()
        a.close()
        with pytest.raises(ClosedFdError) as info:
            for _ in range(3):
                loop.main_loop_wait(nonblocking=True)
        assert str(fd) in str(info.value)
        assert calls == []
        assert [r.fd for r in loop.records()] == []
    b.close()


def test_trusted_epoll_still_dispatches_and_drops_forgotten_fds() -> None:
    a, b = socket.socketpair()
    with MainLoop("epoll", check_files=False) as loop:
        calls: list[object] = []
        loop.set_fd_handler(a, lambda s: calls.append(s.recv(1)), opaque=a)
        b.send(b"x")
        loop.main_loop_wait(nonblocking=True)
        assert calls == [b"x"]
        # Without a dup, epoll forgets a closed fd by itself: no spin, no call.
        b.send(b"y")
        a.close()
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        assert calls == [b"x"]
    b.close()
