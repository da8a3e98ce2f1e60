"""The registry: the seed's handler list without the list (R1-R6, R19).

Handlers live in a dict fd -> Record. The seed's list order (newest record first) is "creation
sequence number, descending", because records are only ever inserted at the head and unlinked.
The seed's `poll_index` becomes two fields: `kev`, the events the kernel was given at the last
fill (exactly this iteration's poll set, R20), and `stale`, set by every add/update and cleared
when a fill visits the record (R6).

The registry knows nothing of the kernel: `release(rec)` calls `on_release`, given by its owner
(the loop drops the record's kernel registration there), for every record it unlinks and for a
delete the loop wants to take effect in the kernel at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from iohandler.impl.tracing import Handler


class Record:
    """One fd's handlers. Fields the loop reads on the hot path; see the module docstring."""

    __slots__ = (
        "can_read",
        "deleted",
        "fd",
        "ident",
        "kev",
        "opaque",
        "queued",
        "read",
        "renew",
        "rev",
        "seq",
        "stale",
        "write",
    )

    # Set by the loop right after construction, before anything reads them:
    read: Handler | None
    write: Handler | None
    can_read: Handler | None
    opaque: Any
    stale: bool  # the seed's poll_index == -1 since the last add/update (R6)
    ident: tuple[object, ...]  # the file's identity at the last add/update (kernel.py)
    rev: int  # revents of the current iteration (set for ready records before it is read)

    def __init__(self, fd: int, seq: int) -> None:
        self.fd = fd
        self.seq = seq  # creation order: list order is seq descending (R2)
        self.deleted = False
        self.kev = 0  # events given to the kernel at the last fill; 0 = not polled
        self.renew = False  # the fd number now names another file: register afresh at fill
        self.queued = False  # in the registry's heap of deleted records


SEQ = attrgetter("seq")


@dataclass(frozen=True)
class RecordView:
    """A record as `MainLoop.snapshot()` shows it (deleted ones included)."""

    fd: int
    seq: int
    deleted: bool
    stale: bool
    kev: int
    renew: bool
    ident: tuple[object, ...] | None
    read: Handler | None
    write: Handler | None
    can_read: Handler | None
    opaque: Any
    dirty: bool
    gated: bool


def _no_release(rec: Record) -> None:
    return None


class Registry:
    """Records, their order, and the sets a fill and a walk need: `dirty` (interest may have
    changed since the last fill), `gated` (live, read handler and gate: consulted every fill),
    `deleted` (flagged, not yet reaped)."""

    __slots__ = ("_heap", "behind", "by_fd", "deleted", "dirty", "gated", "gated_order", "on_release", "seq")

    def __init__(self, on_release: Callable[[Record], object] = _no_release) -> None:
        self.by_fd: dict[int, Record] = {}
        self.seq = 0
        self.dirty: set[Record] = set()
        self.gated: set[Record] = set()
        self.gated_order: list[Record] | None = None  # `gated` in list order, cached
        self.deleted: set[Record] = set()
        # The deleted records by seq, newest first (a heap of (-seq, n, rec); lazily cleaned:
        # an entry whose record was revived or unlinked is skipped), so that a walk reaps in
        # O((ready + reaped) log deleted) rather than scanning `deleted` per ready record.
        self._heap: list[tuple[int, int, Record]] = []
        # Entries a walk passed without reaping (deleted behind its position, R19): back into
        # the heap when the next walk starts.
        self.behind: list[tuple[int, int, Record]] = []
        self.on_release = on_release  # set by the loop that owns the registry

    def add(self, fd: int) -> Record:
        """A new record at the head (R2)."""
        self.seq += 1
        rec = self.by_fd[fd] = Record(fd, self.seq)
        return rec

    def revive(self, rec: Record) -> None:
        """R5: a deleted, unreaped record comes back in place."""
        # Ordered so that a signal handler's exception between the two leaves a record a
        # repeated registration revives again (R35): flagged, not in the set.
        self.deleted.discard(rec)
        rec.deleted = False

    def set_gated(self, rec: Record, gated: bool) -> None:
        if gated != (rec in self.gated):
            if gated:
                self.gated.add(rec)
            else:
                self.gated.discard(rec)
            self.gated_order = None

    def sort_gated(self) -> list[Record]:
        self.gated_order = sorted(self.gated, key=SEQ, reverse=True)
        return self.gated_order

    def flag_deleted(self, rec: Record) -> None:
        """R4: flag only; the next fill stops polling it, a walk reaps it (R19)."""
        # Ordered so that an exception from a signal handler between any two steps leaves a
        # record the next fill, walk or registration finishes with (R35).
        self.dirty.add(rec)
        self.deleted.add(rec)
        rec.deleted = True
        if not rec.queued:  # one entry per record: delete/revive churn cannot grow the heap
            heapq.heappush(self._heap, (-rec.seq, id(rec), rec))
            rec.queued = True
        if rec in self.gated:
            self.gated.discard(rec)
            self.gated_order = None

    def unlink(self, rec: Record) -> None:
        """Reap a deleted record (the walk reached it, R19) and `release` it. Released first:
        cut short, the record is still there for the next walk to reap."""
        self.release(rec)
        if self.by_fd.get(rec.fd) is rec:
            del self.by_fd[rec.fd]
        self.dirty.discard(rec)
        self.deleted.discard(rec)

    def release(self, rec: Record) -> None:
        """The record's kernel registration is no longer wanted (a reap, or a delete)."""
        self.on_release(rec)

    def begin_walk(self) -> None:
        """Before a walk: what the last walk passed is reapable again (the loop calls this only
        when `behind` is not empty)."""
        for entry in self.behind:
            heapq.heappush(self._heap, entry)
        self.behind.clear()

    def reap_between(self, lo: int, hi: float) -> None:
        """Reap the deleted records with lo < seq < hi (a walk passing from hi down to lo, R19).
        A walk's calls come with decreasing bounds; records at or above `hi` were deleted
        behind the walk and wait for the next one."""
        heap = self._heap
        pop = heapq.heappop
        # Each entry leaves the heap only after what it stands for is done: cut short by a
        # signal handler's exception, the entry is still there (or in two places: harmless).
        while heap and -heap[0][0] > lo:
            entry = heap[0]
            rec = entry[2]
            if not rec.deleted or rec not in self.deleted:
                rec.queued = False  # revived or already reaped: a stale entry
                pop(heap)
            elif rec.seq >= hi:
                self.behind.append(entry)
                pop(heap)
            else:
                self.unlink(rec)
                pop(heap)

    def clear(self) -> None:
        self.by_fd.clear()
        self.dirty.clear()
        self.gated.clear()
        self.gated_order = None
        self.deleted.clear()
        self._heap.clear()
        self.behind.clear()

    def snapshot(self) -> tuple[RecordView, ...]:
        """Every record held, deleted ones included, in list order (newest first)."""
        held = {id(r): r for r in [*self.by_fd.values(), *self.deleted]}
        recs = sorted(held.values(), key=SEQ, reverse=True)
        return tuple(
            RecordView(
                r.fd,
                r.seq,
                r.deleted,
                r.stale,
                r.kev,
                r.renew,
                getattr(r, "ident", None),
                r.read,
                r.write,
                r.can_read,
                r.opaque,
                r in self.dirty,
                r in self.gated,
            )
            for r in recs
        )
