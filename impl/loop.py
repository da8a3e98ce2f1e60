"""MainLoop: QEMU's classic fd-handler loop (qemu_set_fd_handler2, qemu_iohandler_fill,
qemu_iohandler_poll, main_loop_wait, qemu_notify_event; QEMU 1.5-2.3), the seed's semantics
without its O(registered) walks. The rules are specs/SPEC.md's; code points to them.

Three parts, calls in one direction (loop -> registry, loop -> kernel):
* registry.py: records, list order, the dirty/gated/deleted sets, flag and reap (R1-R6, R19);
* kernel.py: the poller with each registration's file identity, orphans, rebuild (R33, R34);
* this file: the lifecycle, the lock (R35) and the hot path. A run (`_iterate`) holds the
  lock and runs iterations (`_iterations`), each in QEMU's order: fill (R8-R10, R22), wait
  (R13, R20, R37's timeout), collect and confirm (R11, R33/R34), the context (R47), the walk
  (R14-R19, inline: it is the hot path), spins (R40), timers (R37), errors (R33).

Kernel registrations persist (a poller keeps them) and change only at fill time for records
marked dirty by a registration, plus the gated records, whose gate is consulted every fill. The
wait reports ready fds; those records are sorted by sequence number, so an idle iteration costs
O(ready + gated + changed), not O(registered).

Beyond the seed: bad arguments (R30, args.py), re-entrant waits (R31), exceptions (R32), closed
and reused fds (R33, R34), threads (R35).
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

from iohandler.impl.args import FD_LIMIT, FdLike, check_callable, check_delay, fd_number
from iohandler.impl.context import AioContext, BottomHalf
from iohandler.impl.errors import (
    ClosedFdError,
    FdError,
    LoopClosedError,
    LoopForkedError,
    ReentrantWaitError,
    UnpollableFdError,
    add_note,
    describe,
    finish,
)
from iohandler.impl.kernel import ANON_INODE, Kernel, identity
from iohandler.impl.pollers import READ_EVENTS, WRITE_EVENTS, Poller, make_poller
from iohandler.impl.registry import SEQ, Record, RecordView, Registry
from iohandler.impl.signals import MECHANISMS, SignalSet, check_signum
from iohandler.impl.timers import TimerHandle, TimerQueue
from iohandler.impl.tracing import Handler, Tracer
from iohandler.impl.wakeup import Wakeup

__all__ = ["FdLike", "HandlerInfo", "LoopSnapshot", "MainLoop", "Seams"]

_FILE_TYPES = frozenset((stat.S_IFREG, stat.S_IFDIR))  # what epoll refuses (EPERM)
SPIN_LIMIT = 1000  # R40: QEMU's MAX_MAIN_LOOP_SPIN
SPIN_PAUSE = 0.001  # seconds; QEMU's 1 ms poll timeout
MAX_WAIT = 86400.0
"""The longest single kernel wait, in seconds (R39): epoll and poll take an int of milliseconds,
at most 2**31 - 1 (about 24.8 days)."""


class HandlerInfo(NamedTuple):
    """A live record as `MainLoop.records()` shows it."""

    fd: int
    read: Handler | None
    write: Handler | None
    can_read: Handler | None
    opaque: Any


class LoopSnapshot(NamedTuple):
    """`MainLoop.snapshot()`: the loop's state, read-only, for tests and debugging."""

    records: tuple[RecordView, ...]  # every record held, deleted ones included, newest first
    seq: int  # the last sequence number given
    kernel: dict[int, int]  # fd -> events the poller holds (the wakeup fd included)
    wakeup_fd: int
    wakeup_pending: bool  # the notifier was written and not yet consumed (as the loop knows)
    notified: bool  # a registration's notify waiting for the next iteration (R35)
    waiting: bool  # the loop is in the kernel wait
    running: bool
    stopping: bool
    closed: bool
    fd_errors: int  # errors found, waiting to be raised (R33)
    timers: tuple[tuple[float, int, TimerHandle], ...]  # the timer heap: (deadline, n, handle)


@dataclass(frozen=True)
class Seams:
    """Where tests (tests/catalogue.py plants bugs through these) and debugging tools reach
    into a loop without its private fields. `registry`: a fresh Registry (or subclass) to use.
    `kernel`: builds the Kernel (or subclass) from the poller and `fast_confirm`.
    `before_walk(ready)`: called with the ready records in walk order after the identity check,
    right before each walk (it may reorder them or change their `rev`); with it every ready fd
    gets the fstat check instead of the poller's confirm. `wakeup(use_eventfd)`: builds the
    Wakeup (or subclass); the loop calls its `notify`, `wake` and `consume` and reads and clears
    its `flag` (wakeup.py)."""

    registry: Registry | None = None
    kernel: Callable[..., Kernel] | None = None
    before_walk: Callable[[list[Record]], object] | None = None
    wakeup: Callable[[bool | None], Wakeup] | None = None


_NO_SEAMS = Seams()


_LIVE_LOOPS: weakref.WeakSet[MainLoop] = weakref.WeakSet()  # for the fork hook below


def _after_fork_in_child() -> None:
    """R41: a forked child shares each inherited loop's epoll set and wakeup with the parent, so
    it may not use them. Memory only: marks the loops closed (every entry point's `_closed`
    check then refuses, at no cost per call), empties the child's registry copy (check_fds has
    nothing to remove), and replaces locks a parent thread may have held at the fork."""
    for loop in list(_LIVE_LOOPS):
        loop._forked = True
        loop._closed = True
        loop._registry.clear()  # memory only: the kernel objects are the parent's
        loop._lock = threading.RLock()
        loop._ended = threading.Condition(loop._lock)
        loop._closers = 0
        loop._wakeup.after_fork_in_child()
        loop._context._closed = True  # bh: BottomHalf.schedule reads only the context's flag


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
        seams: Seams | None = None,
        signal_mechanism: str | None = None,
    ) -> None:
        """`check_files=False` drops the per-ready-fd identity check (R33/R34) where the poller
        tracks files (epoll), saving a system call per ready event. Only for callers that always
        delete a handler before closing its fd: epoll keeps reporting a closed fd whose file a
        dup or a fork keeps open. Pollers that follow fd numbers (poll, selectors) always check,
        since that is what stops them spinning on NVAL.

        `seams`: for tests and debugging only (see Seams).

        `signal_mechanism`: how `add_signal_handler` receives signals (R60): "signalfd", "wakeup"
        (`signal.set_wakeup_fd`), or None: signalfd where the kernel has it."""
        if signal_mechanism is not None and signal_mechanism not in MECHANISMS:
            raise ValueError(f"signal_mechanism must be one of {MECHANISMS} or None, got {signal_mechanism!r}")
        seams = seams if seams is not None else _NO_SEAMS
        registry = seams.registry
        if registry is not None and registry.by_fd:
            raise ValueError("seams.registry must be empty")
        before_walk = seams.before_walk
        poller_obj = make_poller(poller)
        try:
            self._wakeup = (seams.wakeup or Wakeup)(use_eventfd)
            self._wakeup_fd = self._wakeup.fileno()
            poller_obj.modify(self._wakeup_fd, READ_EVENTS)
        except BaseException:
            poller_obj.close()
            raise
        self._lock = threading.RLock()
        self._ended = threading.Condition(self._lock)  # an iteration ended, or close() did (R31)
        self._closers = 0  # close() calls from other threads waiting for the iteration to end
        self._poller = poller_obj
        self._kernel = (seams.kernel or Kernel)(poller_obj, fast_confirm=before_walk is None)
        self._registry = reg = registry if registry is not None else Registry()
        reg.on_release = self._kernel.release
        self._before_walk = before_walk
        self._by_fd = reg.by_fd  # the same dict: the hot path's lookups
        self._deleted = reg.deleted  # the same set: a cheap "anything to reap?"
        self._fd_errors: list[FdError] = []
        self._timers = TimerQueue()
        self._timer_heap = self._timers.heap  # the same list: a cheap "any timers?"
        # R33/R34 on every poller unless the caller opted out where the kernel tracks files.
        self._check_files = check_files or not poller_obj.tracks_files
        self._tracer = tracer
        self._running = False
        self._polling = False  # from the start of a fill to the end of its wait
        self._waiting = False
        self._spins = 0  # iterations in a row that returned at once and ran nothing (R40)
        self._spin_warned = False
        self._stopping = False
        self._closed = False
        self._forked = False  # inherited by a forked child (R41); set by _after_fork_in_child
        self._signal_mechanism = signal_mechanism
        self._signals: SignalSet | None = None  # created by the first add_signal_handler (R60)
        self._signal_fd = -1  # its record's fd while open: the loop's own (R38)
        # bh: qemu_init_main_loop's qemu_aio_context. The ignore: mypy checks this file as
        # impl.loop while context.py names iohandler.impl.loop, one class seen twice.
        self._context = AioContext(self)  # type: ignore[arg-type]
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
        n = fd if type(fd) is int and 0 <= fd < FD_LIMIT else fd_number(fd)
        if not (
            (read is None or callable(read))
            and (write is None or callable(write))
            and (can_read is None or callable(can_read))  # checked on a delete too
        ):
            check_callable("read", read)
            check_callable("write", write)
            check_callable("can_read", can_read)
        if read is None and write is None:
            with self._lock:
                if self._closed:  # _check_open only when it raises: saves a call
                    self._check_open()
                if n == self._signal_fd:  # R38: the loop's own fd; a delete is a no-op
                    return
                rec = self._by_fd.get(n)
                if rec is not None and not rec.deleted:
                    reg = self._registry
                    reg.flag_deleted(rec)
                    if not rec.kev or not (self._polling or self._waiting):
                        # Drop the kernel registration now, while the fd is normally still
                        # open: an epoll registration can only be removed through an open fd,
                        # and the usual next step is close() (with a dup or a fork child
                        # holding the file, a later removal would fail and it would keep
                        # reporting). Between a fill and the end of its wait the poll set is
                        # fixed (R20), so then it waits for the next fill as the seed does.
                        # A record not in the kernel set (a closed gate, R10) has only its
                        # witness to let go, at once: an idle loop may never walk to reap it.
                        reg.release(rec)
            return
        if self._closed:  # R30: a closed loop says so first, whatever the fd
            self._check_open()
        try:
            st = os.fstat(n)
        except OSError as e:
            raise ClosedFdError(n, f"fd {n} is not open: {e.strerror}") from e
        if n == self._wakeup_fd or n == self._kernel.own_fd or n == self._signal_fd:
            self._refuse_own_fd(n)
        if not self._poller.polls_regular_files and stat.S_IFMT(st.st_mode) in _FILE_TYPES:
            raise UnpollableFdError(
                n,
                f"fd {n} is a regular file or directory; the {self._poller.name} poller "
                "cannot poll it (use poller='poll')",
            )
        with self._lock:
            if self._closed:  # _check_open only when it raises: saves a call
                self._check_open()
            if n not in self._by_fd and n in self._context._by_fd:  # bh: one kernel registration per fd
                raise ValueError(
                    f"fd {n} has a context handler (loop.context.set_fd_handler); an fd is "
                    "either there or in the fd-handler list, not both"
                )
            # R35: every step below can be repeated, so a signal handler's exception part-way
            # is answered by finishing the registration and then letting the exception leave:
            # the call happened whole, never half (a record without its identity, an update
            # that never reaches the kernel, a notify lost).
            try:
                self._register(n, st, read, write, can_read, opaque)
            except BaseException:
                finish(lambda: self._register(n, st, read, write, can_read, opaque))
                raise

    def _register(
        self,
        n: int,
        st: os.stat_result,
        read: Handler | None,
        write: Handler | None,
        can_read: Handler | None,
        opaque: Any,
    ) -> None:
        """set_fd_handler's add or update, with the lock held; repeatable (R35)."""
        reg = self._registry
        rec = self._by_fd.get(n)
        if rec is None:
            rec = reg.add(n)
        elif rec.deleted:
            reg.revive(rec)
        rec.read = read
        rec.write = write
        rec.can_read = can_read
        rec.opaque = opaque
        ident: tuple[object, ...] = (st.st_dev, st.st_ino)  # kernel.identity, inline (hot)
        # R34: a witness of the file, whatever the poller, where fstat cannot tell two
        # files apart (anonymous inodes; character devices: a pty master, a tun device)
        if ident == ANON_INODE or stat.S_ISCHR(st.st_mode):
            ident = identity(st)
            if self._kernel.bind(rec, n) and rec.kev:
                rec.renew = True  # the kernel's registration may be the old file's
        else:
            if rec.kev and ident != rec.ident:
                rec.renew = True  # the kernel's registration may be the old file's
            if self._kernel.witnesses:  # it may have been an anonymous file's record
                self._kernel.unbind(n)
        rec.ident = ident
        rec.stale = True
        reg.dirty.add(rec)
        if can_read is not None or rec in reg.gated:  # set_gated, only where it can change
            reg.set_gated(rec, read is not None and can_read is not None)
        # notify(), with the lock held. While the loop waits (another thread got the lock)
        # the wakeup fd ends the wait. Otherwise nobody is in the kernel: the loop thread
        # itself (a callback, a gate) or no loop at all holds the lock, and the next
        # iteration reads the wakeup's flag before its wait. Either way that iteration polls
        # with timeout 0 and counts the wakeup once in its ret; the flag saves an eventfd
        # write and read per registration.
        if self._waiting:
            self._wakeup.notify()
        elif not self._context._dispatching:  # bh: R45, aio_notify inside aio_poll
            self._wakeup.flag = True

    def _refuse_own_fd(self, n: int) -> None:
        """R38: the loop's own fds are not the caller's to register."""
        if n == self._wakeup_fd:
            what = "wakeup notifier (notify() and stop() write to it)"
        elif n == self._signal_fd:
            what = "signal record's fd (add_signal_handler, R60)"
        else:
            what = f"{self._poller.name} poller's kernel object"
        raise ValueError(f"fd {n} is the loop's own {what}; it cannot be registered")

    def records(self) -> list[HandlerInfo]:
        """Live (not deleted) records in list order, newest first."""
        with self._lock:
            live = sorted((r for r in self._by_fd.values() if not r.deleted), key=SEQ)
        return [HandlerInfo(r.fd, r.read, r.write, r.can_read, r.opaque) for r in reversed(live)]

    def snapshot(self) -> LoopSnapshot:
        """The loop's state, read-only (O(registered)): for tests and debugging."""
        with self._lock:
            snap = LoopSnapshot(
                records=self._registry.snapshot(),
                seq=self._registry.seq,
                kernel=self._kernel.registrations(),
                wakeup_fd=self._wakeup_fd,
                wakeup_pending=self._wakeup_pending(),
                notified=self._wakeup.flag,
                waiting=self._waiting,
                running=self._running,
                stopping=self._stopping,
                closed=self._closed,
                fd_errors=len(self._fd_errors),
                timers=tuple(self._timer_heap),
            )
        return snap  # after the with: _iterate says why

    def _wakeup_pending(self) -> bool:
        return self._wakeup.pending

    @property
    def wakeup_fd(self) -> int:
        """The loop's own notifier fd (R13); -1 once closed."""
        return self._wakeup_fd if not self._closed else -1

    @property
    def lock(self) -> threading.RLock:
        """The loop's re-entrant lock (R35), held by an iteration except during its wait: hold
        it to make several calls atomic with respect to the loop (QEMU's global mutex)."""
        return self._lock

    @property
    def poller(self) -> Poller:
        """The loop's poller (read it only: `registered()`, `fileno()`, `name`)."""
        return self._poller

    def notify(self) -> None:
        """qemu_notify_event: the next (or current) wait returns at once. Any thread. Nothing
        from inside the context's dispatch (R45: everything is looked at again anyway)."""
        if self._context._dispatching and self._lock._is_owned():  # type: ignore[attr-defined]  # bh
            return
        self._wakeup.wake()  # not notify(): unlocked, it could race with consume() (wakeup.py)

    def set_tracer(self, tracer: Tracer | None) -> None:
        self._tracer = tracer

    # ------------------------------------------------------------ bh: the context (context.py)

    @property
    def context(self) -> AioContext:
        """The loop's AioContext: bottom halves, context fd handlers, aio_poll."""
        return self._context

    def bh_new(self, callback: Handler, opaque: Any = None) -> BottomHalf:
        """qemu_bh_new: a bottom half of the loop's context (`loop.context.bh_new`)."""
        return self._context.bh_new(callback, opaque)

    # ------------------------------------------------------------------------------ timers

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run `callback(*args)` once, after dispatch, in the first iteration `delay` s on."""
        return self._add_timer(check_delay("delay", delay), None, callback, args)

    def call_every(self, interval: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run `callback(*args)` every `interval` s (> 0) until cancelled; no catch-up bursts."""
        iv = check_delay("interval", interval)
        if iv <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        return self._add_timer(iv, iv, callback, args)

    def _add_timer(
        self, delay: float, interval: float | None, callback: Callable[..., object], args: Any
    ) -> TimerHandle:
        check_callable("callback", callback)
        with self._lock:
            self._check_open()
            handle = TimerHandle(time.monotonic() + delay, interval, callback, args)
            # Notify first: the waiting loop cannot look before this thread lets the lock go,
            # and a signal handler's exception between the two then leaves no timer added
            # rather than a timer the wait does not know of (R35).
            if self._waiting:  # from another thread: the wait may need a shorter timeout
                self._wakeup.notify()
            self._timers.push(handle)
        return handle

    def _run_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        last = timers.seq
        while (handle := timers.due(now, last)) is not None:
            timers.fire(handle, now)

    # ----------------------------------------------------------------------------- signals

    def add_signal_handler(self, signum: int, callback: Callable[..., object], *args: Any) -> None:
        """Call `callback(info, *args)` in the walk for each delivery of signal `signum`
        (`info`: `SignalInfo`), as the seed's `qemu_signal_init`/`sigfd_handler` do (R60-R65).
        Replaces the signal's handler if it has one. Main thread only; one loop per process."""
        with self._lock:
            self._check_open()
            n = check_signum(signum)
            if not callable(callback):
                raise TypeError(f"callback must be callable, got {type(callback).__name__}")
            sigs = self._signals
            if sigs is None:
                sigs = SignalSet(self, self._signal_mechanism)
                self._signals = sigs
            sigs.add(n, callback, args)

    def remove_signal_handler(self, signum: int) -> bool:
        """Remove the handler of `signum`; False if it had none. The last one's removal deletes
        the signal record and restores the mask and dispositions (R64)."""
        with self._lock:
            self._check_open()
            n = check_signum(signum)
            sigs = self._signals
            removed = sigs.remove(n) if sigs is not None else False
        return removed  # after the with: _iterate says why

    @property
    def signal_set(self) -> SignalSet | None:
        """The loop's signal handlers and their record's fd (read it only), once created."""
        return self._signals

    def _register_signal_record(self) -> None:
        """R60: the signal record is an ordinary record (a read handler, no gate, no writer)."""
        sigs = self._signals
        assert sigs is not None
        fd = sigs.fileno()
        self._signal_fd = -1  # our own registration passes R38's check
        try:
            self.set_fd_handler(fd, read=sigs.dispatch, opaque=sigs)
        finally:
            self._signal_fd = fd

    def _unregister_signal_record(self) -> None:
        """R64: the record is deleted as any record is (R4); the fd stays open, and the loop's,
        until close(), so no other file takes its number while the kernel may still hold it."""
        fd = self._signal_fd
        self._signal_fd = -1
        try:
            self.set_fd_handler(fd, None, None)
        finally:
            self._signal_fd = fd

    # ---------------------------------------------------------------------------- the loop

    def main_loop_wait(self, nonblocking: bool = False, timeout: float | None = None) -> int:
        """One iteration: fill, poll (0 if nonblocking, else until a handler fd is ready, a
        notify, `timeout` seconds or the next timer), dispatch if ret > 0, expired timers.
        Returns ret: ready handler fds, plus 1 if the wakeup fd was readable."""
        if timeout is not None:
            timeout = check_delay("timeout", timeout)
        if self._signals is not None:
            self._signals.check_thread()  # R65
        return self._iterate(nonblocking, timeout, once=True)

    def _iterate(
        self,
        nonblocking: bool = False,
        timeout: float | None = None,
        *,
        once: bool = False,
        until: Callable[[], object] | None = None,
    ) -> int:
        """A run: iterations (`_iterations`) with the lock held throughout but for the waits
        (R35), one (`once`) or until stop() or `until()`; refused re-entry (R31) and a close()
        from another thread let in first. run() lives here rather than calling main_loop_wait so
        that an iteration pays no call, lock round trip or local setup of its own (bench/)."""
        lock = self._lock
        # R35: an exception from a signal handler can surface after any call returns. `with`
        # on the C lock leaves no gap between acquiring and the protected block; the release
        # around the wait is re-taken by `_relock`, which cannot leave it released. A caller
        # already holding the lock keeps it through the wait (releasing one level would not
        # free it anyway).
        mine = not lock._is_owned()  # type: ignore[attr-defined]  # RLock's own, in C
        with lock:
            if self._closed:  # first: a forked child's copy says so (R41) whatever it was doing
                self._check_open()
            if self._running:
                raise ReentrantWaitError(
                    "main_loop_wait called while an iteration is running (from a callback, "
                    "a gate or a timer, or from another thread)"
                )
            if self._closers:  # R31: a close() from another thread goes first
                self._let_closers_in()
            self._running = True
            # Never `return call()` inside a try with a finally or a `with` (R35): CPython copies
            # the finally body (or the with's exit) right after the returned call, outside their
            # handlers, and a signal handler's exception there, as the call returns, skips them:
            # here the loop would stay "running" for good, after a `with lock:` the lock held.
            # tests/test_architecture.py checks impl/ for the pattern.
            try:
                ret = self._iterations(nonblocking, timeout, once, until, mine)
            finally:
                # R31: every run clears a stop() made during it (libuv's uv_run), one iteration
                # of main_loop_wait included, so that it cannot end a later run.
                self._running = self._polling = self._waiting = self._stopping = False
                if self._closers:
                    self._ended.notify_all()
        return ret

    def _iterations(
        self,
        nonblocking: bool,
        timeout: float | None,
        once: bool,
        until: Callable[[], object] | None,
        mine: bool,
    ) -> int:
        """The iterations of a run, each in QEMU's order of phases, each under a comment that
        names it and its rules: fill (R8-R10, R22), wait (R13, R20, R35, R37, R39, R40's pause),
        collect (R11, R13, R33/R34), the context (R47), the walk (R14-R19, R32, R33/R34), spins
        (R40), timers (R37), errors (R33). The phases every iteration runs are inline on
        purpose: each Python call and attribute load per iteration shows in bench.icount, and
        wait-and-collect and the walk as methods were measured far over the loop's cost budget
        (+20.7% and +3.4% instructions per event). The others are methods, called only when
        they have work (`_fill_phase`, `_wait_timeout`, `_count_spin`, `_run_timers`,
        `_raise_fd_errors`)."""
        lock = self._lock
        wfd = self._wakeup_fd
        wakeup = self._wakeup
        poller = self._poller
        use_confirm = self._kernel.fast_confirm
        get = self._by_fd.get
        check = self._check_files
        reg = self._registry
        pending = self._deleted  # flagged, not yet reaped (these containers live as
        timer_heap = self._timer_heap  # long as the loop: locals save a lookup each)
        fd_errors = self._fd_errors
        behind = reg.behind
        before_walk = self._before_walk  # a seam, fixed at construction
        read_events, write_events = READ_EVENTS, WRITE_EVENTS
        ctx = self._context  # bh
        while True:
            tr = self._tracer
            # Fill (R8-R10, R22; the context's fds, R47).
            if reg.dirty or reg.gated or ctx._in_use:
                self._fill_phase()
            # Wait (R13, R20, R37). The loop counts as waiting from before it reads the
            # flag (R35): a signal handler that registers, notifies or adds a timer
            # after the read then writes the notifier, which ends the wait.
            self._waiting = True
            notified = wakeup.flag  # read after the fill: a gate may notify
            if nonblocking or notified:
                timeout = 0.0
            elif timer_heap or ctx._in_use:
                timeout = self._wait_timeout(timeout)
            if tr is not None:
                entries = self._poll_set()  # under the lock: a consistent view
                ctx_entries = ctx._poll_set()  # bh
            wait = poller.wait_once or poller.wait  # re-read: a rebuild renews it
            # R40: whether the notifier is pending as the wait begins (read under the
            # lock: a hand-off from another thread after the release is a hand-off, a
            # notify() from a gate is not). Used only by the spin count, below.
            pending_at_wait = wakeup._pending  # the slot: no property call per iteration
            try:
                if not notified and wakeup.flag:
                    # bh: R45, a notify (a signal handler's schedule) after the read
                    # above set only the flag; from `_waiting` on, notifies write the fd.
                    notified = True
                    timeout = 0.0
                if mine:
                    lock.release()
                if self._spins >= SPIN_LIMIT and not nonblocking:  # R40
                    self._pause()
                if tr is not None:
                    tr.poll(entries)
                    if ctx_entries:  # bh: only with context fds (older traces unchanged)
                        tr.aio_poll_set(ctx_entries)
                events = self._long_wait(wait, timeout) if timeout is not None and timeout > MAX_WAIT else wait(timeout)
            finally:
                if mine:
                    try:
                        if not lock._is_owned():  # type: ignore[attr-defined]
                            lock.acquire()
                    except BaseException:  # a signal handler's, mid-way: _relock
                        self._relock()
                        raise
                self._waiting = self._polling = False
            if len(events) >= poller.batch_full:  # a full batch: maybe more are ready
                events = poller.wait(0)

            # Collect and confirm (R11, R33/R34). Pollers report only requested events
            # plus HUP/ERR(/NVAL), and only for fds registered at the fill: records with
            # kev != 0 (registry.Record).
            ready: list[Record] = []
            woke = 0
            if notified:
                wakeup.flag = False
                woke = 1
            stray = False
            ctx_ready = 0  # bh
            for fd, ev in events:
                if fd == wfd:
                    woke = 1
                    wakeup.consume()  # before the walk: a notify there wakes the next
                    continue
                rec = get(fd)
                if rec is not None and rec.kev:
                    rec.rev = ev
                    ready.append(rec)
                elif fd in ctx._slots:  # bh: a context fd (counts in ret, as in glib's poll)
                    ctx_ready += 1
                    ctx._ready_in_wait(fd, ev)  # R33/R34: NVAL, or a file no longer named
                else:
                    # Not registered by the loop: a kernel registration that outlived
                    # its fd number (epoll, dup'd file). Rebuild the set or it spins.
                    stray = True
            if stray:
                self._rebuild_kernel_set()
            if len(ready) > 1:
                ready.sort(key=SEQ, reverse=True)
            first = ready[0] if ready else None
            if check and first is not None:
                # R33/R34, one check per ready fd: the first here, each later one at its
                # turn in the walk (a handler that ran before it may have closed it, so
                # a check made now would have to be made again). The poller's confirm
                # (epoll: one EPOLL_CTL_MOD, kernel.py) answers in the common case, else
                # fstat decides. Inline on purpose (bench/).
                confirm = poller.confirm if use_confirm else None
                if confirm is None:
                    self._check_ready_file(first)
                else:
                    try:
                        confirm(first.fd, first.kev)
                    except (OSError, ValueError):
                        self._check_ready_file(first)
            if before_walk is not None:
                before_walk(ready)
            ret = len(ready) + woke + ctx_ready  # bh: the context's fds count (R47)
            if tr is not None:
                tr.ready([(r.fd, r.rev) for r in ready], ret > 0)
            called = False
            # bh: the context's dispatch, aio_poll(ctx, false) (R47): BHs, its handlers,
            # its timers, before the fd-handler walk. Its callbacks may have closed the
            # first ready fd, checked above: it is checked again at its turn.
            if ctx._in_use and (ctx._nodes or ctx._pending or ctx._has_deleted or ctx._timer_heap):
                called = ctx._loop_poll(woke > 0)
                if check:
                    first = None
            if ret:
                # Walk (R14-R19): qemu_iohandler_poll over the ready records and the
                # records flagged deleted (the only ones a walk does anything to).
                # Records added during the walk are not in `ready` (R15). Inline on
                # purpose: it is the hot path (bench/).
                prev: float = math.inf  # the walk's position: seq >= prev was passed
                # Whether or not records are flagged now: one the last walk passed
                # may be deleted again by a handler of this walk, before its turn (R19).
                if behind:
                    reg.begin_walk()
                for rec in ready:
                    if pending:
                        reg.reap_between(rec.seq, prev)
                    prev = rec.seq
                    if not rec.deleted and not rec.stale:
                        rev = rec.rev
                        if check and rec is not first and not self._recheck(rec):
                            rev = 0  # R33/R34: closed, or reused (maybe by a handler)
                        cb = rec.read
                        read_ran = False
                        if cb is not None and rev & read_events:
                            try:
                                if tr is not None:
                                    tr.read(rec.fd, cb)
                                cb(rec.opaque)
                                called = read_ran = True
                            except BaseException as e:
                                self._abort_walk(rec, e, "read", cb)
                                raise
                        # The write check sees the current handler (the read callback
                        # may have changed it) and the revents read before it ran, as
                        # the seed does; the file is checked again only if this
                        # record's read handler ran (it may have closed it: R33).
                        if not rec.deleted:
                            cb = rec.write
                            if (
                                cb is not None
                                and rev & write_events
                                and (not read_ran or not check or self._recheck(rec))
                            ):
                                try:
                                    if tr is not None:
                                        tr.write(rec.fd, cb)
                                    cb(rec.opaque)
                                    called = True
                                except BaseException as e:
                                    self._abort_walk(rec, e, "write", cb)
                                    raise
                    if rec.deleted:
                        self._reap(rec)
                if pending:
                    reg.reap_between(0, prev)  # seqs start at 1
            # Spins (R40).
            if called:
                if self._spins:
                    self._spins = 0
            else:
                self._count_spin(ret, ready, timeout, pending_at_wait, nonblocking)
            # Timers (R37).
            if timer_heap:
                self._run_timers()
            if fd_errors:
                self._raise_fd_errors()
            if once or self._stopping or (until is not None and until()):
                return ret
            timeout = None

    def _fill_phase(self) -> None:
        """Fill: the records' (R8-R10, R22) and the context's fds changed since (R47)."""
        reg = self._registry
        if reg.dirty or reg.gated:
            self._polling = True  # gates may delete: keep the kernel set (R20)
            self._fill()
        ctx = self._context
        if ctx._in_use and ctx._dirty:  # bh: context fds changed during the wait
            ctx._fill()

    def _wait_timeout(self, timeout: float | None) -> float | None:
        """The wait's timeout bounded by the next timer (R37) and the context's (aio_ctx_prepare:
        scheduled BHs, idle BHs, context timers; R50)."""
        if self._timer_heap:
            deadline = self._timers.next_deadline()
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
        ctx = self._context
        if ctx._in_use and (ctx._pending or ctx._timer_heap):
            left_ctx = ctx.compute_timeout()
            if left_ctx is not None:
                timeout = left_ctx if timeout is None else min(timeout, left_ctx)
        return timeout

    def _count_spin(
        self, ret: int, ready: list[Record], timeout: float | None, pending_at_wait: bool, nonblocking: bool
    ) -> None:
        """R40: an iteration that called no handler. It counts as a spin if its wait returned
        at once: something was reported (ret > 0) and either a ready record nobody took, or a
        wait that could not block (its timeout was 0, or the notifier was already pending when
        it began: a gate's or a handler's notify(), the "notified" flag). A wait that blocked
        and was ended by the notifier is another thread's hand-off (notify, stop, a timer), not
        a spin. Anything else ends the count. Iterations asked for with `nonblocking` are never
        counted."""
        blocked = timeout != 0.0 and not pending_at_wait
        if ret and (ready or not blocked):
            if not nonblocking:
                self._spins += 1
        elif self._spins:
            self._spins = 0

    def _pause(self) -> None:
        """R40: QEMU's throttle (util/main-loop.c): after SPIN_LIMIT iterations in a row that
        returned at once and ran nothing, warn once, then pause before each wait."""
        if not self._spin_warned:
            self._spin_warned = True
            warnings.warn(
                f"iohandler: the loop spun for {SPIN_LIMIT} iterations (main-loop: WARNING: I/O "
                "thread spun for 1000 iterations); pausing 1 ms before each wait until a handler runs",
                RuntimeWarning,
                stacklevel=5,
            )
        time.sleep(SPIN_PAUSE)

    def _long_wait(
        self, wait: Callable[[float | None], list[tuple[int, int]]], timeout: float
    ) -> list[tuple[int, int]]:
        """R39: a wait longer than the kernel takes, in steps of at most MAX_WAIT, until
        something is ready or `timeout` has really passed."""
        end = time.monotonic() + timeout
        while True:
            events = wait(min(timeout, MAX_WAIT))
            if events:
                return events
            timeout = end - time.monotonic()
            if timeout <= 0:
                return events

    def _relock(self) -> None:
        """Take the loop's lock back after the wait when a signal handler's exception cut the
        plain re-acquire short: retried until held, once (R35); the caller re-raises."""
        lock = self._lock
        owned = lock._is_owned  # type: ignore[attr-defined]
        while True:
            try:
                if not owned():
                    lock.acquire()  # an interrupted acquire raises without the lock: retried
                break
            except BaseException:  # another signal: the first one is re-raised
                continue

    def _fill(self) -> None:
        """qemu_iohandler_fill over the records that can have changed: dirty ones and gated
        ones, in list order (R8-R10). Gates run user code, which may change the registry (R22):
        a record it dirties that the fill has not reached yet is visited in this fill, others
        wait."""
        tr = self._tracer
        reg = self._registry
        dirty = reg.dirty
        todo: list[Record] = []
        try:
            if dirty:
                if len(dirty) == 1 and not reg.gated:  # one registration since the last fill
                    todo = list(dirty)
                else:
                    todo = sorted(dirty | reg.gated, key=SEQ, reverse=True)
                reg.dirty = set()
            else:
                todo = reg.gated_order if reg.gated_order is not None else reg.sort_gated()
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
                                add_note(e, f"iohandler: raised by the can_read gate {describe(gate)} of fd {rec.fd}")
                                raise
                            if reg.dirty:
                                todo = self._merge_dirty(todo, i, rec.seq)
                                n = len(todo)
                    # The seed reads fd_write after the gate ran, so a gate's changes count here.
                    if rec.write is not None:
                        ev |= WRITE_EVENTS
                rec.stale = False
                if ev != rec.kev or rec.renew:
                    self._sync(rec, ev)
        except BaseException:
            # Whatever raised (a gate, a signal handler, the kernel: R32, R35), every record this
            # fill took is visited again by the next one: a second visit changes nothing for a
            # record already synced, and gated records are consulted every fill anyway. `todo`
            # holds all of `dirty` from before `dirty` is emptied (before that, nothing is lost).
            reg.dirty.update(todo)
            raise

    def _merge_dirty(self, todo: list[Record], i: int, seq: int) -> list[Record]:
        reg = self._registry
        late = [r for r in reg.dirty if r.seq < seq]  # behind the fill's position
        if not late:
            return todo
        rest = set(todo[i:])
        rest.update(late)
        merged = todo[:i] + sorted(rest, key=SEQ, reverse=True)
        # Taken out of `dirty` last: until then an exception leaves them there (see _fill).
        reg.dirty.difference_update(late)
        return merged

    def _poll_set(self) -> list[tuple[int, int]]:
        """This iteration's poll set in list order (for the tracer only: O(registered))."""
        polled = sorted((r for r in self._by_fd.values() if r.kev), key=SEQ, reverse=True)
        return [(r.fd, r.kev) for r in polled]

    def _abort_walk(self, rec: Record, e: BaseException, role: str, cb: Handler) -> None:
        """R32: finish the record in hand, name it in a note; the rest waits."""
        if rec.deleted:
            self._reap(rec)
        add_note(e, f"iohandler: raised by the {role} handler {describe(cb)} of fd {rec.fd}")

    def _reap(self, rec: Record) -> None:
        """R19: unlink a deleted record the walk reached (and drop its kernel registration)."""
        self._registry.unlink(rec)

    # ------------------------------------------------------------- kernel problems (R33/R34)

    def _sync(self, rec: Record, ev: int) -> None:
        kernel = self._kernel
        err = kernel.sync(rec, ev)
        if err is not None:
            self._quarantine(rec, err)
        if kernel.lost:
            self._quarantine_lost()

    def _recheck(self, rec: Record) -> bool:
        """R33/R34 for a ready record at its turn in the walk, after the handlers before it
        (which may have closed this fd, and a new file taken the number). False: the record
        was quarantined."""
        confirm = self._poller.confirm if self._kernel.fast_confirm else None
        if confirm is not None:
            try:
                confirm(rec.fd, rec.kev)
            except (OSError, ValueError):
                pass
            else:
                return True
        return self._check_ready_file(rec)

    def _check_ready_file(self, rec: Record) -> bool:
        """R33/R34 for a ready record the poller's confirm did not vouch for. False: the
        record was quarantined."""
        err = self._kernel.check_ready(rec)
        if err is None:
            return True
        self._quarantine(rec, err)
        return False

    def _rebuild_kernel_set(self) -> None:
        self._kernel.rebuild()
        self._quarantine_lost()

    def _quarantine_lost(self) -> None:
        """Records whose fd a rebuild could not register again are removed (R33)."""
        kernel = self._kernel
        lost, kernel.lost = kernel.lost, []
        for fd in lost:
            rec = self._by_fd.get(fd)
            if rec is not None:  # the book holds the wakeup fd and records with kev != 0 only
                rec.kev = 0  # the rebuild dropped it from the book
                problem = kernel.file_problem(rec) or f"fd {fd}: cannot be registered again"
                self._quarantine(rec, ClosedFdError(fd, problem))

    def _quarantine(self, rec: Record, err: FdError) -> None:
        """R33: the record is deleted (reaped by the next walk), its registration dropped, and
        `err` raised at the end of the iteration."""
        # In this order, an exception from a signal handler at any point leaves a record the
        # next fill or walk finishes with, and the error (whose raising rebuilds the kernel
        # set) pending (R35).
        self._fd_errors.append(err)
        reg = self._registry
        if not rec.deleted:
            reg.flag_deleted(rec)
        self._kernel.release(rec)
        reg.dirty.discard(rec)  # nothing left to sync

    def _raise_fd_errors(self) -> None:
        # Not while the loop waits (check_fds() from another thread, R35): its wait is on the
        # kernel object a rebuild would close. An orphan left meanwhile is found by the loop
        # itself: as a stray report, or at its number's next registration (kernel.py).
        if self._kernel.has_object() and not self._waiting:
            # A quarantined fd's registration could not be removed by number if a dup of its
            # file is still open somewhere; it would keep reporting. Rare: rebuild.
            self._rebuild_kernel_set()
        errors = self._fd_errors[:]
        self._fd_errors.clear()  # the same list: _iterate holds it
        first = errors[0]
        for other in errors[1:]:
            add_note(first, f"also: {other}")
        raise first

    def check_fds(self) -> None:
        """Look at every live record's and context handler's file (O(registered) fstat calls):
        finds fds closed while registered that epoll forgot silently, and reused numbers (R33,
        R34). Such records and handlers are removed and ClosedFdError is raised, as when an
        iteration finds them."""
        with self._lock:
            kernel = self._kernel
            for rec in list(self._by_fd.values()):
                if not rec.deleted:
                    problem = kernel.file_problem(rec)
                    if problem is not None:
                        self._quarantine(rec, ClosedFdError(rec.fd, problem))
            self._context._check_fds()  # bh: the context's handlers too (R33, R34)
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
        if self._signals is not None:
            self._signals.check_thread()  # R65

    def stop(self) -> None:
        """End `run` / `run_until` after the current iteration (none running: the next run,
        before its first). Cleared when a run ends, main_loop_wait's one iteration included
        (R31). Any thread."""
        self._stopping = True
        try:
            self._wakeup.wake()
        except BaseException:  # R35: a signal handler's, before the write: it still happens
            finish(self._wakeup.wake)
            raise

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

        In a forked child (R41) only the child's copies are closed: the parent's registrations
        and wakeup are untouched."""
        if self._forked:
            self._kernel.close()  # the child's copies of the epoll fd and witnesses: no registration changes
            self._wakeup.close()
            if self._signals is not None:
                self._signals.close()  # the child's copies; the mask was reset at the fork (R65)
            return
        with self._lock:
            if self._closed:
                return
            if self._signals is not None:
                self._signals.check_close()  # R64: off the main thread, refused first
            if self._running:
                if not self._waiting:  # we hold the lock mid-iteration: the loop's own thread
                    raise ReentrantWaitError("close() called while an iteration is running")
                self._closers += 1
                try:
                    self._await_iteration_end()
                finally:
                    self._closers -= 1
                if self._closed:  # another thread's close() got there first
                    return
            # R35: once marked closed, a later close() returns at once, so a signal handler's
            # exception part-way must not leave a half-closed loop: the close is finished (each
            # step can be repeated), then the exception leaves.
            try:
                self._release()
            except BaseException:
                finish(self._release)
                raise

    def _release(self) -> None:
        """close()'s release of what the loop owns; repeatable (R35)."""
        if self._signals is not None:  # R64: before the loop is marked closed (it deletes its record)
            self._signals.close()
        self._closed = True
        self._context._close()  # bh
        self._registry.clear()
        self._kernel.close()
        self._wakeup.close()
        self._ended.notify_all()  # a loop thread let this close() in: it sees the loop closed

    def _await_iteration_end(self) -> None:
        """close() from another thread while the loop waits (lock held on entry and exit):
        wake() ends its wait, `_stopping` its run; the iteration's end notifies `_ended`, and
        the loop's next main_loop_wait or run waits for this close() before it starts
        (`_let_closers_in`), so a loop thread that calls main_loop_wait again at once cannot
        take the lock first for ever. The timeout only repeats the wake, in case of a lost one."""
        while self._running:
            self._stopping = True
            self._wakeup.wake()
            self._wait_ended(0.05)

    def _let_closers_in(self) -> None:
        """R31: an iteration about to start while close() calls from other threads wait for
        the last one to end: they go first (a fair hand-off of the lock); then the loop is
        closed and this raises LoopClosedError."""
        while self._closers and not self._closed:
            self._wait_ended(None)
        self._check_open()

    def _wait_ended(self, timeout: float | None) -> None:
        """`_ended.wait(timeout)`, lock held on entry and on every exit. threading.Condition.wait
        releases the lock and only then enters the try that takes it back: a signal handler's
        exception between the two (R35) would leave it released, and the caller's `with` would
        then fail to release it, replacing the exception. Taken back here (held once: close()
        and an iteration hold it once, the caller's own hold of `loop.lock` aside)."""
        try:
            self._ended.wait(timeout)
        except BaseException:
            if not self._lock._is_owned():  # type: ignore[attr-defined]
                self._relock()
            raise

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
            self._kernel.close()
            self._wakeup.close()
            if self._signals is not None:
                self._signals.close()

    def __enter__(self) -> MainLoop:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
