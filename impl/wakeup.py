"""The loop's wakeup notifier (QEMU's event notifier): an eventfd, or a pipe where there is none.

`wake()` is safe from any thread and always writes. `notify()` skips the write when a
notification is already pending, which saves a system call per registration when many happen in
one iteration; it is only safe for callers serialized with `consume()` (the loop calls both
with its lock held). `consume()` reads first and clears the pending flag after: a `notify()`
that saw the flag still set between the two would be lost (the fd already drained, the flag then
cleared), which is why callers not holding the lock (`MainLoop.notify`, `stop`) use `wake()`.

`wake()` racing `close()` (R35, R41): reading the fd number and writing to it are two steps,
and a close between them frees the number for the next open(), which would get the write. A
small re-entrant lock shared by wake, consume and close only (not the loop's lock) keeps the
number valid for the whole write. Re-entrant, so that a wake() from a signal handler that
interrupts a wake() or close() on the same thread cannot deadlock: at any bytecode boundary
there the number is either still open or already -1. Deferring the close instead (closing
once no writer is in flight) needs a count of writers, which is a lock again, and keeps the fd
open for an unbounded time. The lock costs one uncontended acquire per wake.

After fork() the child's copy is the parent's notifier too: `after_fork_in_child()` turns
wake and consume into no-ops and leaves close() to release the child's copies.
"""

from __future__ import annotations

import os
import select
import threading


class Wakeup:
    __slots__ = ("_eventfd", "_inherited", "_lock", "_pending", "_rfd", "_wfd", "flag")

    def __init__(self, use_eventfd: bool | None = None) -> None:
        if use_eventfd is None:
            use_eventfd = hasattr(os, "eventfd")
        self._eventfd = use_eventfd
        if use_eventfd:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._rfd = self._wfd = fd
        else:
            self._rfd, self._wfd = os.pipe()  # close-on-exec by default
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)
        # Written and not yet consumed, as far as this process knows (`pending`). The loop reads
        # the slot itself once per iteration (R40): a property call there shows in bench/.
        self._pending = False
        # The cheapest notify: a registration made while nobody waits sets this instead of
        # writing the fd (the loop's lock held); the next iteration reads it before its wait,
        # polls with timeout 0 and clears it (MainLoop.set_fd_handler).
        self.flag = False
        self._lock = threading.RLock()  # wake/consume vs close: see the module docstring
        self._inherited: tuple[int, ...] = ()  # fds a forked child holds but must not use

    def fileno(self) -> int:
        return self._rfd

    @property
    def pending(self) -> bool:
        """Written and not yet consumed, as far as this process knows."""
        return self._pending

    def notify(self) -> None:
        """Coalescing: for callers serialized with consume() (the loop's lock held)."""
        if not self._pending:
            self.wake()

    def wake(self) -> None:
        """notify() for callers not serialized with consume(): never skips the write."""
        self._pending = True
        with self._lock:  # close() cannot free the number while it is written to
            wfd = self._wfd
            if wfd < 0:  # closed: never write to a number that may belong to someone else now
                return
            try:
                if self._eventfd:
                    os.eventfd_write(wfd, 1)
                else:
                    os.write(wfd, b"\0")
            except BlockingIOError:  # counter or pipe full: the fd is readable, the point
                pass

    def consume(self) -> None:
        with self._lock:
            rfd = self._rfd
            if rfd < 0:
                return
            try:
                if self._eventfd:
                    os.eventfd_read(rfd)
                else:
                    while os.read(rfd, select.PIPE_BUF):
                        pass
            except BlockingIOError:
                pass
            self._pending = False

    def after_fork_in_child(self) -> None:
        """In a forked child: the eventfd or pipe is the parent's too (a wake would wake the
        parent's loop, a consume steal its notification), so wake/consume become no-ops; close()
        still closes the child's copies. No lock taken: a parent thread may have held it."""
        self._lock = threading.RLock()
        fds = (self._rfd, self._wfd)
        self._inherited = tuple(sorted({fd for fd in fds if fd >= 0}))
        self._rfd = self._wfd = -1

    def close(self) -> None:
        """Idempotent; waits for a wake() in progress on another thread (a few microseconds)."""
        with self._lock:
            for fd in self._inherited:
                os.close(fd)
            self._inherited = ()
            rfd, wfd = self._rfd, self._wfd
            self._rfd = self._wfd = -1
            if rfd >= 0:
                os.close(rfd)
            if wfd != rfd:  # a pipe's other end (both are -1 once closed)
                os.close(wfd)
