"""R35 attack (round r35b) on close(): a KeyboardInterrupt planted at one point of the call
(tests/interrupts_api/plant.py). close() marks the loop closed before its release, so what the
cut release leaves open stays open for good: the release must be finished (R35: "fds left open
by a cut close()"). Red at d7e961d."""

from __future__ import annotations

import os

import pytest

from iohandler.impl import MainLoop
from tests.interrupts_api.plant import EntryInjector, Injector, point_index, run_with
from tests.support import lock_is_free, open_fds

# Kept red on purpose: each test shows a limit the loop has today (strict: a fix shows as XPASS).
pytestmark = pytest.mark.xfail(
    strict=True,
    reason=(
        "R35 limit, by design: a witness is forgotten before it is closed, so a cut between leaks one fd; the "
        "other order could close a number another thread reused (SPEC R35)"
    ),
)

POLLERS = ["epoll", "poll", "selectors"]


def _plant(loop: MainLoop, call: object, n: int, entry: bool) -> None:
    inj = (EntryInjector if entry else Injector)(n)
    exc = run_with(inj, loop, lambda _lp: call())  # type: ignore[operator]
    assert inj.fired
    assert isinstance(exc, KeyboardInterrupt), f"the planted exception was replaced: {exc!r}"
    assert lock_is_free(loop)


@pytest.mark.parametrize("poller", POLLERS)
def test_close_cut_after_a_witness_is_popped_leaks_it(poller: str) -> None:
    """Kernel.close (kernel.py:373) `os.close(self.witnesses.popitem()[1])`, cut as the C call
    `popitem()` returns, before `os.close`: the witness (a dup of a registered eventfd, R34) is
    out of the map, so finish's repeat of `_release` never closes it; the loop is closed and a
    later close() returns at once: one fd leaked per cut (R35)."""
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    try:

        def build() -> MainLoop:
            lp = MainLoop(poller)
            lp.set_fd_handler(efd, lambda _o: None)
            lp.main_loop_wait(nonblocking=True)
            return lp

        probe = build()
        n, entry = point_index(probe.close, "close", "self.witnesses.popitem()")
        before = open_fds()
        loop = build()
        _plant(loop, loop.close, n, entry)
        assert loop.closed
        loop.close()
        leaked = open_fds() - before
        assert not leaked, f"fds left open by a cut close(): {sorted(leaked)}"
    finally:
        os.close(efd)
