"""One-shot and periodic timers on a heap of (deadline, sequence, handle); monotonic clock.

Cancelled timers stay in the heap and are skipped when they reach the top (lazy removal).
The queue is not locked itself: the loop calls it with its lock held.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class TimerHandle:
    """Returned by `call_later` / `call_every`; `cancel()` stops the timer (idempotent)."""

    __slots__ = ("args", "callback", "cancelled", "deadline", "interval")

    def __init__(
        self,
        deadline: float,
        interval: float | None,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        self.deadline = deadline
        self.interval = interval
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        every = f" every {self.interval}s" if self.interval is not None else ""
        return f"<TimerHandle {self.callback!r} at {self.deadline:.6f}{every}{state}>"


class TimerQueue:
    """`seq` counts the pushes: the n-th push is number n, which breaks ties of equal deadlines
    (first pushed, first due) and is what `pop_due`'s `last_seq` compares with."""

    __slots__ = ("heap", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, TimerHandle]] = []
        self.seq = 0

    def push(self, handle: TimerHandle) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (handle.deadline, self.seq, handle))

    def next_deadline(self) -> float | None:
        heap = self.heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
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
            if not handle.cancelled:
                return handle
        return None
