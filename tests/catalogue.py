"""Planted-bug variants of the real loop, one per bug class seen in event loops.

Each variant is a MainLoop subclass that overrides as little as it can (a wrapper around one
internal method, rarely more), so it keeps tracking impl/loop.py as that file evolves: the bug
is the only difference. tests/test_catalogue.py proves the lockstep machine (or, for fd-number
reuse, which vectors cannot express, the R34 property of tests/test_lockstep.py) kills each one.

`checks`: the lockstep checks expected to catch it first (see tests/harness/), so each check is
seen to fail at least once on a planted bug.
"""

from __future__ import annotations
import __future__

import inspect
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from iohandler.impl import HUP, IN, FdError, FdLike, MainLoop, Record, Registry, Seams
from iohandler.impl.kernel import Kernel
from iohandler.impl.tracing import Handler
from iohandler.impl.wakeup import Wakeup


@dataclass(frozen=True)
class Variant:
    name: str
    bug: str  # what real loops got wrong
    loop: type[MainLoop]
    checks: tuple[str, ...]  # the checks that may kill it first: trace, R1, R17, order, kernel, leak, R34
    poller: str = "epoll"


# ------------------------------------------------------------------------------ the walk


def _patched(method: Callable[..., Any], *edits: tuple[str, str]) -> Callable[..., Any]:
    """`method` recompiled from its own source with each `old` replaced by `new`: a bug planted
    inside a body that has no hook (the dispatch walk is inline in MainLoop._iterations). Each
    `old` must occur exactly once, so a change to impl/loop.py that moves the code fails here
    loudly instead of planting nothing."""
    src = textwrap.dedent(inspect.getsource(method))
    for old, new in edits:
        if src.count(old) != 1:
            raise AssertionError(
                f"{method.__qualname__}: {old!r} occurs {src.count(old)} times (update tests/catalogue.py)"
            )
        src = src.replace(old, new)
    code = compile(
        src, f"<planted {method.__qualname__}>", "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True
    )
    namespace: dict[str, Any] = {}
    exec(code, method.__globals__, namespace)
    fn: Callable[..., Any] = namespace[method.__name__]
    return fn


class CallsDeletedHandler(MainLoop):
    """The walk forgets the `!ioh->deleted` checks: a record deleted by an earlier handler in
    the same walk (or during the wait) is still called. The walk is inline in the iteration,
    so this variant is that method recompiled without those two checks (the one place the
    catalogue touches a private of the loop, and it is a method's source, not a field: the
    walk's body has no seam, on purpose)."""

    _iterations = _patched(
        MainLoop._iterations,
        ("if not rec.deleted and not rec.stale:", "if not rec.stale:"),
        ("if not rec.deleted:\n", "if True:\n"),
    )


class _Planted(MainLoop):
    """A loop whose bug is planted through its public seams (impl.Seams): a Registry or Kernel
    subclass of the variant's, and/or its `before_walk` hook, called with the ready records in
    walk order right before each walk (every poller checks ready fds by default)."""

    registry_class: ClassVar[type[Registry]] = Registry
    kernel_class: ClassVar[type[Kernel]] = Kernel

    def __init__(self, poller: Any = None, **kwargs: Any) -> None:
        self.planted = self.registry_class()
        hook = self.before_walk if type(self).before_walk is not _Planted.before_walk else None
        seams = Seams(registry=self.planted, kernel=self.kernel_class, before_walk=hook)
        super().__init__(poller, seams=seams, **kwargs)

    def before_walk(self, ready: list[Record]) -> None:
        pass


class ReapsBeforeWalk(_Planted):
    """Reaps every deleted record before the walk starts, instead of as the walk passes it: a
    record revived by an earlier handler in the walk comes back at the head, not in place."""

    def before_walk(self, ready: list[Record]) -> None:
        for rec in list(self.planted.deleted):
            self.planted.unlink(rec)


class _UnlinkingRegistry(Registry):
    walking = False

    def flag_deleted(self, rec: Record) -> None:
        super().flag_deleted(rec)
        if self.walking:
            self.unlink(rec)


class UnlinksOnDeleteInWalk(_Planted):
    """Delete unlinks at once while a walk runs (the dangling-next-pointer bug, made safe in
    Python): a record deleted behind the walk is gone instead of flagged until the next walk."""

    registry_class = _UnlinkingRegistry

    def before_walk(self, ready: list[Record]) -> None:
        assert isinstance(self.planted, _UnlinkingRegistry)
        self.planted.walking = True  # until the iteration ends

    def main_loop_wait(self, nonblocking: bool = False, timeout: float | None = None) -> int:
        try:
            return super().main_loop_wait(nonblocking, timeout)
        finally:
            assert isinstance(self.planted, _UnlinkingRegistry)
            self.planted.walking = False


class WalksInKernelOrder(_Planted):
    """Dispatches in the order the kernel reports (here fd-number order, as poll's array
    gives) instead of list order, newest first."""

    def before_walk(self, ready: list[Record]) -> None:
        ready.sort(key=lambda r: r.fd)


class ReapsWhenRetZero(_Planted):
    """Reaps deleted records after an iteration with nothing ready (ret == 0), when the seed
    runs no walk at all: a later re-add goes to the head instead of reviving in place."""

    def main_loop_wait(self, nonblocking: bool = False, timeout: float | None = None) -> int:
        ret = super().main_loop_wait(nonblocking, timeout)
        if ret == 0:
            with self.lock:
                for rec in list(self.planted.deleted):
                    self.planted.unlink(rec)
        return ret


class GateAtDispatch(_Planted):
    """Consults the gate again when the walk starts and drops IN/HUP if it is closed now: a
    gate closed after fill (by another thread, or a handler) wrongly suppresses the read."""

    def before_walk(self, ready: list[Record]) -> None:
        for rec in ready:
            gate = rec.can_read
            if gate is not None and rec.read is not None and not gate(rec.opaque):
                rec.rev &= ~(IN | HUP)


class IgnoresHupForRead(_Planted):
    """Runs the read handler on IN and ERR only: a peer's hangup (HUP without IN) is never
    delivered, so the reader never sees EOF."""

    def before_walk(self, ready: list[Record]) -> None:
        for rec in ready:
            rec.rev &= ~HUP


# ---------------------------------------------------------------------------- registration


class InsertsAtTail(_Planted):
    """New records go to the tail (QLIST_INSERT_TAIL, or append to a list): oldest first."""

    def set_fd_handler(
        self,
        fd: FdLike,
        read: Handler | None = None,
        write: Handler | None = None,
        *,
        can_read: Handler | None = None,
        opaque: Any = None,
    ) -> None:
        reg = self.planted
        before = set(map(id, reg.by_fd.values()))
        super().set_fd_handler(fd, read, write, can_read=can_read, opaque=opaque)
        fresh = [r for r in reg.by_fd.values() if id(r) not in before]
        if fresh:  # list order is seq descending: move every other record up, the new one last
            for rec in {*reg.by_fd.values(), *reg.deleted}:
                if rec is not fresh[0]:
                    rec.seq += 1
            fresh[0].seq = 1
            reg.gated_order = None


class RevivesAsNewRecord(_Planted):
    """The lookup skips deleted records, so re-registering an fd whose record is deleted but not
    yet reaped creates a second record at the head (two records for one fd: R1)."""

    def set_fd_handler(
        self,
        fd: FdLike,
        read: Handler | None = None,
        write: Handler | None = None,
        *,
        can_read: Handler | None = None,
        opaque: Any = None,
    ) -> None:
        n = fd if isinstance(fd, int) else fd.fileno()
        by_fd = self.planted.by_fd
        rec = by_fd.get(n)
        if rec is not None and rec.deleted and (read is not None or write is not None):
            del by_fd[n]  # the old one stays in `deleted`, for the walk to reap
        super().set_fd_handler(fd, read, write, can_read=can_read, opaque=opaque)


class KeepsPollSlotOnUpdate(_Planted):
    """An update keeps the record's place in the poll set already built (no `poll_index = -1`):
    a record updated during the walk or the wait is dispatched with its new handlers at once."""

    def set_fd_handler(
        self,
        fd: FdLike,
        read: Handler | None = None,
        write: Handler | None = None,
        *,
        can_read: Handler | None = None,
        opaque: Any = None,
    ) -> None:
        n = fd if isinstance(fd, int) else fd.fileno()
        by_fd = self.planted.by_fd
        rec = by_fd.get(n)
        stale = rec.stale if rec is not None else None
        super().set_fd_handler(fd, read, write, can_read=can_read, opaque=opaque)
        if rec is not None and stale is not None and by_fd.get(n) is rec:
            rec.stale = stale


class DeleteNotifies(MainLoop):
    """A delete wakes the loop (R7 says it must not): an idle loop runs a walk it should not."""

    def set_fd_handler(
        self,
        fd: FdLike,
        read: Handler | None = None,
        write: Handler | None = None,
        *,
        can_read: Handler | None = None,
        opaque: Any = None,
    ) -> None:
        super().set_fd_handler(fd, read, write, can_read=can_read, opaque=opaque)
        if read is None and write is None:
            self.notify()


class _DeafWakeup(Wakeup):
    """A wakeup whose coalescing notify() and flag do nothing: the loop's own ways to notify a
    registration (and a timer armed while it waits); wake() (notify(), stop()) still works."""

    __slots__ = ()

    def notify(self) -> None:
        pass

    @property  # shadows the base class slot: a no-op
    def flag(self) -> bool:
        return False

    @flag.setter
    def flag(self, value: bool) -> None:
        pass


class RegistrationDoesNotNotify(MainLoop):
    """An add or update does not wake the loop: a loop blocked in poll never sees the new
    interest (R7), and an idle iteration after a registration runs no walk. Planted through
    the wakeup seam (Seams.wakeup)."""

    def __init__(self, poller: Any = None, **kwargs: Any) -> None:
        super().__init__(poller, seams=Seams(wakeup=_DeafWakeup), **kwargs)


class _KeepsDeletedRegistry(Registry):
    def flag_deleted(self, rec: Record) -> None:
        super().flag_deleted(rec)
        self.dirty.discard(rec)

    reaping = False

    def release(self, rec: Record) -> None:
        if rec.deleted and not self.reaping:
            return  # the delete path's early drop is what this bug forgets too
        super().release(rec)

    def unlink(self, rec: Record) -> None:
        self.reaping = True
        try:
            super().unlink(rec)
        finally:
            self.reaping = False


class DeletedStaysPolled(_Planted):
    """A delete does not mark the record for the next fill, so the kernel keeps polling a
    deleted fd (until a walk happens to reap it)."""

    registry_class = _KeepsDeletedRegistry


# -------------------------------------------------------------------------------- wakeup


class LosesNotifyDuringWait(MainLoop):
    """A notify() from another thread while the loop is blocked in poll is dropped (e.g. a
    "pending" flag cleared after the wait instead of before): the waiting loop sleeps on."""

    def notify(self) -> None:
        if self.snapshot().waiting:
            return
        super().notify()


class ConsumesNotifyAfterWalk(MainLoop):
    """Reads the notifier after the walk instead of before it: a notify (or a registration)
    made by a handler is swallowed, so the next iteration does not wake for it. Planted
    through the wakeup seam: the variant keeps the Wakeup it gave the loop."""

    def __init__(self, poller: Any = None, **kwargs: Any) -> None:
        self.notifier: Wakeup | None = None
        super().__init__(poller, seams=Seams(wakeup=self._make_wakeup), **kwargs)

    def _make_wakeup(self, use_eventfd: bool | None) -> Wakeup:
        self.notifier = Wakeup(use_eventfd)
        return self.notifier

    def main_loop_wait(self, nonblocking: bool = False, timeout: float | None = None) -> int:
        ret = super().main_loop_wait(nonblocking, timeout)
        assert self.notifier is not None
        self.notifier.flag = False
        self.notifier.consume()
        return ret


# ------------------------------------------------------------------ kernel and fd hygiene


class _LeakingRegistry(Registry):
    def unlink(self, rec: Record) -> None:
        rec.kev = 0  # so the release finds nothing to drop
        super().unlink(rec)


class LeaksKernelRegistration(_Planted):
    """Reaping forgets the kernel registration: the backend keeps polling an fd no record owns."""

    registry_class = _LeakingRegistry


LEAKED: list[int] = []  # fds a leaking variant left open; test_catalogue closes them


class CloseLeaksWakeup(MainLoop):
    """close() leaves the wakeup notifier open: one fd leaked per loop."""

    def close(self) -> None:
        if not self.closed:
            LEAKED.append(os.dup(self.wakeup_fd))  # stands for the fd close() forgot
        super().close()


class _TrustingKernel(Kernel):
    def check_ready(self, rec: Record) -> FdError | None:
        return None

    def file_problem(self, rec: Record) -> str | None:
        return None


class ReusedNumberReachesOldHandler(_Planted):
    """Never checks that a ready fd still names the file registered: after close and reuse of
    the number, poll(2) reports the new file and the old record's handler runs for it (R34)."""

    kernel_class = _TrustingKernel


VARIANTS: tuple[Variant, ...] = (
    Variant("calls-deleted-handler", "calls a handler deleted earlier in the same walk", CallsDeletedHandler, ("R17",)),
    Variant("reaps-before-walk", "reaps all deleted records before walking", ReapsBeforeWalk, ("order",)),
    Variant(
        "unlinks-on-delete-in-walk",
        "unlinks at delete during the walk (dangling next)",
        UnlinksOnDeleteInWalk,
        ("order", "trace"),
    ),
    Variant("inserts-at-tail", "inserts new records at the tail", InsertsAtTail, ("order",)),
    Variant(
        "revives-as-new-record",
        "lookup skips deleted records: revival makes a 2nd record at the head",
        RevivesAsNewRecord,
        ("R1",),
    ),
    Variant("gate-at-dispatch", "consults the gate at dispatch instead of fill", GateAtDispatch, ("trace",)),
    Variant("ignores-hup-for-read", "ignores HUP for the read handler", IgnoresHupForRead, ("trace",)),
    Variant("loses-notify-during-wait", "loses a notify sent while the loop waits", LosesNotifyDuringWait, ("trace",)),
    Variant("consumes-notify-after-walk", "reads the notifier after the walk", ConsumesNotifyAfterWalk, ("trace",)),
    Variant(
        "reused-number-reaches-old-handler",
        "dispatches to a new file that reused a closed fd's number",
        ReusedNumberReachesOldHandler,
        ("R34",),
        poller="poll",
    ),
    Variant("keeps-poll-slot-on-update", "does not reset the poll slot on update", KeepsPollSlotOnUpdate, ("trace",)),
    Variant("reaps-when-ret-zero", "reaps when poll returned 0", ReapsWhenRetZero, ("order",)),
    Variant("walks-in-kernel-order", "walks in kernel (fd) order, not list order", WalksInKernelOrder, ("trace",)),
    Variant("delete-notifies", "a delete sends a wakeup", DeleteNotifies, ("trace",)),
    Variant("registration-does-not-notify", "add/update sends no wakeup", RegistrationDoesNotNotify, ("trace",)),
    Variant("deleted-stays-polled", "a deleted record stays in the poll set", DeletedStaysPolled, ("trace",)),
    Variant(
        "leaks-kernel-registration", "reaping leaves the kernel registration", LeaksKernelRegistration, ("kernel",)
    ),
    Variant("close-leaks-wakeup", "close() leaks the notifier fd", CloseLeaksWakeup, ("leak",)),
)


def factory(variant: Variant) -> Callable[..., MainLoop]:
    return variant.loop
