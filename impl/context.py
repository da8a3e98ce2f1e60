"""AioContext: the seed's context, its bottom halves and its fd handlers (QEMU 2.3 `async.c`,
`aio-posix.c`). One per MainLoop, created with it as `qemu_init_main_loop` creates
`qemu_aio_context`; every iteration of the loop runs it inside its one wait (the phase order is
in `MainLoop._iterations`; the rules are specs/SPEC.md's context rules).

Bottom halves (`aio_bh_new`, `qemu_bh_schedule`, `qemu_bh_schedule_idle`, `qemu_bh_cancel`,
`qemu_bh_delete`, `aio_bh_poll`, `aio_compute_timeout`):
* The list is the seed's singly linked list, newest first. Here it is a Python list, oldest
  first: a new BH is appended (the seed's head is the list's end) and a walk goes from the end
  down to index 0 over the length it saw when it began, so a BH created during a walk is not
  visited by it. Nothing is removed while any walk is in progress (`_walking_bh`, as the seed's
  `walking_bh`), so indexes stay valid through nested walks; the walk that brings the count back
  to 0 frees the deleted ones.
* `scheduled` is cleared right before the callback is called, so a callback that schedules its
  own BH runs in the next walk, and one that schedules a BH further down the list runs in this
  one. Idle BHs do not count in the walk's return value.
* `schedule()` may come from any thread. It sets `scheduled` first and then tells the loop:
  `aio_notify`, which is `qemu_notify_event`, on the loop's one notifier (`_notify`, below).
  `_pending` ("maybe something is scheduled") lets an iteration skip the O(BHs) scan when
  nothing was scheduled; it is cleared before any scan reads a BH, so a schedule racing with the
  scan sets it again.
* A deleted BH keeps working as QEMU's does until it is freed, and after (R44): schedule marks
  it and notifies, and it never runs.

`aio_notify` (R45): nothing while the context dispatches (inside `aio_poll`: a BH callback, a
context handler, and what they call), since everything is looked at again before the next wait;
else, on a thread holding the loop's lock outside the wait (the loop's own thread, or a caller
of `loop.lock`), the loop's notified flag (no system call: the next iteration reads it before
its wait, exactly as a readable notifier, R35, and again once it is marked waiting, so a
signal handler's schedule between is not lost); else the notifier is written. Only the loop's
thread dispatches, with the lock held, so another thread never skips: its notify is never lost.
A blocking `poll()` is not dispatching until its wait is over (QEMU's
`aio_set_dispatching(ctx, !blocking)`) and, like the loop's wait, marks the loop waiting.

The main loop's dispatch is `aio_poll(ctx, false)` (R47): the context's own fill and
zero-timeout poll of its live nodes and the notifier, revents stored only if that poll returned
> 0, then `aio_dispatch`. The loop consumed its notifier before (R13) and passes on whether it
was readable; with no node the poll is skipped (it could only see the notifier).

Context fd handlers (`aio_set_fd_handler`, `aio_dispatch`), unlike the fd-handler list (R1-R19):
a delete outside a walk unlinks the node at once, inside one only flags it (`_walking_handlers`);
a deleted node is never revived (a new registration is a new node, at the head); there is no
gate; every call notifies. Their fds are in the loop's kernel set beside the records (one wait):
a change reaches the kernel at once, or at the next fill while the loop is between a fill and
the end of its wait (the poll set is fixed then, as R20 fixes the records'). An fd is either a
record's or a context handler's, never both (one kernel registration per fd). R33/R34 hold for
them as for records (`_file_problem`, R49): the context's own poll follows fd numbers, so a
node's file identity is checked before its handlers run.
"""

from __future__ import annotations

import math
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from iohandler.impl.args import check_callable, check_delay, fd_number
from iohandler.impl.errors import ClosedFdError, FdError, ReentrantWaitError, UnpollableFdError, finish
from iohandler.impl.kernel import identity, is_unknown, same_file_check
from iohandler.impl.pollers import IN, NVAL, OUT, READ_EVENTS, WRITE_EVENTS, SelectorsPoller
from iohandler.impl.registry import Record
from iohandler.impl.timers import TimerHandle, TimerQueue

if TYPE_CHECKING:
    from iohandler.impl.args import FdLike
    from iohandler.impl.loop import MainLoop
    from iohandler.impl.tracing import Handler

__all__ = ["AioContext", "AioHandlerInfo", "BottomHalf"]

IDLE_TIMEOUT = 0.01  # seconds: aio_compute_timeout polls idle BHs at least every 10 ms
_FILE_TYPES = frozenset((stat.S_IFREG, stat.S_IFDIR))  # what epoll refuses (EPERM)
_MAX_POLL_MS = 2**31 - 1


def _describe(obj: object) -> str:
    """repr() for an exception's note, which must never replace the exception (R32)."""
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__qualname__} object at {id(obj):#x}>"


class BottomHalf:
    """QEMU's QEMUBH: `loop.bh_new(callback, opaque)`; `callback(opaque)` runs in the loop's
    thread at the context's next BH walk after `schedule()`."""

    __slots__ = ("_callback", "_ctx", "_deleted", "_idle", "_opaque", "_scheduled")

    def __init__(self, ctx: AioContext, callback: Handler, opaque: Any) -> None:
        self._ctx = ctx
        self._callback = callback
        self._opaque = opaque
        self._scheduled = False
        self._idle = False
        self._deleted = False

    @property
    def callback(self) -> Handler:
        return self._callback

    @property
    def opaque(self) -> Any:
        return self._opaque

    @property
    def scheduled(self) -> bool:
        return self._scheduled

    @property
    def idle(self) -> bool:
        return self._idle

    @property
    def deleted(self) -> bool:
        return self._deleted

    def schedule(self) -> None:
        """qemu_bh_schedule: run the callback at the next walk (once, however many schedules
        come before it) and notify the loop (R42, R45). Any thread. A scheduled BH: nothing at
        all. A deleted BH is marked and notifies, and never runs (R44)."""
        ctx = self._ctx
        if ctx._closed:
            ctx._loop._check_open()
        if self._scheduled:
            return
        self._idle = False
        self._scheduled = True
        ctx._pending = True
        try:
            ctx._notify()
        except BaseException:  # R35: a signal handler's, before the notify: it still happens
            finish(ctx._notify)
            raise

    def schedule_idle(self) -> None:
        """qemu_bh_schedule_idle: run at a walk within about 10 ms; never notifies and does not
        count as progress. A scheduled BH (idle or not): nothing at all."""
        ctx = self._ctx
        if ctx._closed:
            ctx._loop._check_open()
        if self._scheduled:
            return
        self._idle = True
        self._scheduled = True
        ctx._pending = True

    def cancel(self) -> None:
        """qemu_bh_cancel: not run until scheduled again. Never notifies; allowed after close."""
        self._scheduled = False

    def delete(self) -> None:
        """qemu_bh_delete: cancel, never run again, freed at the end of the outermost walk
        (R44). Allowed after close and on a deleted BH (nothing more happens)."""
        self._scheduled = False
        self._deleted = True
        self._ctx._has_deleted = True  # after the flag: see AioContext._free_deleted

    def __repr__(self) -> str:
        state = (
            "deleted"
            if self._deleted
            else "scheduled idle"
            if self._scheduled and self._idle
            else ("scheduled" if self._scheduled else "idle")
        )
        return f"<BottomHalf {_describe(self._callback)} {state}>"


class AioHandlerInfo(NamedTuple):
    """A context handler as `AioContext.handlers()` shows it."""

    fd: int
    read: Handler | None
    write: Handler | None
    opaque: Any
    deleted: bool


class _Node:
    """QEMU's AioHandler: one registration of an fd (a new registration after a delete is a
    new node). `rev` is the revents the last wait (or the context's own poll) gave it."""

    __slots__ = ("deleted", "events", "fd", "ident", "opaque", "read", "rev", "witness", "write")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.deleted = False
        self.rev = 0
        self.events = 0
        self.read: Handler | None = None
        self.write: Handler | None = None
        self.opaque: Any = None
        self.ident: tuple[object, ...] = ()
        self.witness = -1  # a dup of an anonymous file, where nothing else can tell (_witness)


class AioContext:
    """`loop.context`. Bottom halves: `bh_new`. Fd handlers: `set_fd_handler`. `poll()` is
    aio_poll, callable from inside a callback (a nested walk); `compute_timeout()` is
    aio_compute_timeout; `call_later` adds a context timer (run at the end of the context's
    dispatch, after its fd handlers, as timerlistgroup_run_timers there)."""

    __slots__ = (
        "__weakref__",
        "_bh_lock",
        "_bhs",
        "_by_fd",
        "_closed",
        "_dirty",
        "_dispatching",
        "_fold",
        "_has_deleted",
        "_in_use",
        "_loop",
        "_nodes",
        "_notifier",
        "_owned",
        "_pending",
        "_slots",
        "_timer_heap",
        "_timers",
        "_waited",
        "_wakeup",
        "_walking_bh",
        "_walking_handlers",
        "_witnessing",
    )

    def __init__(self, loop: MainLoop) -> None:
        self._loop = loop
        # False until the context is first given work (a BH, a fd handler, a timer), and then
        # True for good: the loop's iteration looks at the context's phases only once it is set,
        # so a loop that never uses the context pays one attribute read per phase (bench/).
        self._in_use = False
        self._wakeup = loop._wakeup
        self._owned: Callable[[], bool] = loop._lock._is_owned  # type: ignore[attr-defined]
        self._closed = False
        # Bottom halves, oldest first (module docstring).
        self._bhs: list[BottomHalf] = []
        self._bh_lock = threading.Lock()  # bh_new (any thread) against _free_deleted
        self._pending = False
        self._has_deleted = False
        self._walking_bh = 0
        # Fd handlers: nodes oldest first; live nodes by fd; what the kernel holds per fd.
        self._nodes: list[_Node] = []
        self._by_fd: dict[int, _Node] = {}
        self._slots: dict[int, Record] = {}  # fd -> the kernel's view (kev, ident) of it
        self._dirty: set[int] = set()  # fds whose kernel registration waits for the next fill
        self._waited: set[int] = set()  # context fds this iteration's main wait reported
        self._walking_handlers = 0
        self._dispatching = False  # R45: inside aio_poll (the loop's thread, lock held)
        # The notifier as the context sees it: readable from the main wait (the loop consumed
        # the fd already, R13) until a handler walk reads its node, the oldest (R49).
        self._notifier = False
        # R36: on a poller that folds HUP and ERR (selectors) the context's own poll folds too.
        self._fold = isinstance(loop._poller, SelectorsPoller)
        # R34: witnesses of anonymous files where nothing else answers (_witness): the Kernel's
        # witnesses are bound to records, not to the context's slots, so every poller without
        # epoll's confirm (poll, selectors) needs the context's own.
        self._witnessing = loop._poller.confirm is None
        self._timers = TimerQueue()
        self._timer_heap = self._timers.heap

    # ----------------------------------------------------------------------- bottom halves

    def bh_new(self, callback: Handler, opaque: Any = None) -> BottomHalf:
        """aio_bh_new: a new, unscheduled BH at the head of the list. Any thread."""
        if not callable(callback):  # None too: a BH has a callback (not check_callable's "or None")
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if self._closed:
            self._loop._check_open()
        bh = BottomHalf(self, callback, opaque)
        self._in_use = True  # before the BH exists for anyone: its schedule needs the loop to look
        with self._bh_lock:
            self._bhs.append(bh)
        return bh

    def _notify(self) -> None:
        """aio_notify (R45, module docstring)."""
        if self._owned():
            if self._dispatching:
                return
            if not self._loop._waiting:
                self._wakeup.flag = True
                return
        self._wakeup.wake()

    def bottom_halves(self) -> list[BottomHalf]:
        """The BH list, newest first, deleted BHs not yet freed included (for tests, debugging)."""
        with self._bh_lock:
            return self._bhs[::-1]

    def compute_timeout(self) -> float | None:
        """aio_compute_timeout in seconds: 0.0 with a non-idle BH scheduled, 0.01 with only idle
        ones, else the nearest context timer (None: no limit)."""
        # A scan, not the `_pending` shortcut: inside a walk (a callback asking) the walk has
        # cleared `_pending` while BHs it has not reached may still be scheduled. The loop
        # calls this only when `_pending` (or a timer) says there may be something to find.
        # `_pending` is cleared before the scan reads any BH (a racing schedule sets it again)
        # and set again if one is found.
        self._pending = False
        timeout: float | None = None
        for bh in self._bhs:
            if bh._scheduled and not bh._deleted:
                self._pending = True
                if not bh._idle:
                    return 0.0
                timeout = IDLE_TIMEOUT
        if self._timer_heap:
            deadline = self._timers.next_deadline()
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
        return timeout

    def _free_deleted(self) -> None:
        # The flag is cleared before the list is read, and delete() sets it after the BH's
        # flag: a delete racing with this is either seen here or leaves the flag set.
        self._has_deleted = False
        with self._bh_lock:
            self._bhs[:] = [bh for bh in self._bhs if not bh._deleted]

    # ------------------------------------------------------------------------- fd handlers

    def set_fd_handler(
        self,
        fd: FdLike,
        read: Handler | None,
        write: Handler | None,
        opaque: Any = None,
    ) -> None:
        """aio_set_fd_handler. read and write both None: delete (outside a walk the node is
        unlinked at once, inside one it is flagged and unlinked when the walk leaves it; an
        unknown fd: nothing). Otherwise update the fd's live node, or add a new node at the
        head. Every call notifies the loop (aio_notify). Any thread (the loop's lock is taken)."""
        loop = self._loop
        n = fd_number(fd)
        check_callable("read", read)
        check_callable("write", write)
        delete = read is None and write is None
        ident: tuple[object, ...] = ()
        if not delete:
            if self._closed:
                loop._check_open()
            try:
                st = os.fstat(n)
            except OSError as e:
                raise ClosedFdError(n, f"fd {n} is not open: {e.strerror}") from e
            if n == loop._wakeup_fd or n == loop._kernel.own_fd or n == loop._signal_fd:
                loop._refuse_own_fd(n)
            if not loop._poller.polls_regular_files and stat.S_IFMT(st.st_mode) in _FILE_TYPES:
                raise UnpollableFdError(
                    n,
                    f"fd {n} is a regular file or directory; the {loop._poller.name} poller "
                    "cannot poll it (use poller='poll')",
                )
            ident = identity(st)
        with loop._lock:
            if self._closed:
                loop._check_open()
            node = self._by_fd.get(n)
            if delete:
                if node is not None:
                    # R35: a signal handler's exception part-way finishes the delete (each
                    # step can be repeated), then leaves: never a node gone from the list
                    # whose fd the kernel still reports.
                    gone = node
                    try:
                        self._delete(gone)
                    except BaseException:
                        finish(lambda: self._delete(gone))
                        raise
                else:
                    self._notify_locked()
                return
            rec = loop._by_fd.get(n)
            if rec is not None and (not rec.deleted or rec.kev):
                raise ValueError(
                    f"fd {n} has a handler in the loop's fd-handler list (set_fd_handler); "
                    "an fd is either there or in the context, not both"
                )
            fresh = node is None
            if node is None:
                node = _Node(n)
                self._in_use = True
            # One store each, no call between: a node is never half-described.
            node.read, node.write, node.opaque, node.ident = read, write, opaque, ident
            node.events = (READ_EVENTS if read is not None else 0) | (WRITE_EVENTS if write is not None else 0)
            added = node
            try:
                if self._witnessing and is_unknown(ident):
                    self._witness(added)
                self._publish(added)
            except FdError:
                if fresh:  # R30: a refused registration leaves nothing behind
                    self._unlink(added)
                raise
            except BaseException:  # R35: as for a delete, the add is finished, then leaves
                finish(lambda: self._publish_or_undo(added, fresh))
                raise

    def _delete(self, node: _Node) -> None:
        """A delete's steps, each repeatable (R35): unlink, kernel, notify."""
        self._unlink(node)
        self._sync_or_defer(node.fd)
        self._notify_locked()

    def _publish(self, node: _Node) -> None:
        """An add's or update's steps, each repeatable (R35): the node indexed and listed, the
        kernel told, the loop notified."""
        if self._by_fd.get(node.fd) is not node:
            self._by_fd[node.fd] = node
            if node not in self._nodes:  # a repeat after a cut: listed once
                self._nodes.append(node)
        self._sync_or_defer(node.fd)
        self._notify_locked()

    def _publish_or_undo(self, node: _Node, fresh: bool) -> None:
        """`_publish` repeated after a cut (R35): a refusal the cut hid is undone as an uncut
        refusal is (R30), so the call did not happen; the cut's exception leaves."""
        try:
            self._publish(node)
        except FdError:
            if fresh:
                self._unlink(node)

    def _notify_locked(self) -> None:
        """aio_notify, with the lock held (R45)."""
        if self._loop._waiting:
            self._wakeup.notify()
        elif not self._dispatching:
            self._wakeup.flag = True

    def _unlink(self, node: _Node) -> None:
        """Repeatable (R35): a second run after a cut finishes the first."""
        if self._by_fd.get(node.fd) is node:
            del self._by_fd[node.fd]
        node.deleted = True
        node.rev = 0
        if not self._walking_handlers and node in self._nodes:
            self._nodes.remove(node)
        self._drop_witness(node)

    def _witness(self, node: _Node) -> None:
        """R34 for an anonymous file (eventfd, timerfd: fstat cannot tell two apart) where
        neither the Kernel's witnesses (poll) nor the poller's confirm (epoll) answer for the
        context's own poll, which follows numbers (selectors): a dup of the file registered,
        compared with the number by the Kernel's kcmp check. No kcmp, or EMFILE: no witness,
        and such a reuse goes undetected (kernel.py says the same of records)."""
        if same_file_check() is None:
            return
        try:
            w = os.dup(node.fd)
        except OSError:
            return
        old, node.witness = node.witness, w
        if old >= 0:
            os.close(old)

    def _drop_witness(self, node: _Node) -> None:
        w, node.witness = node.witness, -1
        if w >= 0:
            os.close(w)

    def handlers(self) -> list[AioHandlerInfo]:
        """The handler list, newest first, nodes flagged deleted inside a walk included."""
        with self._loop._lock:
            found = [AioHandlerInfo(n.fd, n.read, n.write, n.opaque, n.deleted) for n in reversed(self._nodes)]
        return found  # after the with: MainLoop._iterate says why

    def _sync_or_defer(self, fd: int) -> None:
        loop = self._loop
        if loop._polling or loop._waiting:  # the poll set is fixed until the wait ends
            self._dirty.add(fd)
        else:
            err = self._sync(fd)
            if err is not None:
                raise err

    def _fill(self) -> None:
        """The context's part of the fill: kernel changes deferred during the last wait."""
        loop = self._loop
        dirty = self._dirty
        for fd in sorted(dirty):
            err = self._sync(fd)
            dirty.discard(fd)  # after the work: an exception before leaves it for the next fill
            if err is not None:
                node = self._by_fd.get(fd)
                if node is not None:
                    self._unlink(node)
                loop._fd_errors.append(err)

    def _sync(self, fd: int) -> FdError | None:
        """Give the kernel the fd's live node's events (none: drop it), through the loop's
        Kernel, which checks the file's identity as it does for records (R33, R34)."""
        kernel = self._loop._kernel
        node = self._by_fd.get(fd)
        ev = node.events if node is not None else 0
        slot = self._slots.get(fd)
        if slot is None:
            if not ev:
                return None
            slot = Record(fd, 0)
            slot.stale = False
            slot.ident = ()
            self._slots[fd] = slot
        if node is not None:
            if slot.kev and node.ident != slot.ident:
                slot.renew = True  # the number names another file now: register afresh
            slot.ident = node.ident
        err = kernel.sync(slot, ev) if ev != slot.kev or slot.renew else None
        if not slot.kev:
            del self._slots[fd]
        if kernel.lost:
            self._lost()
        return err

    def _lost(self) -> None:
        """Context fds a kernel rebuild could not register again (closed while registered):
        their nodes go, with ClosedFdError at the end of the iteration, as records' do."""
        loop = self._loop
        kept = []
        for fd in loop._kernel.lost:
            slot = self._slots.pop(fd, None)
            if slot is None:
                kept.append(fd)
                continue
            node = self._by_fd.get(fd)
            if node is not None:
                self._unlink(node)
            loop._fd_errors.append(ClosedFdError(fd, f"fd {fd}: cannot be registered again"))
        loop._kernel.lost = kept
        if kept:
            loop._quarantine_lost()

    # ------------------------------------------- closed and reused fds (R33, R34, as records)

    def _file_problem(self, node: _Node) -> str | None:
        """Why `node.fd` no longer names the file registered, or None. The Kernel's check (its
        witnesses included) where the kernel holds this node's file, fstat identity otherwise
        (a registration not synced yet). An anonymous file (identity unknown) on a poller
        whose confirm follows files (epoll): the confirm answers, as it does for records."""
        kernel = self._loop._kernel
        if node.witness >= 0:
            same = same_file_check()
            if same is not None and not same(node.fd, node.witness):
                return f"fd {node.fd} no longer names the file registered; its context handlers were removed"
        slot = self._slots.get(node.fd)
        if slot is not None and slot.kev and slot.ident == node.ident:
            problem = kernel.file_problem(slot)
            confirm = self._loop._poller.confirm
            if problem is None and confirm is not None and is_unknown(node.ident):
                try:
                    confirm(node.fd, slot.kev)
                except (OSError, ValueError):
                    return f"fd {node.fd} no longer names the file registered; its context handlers were removed"
            return problem
        try:
            st = os.fstat(node.fd)
        except OSError:
            return f"fd {node.fd} was closed while registered; its context handlers were removed"
        if identity(st) != node.ident:
            return (
                f"fd {node.fd} was closed while registered and its number now names another "
                "file; its context handlers were removed"
            )
        return None

    def _remove(self, node: _Node, problem: str) -> None:
        """R33: the node goes (its kernel registration now, or at the next fill while the poll
        set is fixed), and ClosedFdError is raised at the end of the iteration (or of the
        top-level context.poll())."""
        loop = self._loop
        loop._fd_errors.append(ClosedFdError(node.fd, problem))
        self._unlink(node)
        self._sync_or_defer(node.fd)

    def _check_fds(self) -> None:
        """`MainLoop.check_fds` for the context's live nodes (O(nodes) fstat calls)."""
        for node in list(self._by_fd.values()):
            problem = self._file_problem(node)
            if problem is not None:
                self._remove(node, problem)

    def _poll_set(self) -> list[tuple[int, int]]:
        """The context's fds in the kernel, in list order (for the tracer)."""
        slots = self._slots
        return [(n.fd, slots[n.fd].kev) for n in reversed(self._nodes) if not n.deleted and n.fd in slots]

    def _ready_in_wait(self, fd: int, ev: int) -> None:
        """A context fd the main wait reported. poll(2)'s NVAL: closed while registered (R33):
        the node goes (its kernel registration at the next fill) and ClosedFdError is raised at
        the end of the iteration. Else it is remembered for the context's own poll, which
        follows numbers: if that poll finds the number idle, the kernel may be reporting a file
        the number no longer names (epoll, a dup keeping the old file open), and its identity
        is checked (R33, R34), or the loop would spin on it."""
        node = self._by_fd.get(fd)
        if node is None:
            return
        if ev & NVAL:
            self._unlink(node)
            self._dirty.add(fd)
            self._loop._fd_errors.append(
                ClosedFdError(fd, f"fd {fd} was closed while registered; its context handlers were removed")
            )
        else:
            self._waited.add(fd)

    def _loop_poll(self, notified: bool) -> bool:
        """The main loop's context dispatch: aio_poll(ctx, false) (R47), the notifier readable
        at the main wait or not (the loop consumed it already, R13). Returns its progress."""
        was = self._dispatching
        self._dispatching = True
        self._notifier = notified
        # The result is returned after the try, not from inside it: CPython copies a finally
        # body right after a returned call, outside the try's handlers, where a signal
        # handler's exception (R35) would skip them (here: dispatching left set for good).
        try:
            if self._nodes:
                self._own_poll(0)
            progress = self._dispatch()
        except BaseException:
            if not was:
                self._clear_revents()
            raise
        finally:
            self._dispatching = was
            if self._waited:
                self._waited.clear()
        return progress

    def _clear_revents(self) -> None:
        """R32: an aio_poll left by an exception leaves no revents behind (in QEMU they never
        outlive one aio_poll): what was ready is polled afresh next time (level triggering)."""
        for node in self._nodes:
            node.rev = 0
        self._notifier = False

    def _own_poll(self, ms: int, release: bool = False) -> None:
        """aio_poll's fill and poll over the live nodes and the notifier (the fd, the loop's
        flag, or still unread from the main wait); revents stored only if the poll returned > 0,
        the notifier counting (R46). The notifier's node is read at the end of the handler walk
        (`_dispatch`); the fd and the flag are cleared here, which nothing between can tell."""
        loop = self._loop
        wakeup = self._wakeup
        polled = [n for n in reversed(self._nodes) if not n.deleted and n.events]
        p = select.poll()
        for n in polled:
            p.register(n.fd, n.events)
        wfd = loop._wakeup_fd
        if wfd >= 0:
            p.register(wfd, READ_EVENTS)
        if ms and not self._notifier:
            events = dict(self._blocking_wait(p, ms, release))
        else:
            if wakeup.flag:
                wakeup.flag = False
                self._notifier = True
            events = dict(p.poll(0 if self._notifier else ms))
        if wfd in events:
            wakeup.consume()
            self._notifier = True
        if self._waited:  # reported by the main wait, idle now: is it still the same file?
            waited, self._waited = self._waited, set()
            for n in polled:
                if n.fd in waited and not events.get(n.fd) and not n.deleted:
                    problem = self._file_problem(n)
                    if problem is not None:
                        self._remove(n, problem)
        if events or self._notifier:
            fold = self._fold
            for n in polled:
                rev = events.get(n.fd, 0)
                if rev & NVAL:  # R33: closed while registered (before R36's fold hides it)
                    if not n.deleted:
                        self._remove(n, f"fd {n.fd} was closed while registered; its context handlers were removed")
                    continue
                if fold and rev:  # R36: as the loop's poller would see it
                    rev = (IN if rev & ~OUT and n.events & IN else 0) | (OUT if rev & ~IN and n.events & OUT else 0)
                n.rev = rev

    def _blocking_wait(self, p: select.poll, ms: int, release: bool) -> list[tuple[int, int]]:
        """The wait of a blocking aio_poll. The loop is marked waiting first, so from then on a
        notify writes the notifier (R45: dispatching is false here, QEMU's
        aio_set_dispatching(ctx, !blocking)); then the flag, which a notify before that set
        (a signal handler's schedule on this thread), is read: nothing is lost between.
        `release`: the caller took the loop's lock for this poll only; it is released for the
        wait, as main_loop_wait does (R35), so other threads' registrations and close() go on
        (a registration notifies and ends the wait; close() waits for the poll to return)."""
        loop = self._loop
        wakeup = self._wakeup
        lock = loop._lock
        was = loop._waiting
        loop._waiting = True
        try:  # results returned after the try, not from inside it (_loop_poll says why)
            if wakeup.flag:
                wakeup.flag = False
                self._notifier = True
                events = p.poll(0)
            elif not release:
                events = p.poll(ms)
            else:
                lock.release()
                try:
                    events = p.poll(ms)
                finally:
                    try:
                        if not self._owned():
                            lock.acquire()
                    except BaseException:  # a signal handler's, mid-way: retried until held (R35)
                        loop._relock()
                        raise
        finally:
            loop._waiting = was
        return events

    def _dispatch(self) -> bool:
        """aio_dispatch: the BH walk (aio_bh_poll), then the handlers, then the context's
        timers. Returns progress (idle BHs and the context's own notifier do not count)."""
        progress = False
        loop = self._loop
        tr = loop._tracer
        bhs = self._bhs
        i = len(bhs)
        self._pending = False  # before any BH is read: a schedule racing with the walk sets it again
        self._walking_bh += 1
        try:
            while i:
                i -= 1
                bh = bhs[i]
                if bh._scheduled and not bh._deleted:
                    cb = bh._callback
                    if tr is not None:
                        tr.bh(bh, cb)
                    # From clearing `scheduled` to the call there is no call (no point where a
                    # signal handler's exception can land, R35): the run is neither lost nor
                    # doubled. A schedule() that saw it still set returned before this run.
                    if not bh._idle:
                        progress = True
                    bh._idle = False
                    bh._scheduled = False
                    try:
                        cb(bh._opaque)
                    except BaseException as e:
                        e.add_note(f"iohandler: raised by the bottom half callback {_describe(cb)}")
                        raise
        except BaseException:
            self._pending = True  # R32: the BHs this walk did not reach run at the next one
            raise
        finally:
            self._walking_bh -= 1
            if not self._walking_bh and self._has_deleted:
                self._free_deleted()
        if self._nodes and self._dispatch_handlers():
            progress = True
        self._notifier = False  # its node, the oldest, ends the handler walk: not progress (R49)
        if self._timer_heap and self._run_timers():
            progress = True
        return progress

    def _dispatch_handlers(self) -> bool:
        tr = self._loop._tracer
        check = self._loop._check_files
        nodes = self._nodes
        progress = False
        i = len(nodes)
        while i:
            i -= 1
            node = nodes[i]
            self._walking_handlers += 1
            try:
                rev = node.rev & node.events
                node.rev = 0
                if not rev:
                    continue
                if check and not node.deleted:
                    # R33/R34 at the node's turn: a handler before it may have closed its fd,
                    # and the context's own poll follows numbers, so a new file may hold it.
                    problem = self._file_problem(node)
                    if problem is not None:
                        self._remove(node, problem)
                        continue
                cb = node.read
                if not node.deleted and rev & READ_EVENTS and cb is not None:
                    if tr is not None:
                        tr.aio_read(node.fd, cb)
                    progress = True
                    try:
                        cb(node.opaque)
                    except BaseException as e:
                        e.add_note(f"iohandler: raised by the context read handler {_describe(cb)} of fd {node.fd}")
                        raise
                cb = node.write  # the current one: the read handler may have changed it
                if not node.deleted and rev & WRITE_EVENTS and cb is not None:
                    if tr is not None:
                        tr.aio_write(node.fd, cb)
                    progress = True
                    try:
                        cb(node.opaque)
                    except BaseException as e:
                        e.add_note(f"iohandler: raised by the context write handler {_describe(cb)} of fd {node.fd}")
                        raise
            except BaseException:
                if self._walking_handlers == 1:  # R32: the rest is polled afresh next time
                    for other in nodes:
                        other.rev = 0
                raise
            finally:
                self._walking_handlers -= 1
                if not self._walking_handlers and node.deleted:
                    # Nothing is unlinked while a walk is in progress, so the node is still
                    # at index i (R32: the node in hand is finished even when its handler raised).
                    if i < len(nodes) and nodes[i] is node:
                        del nodes[i]
                    elif node in nodes:
                        nodes.remove(node)
        return progress

    # ------------------------------------------------------------------------------ timers

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """A context timer: `callback(*args)` once, at the end of the context's dispatch, in the
        first one `delay` s on; it bounds the wait through compute_timeout."""
        seconds = check_delay("delay", delay)
        check_callable("callback", callback)
        loop = self._loop
        with loop._lock:
            loop._check_open()
            handle = TimerHandle(time.monotonic() + seconds, None, callback, args)
            self._in_use = True
            # Notify first (MainLoop._add_timer says why, R35).
            if loop._waiting:
                self._wakeup.notify()
            elif not self._dispatching:
                self._wakeup.flag = True
            self._timers.push(handle)
        return handle

    def _run_timers(self) -> bool:
        timers = self._timers
        now = time.monotonic()
        last = timers.seq
        ran = False
        while (handle := timers.due(now, last)) is not None:
            ran = True
            timers.fire(handle, now)
        return ran

    # ---------------------------------------------------------------------------- aio_poll

    def poll(self, blocking: bool = False) -> bool:
        """aio_poll (R46): poll the context's fds and the loop's notifier (without blocking, or
        until something is ready or compute_timeout() passes), then dispatch: BHs, handlers,
        timers. Returns progress: a non-idle BH, a handler or a timer ran. Callable from inside
        a callback of this loop (a nested walk, as QEMU's block layer drains). From another
        thread it waits for the loop's lock when no iteration is in progress, and raises
        ReentrantWaitError while one is (in its wait the lock is free, but the context is the
        loop's thread's to dispatch: R46); so does a Tracer's poll hook. A blocking poll
        called without the lock held releases it for its wait, as main_loop_wait does (R35,
        R46)."""
        if not isinstance(blocking, bool):
            raise TypeError(f"blocking must be a bool, got {type(blocking).__name__}")
        loop = self._loop
        inside = self._owned()  # the caller holds the lock already (a callback, a lock holder)
        with loop._lock:
            loop._check_open()
            if loop._waiting or (loop._running and not inside):
                # R46: while an iteration (or a blocking poll) is in progress on the loop's
                # thread, only its callbacks (which hold the lock) may poll: another thread's
                # dispatch would run callbacks off that thread, beside its wait.
                raise ReentrantWaitError(
                    "context.poll() called from another thread while the loop's iteration or "
                    "context.poll() is in progress in its thread, or from a Tracer's poll hook "
                    "(the loop's wait): hand work to the loop with a bottom half instead"
                )
            top = not loop._running
            was = self._dispatching
            try:  # both flags set inside: a signal handler's exception cannot leave them (R35)
                if top:
                    # R31 whatever started the walk: a top-level aio_poll is an iteration for
                    # close(), main_loop_wait() and run(), which its callbacks may not call.
                    loop._running = True
                # QEMU's aio_set_dispatching(ctx, !blocking): notifies are skipped only when
                # everything is looked at again before a blocking wait, which for a blocking
                # poll is true only once its own wait is over (R45).
                self._dispatching = not blocking
                timeout = self.compute_timeout() if blocking else 0.0
                tr = loop._tracer
                if tr is not None:
                    entries = self._live_set()
                    if entries:
                        tr.aio_poll_set(entries)
                ms = -1 if timeout is None else min(_MAX_POLL_MS, math.ceil(timeout * 1000))
                self._own_poll(ms, release=top and not inside)
                self._dispatching = True
                progress = self._dispatch()
            except BaseException:
                if not was:
                    self._clear_revents()
                raise
            finally:
                self._dispatching = was
                if top:
                    loop._running = False
            if top and loop._fd_errors:  # R33: as at the end of an iteration
                loop._raise_fd_errors()
            return progress

    def _live_set(self) -> list[tuple[int, int]]:
        return [(n.fd, n.events) for n in reversed(self._nodes) if not n.deleted]

    # ---------------------------------------------------------------------------- closing

    def _close(self) -> None:
        """The loop closes: nothing runs any more, and the context holds no callback. BHs stay
        valid objects (delete() and cancel() still work, schedule() raises)."""
        self._closed = True
        with self._bh_lock:
            for bh in self._bhs:
                bh._scheduled = False
            self._bhs.clear()
        self._pending = self._has_deleted = False
        for node in self._nodes:
            self._drop_witness(node)
        self._nodes.clear()
        self._by_fd.clear()
        self._slots.clear()
        self._dirty.clear()
        self._timers.heap.clear()
