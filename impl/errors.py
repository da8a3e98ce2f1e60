"""The loop's own exceptions. Bad arguments raise the built-in TypeError / ValueError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable


class IOHandlerError(Exception):
    """Base of the loop's own exceptions."""


class LoopClosedError(IOHandlerError, RuntimeError):
    """The loop was closed; it cannot register or wait any more."""


class LoopForkedError(LoopClosedError):
    """The loop was inherited through fork(): the child shares the parent's kernel objects
    (epoll set, wakeup), so every use from the child is refused (R41). The child creates its own
    loop; `close()` on the inherited one releases the child's copies of its fds only."""


class ReentrantWaitError(IOHandlerError, RuntimeError):
    """`main_loop_wait` was called while an iteration is running (from a callback, a gate or a
    timer, or from another thread)."""


class FdError(IOHandlerError):
    """Something is wrong with a registered (or to-be-registered) fd; `fd` names it."""

    def __init__(self, fd: int, message: str) -> None:
        super().__init__(message)
        self.fd = fd


class ClosedFdError(FdError):
    """The fd is not open, or was closed while registered (its number may now name another
    file). When the loop finds this for a registered fd it removes the handler (as a delete
    would) before raising, so the old handlers are never called for whatever reuses the number."""


class UnpollableFdError(FdError):
    """The poller cannot poll this kind of file (epoll refuses regular files and directories)."""


def describe(callback: object) -> str:
    """`repr(callback)` for an exception's note (R32), or a plain name if that repr raises (a
    bound method's repr is its object's; whatever it raises, KeyboardInterrupt included): the
    note must never replace the exception it is on."""
    try:
        return repr(callback)
    except BaseException:
        pass
    try:
        name = getattr(callback, "__qualname__", None)  # a __getattr__ may raise anything
    except BaseException:
        name = None
    if not isinstance(name, str):
        name = type(callback).__qualname__
    return f"<{name} at {id(callback):#x}>"


def add_note(e: BaseException, note: str) -> None:
    """`e.add_note(note)`, or nothing if the note cannot be added (`__notes__` set to something
    not a list, an `add_note` overridden): R32, the original exception leaves as it is."""
    with contextlib.suppress(BaseException):
        e.add_note(note)


def finish(step: Callable[[], object]) -> None:
    """R35: run a repeatable step whose first run a signal handler's exception cut short, until
    it completes (each further exception is dropped: the caller re-raises the first). A step
    that fails for another reason fails the same way every time: it is given up after a few
    runs."""
    for _ in range(8):
        try:
            step()
            return
        except BaseException:  # another signal, or a real failure repeating
            continue
