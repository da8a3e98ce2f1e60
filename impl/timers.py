"""One-shot and periodic timers (R37) on a heap of (deadline, sequence, handle); monotonic clock.

Cancelling drops the timer's callback and arguments at once; the heap entry (a small tuple)
is removed when it reaches the top, or earlier by a compaction: whenever cancelled entries are
more than half of a heap of more than COMPACT_MIN entries, the heap is rebuilt from the live
ones (asyncio does the same). Without it, N timers armed far ahead and cancelled keep N entries
until their deadlines. The queue is not locked itself: the loop calls it with its lock held.
`cancel()` may come from any thread, so it only clears its own fields and bumps a counter; the
compaction runs at the next push or iteration, under the loop's lock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from iohandler.impl.errors import add_note, describe

COMPACT_MIN = 64  # below this many entries, skipping cancelled ones at the top is cheaper

Call = tuple[Callable[..., object], tuple[Any, ...]]


class TimerHandle:
    """Returned by `call_later` / `call_every`; `cancel()` stops the timer (idempotent) and
    releases its callback and arguments."""

    __slots__ = ("_queue", "call", "cancelled", "deadline", "interval")

    def __init__(
        self,
        deadline: float,
        interval: float | None,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        self.deadline = deadline
        self.interval = interval
        # One field, read once by the loop: a cancel() from another thread between reading a
        # callback and its arguments could otherwise pair the callback with cleared arguments.
        self.call: Call | None = (callback, args)  # None once cancelled, or a one-shot fired
        self.cancelled = False
        self._queue: TimerQueue | None = None  # the queue whose heap holds it, if any

    @property
    def callback(self) -> Callable[..., object] | None:
        call = self.call
        return None if call is None else call[0]

    @property
    def args(self) -> tuple[Any, ...] | None:
        call = self.call
        return None if call is None else call[1]

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.call = None  # the arguments may be large: not kept until the deadline
        q = self._queue
        if q is not None:  # unlocked (any thread): a lost count only delays a compaction
            q.cancelled += 1

    def __repr__(self) -> str:
        every = f" every {self.interval}s" if self.interval is not None else ""
        call = self.call
        what = repr(call[0]) if call is not None else "cancelled" if self.cancelled else "done"
        return f"<TimerHandle {what} at {self.deadline:.6f}{every}>"


class TimerQueue:
    """`seq` counts the pushes: the n-th push is number n, which breaks ties of equal deadlines
    (first pushed, first due) and is what `due`'s `last_seq` compares with. `cancelled`
    counts the cancelled entries still in the heap (approximately, under threads)."""

    __slots__ = ("cancelled", "heap", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, TimerHandle]] = []
        self.seq = 0
        self.cancelled = 0

    def push(self, handle: TimerHandle) -> None:
        self.seq += 1
        handle._queue = self
        heap = self.heap
        heapq.heappush(heap, (handle.deadline, self.seq, handle))
        if self.cancelled * 2 > len(heap) > COMPACT_MIN:
            self.compact()

    def compact(self) -> None:
        """Rebuild the heap from its live entries, in place (the loop holds the list)."""
        heap = self.heap
        for entry in heap:
            if entry[2].call is None:
                entry[2]._queue = None
        heap[:] = [(h.deadline, seq, h) for _, seq, h in heap if h.call is not None]
        heapq.heapify(heap)
        self.cancelled = 0

    def _popped(self, handle: TimerHandle) -> None:
        handle._queue = None
        if handle.cancelled and self.cancelled > 0:
            self.cancelled -= 1

    def _tidy(self) -> None:
        """Settle the top of the heap: drop dead entries (cancelled, or a one-shot already
        fired) and move a periodic timer fired since to its new deadline. Each change is one C
        call (heappop, heapreplace), so an exception from a signal handler between two of them
        leaves every entry either settled or still to settle, never lost."""
        heap = self.heap
        if self.cancelled * 2 > len(heap) > COMPACT_MIN:
            self.compact()
        while heap:
            deadline, _, handle = heap[0]
            if handle.call is None:
                self._popped(heapq.heappop(heap)[2])
            elif deadline != handle.deadline:  # re-armed by fire(): it goes behind the rest
                self.seq += 1
                heapq.heapreplace(heap, (handle.deadline, self.seq, handle))
            else:
                return

    def next_deadline(self) -> float | None:
        self._tidy()
        heap = self.heap
        return heap[0][0] if heap else None

    def due(self, now: float, last_seq: int) -> TimerHandle | None:
        """The earliest live timer due at `now` and pushed no later than `last_seq` (so that a
        timer (re)armed by a timer callback waits for the next iteration instead of looping).
        It stays in the heap until `fire` has marked it taken."""
        self._tidy()
        heap = self.heap
        if heap:
            deadline, seq, handle = heap[0]
            if deadline <= now and seq <= last_seq:
                return handle
        return None

    @staticmethod
    def fire(handle: TimerHandle, now: float) -> None:
        """Mark `handle`'s tick taken, then call its callback (R35, R37).

        A timer is taken by a plain store on the handle, not by removing it from the heap (the
        next `_tidy` does that): the callback is called right after the store, with no call in
        between, and CPython runs signal handlers only where a call returns, at a function's
        entry and at a backward jump. So an exception from a signal handler either comes before
        the store, and the timer stays due for the next iteration, or after the callback has
        been entered: a due timer is never lost, and never run twice."""
        call = handle.call  # read once: cancel() from another thread clears it
        if call is None:
            return
        callback, args = call
        if handle.interval is not None:  # re-armed before the call: cancel() in it works
            nxt = handle.deadline + handle.interval
            handle.deadline = nxt if nxt > now else now + handle.interval
        else:
            handle.call = None
        try:
            callback(*args)
        except BaseException as e:
            add_note(e, f"iohandler: raised by timer callback {describe(callback)}")
            raise
