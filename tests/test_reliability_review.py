"""The loop against the adversarial review of issue 20's fixes (notes: attack-loop), and the
trace difference `iohandler conform --exhaustive` found. Each test was seen red before its fix."""

from __future__ import annotations

import socket

import pytest

from iohandler.impl import MainLoop
from tests.support import Pairs, drain

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
