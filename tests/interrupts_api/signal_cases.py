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


# case: (handlers added before, the call (loop, callback), function of the point, text of its
# line, entry?)
Case = tuple[tuple[int, ...], Callable[[MainLoop, Callable[[SignalInfo], None]], object], str, str, bool]


def ADD(lp: MainLoop, cb: Callable[[SignalInfo], None]) -> None:  # a case's call, named as a constant
    lp.add_signal_handler(U1, cb)


CASES: dict[str, Case] = {
    # signals.py:336, `self._saved.pop(signum)` returned, `signal.signal` not called (wakeup)
    "remove-saved-popped": (
        (U1,),
        lambda lp, _cb: lp.remove_signal_handler(U1),
        "_remove",
        "signal.signal(signum, self._saved[signum])",
        False,
    ),
    # signals.py:326, entry of `_discard_pending`: the signalfd no longer takes the signal
    # (:325), the handler is still listed
    "remove-signalfd-narrowed": (
        (U1, U2),
        lambda lp, _cb: lp.remove_signal_handler(U1),
        "_discard_pending",
        "",
        True,
    ),
    # signals.py:344-346, the last handler deleted, the process not released yet
    "remove-last-before-release": (
        (U1,),
        lambda lp, _cb: lp.remove_signal_handler(U1),
        "_remove",
        "loop = self._loop()",
        False,
    ),
    # signals.py:296: the last point of `_take_process()` (its `with _owner_lock` exit, after
    # `_holding = True`), outside add's try that would release it
    "add-first-after-take": ((), lambda lp, cb: lp.add_signal_handler(U1, cb), "_take_process", "", False),
    # round r35b: add_signal_handler(U1), a known limit (SPEC R35): each case is kept red
    # signals.py:422, `os.pipe()` returned, `self._pipe` not stored: both ends leak
    "first-add-after-pipe": ((), ADD, "_take_process", "os.pipe()", False),
    # signals.py:428 (wakeup), `signal.set_wakeup_fd(...)` returned, `_holding` not set: the
    # release skips the wakeup fd, which keeps naming the pipe close() then closes
    "first-add-after-set-wakeup-fd": ((), ADD, "_take_process", "signal.set_wakeup_fd(self._pipe[1]", False),
    # signals.py:479 (signalfd), `pthread_sigmask(SIG_BLOCK)` returned, outside the try that
    # unblocks: the signal stays blocked with no handler, after close() too
    "add-after-block": ((U2,), ADD, "_add_signalfd", "signal.pthread_sigmask(signal.SIG_BLOCK, {signum})", False),
    # signals.py:507 (wakeup), `signal.signal(signum, _wakeup_handler)` returned, the previous
    # disposition not saved: the loop's handler stays installed, after close() too
    "add-after-disposition": ((U2,), ADD, "_add_wakeup", "signal.signal(signum, _wakeup_handler)", False),
    # signals.py:307, `self._loop()` (a weakref call) returned: the handler is listed, the
    # signal record never registered (no delivery); close() then raises ValueError from
    # `_unregister_signal_record` (fd -1) and the process stays held
    "first-add-before-record": ((), ADD, "add", "loop = self._loop()", False),
    # loop.py:476, the entry of `_register_signal_record`, inside add's try: its except calls
    # `remove`, whose `_unregister_signal_record` raises ValueError (`_signal_fd` is still -1),
    # which replaces the KeyboardInterrupt; finish's repeats never reach `_release_process`
    "first-add-at-record-entry": ((), ADD, "_register_signal_record", "", True),
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
    n, entry = point_index(lambda: call(probe, on_signal), func, text, entry=entry, nth=nth)
    probe.close()
    assert process_state() == base, "the counting run itself changed the process"
    fds = open_fds()
    loop = build()
    inj = (EntryInjector if entry else Injector)(n)
    exc = run_with(inj, loop, lambda lp: call(lp, on_signal))
    assert inj.fired
    problems = []
    if not isinstance(exc, KeyboardInterrupt):
        problems.append(f"the planted exception was replaced by {exc!r}")
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
    if missing:
        problems.append(f"handlers listed for {sorted(missing)} but not delivered (got {got})")
    problems += recovery_problems(loop, mech, base, on_signal, fds)
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
