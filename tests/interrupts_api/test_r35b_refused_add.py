"""R35 attack (round r35b): a context add the kernel refuses (R30), cut by a signal handler's
exception before the kernel call. `errors.finish` repeats `_publish`, swallows the refusal each
time (UnpollableFdError, 8 times) and re-raises the KeyboardInterrupt; set_fd_handler's
`except FdError` (which unlinks a fresh node) is never reached. Red at d7e961d."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from iohandler.impl import MainLoop
from iohandler.impl.errors import UnpollableFdError
from tests.interrupts_api.plant import EntryInjector, Injector, point_index, run_with
from tests.support import kernel_registrations, lock_is_free

# /dev/null is a character device (the up-front regular-file check passes it) whose driver has
# no poll method: epoll_ctl refuses it with EPERM, and so does the selectors poller (epoll).
POLLERS = ["epoll", "selectors"]


@pytest.fixture
def devnull() -> Iterator[int]:
    fd = os.open("/dev/null", os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.mark.parametrize("point", [("_publish", "", True), ("_sync_or_defer", "", True)])
@pytest.mark.parametrize("poller", POLLERS)
def test_refused_context_add_cut_before_the_kernel_call_leaves_a_listed_node(
    poller: str, point: tuple[str, str, bool], devnull: int
) -> None:
    """Uncut, `loop.context.set_fd_handler(/dev/null, ...)` raises UnpollableFdError and leaves
    nothing (R30). Cut at the entry of `_publish` (or of `_sync_or_defer`), the node stays
    listed by handlers() though the kernel never took the fd: neither "happened" (a refusal
    leaves nothing) nor "not happened" (R35), and the refusal is hidden (R30: the caller
    never learns the fd cannot be polled)."""
    with MainLoop(poller) as uncut:
        with pytest.raises(UnpollableFdError):
            uncut.context.set_fd_handler(devnull, lambda _o: None, None)
        assert uncut.context.handlers() == []
    func, text, entry = point
    with MainLoop(poller) as probe:
        n, entry = point_index(
            lambda: probe.context.set_fd_handler(devnull, lambda _o: None, None), func, text, entry=entry
        )
    with MainLoop(poller) as loop:
        inj = (EntryInjector if entry else Injector)(n)
        exc = run_with(inj, loop, lambda lp: lp.context.set_fd_handler(devnull, lambda _o: None, None))
        assert inj.fired
        assert isinstance(exc, KeyboardInterrupt), f"the planted exception was replaced: {exc!r}"
        assert lock_is_free(loop)
        listed = [h.fd for h in loop.context.handlers() if not h.deleted]
        polled = devnull in dict(kernel_registrations(loop))
        assert listed == [], f"handlers() lists the refused fd {listed}; the kernel polls it: {polled}"
