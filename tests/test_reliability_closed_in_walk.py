"""R33/R34 inside one walk: a handler closes another ready fd without deleting it, and its number
comes to name another file before the walk reaches it. The old record's handler must not be
called (for the new file, or for a closed fd), on every poller; ClosedFdError names the fd."""

from __future__ import annotations

import os

import pytest

from iohandler.impl import ClosedFdError, MainLoop
from tests.support import Pairs

POLLERS = ["epoll", "poll", "selectors"]


@pytest.mark.parametrize("reuse", [True, False], ids=["reused", "closed"])
@pytest.mark.parametrize("poller", POLLERS)
def test_r34_a_handler_closing_a_later_ready_fd_keeps_its_old_handler_away(
    poller: str, reuse: bool, socks: Pairs
) -> None:
    calls: list[str] = []
    x, x_peer = socks.pair()  # older: walked after `a`
    a, a_peer = socks.pair()
    other, other_peer = socks.pair()
    xfd = x.fileno()
    x_peer.send(b"x")
    other_peer.send(b"o")  # the file that takes x's number is readable too
    a_peer.send(b"a")

    def on_a(_: object) -> None:
        calls.append("a")
        if reuse:
            os.dup2(other.fileno(), xfd)  # x's number now names `other`'s file
        else:
            x.detach()
            os.close(xfd)

    with MainLoop(poller) as loop:
        loop.set_fd_handler(x, lambda _: calls.append("x-old"))
        loop.set_fd_handler(a, on_a)
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == xfd
        assert calls == ["a"]
        assert [r.fd for r in loop.records()] == [a.fileno()]
    if reuse:
        os.close(xfd)
        x.detach()


@pytest.mark.parametrize("first", [True, False], ids=["first-ready", "second-ready"])
@pytest.mark.parametrize("reuse", [True, False], ids=["reused", "closed"])
@pytest.mark.parametrize("poller", POLLERS)
def test_r34_a_read_handler_closing_its_own_fd_keeps_the_write_handler_away(
    poller: str, reuse: bool, first: bool, socks: Pairs
) -> None:
    """The write check comes after the read handler ran (the seed reads fd_write then): if that
    handler closed its own fd (and another file took the number), the record's write handler
    is not called. As the walk's first record or a later one."""
    calls: list[str] = []
    x, x_peer = socks.pair()
    other, other_peer = socks.pair()
    xfd = x.fileno()
    x_peer.send(b"x")
    other_peer.send(b"o")

    def on_read(_: object) -> None:
        calls.append("read")
        if reuse:
            os.dup2(other.fileno(), xfd)
        else:
            x.detach()
            os.close(xfd)

    with MainLoop(poller) as loop:
        loop.set_fd_handler(x, on_read, lambda _: calls.append("write"))
        if not first:
            b, b_peer = socks.pair()
            b_peer.send(b"b")
            loop.set_fd_handler(b, lambda s: calls.append(f"b{s.recv(1).decode()}"), opaque=b)  # newer: first
        with pytest.raises(ClosedFdError) as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == xfd
        assert calls == (["read"] if first else ["bb", "read"])
    if reuse:
        os.close(xfd)
        x.detach()
