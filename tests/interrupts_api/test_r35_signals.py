"""R35 attack on add_signal_handler / remove_signal_handler / close() (R60-R65): a
KeyboardInterrupt at one named point of the call; each case runs in its own interpreter
(tests/interrupts_api/signal_cases.py says why and what it checks). Red at 945d444."""

from __future__ import annotations

import pytest

from iohandler.impl import signalfd_available
from tests.interrupts_api.plant import run_case

MECHS = ["signalfd", "wakeup"] if signalfd_available() else ["wakeup"]


def _run(case: str, mech: str) -> None:
    run_case("signal_cases", case, mech)


def test_remove_cut_after_the_saved_disposition_is_popped_wakeup() -> None:
    """signals.py:336 (wakeup): `self._saved.pop(signum)` returned, the disposition not put
    back: the handler stays listed, every later remove and close() raise KeyError, and the
    process keeps the loop's disposition and its wakeup fd (R64, R35)."""
    _run("remove-saved-popped", "wakeup")


@pytest.mark.skipif(not signalfd_available(), reason="signalfd: Linux only")
def test_remove_cut_after_the_signalfd_is_narrowed() -> None:
    """signals.py:326, the entry of `_discard_pending` (signalfd): `_signalfd(self._sfd, rest)`
    at :325 made the signalfd stop taking SIGUSR1; the handler is still listed and the signal
    still blocked: SIGUSR1 is never delivered to it (R63, R35)."""
    _run("remove-signalfd-narrowed", "signalfd")


@pytest.mark.parametrize("mech", MECHS)
def test_remove_of_the_last_handler_cut_before_the_process_is_released(mech: str) -> None:
    """signals.py:344-346: the last handler deleted, `_release_process` not reached: the loop
    has no handler, so close() releases nothing; the process stays owned by the closed loop (no
    loop can take signals again: "another loop holds signal handlers"), and with the wakeup
    mechanism `signal.set_wakeup_fd` keeps naming the closed pipe (R64, R35)."""
    _run("remove-last-before-release", mech)


@pytest.mark.parametrize("mech", MECHS)
def test_first_add_cut_after_the_process_is_taken(mech: str) -> None:
    """signals.py:296: cut at the last point of `_take_process()` (its `with _owner_lock`
    exit, after `_holding = True`), outside add's try that releases it on failure: the loop
    holds the process with no handler; the same as above (R64, R35)."""
    _run("add-first-after-take", mech)
