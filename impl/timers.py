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
        self.call: Call | None = (callback, args)  # None once cancelled
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
        what = "cancelled" if call is None else repr(call[0])
        return f"<TimerHandle {what} at {self.deadline:.6f}{every}>"


class TimerQueue:
    """`seq` counts the pushes: the n-th push is number n, which breaks ties of equal deadlines
    (first pushed, first due) and is what `pop_due`'s `last_seq` compares with. `cancelled`
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
            if entry[2].cancelled:
                entry[2]._queue = None
        heap[:] = [entry for entry in heap if not entry[2].cancelled]
        heapq.heapify(heap)
        self.cancelled = 0

    def _popped(self, handle: TimerHandle) -> None:
        handle._queue = None
        if handle.cancelled and self.cancelled > 0:
            self.cancelled -= 1

    def next_deadline(self) -> float | None:
        heap = self.heap
        if self.cancelled * 2 > len(heap) > COMPACT_MIN:
            self.compact()
        while heap and heap[0][2].cancelled:
            self._popped(heapq.heappop(heap)[2])
        return heap[0][0] if heap else None

    def pop_due(self, now: float, last_seq: int) -> TimerHandle | None:
        """The earliest live timer due at `now` and pushed no later than `last_seq`, so that a
        timer (re)armed by a timer callback waits for the next iteration instead of looping."""
        heap = self.heap
        while heap:
            deadline, seq, handle = heap[0]
            if deadline > now or seq > last_seq:
                return None
            heapq.heappop(heap)
            self._popped(handle)
            if not handle.cancelled:
                return handle
        return None
