"""R40: the seed's spins (rules kept, traces kept) do not burn a core.

Three registrations make the seed's loop spin: a gate that registers an fd (every poll then has
timeout 0, R7), a gate that updates a newer ready record (starved for good: R6, R22), and a
write-only record on a pipe's read end whose writer is gone (HUP alone, which no handler takes:
R11, R16). Each runs here for about a second with a reader beside it that gets one byte half-way;
the loop must use a small fraction of a core (process CPU time over wall time), and the reader
must still be called (the pause delays, it changes nothing).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable

import pytest

from iohandler.impl import MainLoop
from tests.support import Pairs, add_stats

RUN_S = 1.0
MAX_CPU = 0.15  # of one core: spinning is 1.0 (0.3 to 0.5 on a busy 2-core machine)


def _noop(_: object) -> None:
    return None


def _gate_registers(loop: MainLoop, owned: Pairs, fds: list[int]) -> None:
    x, _ = owned.pair()
    other, _ = owned.pair()

    def gate(_: object) -> bool:
        loop.set_fd_handler(other, _noop)  # an update: notifies (R7), so the next poll is 0
        return False

    loop.set_fd_handler(x, _noop, can_read=gate)


def _gate_updates_newer_ready(loop: MainLoop, owned: Pairs, fds: list[int]) -> None:
    older, _ = owned.pair()
    newer, peer = owned.pair()

    def gate(_: object) -> bool:
        loop.set_fd_handler(newer, _noop)  # already filled: stale, never dispatched (R6, R22)
        return False

    loop.set_fd_handler(older, _noop, can_read=gate)
    loop.set_fd_handler(newer, _noop)
    peer.send(b"x")  # ready for good


def _write_only_on_hung_up_pipe(loop: MainLoop, owned: Pairs, fds: list[int]) -> None:
    r, w = os.pipe()
    os.close(w)
    fds.append(r)
    loop.set_fd_handler(r, None, _noop)  # polls OUT; gets HUP only, which calls nothing


def _gate_notifies(loop: MainLoop, owned: Pairs, fds: list[int]) -> None:
    x, _ = owned.pair()

    def gate(_: object) -> bool:
        loop.notify()  # qemu_notify_event from a gate: the notifier is pending before every wait
        return False

    loop.set_fd_handler(x, _noop, can_read=gate)


SPINS: dict[str, Callable[[MainLoop, Pairs, list[int]], None]] = {
    "gate-notifies": _gate_notifies,
    "gate-registers": _gate_registers,
    "gate-updates-newer-ready": _gate_updates_newer_ready,
    "write-only-hup": _write_only_on_hung_up_pipe,
}


@pytest.mark.parametrize("case", sorted(SPINS))
def test_r40_a_spinning_loop_uses_a_fraction_of_a_core_and_still_dispatches(case: str, socks: Pairs) -> None:
    fds: list[int] = []
    got: list[bytes] = []
    try:
        with MainLoop("epoll") as loop:
            SPINS[case](loop, socks, fds)
            reader, peer = socks.pair()
            loop.set_fd_handler(reader, lambda s: got.append(s.recv(16)), opaque=reader)
            threading.Timer(RUN_S / 2, peer.send, (b"y",)).start()
            iterations = 0

            def until() -> bool:
                nonlocal iterations
                iterations += 1
                return time.monotonic() >= end

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                wall0, cpu0 = time.monotonic(), time.process_time()
                end = wall0 + RUN_S
                loop.run_until(until)
                wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    finally:
        for fd in fds:
            os.close(fd)
    share = cpu / wall
    add_stats(**{f"spin_cpu_share_{case.replace('-', '_')}": round(share, 3)})
    assert got == [b"y"], "the reader beside the spin was not called"
    assert iterations > 1000  # it did spin (the seed's rules are kept)
    assert share < MAX_CPU, f"{case}: {share:.0%} of a core over {wall:.2f} s ({iterations} iterations)"
    spun = [w for w in caught if "spun for 1000 iterations" in str(w.message)]
    assert len(spun) == 1  # warned once, as QEMU does


def test_r40_nonblocking_calls_are_never_paused(socks: Pairs) -> None:
    with MainLoop("epoll") as loop:
        _gate_registers(loop, socks, [])
        t0 = time.monotonic()
        for _ in range(3000):
            loop.main_loop_wait(nonblocking=True)
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"3000 nonblocking iterations took {elapsed:.2f} s: paused"
