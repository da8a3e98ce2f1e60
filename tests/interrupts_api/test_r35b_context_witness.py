"""R35 attack (round r35b): the context's witness of an anonymous file (R34, `_witness`), cut
as `os.dup` returns. `_witness` runs inside set_fd_handler's try but outside the repeated step
(`finish` repeats only `_publish`). Red at d7e961d."""

from __future__ import annotations

import os

import pytest

from iohandler.impl import MainLoop
from tests.interrupts_api.plant import Injector, point_index, run_with
from tests.support import lock_is_free, open_fds

# Kept red on purpose: each test shows a limit the loop has today (strict: a fix shows as XPASS).
pytestmark = pytest.mark.xfail(
    strict=True,
    reason=(
        "R35 limit, by design: a witness dup made or forgotten as the cut lands leaks one fd rather than risk "
        "a double close (SPEC R35)"
    ),
)

POLLERS = ["poll", "selectors"]  # where the context keeps witnesses of its own


@pytest.mark.parametrize("poller", POLLERS)
def test_context_add_cut_after_the_witness_dup_leaks_it(poller: str) -> None:
    """context.py:450 `w = os.dup(node.fd)`, cut as the C call returns, before
    `node.witness = w`: the dup is never stored, so neither the delete nor close() closes it:
    one fd leaked per cut add of an eventfd (R35: the call happened whole or not at all; the
    add is finished by `_publish` but the node has no witness either, R34)."""
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        with MainLoop(poller) as warm:  # same_file_check()'s first call probes the kernel: not counted
            warm.context.set_fd_handler(efd, lambda _o: None, None)
        with MainLoop(poller) as probe:
            n, entry = point_index(
                lambda: probe.context.set_fd_handler(efd, lambda _o: None, None), "_witness", "os.dup"
            )
        assert not entry
        before = open_fds()
        loop = MainLoop(poller)
        inj = Injector(n)
        exc = run_with(inj, loop, lambda lp: lp.context.set_fd_handler(efd, lambda _o: None, None))
        assert inj.fired
        assert isinstance(exc, KeyboardInterrupt), f"the planted exception was replaced: {exc!r}"
        assert lock_is_free(loop)
        loop.context.set_fd_handler(efd, None, None)
        loop.close()
        leaked = open_fds() - before
        assert not leaked, f"fds left open after the delete and close(): {sorted(leaked)}"
    finally:
        os.close(efd)


@pytest.mark.parametrize("poller", ["epoll", "poll", "selectors"])
def test_add_cut_after_the_kernel_witness_dup_leaks_it(poller: str) -> None:
    """The loop's own witness (Kernel.bind, kernel.py:225 `new = os.dup(fd)`), cut as the C call
    returns, before `self.witnesses[fd] = new`: kernel.py's comment accepts "one fd, no lost
    work", but `finish` then repeats `_register`, whose `bind` dups again and stores the second:
    the first dup is never closed (R35: fds left by a cut call; the same standard close() is
    held to)."""
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        with MainLoop(poller) as warm:
            warm.set_fd_handler(efd, lambda _o: None)
        with MainLoop(poller) as probe:
            n, entry = point_index(lambda: probe.set_fd_handler(efd, lambda _o: None), "bind", "os.dup")
        assert not entry
        before = open_fds()
        loop = MainLoop(poller)
        inj = Injector(n)
        exc = run_with(inj, loop, lambda lp: lp.set_fd_handler(efd, lambda _o: None))
        assert inj.fired
        assert isinstance(exc, KeyboardInterrupt), f"the planted exception was replaced: {exc!r}"
        assert lock_is_free(loop)
        loop.set_fd_handler(efd, None)
        loop.main_loop_wait(nonblocking=True)
        loop.close()
        leaked = open_fds() - before
        assert not leaked, f"fds left open after the delete and close(): {sorted(leaked)}"
    finally:
        os.close(efd)


@pytest.mark.parametrize("poller", ["epoll", "poll", "selectors"])
def test_delete_cut_after_the_witness_is_popped_leaks_it(poller: str) -> None:
    """set_fd_handler(efd, None), the delete of an anonymous file's record: Kernel.release
    drops its witness in `_release_witness` (kernel.py:246-248), `w = self.witnesses.pop(fd,
    None)` then `os.close(w)`. Cut as the C call `pop` returns, the witness is out of the map
    and never closed, by the delete (not finished: it has no `finish`), by a later fill or by
    close() (R35: fds left by a cut call)."""
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:

        def build() -> MainLoop:
            lp = MainLoop(poller)
            lp.set_fd_handler(efd, lambda _o: None)
            lp.main_loop_wait(nonblocking=True)
            return lp

        with build():
            pass
        probe = build()
        n, entry = point_index(lambda: probe.set_fd_handler(efd, None), "_release_witness", "witnesses.pop")
        probe.close()
        assert not entry
        before = open_fds()
        loop = build()
        inj = Injector(n)
        exc = run_with(inj, loop, lambda lp: lp.set_fd_handler(efd, None))
        assert inj.fired
        assert isinstance(exc, KeyboardInterrupt), f"the planted exception was replaced: {exc!r}"
        assert lock_is_free(loop)
        loop.main_loop_wait(nonblocking=True)
        loop.close()
        leaked = open_fds() - before
        assert not leaked, f"fds left open after the delete and close(): {sorted(leaked)}"
    finally:
        os.close(efd)
