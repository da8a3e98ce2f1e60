"""R35 attack (round r35b) on close() of a loop with signal handlers, one case per process
(the cases change the process's signal state when they find a defect). `python -m
tests.interrupts_api.close_signal_cases POINT MECHANISM`; exit status 0: after the cut close() the
loop is either closed whole or not closed at all, and no fd is left open."""

from __future__ import annotations

import signal
import sys
import threading

from iohandler.impl import MainLoop, SignalInfo
from tests.interrupts_api.plant import EntryInjector, Injector, point_index, run_with
from tests.support import lock_is_free, open_fds

U1, U2 = int(signal.SIGUSR1), int(signal.SIGUSR2)
MAIN = threading.main_thread().ident or 0

# point: (function, text of its line, entry?, nth)
POINTS = {
    # SignalSet.close: every handler removed and `closed = True`, the fds not closed yet
    "close-fds-entry": ("_close_fds", "", True, 1),
    # SignalSet.close's `for signum in list(self.handlers): self.remove(signum)`: the entry of
    # the second remove, the first handler gone
    "between-removes": ("remove", "", True, 2),
}


def main(point: str, mech: str) -> None:
    signal.signal(U1, signal.SIG_IGN)
    signal.signal(U2, signal.SIG_IGN)
    got: list[int] = []

    def on_signal(info: SignalInfo) -> None:
        got.append(info.signo)

    def build() -> MainLoop:
        loop = MainLoop("epoll", signal_mechanism=mech)
        loop.add_signal_handler(U1, on_signal)
        loop.add_signal_handler(U2, on_signal)
        return loop

    func, text, entry, nth = POINTS[point]
    probe = build()
    n, entry = point_index(probe.close, func, text, entry=entry, nth=nth)
    before = open_fds()
    loop = build()
    inj = (EntryInjector if entry else Injector)(n)
    exc = run_with(inj, loop, lambda lp: lp.close())
    assert inj.fired and isinstance(exc, KeyboardInterrupt), f"{exc!r}"
    assert lock_is_free(loop)
    problems = []
    if not loop.closed:
        # Not closed: then close() did not happen, and the handler must still be there.
        sigs = loop.signal_set
        listed = set(sigs.handlers) if sigs is not None else set()
        if listed != {U1, U2}:
            problems.append(
                f"close() cut: the loop is open with handlers {sorted(listed)} of [{U1}, {U2}] (half a close)"
            )
        for s in (U1, U2):
            signal.pthread_kill(MAIN, s)
        for _ in range(3):
            loop.main_loop_wait(timeout=0.05)
        if {U1, U2} - set(got):
            problems.append(f"the open loop's handlers did not all run (got {got})")
    try:
        loop.close()
    except BaseException as e:
        problems.append(f"the second close() raised {e!r}")
    leaked = open_fds() - before
    if leaked:
        problems.append(f"fds left open after close(): {sorted(leaked)}")
    if problems:
        print("; ".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
