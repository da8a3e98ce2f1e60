"""R35 attack on the signal calls, one case per process (run by test_interrupts_api_signals.py):
the cases change the process's signal state for good when they find a defect, so each runs in a
fresh interpreter. `python -m tests.interrupts_api.signal_cases CASE MECHANISM`; exit status 0: the
state after the cut call is "happened" or "not happened" and the loop and process recover."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

from iohandler.impl import MainLoop, SignalInfo
from tests.interrupts_api.plant import EntryInjector, Injector, point_index, run_with
from tests.support import lock_is_free, open_fds

U1, U2 = int(signal.SIGUSR1), int(signal.SIGUSR2)
MAIN = threading.main_thread().ident or 0


def process_state() -> tuple[frozenset[int], tuple[object, ...], str]:
    mask = frozenset(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])) & {U1, U2}
    fd = signal.set_wakeup_fd(-1)
    wakeup = str(fd)
    if fd != -1:
        try:
            signal.set_wakeup_fd(fd)
        except OSError:  # the runtime writes signal bytes to a number nobody owns now
            wakeup = f"{fd} (a closed fd)"
    return mask, (signal.getsignal(U1), signal.getsignal(U2)), wakeup


# case: (handlers added before, the call, function of the point, text of its line, entry?)
Case = tuple[tuple[int, ...], Callable[[MainLoop], object], str, str, bool]
CASES: dict[str, Case] = {
    # signals.py:336, `self._saved.pop(signum)` returned, `signal.signal` not called (wakeup)
    "remove-saved-popped": (
        (U1,),
        lambda lp: lp.remove_signal_handler(U1),
        "_remove",
        "signal.signal(signum, self._saved[signum])",
        False,
    ),
    # signals.py:326, entry of `_discard_pending`: the signalfd no longer takes the signal
    # (:325), the handler is still listed
    "remove-signalfd-narrowed": (
        (U1, U2),
        lambda lp: lp.remove_signal_handler(U1),
        "_discard_pending",
        "",
        True,
    ),
    # signals.py:344-346, the last handler deleted, the process not released yet
    "remove-last-before-release": (
        (U1,),
        lambda lp: lp.remove_signal_handler(U1),
        "_remove",
        "loop = self._loop()",
        False,
    ),
    # signals.py:296: the last point of `_take_process()` (its `with _owner_lock` exit, after
    # `_holding = True`), outside add's try that would release it
    "add-first-after-take": ((), lambda lp: lp.add_signal_handler(U1, print), "_take_process", "", False),
}


def main(case: str, mech: str) -> None:
    for s in (U1, U2):
        signal.signal(s, signal.SIG_IGN)
    base = process_state()
    before, call, func, text, entry = CASES[case]
    nth = -1 if case == "add-first-after-take" else 1
    got: list[int] = []

    def on_signal(info: SignalInfo) -> None:
        got.append(info.signo)

    def build() -> MainLoop:
        loop = MainLoop("epoll", signal_mechanism=mech)
        for s in before:
            loop.add_signal_handler(s, on_signal)
        return loop

    probe = build()
    n, entry = point_index(lambda: call(probe), func, text, entry=entry, nth=nth)
    probe.close()
    assert process_state() == base, "the counting run itself changed the process"
    loop = build()
    inj = (EntryInjector if entry else Injector)(n)
    exc = run_with(inj, loop, call)
    assert inj.fired and isinstance(exc, KeyboardInterrupt), f"{exc!r}"
    assert lock_is_free(loop)
    sigs = loop.signal_set
    handlers = set(sigs.handlers) if sigs is not None else set()
    # What R35 asks: a signal with a handler listed reaches it.
    for s in (U1, U2):
        signal.pthread_kill(MAIN, s)
    for _ in range(3):
        loop.main_loop_wait(timeout=0.05)
    missing = {s for s in handlers if s not in got}
    # The loop and the process recover: close() works and puts the process back as it was,
    # and another loop may then take signals.
    problems = []
    if missing:
        problems.append(f"handlers listed for {sorted(missing)} but not delivered (got {got})")
    problems += recovery_problems(loop, mech, base, on_signal)
    if problems:
        print("; ".join(problems))
        sys.exit(1)


def recovery_problems(
    loop: MainLoop, mech: str, base: object, on_signal: Callable[[SignalInfo], None], fds: set[int] | None = None
) -> list[str]:
    """What is wrong after the cut call: close() must work and put the process back as it was
    (and, given `fds`, leave no fd open), and another loop must then be able to take signals."""
    problems = []
    try:
        loop.close()
    except BaseException as e:
        problems.append(f"close() raised {e!r}")
    after = process_state()
    if after != base:
        problems.append(f"process state after close {after} != before {base}")
    if fds is not None:
        leaked = open_fds() - fds
        if leaked:
            problems.append(f"fds left open: {sorted(leaked)}")
    try:
        with MainLoop("epoll", signal_mechanism=mech) as other:
            other.add_signal_handler(U1, on_signal)
    except BaseException as e:
        problems.append(f"another loop cannot take signals: {e!r}")
    return problems


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
