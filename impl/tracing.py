"""Tracing hooks: what the loop reports, in the vector format's terms (VECTORS.md, "Events").

Within one iteration the hooks are called in this order: `gate` for every gate the fill consults
(list order), `poll` with the poll set once it is built and *before* the kernel wait (the loop's
lock is released by then, so a hook may register or delete handlers as another thread would
while the loop blocks: the conformance driver runs its `during_wait` actions here), `ready` after
the wait, then `read` / `write` just before each handler call. Flags are poll flags (`impl.IN`
...); `impl.flag_names` turns them into the vector names.

The context (impl/context.py) adds: `aio_poll_set` right after `poll` when the context has fds
(and before the wait of `loop.context.poll()`), then after `ready` its dispatch: `bh` before each bottom-half callback,
`aio_read` / `aio_write` before each context handler call; then the fd-handler walk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], object]
"""A read or write handler, or a can_read gate: called with the record's opaque."""


class Tracer:
    """Every hook does nothing; subclass and override the ones you need."""

    def gate(self, fd: int, gate: Handler) -> None:
        """The fill is about to consult `gate` for `fd`."""

    def poll(self, entries: list[tuple[int, int]]) -> None:
        """The poll set in list order: (fd, requested events)."""

    def ready(self, entries: list[tuple[int, int]], walk: bool) -> None:
        """Polled fds with non-zero revents in poll-set order; `walk`: ret > 0."""

    def read(self, fd: int, callback: Handler) -> None:
        """The read handler of `fd` is about to be called."""

    def write(self, fd: int, callback: Handler) -> None:
        """The write handler of `fd` is about to be called."""

    def bh(self, handle: Any, callback: Handler) -> None:
        """The callback of `handle` (a `BottomHalf`) is about to be called."""

    def aio_read(self, fd: int, callback: Handler) -> None:
        """The context read handler of `fd` is about to be called."""

    def aio_write(self, fd: int, callback: Handler) -> None:
        """The context write handler of `fd` is about to be called."""

    def aio_poll_set(self, entries: list[tuple[int, int]]) -> None:
        """The context's fds in list order: (fd, requested events)."""


class ListTracer(Tracer):
    """Records every hook call as a tuple in `events`, e.g. ("read", fd, callback)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def gate(self, fd: int, gate: Handler) -> None:
        self.events.append(("gate", fd, gate))

    def poll(self, entries: list[tuple[int, int]]) -> None:
        self.events.append(("poll", entries))

    def ready(self, entries: list[tuple[int, int]], walk: bool) -> None:
        self.events.append(("ready", entries, walk))

    def read(self, fd: int, callback: Handler) -> None:
        self.events.append(("read", fd, callback))

    def write(self, fd: int, callback: Handler) -> None:
        self.events.append(("write", fd, callback))

    def bh(self, handle: Any, callback: Handler) -> None:
        self.events.append(("bh", handle, callback))

    def aio_read(self, fd: int, callback: Handler) -> None:
        self.events.append(("aio_read", fd, callback))

    def aio_write(self, fd: int, callback: Handler) -> None:
        self.events.append(("aio_write", fd, callback))

    def aio_poll_set(self, entries: list[tuple[int, int]]) -> None:
        self.events.append(("aio_poll_set", entries))
