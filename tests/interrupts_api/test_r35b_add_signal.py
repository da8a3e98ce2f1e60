"""R35 attack (round r35b) on add_signal_handler (R60-R65): a KeyboardInterrupt at one named
point of the call; each case runs in its own interpreter (tests/interrupts_api/signal_cases.py
says what each point is and what it checks). All red at d7e961d."""

from __future__ import annotations

import pytest

from iohandler.impl import signalfd_available
from tests.interrupts_api.plant import run_case

# Kept red on purpose: each test shows a limit the loop has today (strict: a fix shows as XPASS).
pytestmark = pytest.mark.xfail(
    strict=True,
    reason=(
        "R35 limit, open: add_signal_handler is not yet all-or-nothing under a signal handler's exception "
        "(the pipe, the wakeup fd, the mask, the disposition or the process hold can be left behind; SPEC "
        "R35)"
    ),
)

MECHS = ["signalfd", "wakeup"] if signalfd_available() else ["wakeup"]
SIGNALFD = pytest.mark.skipif(not signalfd_available(), reason="signalfd: Linux only")


def _run(case: str, mech: str) -> None:
    run_case("signal_cases", case, mech)


@pytest.mark.parametrize("mech", MECHS)
def test_first_add_cut_after_the_pipe_is_made_leaks_it(mech: str) -> None:
    """signals.py:422: both ends of `os.pipe()` leak (stored in `_pipe` only later)."""
    _run("first-add-after-pipe", mech)


def test_first_add_cut_after_set_wakeup_fd_leaves_it_naming_a_closed_pipe() -> None:
    """signals.py:428 (wakeup): `_holding` not yet set, so `_release_process` skips the
    restore; after close() the process's wakeup fd names the closed pipe (R64, R65)."""
    _run("first-add-after-set-wakeup-fd", "wakeup")


@SIGNALFD
def test_add_cut_after_the_block_leaves_the_signal_blocked() -> None:
    """signals.py:479 (signalfd): blocked, outside the try that unblocks: SIGUSR1 stays
    blocked in the main thread with no handler, after close() too (R64)."""
    _run("add-after-block", "signalfd")


def test_add_cut_after_the_disposition_is_set_leaves_it() -> None:
    """signals.py:507 (wakeup): the loop's `_wakeup_handler` installed, the previous
    disposition not saved: it stays, after close() too (R64)."""
    _run("add-after-disposition", "wakeup")


@pytest.mark.parametrize("mech", MECHS)
def test_first_add_cut_before_the_signal_record_is_registered(mech: str) -> None:
    """signals.py:307 (`self._loop()` returns): the handler is listed but never delivered,
    close() raises ValueError, fds leak and no loop can take signals again (R35, R60, R64)."""
    _run("first-add-before-record", mech)


@pytest.mark.parametrize("mech", MECHS)
def test_first_add_cut_at_the_record_s_registration_replaces_the_exception(mech: str) -> None:
    """loop.py:476, the entry of `_register_signal_record`: add's undo (`remove`) raises
    ValueError (fd -1), which leaves instead of the KeyboardInterrupt (R35: the exception
    leaves unchanged), and the process stays held (R64)."""
    _run("first-add-at-record-entry", mech)
