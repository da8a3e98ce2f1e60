"""R35 with real signals: a signal handler's exception while the loop takes its lock back after
the wait (another thread holds the lock, so the loop's thread is blocked in `acquire`).

CPython runs a signal handler in the main thread only, and a blocked lock acquire returns early
to run it: when the handler raises, `acquire` raises without the lock. The loop must take the
lock back anyway (retrying through a second such signal), then raise the first exception, and
leave the lock free, the loop usable and the ready handler still pending.

The test's assertions hold wherever the signals land; the one that lands in `acquire` is what
they are aimed at (the helper thread, holding the lock, gives the loop's thread 50 ms to block
on it before each signal)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from iohandler.impl import MainLoop
from tests.support import WaitSignal, lock_is_free

NAMES = ["epoll", "poll", "selectors"]


class Planted(Exception):
    pass


@pytest.fixture
def raising_sigusr1() -> Iterator[list[int]]:
    """SIGUSR1 raises Planted(n) in the main thread, n counting from 1."""
    count = [0]

    def handler(signum: int, frame: object) -> None:
        count[0] += 1
        raise Planted(count[0])

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        yield count
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("signals", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_r35_a_signal_during_the_reacquire_after_the_wait(raising_sigusr1: list[int], name: str, signals: int) -> None:
    assert threading.current_thread() is threading.main_thread()
    r, w = os.pipe()
    got: list[bytes] = []
    tracer = WaitSignal()
    done = threading.Event()
    try:
        with MainLoop(name, tracer=tracer) as loop:
            loop.set_fd_handler(r, read=lambda _: got.append(os.read(r, 1)))
            loop.main_loop_wait(nonblocking=True)  # takes the registration's notify (R7)
            tracer.waiting.clear()

            def helper() -> None:
                assert tracer.waiting.wait(5.0)
                with loop.lock:  # the loop released it for the wait
                    os.write(w, b"x")  # ends the wait: the loop's thread now blocks on the lock
                    for _ in range(signals):
                        time.sleep(0.05)
                        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                    time.sleep(0.05)
                done.set()

            t = threading.Thread(target=helper)
            t.start()
            with pytest.raises(Planted) as caught:
                loop.main_loop_wait(timeout=5.0)
            t.join(5.0)
            assert done.is_set()
            assert caught.value.args == (1,)  # the first signal's exception; later ones dropped
            assert raising_sigusr1 == [signals]
            assert lock_is_free(loop), "the loop's thread kept the lock"
            assert got == []  # the walk did not run: the exception came before it
            assert loop.main_loop_wait(nonblocking=True) == 1
            assert got == [b"x"]  # the ready handler was not lost
    finally:
        os.close(r)
        os.close(w)
