"""A seed-faithful loop, for contrast only: the data structure and system call of QEMU 1.5-2.3.

`qemu_iohandler_fill` walks the whole handler list every iteration (consulting every gate and
building a fresh pollfd array), the wait is poll(2) over that array, and `qemu_iohandler_poll`
walks the whole list again. Every iteration costs O(registered) in Python *and* in the kernel,
however few fds are ready: this is what `impl.MainLoop` avoids. No wakeup fd, no timers, no
error handling: just enough to run the benchmarks' workloads with the seed's cost profile.
"""

from __future__ import annotations

import select
from typing import Any

from iohandler.impl.pollers import READ_EVENTS, WRITE_EVENTS
from iohandler.impl.tracing import Handler


class _IOHandler:
    __slots__ = ("can_read", "deleted", "fd", "opaque", "pollfds_idx", "read", "write")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.read: Handler | None = None
        self.write: Handler | None = None
        self.can_read: Handler | None = None
        self.opaque: Any = None
        self.deleted = False
        self.pollfds_idx = -1


class SeedLoop:
    """qemu_set_fd_handler2 / main_loop_wait over a Python list, newest record first."""

    def __init__(self) -> None:
        self._handlers: list[_IOHandler] = []  # QLIST, head = index 0
        self._stopping = False

    def set_fd_handler(
        self,
        fd: int,
        read: Handler | None = None,
        write: Handler | None = None,
        *,
        can_read: Handler | None = None,
        opaque: Any = None,
    ) -> None:
        found = None
        for ioh in self._handlers:
            if ioh.fd == fd:
                found = ioh
                break
        if read is None and write is None:
            if found is not None:
                found.deleted = True
            return
        if found is None:
            found = _IOHandler(fd)
            self._handlers.insert(0, found)
        found.read, found.write, found.can_read, found.opaque = read, write, can_read, opaque
        found.deleted = False
        found.pollfds_idx = -1

    def main_loop_wait(self, timeout_ms: int = -1) -> int:
        # qemu_iohandler_fill: every record, every iteration.
        pollfds: list[tuple[int, int]] = []
        for ioh in self._handlers:
            ioh.pollfds_idx = -1
            if ioh.deleted:
                continue
            events = 0
            if ioh.read is not None and (ioh.can_read is None or ioh.can_read(ioh.opaque)):
                events |= READ_EVENTS
            if ioh.write is not None:
                events |= WRITE_EVENTS
            if events:
                ioh.pollfds_idx = len(pollfds)
                pollfds.append((ioh.fd, events))
        # g_poll over the fresh array.
        p = select.poll()
        for fd, events in pollfds:
            p.register(fd, events)
        revents = dict(p.poll(timeout_ms))
        ret = len(revents)
        # qemu_iohandler_poll: the safe walk over every record.
        if ret > 0:
            handlers = self._handlers
            for ioh in list(handlers):
                idx = ioh.pollfds_idx
                rev = revents.get(ioh.fd, 0) if idx >= 0 else 0
                if not ioh.deleted and ioh.read is not None and rev & READ_EVENTS:
                    ioh.read(ioh.opaque)
                if not ioh.deleted and ioh.write is not None and rev & WRITE_EVENTS:
                    ioh.write(ioh.opaque)
                if ioh.deleted:
                    handlers.remove(ioh)
        return ret

    def run(self) -> None:
        while not self._stopping:
            self.main_loop_wait()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
