"""R35 attack (round r35b) on `MainLoop._wait_ended` (d7e961d): threading.Condition.wait
releases the loop's lock (`_release_save`: every level of the RLock) before the try that takes
it back; a signal handler's exception between the two is answered by `_relock()`, which takes
it back once. Red at d7e961d."""

from __future__ import annotations

import inspect
import sys
import threading
import time
from types import FrameType
from typing import Any

import pytest

from iohandler.impl import MainLoop

# Kept red on purpose: each test shows a limit the loop has today (strict: a fix shows as XPASS).
pytestmark = pytest.mark.xfail(
    strict=True,
    reason=(
        "R35 limit, open: Condition.wait lets go of every level of a lock the caller also holds; the loop "
        "takes back one (SPEC R35)"
    ),
)

_WAIT_CODE = threading.Condition.wait.__code__


class _CutInConditionWait:
    """Raises KeyboardInterrupt once in threading.Condition.wait, at the line after
    `saved_state = self._release_save()` (a C call of `_thread.RLock`: CPython runs signal
    handlers as it returns), that is before the try whose finally takes the lock back."""

    def __init__(self) -> None:
        self.fired = False
        first = _WAIT_CODE.co_firstlineno
        lines = inspect.getsource(threading.Condition.wait).splitlines()
        self.line = next(first + i + 1 for i, t in enumerate(lines) if "_release_save()" in t)

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is _WAIT_CODE and not self.fired:
            frame.f_trace_lines = True
            return self._local
        return None

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == self.line and not self.fired:
            self.fired = True
            raise KeyboardInterrupt("planted after Condition.wait's _release_save")
        return self._local


def test_close_from_a_thread_holding_loop_lock_cut_in_the_wait_replaces_the_exception() -> None:
    """The program holds `loop.lock` (a public RLock; main_loop_wait honours an outer hold) and
    calls close() while the loop waits in another thread: close() waits for the iteration's
    end (`_await_iteration_end`, `_wait_ended`). Cut after `_release_save` (both levels let go),
    `_wait_ended` takes the lock back once: close()'s `with` lets it go, and the program's own
    `with loop.lock` exit raises RuntimeError("cannot release un-acquired lock"), which leaves
    instead of the KeyboardInterrupt (R35: the exception leaves unchanged)."""
    loop = MainLoop("epoll")
    t = threading.Thread(target=lambda: loop.main_loop_wait(timeout=1.0))
    t.start()
    try:
        for _ in range(400):
            if loop.snapshot().waiting:
                break
            time.sleep(0.005)
        cut = _CutInConditionWait()
        left: BaseException | None = None
        sys.settrace(cut)
        try:
            with loop.lock:
                loop.close()
        except BaseException as e:
            left = e
        finally:
            sys.settrace(None)
        assert cut.fired, "the point was not reached"
        assert isinstance(left, KeyboardInterrupt), f"the planted exception was replaced by {left!r}"
    finally:
        t.join(5)
        loop.close()
