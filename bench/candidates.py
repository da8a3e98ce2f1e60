"""The event loops under test, behind one small interface, and the shared ping-pong ring.

Every candidate runs the *same* handler function (`Ring.handler`) with the fd as its one
argument: read one byte from the fd, write one byte to the next pair, count the event, and call
the candidate's `stop` when the budget is spent. Only the loop around it differs:

    bare-epoll       select.epoll + dict fd -> handler: the floor for pure Python
    bare-epoll-checked  bare-epoll plus the R33/R34 identity check impl/epoll makes (one
                     no-op EPOLL_CTL_MOD per ready fd): the floor for a loop that keeps R33
    minimal-checked  bare-epoll-checked plus the least of impl's iteration: the lock released
                     around the wait (R35), ready records collected, then walked with the
                     deleted check (R17); a lower bound for any loop with the seed's semantics
    bare-selectors   selectors.DefaultSelector, handler in key.data
    asyncio          asyncio's default (selector) loop, add_reader
    uvloop           uvloop's loop, add_reader
    impl/<poller>    impl.MainLoop on the epoll, poll or selectors poller
    impl/epoll-trusted  impl.MainLoop("epoll", check_files=False): no per-event R33/R34 check
    seed             bench.seed.SeedLoop: the seed's O(registered) fill, poll(2), walk
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import socket
import threading
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from bench.seed import SeedLoop
from iohandler.impl import MainLoop
from iohandler.impl.tracing import Handler

_uvloop: Any
try:  # optional: the bench extra installs it
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - depends on the environment
    _uvloop = None

_TOKEN = b"x"
_SEQ = attrgetter("seq")


def _gate_open(_opaque: object) -> bool:
    return True


def _idle_read(_fd: object) -> None:  # pragma: no cover - idle fds never become readable
    raise AssertionError("an idle fd became readable")


class Ring:
    """K socketpairs with one byte in flight per pair. The read handler of pair i (on its b end)
    reads one byte and writes one to pair i+1's a end. Each iteration every pair holds exactly
    one byte when the loop waits, whatever order a loop dispatches in (each of the K handlers
    takes one byte and gives one to its successor), so every candidate sees K ready fds per
    iteration and does K events per iteration: the per-iteration cost is amortised over K."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.pairs = [socket.socketpair() for _ in range(k)]
        for a, b in self.pairs:
            a.setblocking(False)
            b.setblocking(False)
            a.send(_TOKEN)
        self.read_fds = [b.fileno() for _, b in self.pairs]
        self.left = [0]  # events still to run; goes <= 0 when the budget is spent

    def handler(self, i: int, stop: Callable[[], object]) -> Handler:
        """The read handler for pair i; `stop` ends the candidate's run."""
        next_fd = self.pairs[(i + 1) % self.k][0].fileno()
        left = self.left
        read, write = os.read, os.write

        def on_read(fd: int) -> None:
            read(fd, 1)
            write(next_fd, _TOKEN)
            left[0] -= 1
            if left[0] == 0:
                stop()

        return on_read

    def close(self) -> None:
        for a, b in self.pairs:
            a.close()
            b.close()


class Candidate:
    """attach/detach a ring and idle fds (not timed), run until the handlers call stop (timed)."""

    name = "?"

    def add_idle(self, fds: list[int], gated: bool = False) -> None:
        raise NotImplementedError

    def remove_idle(self, fds: list[int]) -> None:
        raise NotImplementedError

    def attach(self, ring: Ring) -> None:
        raise NotImplementedError

    def detach(self, ring: Ring) -> None:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class BareEpoll(Candidate):
    """`for fd, ev in ep.poll(): callbacks[fd](fd)`. With gates: calls every gate before each
    poll (the least any loop can do to consult them) and skips nothing."""

    name = "bare-epoll"

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._cbs: dict[int, Handler] = {}
        self._gates: list[tuple[Handler, int]] = []
        self._running = [False]

    def add_idle(self, fds: list[int], gated: bool = False) -> None:
        for fd in fds:
            self._ep.register(fd, select.EPOLLIN)
            self._cbs[fd] = _idle_read
            if gated:
                self._gates.append((_gate_open, fd))

    def remove_idle(self, fds: list[int]) -> None:
        for fd in fds:
            self._ep.unregister(fd)
            del self._cbs[fd]
        self._gates.clear()

    def attach(self, ring: Ring) -> None:
        for i, fd in enumerate(ring.read_fds):
            self._ep.register(fd, select.EPOLLIN)
            self._cbs[fd] = ring.handler(i, self.stop)

    def detach(self, ring: Ring) -> None:
        for fd in ring.read_fds:
            self._ep.unregister(fd)
            del self._cbs[fd]

    def run(self) -> None:
        poll, cbs, running = self._ep.poll, self._cbs, self._running
        running[0] = True
        if self._gates:
            gates = self._gates
            while running[0]:
                for gate, opaque in gates:
                    gate(opaque)
                for fd, _ev in poll():
                    cbs[fd](fd)
        else:
            while running[0]:
                for fd, _ev in poll():
                    cbs[fd](fd)

    def stop(self) -> None:
        self._running[0] = False

    def close(self) -> None:
        self._ep.close()


class BareEpollChecked(BareEpoll):
    """bare-epoll with one `ep.modify(fd, EPOLLIN)` before each callback: the system call
    impl/epoll spends per ready fd on R33/R34 (specs/SPEC.md), and nothing else. impl/epoll
    over this candidate is the loop's own cost, with the rule's price taken out."""

    name = "bare-epoll-checked"

    def run(self) -> None:
        poll, cbs, running = self._ep.poll, self._cbs, self._running
        confirm, mask = self._ep.modify, select.EPOLLIN
        running[0] = True
        while running[0]:
            for fd, _ev in poll():
                confirm(fd, mask)
                cbs[fd](fd)


class MinimalChecked(BareEpoll):
    """The least a loop with impl's rules does per iteration at K=1 with no timers, gates,
    tracer or pending deletes: release the lock for the wait, map each event to its record,
    confirm the file (R33), walk in list order calling read/write by revents unless deleted.
    Not a usable loop (no registration API, no reaping): a lower bound to compare impl with."""

    name = "minimal-checked"

    class _Rec:
        __slots__ = ("deleted", "fd", "kev", "opaque", "read", "rev", "seq", "write")
        fd: int
        seq: int
        deleted: bool
        kev: int
        rev: int
        read: Handler | None
        write: Handler | None
        opaque: int

    def __init__(self) -> None:
        super().__init__()
        self._recs: dict[int, MinimalChecked._Rec] = {}

    def attach(self, ring: Ring) -> None:
        super().attach(ring)  # set-up, not timed: the records too
        for seq, fd in enumerate(ring.read_fds, start=1):
            rec = self._recs[fd] = self._Rec()
            rec.fd, rec.seq, rec.deleted, rec.kev, rec.rev = fd, seq, False, select.EPOLLIN, 0
            rec.read, rec.write, rec.opaque = self._cbs[fd], None, fd

    def detach(self, ring: Ring) -> None:
        super().detach(ring)
        for fd in ring.read_fds:
            del self._recs[fd]

    def run(self) -> None:
        poll, running = self._ep.poll, self._running
        confirm, lock = self._ep.modify, threading.Lock()
        get, read_ev, write_ev = self._recs.get, select.EPOLLIN | select.EPOLLHUP, select.EPOLLOUT
        running[0] = True
        lock.acquire()
        while running[0]:
            lock.release()
            events = poll(None, 1023)
            lock.acquire()
            ready = []
            for fd, ev in events:
                rec = get(fd)
                if rec is not None and rec.kev:
                    rec.rev = ev
                    ready.append(rec)
            if len(ready) > 1:
                ready.sort(key=_SEQ, reverse=True)
            for rec in ready:
                confirm(rec.fd, rec.kev)
            for rec in ready:
                if not rec.deleted:
                    cb = rec.read
                    if cb is not None and rec.rev & read_ev:
                        cb(rec.opaque)
                    if not rec.deleted:
                        cb = rec.write
                        if cb is not None and rec.rev & write_ev:
                            cb(rec.opaque)
        lock.release()


class BareSelectors(Candidate):
    """`for key, mask in sel.select(): key.data(key.fd)` on selectors.DefaultSelector."""

    name = "bare-selectors"

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._running = [False]

    def add_idle(self, fds: list[int], gated: bool = False) -> None:
        for fd in fds:
            self._sel.register(fd, selectors.EVENT_READ, _idle_read)

    def remove_idle(self, fds: list[int]) -> None:
        for fd in fds:
            self._sel.unregister(fd)

    def attach(self, ring: Ring) -> None:
        for i, fd in enumerate(ring.read_fds):
            self._sel.register(fd, selectors.EVENT_READ, ring.handler(i, self.stop))

    def detach(self, ring: Ring) -> None:
        for fd in ring.read_fds:
            self._sel.unregister(fd)

    def run(self) -> None:
        select_, running = self._sel.select, self._running
        running[0] = True
        while running[0]:
            for key, _mask in select_():
                key.data(key.fd)

    def stop(self) -> None:
        self._running[0] = False

    def close(self) -> None:
        self._sel.close()


class AsyncioLike(Candidate):
    """asyncio's add_reader API on a given event loop (asyncio's own or uvloop's)."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self._loop = loop

    def add_idle(self, fds: list[int], gated: bool = False) -> None:
        for fd in fds:
            self._loop.add_reader(fd, _idle_read, fd)

    def remove_idle(self, fds: list[int]) -> None:
        for fd in fds:
            self._loop.remove_reader(fd)

    def attach(self, ring: Ring) -> None:
        for i, fd in enumerate(ring.read_fds):
            self._loop.add_reader(fd, ring.handler(i, self.stop), fd)

    def detach(self, ring: Ring) -> None:
        for fd in ring.read_fds:
            self._loop.remove_reader(fd)

    def run(self) -> None:
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.stop()

    def close(self) -> None:
        self._loop.close()


class Impl(Candidate):
    """impl.MainLoop on one poller: set_fd_handler(fd, read=handler, opaque=fd); run()."""

    def __init__(self, poller: str) -> None:
        self.name = f"impl/{poller}"
        # "epoll-trusted": MainLoop(check_files=False), the caller deletes before closing.
        trusted = poller.endswith("-trusted")
        self._loop = MainLoop(poller.removesuffix("-trusted"), check_files=not trusted)

    def add_idle(self, fds: list[int], gated: bool = False) -> None:
        gate = _gate_open if gated else None
        for fd in fds:
            self._loop.set_fd_handler(fd, _idle_read, can_read=gate, opaque=fd)
        self._loop.main_loop_wait(nonblocking=True)  # the fill registers them: not timed

    def remove_idle(self, fds: list[int]) -> None:
        for fd in fds:
            self._loop.set_fd_handler(fd, None)
        self._loop.notify()  # a walk reaps them
        self._loop.main_loop_wait(nonblocking=True)

    def attach(self, ring: Ring) -> None:
        for i, fd in enumerate(ring.read_fds):
            self._loop.set_fd_handler(fd, ring.handler(i, self.stop), opaque=fd)

    def detach(self, ring: Ring) -> None:
        for fd in ring.read_fds:
            self._loop.set_fd_handler(fd, None)
        self._loop.notify()
        self._loop.main_loop_wait(nonblocking=True)

    def run(self) -> None:
        self._loop.run()

    def stop(self) -> None:
        self._loop.stop()

    def close(self) -> None:
        self._loop.close()


class Seed(Candidate):
    """bench.seed.SeedLoop: the seed's O(registered) iteration."""

    name = "seed"

    def __init__(self) -> None:
        self._loop = SeedLoop()

    def add_idle(self, fds: list[int], gated: bool = False) -> None:
        gate = _gate_open if gated else None
        for fd in fds:
            self._loop.set_fd_handler(fd, _idle_read, can_read=gate, opaque=fd)

    def remove_idle(self, fds: list[int]) -> None:
        for fd in fds:
            self._loop.set_fd_handler(fd, None)

    def attach(self, ring: Ring) -> None:
        for i, fd in enumerate(ring.read_fds):
            self._loop.set_fd_handler(fd, ring.handler(i, self.stop), opaque=fd)

    def detach(self, ring: Ring) -> None:
        for fd in ring.read_fds:
            self._loop.set_fd_handler(fd, None)

    def run(self) -> None:
        self._loop.run()

    def stop(self) -> None:
        self._loop.stop()


def have_uvloop() -> bool:
    return _uvloop is not None


def make(name: str) -> Candidate:
    """A fresh candidate by name (see the module docstring)."""
    if name == "bare-epoll":
        return BareEpoll()
    if name == "bare-epoll-checked":
        return BareEpollChecked()
    if name == "minimal-checked":
        return MinimalChecked()
    if name == "bare-selectors":
        return BareSelectors()
    if name == "asyncio":
        return AsyncioLike(name, asyncio.SelectorEventLoop())
    if name == "uvloop":
        if _uvloop is None:
            raise RuntimeError("uvloop is not installed (pip install -e '.[bench]')")
        loop: Any = _uvloop.new_event_loop()
        return AsyncioLike(name, loop)
    if name.startswith("impl/"):
        return Impl(name.removeprefix("impl/"))
    if name == "seed":
        return Seed()
    raise ValueError(f"unknown candidate {name!r}")
