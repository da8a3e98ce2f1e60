"""R35 attack on close() and `with MainLoop() as loop` (whose __exit__ calls close()): a
KeyboardInterrupt after close() has marked the loop closed and before it has released its fds.
Red at 945d444."""

from __future__ import annotations

import linecache
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from iohandler.impl import MainLoop
from tests.interrupts_api.plant import Injector, point_index, run_with
from tests.support import is_open, lock_is_free
from tests.test_reliability_interrupts import signal_points

POLLERS = ["epoll", "poll", "selectors"]


def _busy_loop(poller: str, socks: list[socket.socket]) -> MainLoop:
    """A record, a context handler, a scheduled BH and a timer: what close() tears down."""
    loop = MainLoop(poller)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    socks += [a, b, c, d]
    loop.set_fd_handler(a, lambda _o: None)
    loop.context.set_fd_handler(c, lambda _o: None, None)
    loop.bh_new(lambda _o: None).schedule()
    loop.call_later(60, lambda: None)
    loop.main_loop_wait(nonblocking=True)
    return loop


def _with_exit(loop: MainLoop) -> None:
    with loop:
        pass


@pytest.mark.parametrize("how", ["close", "with"])
@pytest.mark.parametrize("poller", POLLERS)
def test_close_cut_after_the_loop_is_marked_closed_releases_its_fds(poller: str, how: str) -> None:
    """close() sets `_closed` (loop.py:1080) before `AioContext._close`, `Registry.clear`,
    `Kernel.close` and `Wakeup.close`; cut in `AioContext._close` (context.py:876-891), the loop
    says closed, a second close() returns at once and `__del__` sees it closed: the wakeup fd
    (and epoll's kernel object) stay open for the life of the process (R35: the call happened
    or not; close()'s doc: it releases the fds the loop owns)."""
    socks: list[socket.socket] = []
    call: Callable[[MainLoop], object] = MainLoop.close if how == "close" else _with_exit
    try:
        probe = _busy_loop(poller, socks)
        n, _ = point_index(lambda: call(probe), "_close")
        loop = _busy_loop(poller, socks)
        own = [loop.wakeup_fd] + ([loop.poller.fileno()] if loop.poller.fileno() >= 0 else [])
        inj = Injector(n)
        exc = run_with(inj, loop, call)
        assert inj.fired and isinstance(exc, KeyboardInterrupt), repr(exc)
        assert lock_is_free(loop)
        loop.close()  # the caller retries (or the with block's exit already ran: it did)
        assert loop.closed
        left = [fd for fd in own if is_open(fd)]
        assert not left, f"the loop is closed and its own fds {left} are still open"
    finally:
        for s in socks:
            s.close()


class _AfterReleaseSave:
    """Raises KeyboardInterrupt once, at the signal point of `threading.Condition.wait` right
    after `saved_state = self._release_save()` returns (the lock released, before the try whose
    finally takes it back): where CPython runs a pending signal handler after that C call."""

    def __init__(self) -> None:
        self.fired = False
        self.code = threading.Condition.wait.__code__

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not self.code or self.fired:
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if (
            event == "opcode"
            and not self.fired
            and frame.f_lasti in signal_points(frame.f_code)
            and "_release_save()" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        ):
            self.fired = True
            raise KeyboardInterrupt("planted after Condition.wait's _release_save")
        return self._local


def test_close_from_the_main_thread_cut_in_its_condition_wait_keeps_the_interrupt() -> None:
    """close() from the main thread while the loop waits in another thread (R31) waits on the
    loop's Condition (loop.py:1095 `_await_iteration_end`: `self._ended.wait(0.05)`). Cut in
    `Condition.wait` after `_release_save()` (threading.py, before its try/finally): the loop's
    RLock is left released, and close()'s `with self._lock` exit then raises RuntimeError
    ("cannot release un-acquired lock"), which replaces the KeyboardInterrupt (R35: the
    exception itself leaves); `_closers -= 1` ran without the lock. The same wait is in
    `_let_closers_in` (loop.py:1102) on the loop's own thread."""
    loop = MainLoop("epoll")
    worker = threading.Thread(target=lambda: loop.main_loop_wait(timeout=2.0))
    worker.start()
    try:
        for _ in range(400):
            if loop.snapshot().waiting:
                break
            time.sleep(0.005)
        inj = _AfterReleaseSave()
        exc = run_with(inj, loop, MainLoop.close)  # type: ignore[arg-type]
        assert inj.fired, "close() never waited on the condition"
        assert isinstance(exc, KeyboardInterrupt), f"the planted exception was replaced by {exc!r}"
        assert lock_is_free(loop)
    finally:
        worker.join(5)
        loop.close()
