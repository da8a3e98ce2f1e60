"""R35 attack (round r35b): close() of a loop with a signal handler, cut inside
`SignalSet.close()` (impl/loop.py:1098 calls it outside the try that finishes the release).
Each case runs in its own interpreter (tests/interrupts_api/close_signal_cases.py). Red at
d7e961d."""

from __future__ import annotations

import pytest

from iohandler.impl import signalfd_available
from tests.interrupts_api.plant import run_case

MECHS = ["signalfd", "wakeup"] if signalfd_available() else ["wakeup"]


def _run(point: str, mech: str) -> None:
    run_case("close_signal_cases", point, mech)


@pytest.mark.parametrize("mech", MECHS)
def test_close_cut_between_two_removes_is_half_a_close(mech: str) -> None:
    """Cut at the entry of SignalSet.close's second `remove` (signals.py:713): the loop stays
    open with one of its two handlers (R35: close() happened whole or not at all)."""
    _run("between-removes", mech)


@pytest.mark.parametrize("mech", MECHS)
def test_close_cut_at_the_signal_set_s_fd_release_is_half_a_close(mech: str) -> None:
    """Cut at the entry of `SignalSet._close_fds` (signals.py:716, after every handler is
    removed and `self.closed = True`): the exception leaves loop.close() before
    `self._closed = True` and outside its `finish`. The loop stays open with its handler gone
    (a signal sent is never delivered), and the next close() skips the signal set (it is marked
    closed): its signalfd / epoll / pipe fds stay open for good (R35: close() happened whole or
    not at all; R64)."""
    _run("close-fds-entry", mech)
