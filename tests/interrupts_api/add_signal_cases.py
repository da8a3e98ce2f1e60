"""R35 attack (round r35b) on add_signal_handler, one case per process (a defect changes the
process's signal state for good). `python -m tests.interrupts_api.add_signal_cases CASE MECHANISM`;
exit status 0: after the cut add the handler is either there (listed and delivered) or not
(not listed), the planted KeyboardInterrupt left unchanged, and close() puts the process back:
mask, dispositions, wakeup fd, no fd left open, another loop may take signals (R35, R64).

add_signal_handler has no `finish`: only the first add's `_take_process` was moved inside the
try at d7e961d; every point below is after a C call or at a function's entry (where CPython 3.11
runs signal handlers)."""

from __future__ import annotations

import signal
import sys
import threading

from iohandler.impl import MainLoop, SignalInfo
from tests.interrupts_api.plant import EntryInjector, Injector, point_index, run_with
from tests.interrupts_api.signal_cases import process_state, recovery_problems
from tests.support import lock_is_free, open_fds

U1, U2 = int(signal.SIGUSR1), int(signal.SIGUSR2)
MAIN = threading.main_thread().ident or 0

# case: (handlers added before, function of the point, text of its line, entry?)
CASES: dict[str, tuple[tuple[int, ...], str, str, bool]] = {
    # signals.py:422, `os.pipe()` returned, `self._pipe` not stored: both ends leak
    "first-add-after-pipe": ((), "_take_process", "os.pipe()", False),
    # signals.py:428 (wakeup), `signal.set_wakeup_fd(...)` returned, `_holding` not set: the
    # release skips the wakeup fd, which keeps naming the pipe close() then closes
    "first-add-after-set-wakeup-fd": ((), "_take_process", "signal.set_wakeup_fd(self._pipe[1]", False),
    # signals.py:479 (signalfd), `pthread_sigmask(SIG_BLOCK)` returned, outside the try that
    # unblocks: the signal stays blocked with no handler, after close() too
    "add-after-block": ((U2,), "_add_signalfd", "signal.pthread_sigmask(signal.SIG_BLOCK, {signum})", False),
    # signals.py:507 (wakeup), `signal.signal(signum, _wakeup_handler)` returned, the previous
    # disposition not saved: the loop's handler stays installed, after close() too
    "add-after-disposition": ((U2,), "_add_wakeup", "signal.signal(signum, _wakeup_handler)", False),
    # signals.py:307, `self._loop()` (a weakref call) returned: the handler is listed, the
    # signal record never registered (no delivery); close() then raises ValueError from
    # `_unregister_signal_record` (fd -1) and the process stays held
    "first-add-before-record": ((), "add", "loop = self._loop()", False),
    # loop.py:476, the entry of `_register_signal_record`, inside add's try: its except calls
    # `remove`, whose `_unregister_signal_record` raises ValueError (`_signal_fd` is still -1),
    # which replaces the KeyboardInterrupt; finish's repeats never reach `_release_process`
    "first-add-at-record-entry": ((), "_register_signal_record", "", True),
}


def main(case: str, mech: str) -> None:
    for s in (U1, U2):
        signal.signal(s, signal.SIG_IGN)
    base = process_state()
    before, func, text, entry = CASES[case]
    got: list[int] = []

    def on_signal(info: SignalInfo) -> None:
        got.append(info.signo)

    def build() -> MainLoop:
        loop = MainLoop("epoll", signal_mechanism=mech)
        for s in before:
            loop.add_signal_handler(s, on_signal)
        return loop

    probe = build()
    n, entry = point_index(lambda: probe.add_signal_handler(U1, on_signal), func, text, entry=entry)
    probe.close()
    assert process_state() == base, "the counting run itself changed the process"
    fds = open_fds()
    loop = build()
    inj = (EntryInjector if entry else Injector)(n)
    exc = run_with(inj, loop, lambda lp: lp.add_signal_handler(U1, on_signal))
    assert inj.fired
    problems = []
    if not isinstance(exc, KeyboardInterrupt):
        problems.append(f"the planted exception was replaced by {exc!r}")
    assert lock_is_free(loop)
    sigs = loop.signal_set
    handlers = set(sigs.handlers) if sigs is not None else set()
    for s in (U1, U2):
        signal.pthread_kill(MAIN, s)
    for _ in range(3):
        loop.main_loop_wait(timeout=0.05)
    missing = handlers - set(got)
    if missing:
        problems.append(f"handlers listed for {sorted(missing)} but not delivered (got {got})")
    problems += recovery_problems(loop, mech, base, on_signal, fds)
    if problems:
        print("; ".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
