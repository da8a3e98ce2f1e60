"""MainLoop: QEMU's classic fd-handler loop (qemu_set_fd_handler2, qemu_iohandler_fill,
qemu_iohandler_poll, main_loop_wait, qemu_notify_event; QEMU 1.5-2.3), the seed's semantics
without its O(registered) walks.

Seed order without the list. Handlers live in a dict fd -> record; the seed's list order
(newest record first) is "creation sequence number, descending", because records are only ever
inserted at the head and unlinked. Kernel registrations persist (a poller keeps them) and change
only at fill time for records marked dirty by a registration, plus the gated records, whose gate
is consulted every fill. The wait reports ready fds; those records are sorted by sequence
number, so an idle iteration costs O(ready + gated + changed), not O(registered).

The seed's poll_index becomes two things: `kev`, the events the kernel was given at the last
fill (so exactly this iteration's poll set: changes made after the fill wait for the next one),
and `stale`, set by every add/update and cleared when a fill visits the record (the seed's
`poll_index = -1`: no callback in the walk of an iteration whose fill came before the update).

Locking rule. One re-entrant lock guards the registry, the timers and the loop state. The loop
holds it for the whole iteration except the kernel wait (and the tracer's `poll` hook, which
stands for "during the wait"), and `run`/`run_until` hold it from one iteration to the next, like
QEMU's global mutex: callbacks, gates, timers and run_until's predicate run with it held, and
`set_fd_handler` from another thread blocks until the loop is waiting, then takes effect at the
next fill (the notify it sends ends the current wait). `notify()` takes no lock.

Reliability rules (the seed leaves these open):
* Bad arguments raise TypeError / ValueError naming the argument, before any state changes
  (handler and gate types are checked on deletes too); an
  add/update of an fd that is not open raises ClosedFdError, of a file the poller cannot poll
  (epoll: regular files) UnpollableFdError. A delete needs no open fd (close-then-delete works).
* `main_loop_wait` while an iteration runs (from a callback, gate, timer or another thread)
  raises ReentrantWaitError (a RuntimeError) and changes nothing.
* A callback, gate or timer that raises: the exception propagates unchanged out of
  `main_loop_wait`, with a note naming the fd and handler. The record being visited is finished
  first (reaped if deleted); the rest of the walk (and the timers) is left for the next
  iteration, which works normally: ready fds stay ready (level-triggered), deleted records are
  reaped by the next walk. A gate that raises aborts the fill before the wait.
* An fd closed while registered, or whose number now names another file, is found when the
  kernel says so (epoll_ctl ENOENT/EBADF, POLLNVAL) or, on every poller, by comparing the file
  identity (st_dev, st_ino) of each ready fd with the one seen at registration (epoll keeps
  reporting a closed number while a dup of its file is open elsewhere). A delete drops the
  kernel registration at once (unless the poll set is fixed: between a fill and the end of its
  wait), so the usual delete-then-close removes it through an open fd; a registration that
  outlived its number anyway (events for an fd the loop did not register, a quarantine, a
  number re-registered for another file) makes the loop rebuild the kernel set. The record is
  then deleted (as a delete would: reaped by the next walk) and its kernel registration
  dropped, so the loop never spins on NVAL nor calls the old handler for a new file;
  ClosedFdError naming the fd is raised at the end of that iteration (or of the next, if a
  callback's exception propagated first). `check_fds()` finds closed fds that epoll forgot
  silently.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from operator import attrgetter
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from iohandler.impl.errors import (
    ClosedFdError,
    FdError,
    LoopClosedError,
    ReentrantWaitError,
    UnpollableFdError,
)
from iohandler.impl.lifecycle_errors import LoopForkedError
from iohandler.impl.pollers import READ_EVENTS, WRITE_EVENTS, Poller, make_poller
from iohandler.impl.timers import TimerHandle, TimerQueue
from iohandler.impl.tracing import Handler, Tracer
from iohandler.impl.wakeup import Wakeup

_FD_LIMIT = 2**31  # fds are C ints
_FILE_TYPES = frozenset((stat.S_IFREG, stat.S_IFDIR))  # what epoll refuses (EPERM)


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike = int | HasFileno


class HandlerInfo(NamedTuple):
    """A live record as `MainLoop.records()` shows it."""

    fd: int
    read: Handler | None
    write: Handler | None
    can_read: Handler | None
    opaque: Any


class _Record:
    __slots__ = (
        "can_read",
        "deleted",
        "fd",
        "ident",
        "kev",
        "opaque",
        "read",
        "renew",
        "rev",
        "seq",
        "stale",
        "write",
    )

    # Set by set_fd_handler right after construction, before anything reads them:
    read: Handler | None
    write: Handler | None
    can_read: Handler | None
    opaque: Any
    stale: bool  # the seed's poll_index == -1 since the last add/update
    ident: tuple[int, int]  # (st_dev, st_ino) of the file at the last add/update
    rev: int  # revents of the current iteration (set for ready records before it is read)

    def __init__(self, fd: int, seq: int) -> None:
        self.fd = fd
        self.seq = seq  # creation order: list order is seq descending
        self.deleted = False
        self.kev = 0  # events given to the kernel at the last fill; 0 = not polled
        self.renew = False  # the fd number now names another file: register afresh at fill


_SEQ = attrgetter("seq")


def _fd_number(fd: object) -> int:
    if isinstance(fd, bool):
        raise TypeError("fd must be an int or have fileno(), got bool")
    if isinstance(fd, int):
        n = fd
    else:
        fileno = getattr(fd, "fileno", None)
        if not callable(fileno):
            raise TypeError(f"fd must be an int or have fileno(), got {type(fd).__name__}")
        try:
            n = fileno()
        except (OSError, ValueError) as e:  # e.g. a closed file object
            raise ValueError(f"fd.fileno() failed: {e}") from e
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"fd.fileno() must return an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"fd must be >= 0, got {n}")
    if n >= _FD_LIMIT:
        raise ValueError(f"fd must be < 2**31, got {n}")
    return n


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


def _check_delay(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not value >= 0 or math.isinf(value):  # `not >=` also rejects NaN
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


_LIVE_LOOPS: weakref.WeakSet[MainLoop] = weakref.WeakSet()  # for the fork hook below


def _after_fork_in_child() -> None:
    """R38: a forked child shares each inherited loop's epoll set and wakeup with the parent, so
    it may not use them. Memory only: marks the loops closed (every entry point's `_closed`
    check then refuses, at no cost per call), empties the child's registry copy (check_fds has
    nothing to remove), and replaces locks a parent thread may have held at the fork."""
    for loop in list(_LIVE_LOOPS):
        loop._forked = True
        loop._closed = True
        loop._by_fd = {}
        loop._lock = threading.RLock()
        loop._wakeup.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class MainLoop:
    """The seed's main loop. See the module docstring for the rules; `main_loop_wait` for one
    iteration. `poller`: "epoll" (default on Linux), "poll", "selectors" or a Poller."""

    def __init__(
        self,
        poller: str | Poller | None = None,
        *,
        tracer: Tracer | None = None,
        use_eventfd: bool | None = None,
        check_files: bool = True,
    ) -> None:
        """`check_files=False` drops the per-ready-fd identity check (R33/R34) where the poller
        tracks files (epoll), saving a system call per ready event. Only for callers that always
        delete a handler before closing its fd: epoll keeps reporting a closed fd whose file a
        dup or a fork keeps open. Pollers that follow fd numbers (poll, selectors) always check,
        since that is what stops them spinning on NVAL."""
        self._poller = make_poller(poller)
        try:
            self._wakeup = Wakeup(use_eventfd)
            self._wakeup_fd = self._wakeup.fileno()
            self._poller.modify(self._wakeup_fd, READ_EVENTS)
        except BaseException:
            self._poller.close()
            raise
        self._lock = threading.RLock()
        self._by_fd: dict[int, _Record] = {}
        self._seq = 0
        self._dirty: set[_Record] = set()  # interest may have changed since the last fill
        self._gated: set[_Record] = set()  # live, read handler and gate: consulted every fill
        self._gated_order: list[_Record] | None = None  # _gated in list order, cached
        self._deleted: set[_Record] = set()  # flagged deleted, not yet reaped
        # Numbers whose kernel registration could not be removed (pollers.py: a dup keeps the
        # old file's registration out of reach). Registering such a number again rebuilds the
        # kernel set first, or the old file's events would reach the new record.
        self._orphans: set[int] = set()
        self._fd_errors: list[FdError] = []
        self._timers = TimerQueue()
        self._timer_heap = self._timers.heap  # the same list: a cheap "any timers?"
        self._wait, self._full = self._poller.fast_wait()  # refreshed by _rebuild_kernel_set
        # R33/R34 on every poller unless the caller opted out where the kernel tracks files.
        self._check_files = check_files or not self._poller.tracks_files
        self._confirm = self._fast_confirm()  # refreshed by _rebuild_kernel_set
        self._tracer = tracer
        self._running = False
        self._polling = False  # from the start of a fill to the end of its wait
        self._waiting = False
        self._notified = False  # a registration's notify while not waiting (set_fd_handler)
        self._stopping = False
        self._closed = False
        self._forked = False  # inherited by a forked child (R38); set by _after_fork_in_child
        _LIVE_LOOPS.add(self)

    # ------------------------------------------------------------------------ registration

    def set_fd_handler(
        self,
        fd: FdLike,
        read: Handler | None = None,
        write: Handler | None = None,
        *,
        can_read: Handler | None = None,
        opaque: Any = None,
    ) -> None:
        """qemu_set_fd_handler2. read and write both None: delete (flag only; the record is
        reaped when a dispatch walk passes it; unknown fd: no-op; no wakeup). Otherwise add (a
        new record at the head) or update the fd's record in place, reviving it if it was
        deleted but not yet reaped; it gets no callback until the next fill; notify()."""
        # Registration is a hot path: the common case (an int fd in range, callables or None)
        # is checked inline; anything else goes through the full checks and their errors.
        n = fd if type(fd) is int and 0 <= fd < _FD_LIMIT else _fd_number(fd)
        if not (
            (read is None or callable(read))
            and (write is None or callable(write))
            and (can_read is None or callable(can_read))  # checked on a delete too
        ):
            _check_callable("read", read)
            _check_callable("write", write)
            _check_callable("can_read", can_read)
        if read is None and write is None:
            with self._lock:
                if self._closed:  # _check_open only when it raises: saves a call
                    self._check_open()
                rec = self._by_fd.get(n)
                if rec is not None and not rec.deleted:
                    self._flag_deleted(rec)
                    if rec.kev and not (self._polling or self._waiting):
                        # Drop the kernel registration now, while the fd is normally still
                        # open: an epoll registration can only be removed through an open fd,
                        # and the usual next step is close() (with a dup or a fork child
                        # holding the file, a later removal would fail and it would keep
                        # reporting). Between a fill and the end of its wait the poll set is
                        # fixed (R20), so then it waits for the next fill as the seed does.
                        self._drop_registration(rec)
            return
        try:
            st = os.fstat(n)
        except OSError as e:
            raise ClosedFdError(n, f"fd {n} is not open: {e.strerror}") from e
        if not self._poller.polls_regular_files and stat.S_IFMT(st.st_mode) in _FILE_TYPES:
            raise UnpollableFdError(
                n, f"fd {n} is a regular file or directory; the {self._poller.name} poller "
                "cannot poll it (use poller='poll')"
            )
        with self._lock:
            if self._closed:  # _check_open only when it raises: saves a call
                self._check_open()
            rec = self._by_fd.get(n)
            if rec is None:
                self._seq += 1
                rec = self._by_fd[n] = _Record(n, self._seq)
            elif rec.deleted:
                rec.deleted = False
                self._deleted.discard(rec)
            rec.read = read
            rec.write = write
            rec.can_read = can_read
            rec.opaque = opaque
            ident = (st.st_dev, st.st_ino)
            if rec.kev and ident != rec.ident:
                rec.renew = True  # the kernel's registration (if any) is the old file's
            rec.ident = ident
            rec.stale = True
            self._dirty.add(rec)
            gated = read is not None and can_read is not None
            if gated != (rec in self._gated):
                if gated:
                    self._gated.add(rec)
                else:
                    self._gated.discard(rec)
                self._gated_order = None
            # notify(), with the lock held. While the loop waits (another thread got the lock)
            # the wakeup fd ends the wait. Otherwise nobody is in the kernel: the loop thread
            # itself (a callback, a gate) or no loop at all holds the lock, and the next
            # iteration reads this flag before its wait. Either way that iteration polls with
            # timeout 0 and counts the wakeup once in its ret; the flag saves an eventfd write
            # and read per registration.
            if self._waiting:
                self._wakeup.notify()
            else:
                self._notified = True

    def records(self) -> list[HandlerInfo]:
        """Live (not deleted) records in list order, newest first."""
        with self._lock:
            live = sorted((r for r in self._by_fd.values() if not r.deleted), key=_SEQ)
        return [HandlerInfo(r.fd, r.read, r.write, r.can_read, r.opaque) for r in reversed(live)]

    def notify(self) -> None:
        """qemu_notify_event: the next (or current) wait returns at once. Any thread."""
        self._wakeup.wake()  # not notify(): unlocked, it could race with consume() (wakeup.py)

    def set_tracer(self, tracer: Tracer | None) -> None:
        self._tracer = tracer

    # ------------------------------------------------------------------------------ timers

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run `callback(*args)` once, after dispatch, in the first iteration `delay` s on."""
        return self._add_timer(_check_delay("delay", delay), None, callback, args)

    def call_every(
        self, interval: float, callback: Callable[..., object], *args: Any
    ) -> TimerHandle:
        """Run `callback(*args)` every `interval` s (> 0) until cancelled; no catch-up bursts."""
        iv = _check_delay("interval", interval)
        if iv <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        return self._add_timer(iv, iv, callback, args)

    def _add_timer(
        self, delay: float, interval: float | None, callback: Callable[..., object], args: Any
    ) -> TimerHandle:
        _check_callable("callback", callback)
        with self._lock:
            self._check_open()
            handle = TimerHandle(time.monotonic() + delay, interval, callback, args)
            self._timers.push(handle)
            if self._waiting:  # from another thread: the wait may need a shorter timeout
                self._wakeup.notify()
        return handle

    def _run_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        last = timers.seq
        while (handle := timers.pop_due(now, last)) is not None:
            call = handle.call  # read once: cancel() from another thread clears it (timers.py)
            if call is None:
                continue
            if handle.interval is not None:  # re-arm first: cancel() in the callback works
                nxt = handle.deadline + handle.interval
                handle.deadline = nxt if nxt > now else now + handle.interval
                timers.push(handle)
            callback, args = call
            try:
                callback(*args)
            except BaseException as e:
                e.add_note(f"iohandler: raised by timer callback {callback!r}")
                raise

    # ---------------------------------------------------------------------------- the loop

    def main_loop_wait(self, nonblocking: bool = False, timeout: float | None = None) -> int:
        """One iteration: fill, poll (0 if nonblocking, else until a handler fd is ready, a
        notify, `timeout` seconds or the next timer), dispatch if ret > 0, expired timers.
        Returns ret: ready handler fds, plus 1 if the wakeup fd was readable."""
        if timeout is not None:
            timeout = _check_delay("timeout", timeout)
        return self._iterate(nonblocking, timeout, once=True)

    def _iterate(
        self,
        nonblocking: bool = False,
        timeout: float | None = None,
        *,
        once: bool = False,
        until: Callable[[], object] | None = None,
    ) -> int:
        """Iterations, with the lock held throughout but for the waits: one (`once`), or until
        stop() or `until()`. run() lives here rather than calling main_loop_wait so that an
        iteration pays no call, lock round trip or local setup of its own (bench/: K=1
        dispatch ~15% of the floor)."""
        lock = self._lock
        lock.acquire()
        try:
            if self._running:
                raise ReentrantWaitError(
                    "main_loop_wait called while an iteration is running (from a callback, "
                    "a gate or a timer, or from another thread)"
                )
            if self._closed:
                raise LoopClosedError("the loop is closed")
            self._running = True
            try:
                wfd = self._wakeup_fd
                get = self._by_fd.get
                check = self._check_files
                pending = self._deleted  # flagged, not yet reaped (these containers live as
                timer_heap = self._timer_heap  # long as the loop: locals save a lookup each)
                fd_errors = self._fd_errors
                read_events, write_events = READ_EVENTS, WRITE_EVENTS
                while True:
                    tr = self._tracer
                    if self._dirty or self._gated:
                        self._polling = True  # gates may delete: keep the kernel set (R20)
                        self._fill()
                    notified = self._notified  # read after the fill: a gate may notify
                    if nonblocking or notified:
                        timeout = 0.0
                    elif timer_heap:
                        deadline = self._timers.next_deadline()
                        if deadline is not None:
                            left = max(0.0, deadline - time.monotonic())
                            timeout = left if timeout is None else min(timeout, left)
                    if tr is not None:
                        entries = self._poll_set()  # under the lock: a consistent view
                    wait = self._wait  # re-read: anything that rebuilds the kernel set renews it
                    self._waiting = True
                    lock.release()
                    try:
                        if tr is not None:
                            tr.poll(entries)
                        events = wait(timeout)
                    finally:
                        lock.acquire()
                        self._waiting = self._polling = False
                    if len(events) >= self._full:  # a full batch: maybe more are ready
                        events = self._poller.wait(0)

                    # Pollers report only requested events plus HUP/ERR(/NVAL), and only for fds
                    # registered at the fill: records with kev != 0 (see _Record).
                    ready: list[_Record] = []
                    woke = 0
                    if notified:
                        self._notified = False
                        woke = 1
                    stray = False
                    for fd, ev in events:
                        if fd == wfd:
                            woke = 1
                            self._wakeup.consume()  # before the walk: a notify there wakes the next
                            continue
                        rec = get(fd)
                        if rec is not None and rec.kev:
                            rec.rev = ev
                            ready.append(rec)
                        else:
                            # Not registered by the loop: a kernel registration that outlived
                            # its fd number (epoll, dup'd file). Rebuild the set or it spins.
                            stray = True
                    if stray:
                        self._rebuild_kernel_set()
                    if len(ready) > 1:
                        ready.sort(key=_SEQ, reverse=True)
                    if check and ready:
                        # R33/R34. The poller's confirm (epoll: one EPOLL_CTL_MOD) answers
                        # for every ready fd in the common case; the first fd it cannot confirm
                        # and those after it get the fstat check. Inline: as a method call it
                        # cost ~0.05x the floor at K=1 (bench/).
                        confirm = self._confirm
                        if confirm is None:
                            self._check_ready_files(ready)
                        else:
                            try:
                                for r in ready:
                                    confirm(r.fd, r.kev)
                            except (OSError, ValueError):  # r and those after it: fstat decides
                                self._check_ready_files(ready[ready.index(r) :])
                    ret = len(ready) + woke
                    if tr is not None:
                        tr.ready([(r.fd, r.rev) for r in ready], ret > 0)
                    if ret:
                        # qemu_iohandler_poll: the seed's safe walk, restricted to ready records
                        # and records flagged deleted (the only ones a walk does anything to).
                        # Records added during the walk are not in `ready`. Inline: as a method
                        # call it cost ~8% of the loop's own work per iteration (bench/).
                        prev: float = math.inf  # the walk's position: seq >= prev was passed
                        for rec in ready:
                            if pending:
                                self._reap_between(rec.seq, prev)
                            prev = rec.seq
                            if not rec.deleted and not rec.stale:
                                rev = rec.rev
                                cb = rec.read
                                if cb is not None and rev & read_events:
                                    try:
                                        if tr is not None:
                                            tr.read(rec.fd, cb)
                                        cb(rec.opaque)
                                    except BaseException as e:
                                        self._abort_walk(rec, e, "read", cb)
                                        raise
                                # The write check sees the current handler (the read callback
                                # may have changed it) and the revents read before it ran, as
                                # the seed does.
                                if not rec.deleted:
                                    cb = rec.write
                                    if cb is not None and rev & write_events:
                                        try:
                                            if tr is not None:
                                                tr.write(rec.fd, cb)
                                            cb(rec.opaque)
                                        except BaseException as e:
                                            self._abort_walk(rec, e, "write", cb)
                                            raise
                            if rec.deleted:
                                self._reap(rec)
                        if pending:
                            self._reap_between(0, prev)  # seqs start at 1
                    if timer_heap:
                        self._run_timers()
                    if fd_errors:
                        self._raise_fd_errors()
                    if once or self._stopping or (until is not None and until()):
                        return ret
                    timeout = None
            finally:
                self._running = self._polling = False
        finally:
            lock.release()

    def _fill(self) -> None:
        """qemu_iohandler_fill over the records that can have changed: dirty ones and gated
        ones, in list order. Gates run user code, which may change the registry: a record it
        dirties that the fill has not reached yet is visited in this fill, others wait."""
        tr = self._tracer
        dirty = self._dirty
        todo: list[_Record]
        if dirty:
            self._dirty = set()
            if len(dirty) == 1 and not self._gated:  # one registration since the last fill
                todo = list(dirty)
            else:
                todo = sorted(dirty | self._gated, key=_SEQ, reverse=True)
        else:
            todo = self._gated_order if self._gated_order is not None else self._sort_gated()
        i, n = 0, len(todo)
        while i < n:
            rec = todo[i]
            i += 1
            ev = 0
            if not rec.deleted:
                if rec.read is not None:
                    gate = rec.can_read
                    if gate is None:
                        ev = READ_EVENTS
                    else:
                        try:
                            if tr is not None:
                                tr.gate(rec.fd, gate)
                            if gate(rec.opaque):
                                ev = READ_EVENTS
                        except BaseException as e:
                            self._dirty.update(todo[i - 1 :])  # revisit the rest next fill
                            e.add_note(f"iohandler: raised by the can_read gate {gate!r} of fd {rec.fd}")
                            raise
                        if self._dirty:
                            todo = self._merge_dirty(todo, i, rec.seq)
                            n = len(todo)
                # The seed reads fd_write after the gate ran, so a gate's changes count here.
                if rec.write is not None:
                    ev |= WRITE_EVENTS
            rec.stale = False
            if ev != rec.kev or rec.renew:
                self._sync(rec, ev)

    def _sort_gated(self) -> list[_Record]:
        self._gated_order = sorted(self._gated, key=_SEQ, reverse=True)
        return self._gated_order

    def _merge_dirty(self, todo: list[_Record], i: int, seq: int) -> list[_Record]:
        late = [r for r in self._dirty if r.seq < seq]  # behind the fill's position
        if not late:
            return todo
        self._dirty.difference_update(late)
        rest = set(todo[i:])
        rest.update(late)
        return todo[:i] + sorted(rest, key=_SEQ, reverse=True)

    def _poll_set(self) -> list[tuple[int, int]]:
        """This iteration's poll set in list order (for the tracer only: O(registered))."""
        polled = sorted((r for r in self._by_fd.values() if r.kev), key=_SEQ, reverse=True)
        return [(r.fd, r.kev) for r in polled]

    def _abort_walk(self, rec: _Record, e: BaseException, role: str, cb: Handler) -> None:
        if rec.deleted:
            self._reap(rec)
        e.add_note(f"iohandler: raised by the {role} handler {cb!r} of fd {rec.fd}")

    # --------------------------------------------------------------------- record keeping

    def _flag_deleted(self, rec: _Record) -> None:
        rec.deleted = True
        self._deleted.add(rec)
        self._dirty.add(rec)  # the next fill stops polling it
        if rec in self._gated:
            self._gated.discard(rec)
            self._gated_order = None

    def _reap_between(self, lo: int, hi: float) -> None:
        for rec in [r for r in self._deleted if lo < r.seq < hi]:
            self._reap(rec)

    def _reap(self, rec: _Record) -> None:
        """Unlink a deleted record (the walk reached it)."""
        self._deleted.discard(rec)
        self._dirty.discard(rec)
        if self._by_fd.get(rec.fd) is rec:
            del self._by_fd[rec.fd]
        self._drop_registration(rec)

    def _sync(self, rec: _Record, ev: int) -> None:
        """Give the kernel the record's new interest; quarantine the record if its file is
        gone or is not the one registered."""
        if rec.renew:
            rec.renew = False
            self._drop_registration(rec)
            # The number was closed while registered: with a dup of the old file alive, its
            # epoll registration survives under this number beside the new one. Start afresh.
            self._rebuild_kernel_set()
        if not ev:
            self._drop_registration(rec)
            return
        if not rec.kev:  # a fresh registration: make sure it is still the same file
            problem = self._file_problem(rec)
            if problem is not None:
                self._quarantine(rec, ClosedFdError(rec.fd, problem))
                return
            if rec.fd in self._orphans:
                self._rebuild_kernel_set()
        try:
            self._poller.modify(rec.fd, ev)
        except OSError as e:
            problem = self._file_problem(rec)
            if problem is None and e.errno == errno.ENOENT:
                # epoll dropped the registration when the old file closed, and the number was
                # re-registered (set_fd_handler) for the file it names now: register afresh.
                try:
                    self._poller.modify(rec.fd, ev)
                except OSError as e2:
                    e = e2
                else:
                    rec.kev = ev
                    return
            err: FdError
            if problem is None and e.errno == errno.EPERM:
                err = UnpollableFdError(rec.fd, f"fd {rec.fd}: {self._poller.name} cannot poll it")
            else:
                err = ClosedFdError(rec.fd, problem or f"fd {rec.fd}: {e.strerror}")
            err.__cause__ = e
            self._quarantine(rec, err)
            return
        rec.kev = ev

    def _file_problem(self, rec: _Record) -> str | None:
        try:
            st = os.fstat(rec.fd)
        except OSError:
            return f"fd {rec.fd} was closed while registered; its handlers were removed"
        if (st.st_dev, st.st_ino) != rec.ident:
            return (
                f"fd {rec.fd} was closed while registered and its number now names another "
                "file; its handlers were removed"
            )
        return None

    def _fast_confirm(self) -> Callable[[int, int], object] | None:
        """The poller's confirmer for the iteration's inline check, or None: no confirmer, or
        a subclass hooks `_check_ready_files` (tests/catalogue.py), which must then see every
        ready batch. It is asked `confirm(fd, rec.kev)`: a record with kev != 0 is registered
        for exactly those events (`_sync` sets both)."""
        if type(self)._check_ready_files is not MainLoop._check_ready_files:
            return None
        return self._poller.confirmer()

    def _check_ready_files(self, ready: list[_Record]) -> None:
        """R33/R34: a ready fd must still name the file registered. poll reports a closed
        number as NVAL and a reused one as the new file; epoll keeps reporting a closed number
        while a dup of its file is open. One fstat per ready record not already confirmed by
        the poller (the inline check in `_iterate`)."""
        fstat = os.fstat
        for rec in ready:
            if rec.deleted or rec.stale:
                continue
            try:
                st = fstat(rec.fd)
            except OSError:
                pass
            else:
                if (st.st_dev, st.st_ino) == rec.ident:
                    continue
            problem = self._file_problem(rec)
            if problem is not None:
                self._quarantine(rec, ClosedFdError(rec.fd, problem))

    def _rebuild_kernel_set(self) -> None:
        """Re-create the poller's kernel object from its book (dropping registrations that
        outlived their fd numbers); records whose fd cannot be registered again are removed."""
        failed = self._poller.rebuild()
        self._orphans.clear()  # the new kernel object holds only the book's registrations
        self._confirm = self._fast_confirm()  # the old ones name the old kernel object
        self._wait, self._full = self._poller.fast_wait()
        for fd in failed:
            rec = self._by_fd.get(fd)
            if rec is not None:  # the book holds the wakeup fd and records with kev != 0 only
                problem = self._file_problem(rec) or f"fd {fd}: cannot be registered again"
                self._quarantine(rec, ClosedFdError(fd, problem))

    def _drop_registration(self, rec: _Record) -> None:
        if rec.kev:
            rec.kev = 0
            try:
                self._poller.modify(rec.fd, 0)
            except OSError:  # the number no longer names the file: maybe out of reach
                self._orphans.add(rec.fd)
            else:
                if self._poller.silent_removal and self._file_problem(rec) is not None:
                    self._orphans.add(rec.fd)

    def _quarantine(self, rec: _Record, err: FdError) -> None:
        self._drop_registration(rec)
        if not rec.deleted:
            self._flag_deleted(rec)
        self._dirty.discard(rec)  # nothing left to sync
        self._fd_errors.append(err)

    def _raise_fd_errors(self) -> None:
        if self._poller.fileno() >= 0:
            # A quarantined fd's registration could not be removed by number if a dup of its
            # file is still open somewhere; it would keep reporting. Rare: rebuild.
            self._rebuild_kernel_set()
        errors = self._fd_errors[:]
        self._fd_errors.clear()  # the same list: _iterate holds it
        first = errors[0]
        for other in errors[1:]:
            first.add_note(f"also: {other}")
        raise first

    def check_fds(self) -> None:
        """Look at every live record's file (O(registered) fstat calls): finds fds closed while
        registered that epoll forgot without a word. Such records are removed and
        ClosedFdError is raised, as when an iteration finds them."""
        with self._lock:
            for rec in list(self._by_fd.values()):
                if not rec.deleted:
                    problem = self._file_problem(rec)
                    if problem is not None:
                        self._quarantine(rec, ClosedFdError(rec.fd, problem))
            if self._fd_errors:
                self._raise_fd_errors()

    # ------------------------------------------------------------------- running, closing

    def run_until(self, predicate: Callable[[], object]) -> None:
        """Iterate (blocking) until `predicate()` is true or `stop()` is called. The predicate
        is called before each iteration; from the second on, with the loop's lock held (as
        callbacks are)."""
        self._refuse_nested_run()
        try:
            if not self._stopping and not predicate():
                self._iterate(until=predicate)
        finally:
            self._stopping = False

    def run(self) -> None:
        """Iterate until `stop()`."""
        self._refuse_nested_run()
        try:
            if not self._stopping:
                self._iterate()
        finally:
            self._stopping = False

    def _refuse_nested_run(self) -> None:
        # R31: refused before the `finally` below could forget a stop() already requested.
        if self._running:
            raise ReentrantWaitError("run/run_until called while an iteration is running")

    def stop(self) -> None:
        """End `run` / `run_until` after the current iteration. Any thread."""
        self._stopping = True
        self._wakeup.wake()

    def _check_open(self) -> None:
        if self._closed:
            if self._forked:
                raise LoopForkedError(
                    "the loop was inherited through fork(): its kernel objects are the parent's; "
                    "create a new loop in the child (close() on this one is allowed)"
                )
            raise LoopClosedError("the loop is closed")

    @property
    def poller_name(self) -> str:
        return self._poller.name

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the fds the loop owns (poller, wakeup). Registered fds are not closed.

        From another thread while an iteration runs (R31): close() wakes the loop, ends `run` /
        `run_until` as `stop()` would, and waits for the iteration to return (a handler running
        then finishes first, the loop still open), then closes; the loop's caller sees its call
        return normally, and LoopClosedError on the next. From the loop's own handlers, gates
        and timers it raises ReentrantWaitError. A Tracer's `poll` hook (on the loop's thread,
        during the wait) must not call it: it would wait for itself.

        In a forked child (R38) only the child's copies are closed: the parent's registrations
        and wakeup are untouched."""
        if self._forked:
            self._poller.close()  # closes the child's epoll fd only: no registration changes
            self._wakeup.close()
            return
        with self._lock:
            if self._closed:
                return
            if self._running:
                if not self._waiting:  # we hold the lock mid-iteration: the loop's own thread
                    raise ReentrantWaitError("close() called while an iteration is running")
                self._await_iteration_end()
                if self._closed:  # another thread's close() got there first
                    return
            self._closed = True
            self._by_fd.clear()
            self._dirty.clear()
            self._gated.clear()
            self._gated_order = None
            self._deleted.clear()
            self._orphans.clear()
            self._poller.close()
            self._wakeup.close()

    def _await_iteration_end(self) -> None:
        """close() from another thread while the loop waits (lock held on entry and exit). The
        iteration signals nothing when it ends, so look every millisecond: wake() ends its
        wait, `_stopping` its run, and Condition.wait lets it take the lock to finish."""
        cond = threading.Condition(self._lock)
        while self._running:
            self._stopping = True
            self._wakeup.wake()
            cond.wait(0.001)

    def __del__(self, _warn: Callable[..., object] = warnings.warn) -> None:
        # Collected without close(): release the fds and say so, as sockets and asyncio do. A
        # running loop is referenced by its own frames, so it is never collected mid-iteration;
        # nobody else holds the lock. `_warn` is bound now: at shutdown module globals may be gone.
        if getattr(self, "_forked", False):  # a forked child's copy: not its to warn about
            self.close()
            return
        if getattr(self, "_closed", True):  # closed, or __init__ did not get that far
            return
        try:
            _warn(f"unclosed loop {self!r}", ResourceWarning, source=self)
        finally:
            self._closed = True
            self._poller.close()
            self._wakeup.close()

    def __enter__(self) -> MainLoop:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
