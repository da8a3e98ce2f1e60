"""R34: fd-number reuse, a scenario of its own (vectors cannot close the loop's fd)."""

from __future__ import annotations

import contextlib
import os
import socket

from iohandler.impl import MainLoop
from iohandler.impl.driver import LoopFactory
from tests.harness.session import failure


def fd_reuse_scenario(
    make_loop: LoopFactory, poller: str, *, iterate_first: bool, delete_first: bool, ready_old: bool
) -> int:
    """R34: after the loop's fd is closed and its number reused by a new, readable file, the old
    record's handler is never called for the new file (ClosedFdError may say so), and
    registering the number again reaches the new file's handler. Vectors cannot say "close the
    loop's fd", so this is a scenario of its own. Returns how many loop operations it made."""

    from iohandler.impl import ClosedFdError

    calls: list[str] = []
    ops = 0

    def wait(loop: MainLoop) -> None:
        nonlocal ops
        ops += 1
        with contextlib.suppress(ClosedFdError):  # R33: reporting the closed fd is allowed
            loop.main_loop_wait(nonblocking=True)

    old, old_peer = socket.socketpair()
    new: socket.socket | None = None
    new_peer: socket.socket | None = None
    loop = make_loop(poller)
    try:
        loop.set_fd_handler(old, lambda _: calls.append("old"))
        ops += 1
        if ready_old:
            old_peer.send(b"x")
        if iterate_first:
            wait(loop)
        calls.clear()
        number = old.fileno()
        if delete_first:
            loop.set_fd_handler(number, None)
            ops += 1
        old.close()
        new, new_peer = socket.socketpair()
        if new.fileno() != number:  # force the reuse
            os.dup2(new.fileno(), number)
            new.close()
            new = socket.socket(fileno=number)
        new_peer.send(b"y")
        for _ in range(2):
            wait(loop)
            if calls:
                raise failure("R34", f"the old handler ran for the new file that reused fd {number} ({poller})")
        loop.set_fd_handler(new, lambda _: calls.append("new"))
        ops += 1
        for _ in range(2):
            wait(loop)
        if calls[:1] != ["new"] or "old" in calls:
            raise failure("R34", f"after re-registering fd {number} the calls were {calls} ({poller})")
        return ops
    finally:
        loop.close()
        for s in (old, old_peer, new, new_peer):
            if s is not None:
                s.close()
