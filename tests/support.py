"""Helpers for the reliability tests (R30-R37; no tests here): the loop's observable state as a
comparable value, the kernel's own view of registrations, process figures (CPU, RSS, open fds),
and the figures file behind PROOFS.md's reliability figures ($IOHANDLER_STATS_DIR/reliability.json).

The state snapshot is built from the public `MainLoop.snapshot()`: "the registry, kernel
registrations and pending wakeups exactly as before" (R30) is about *all* of the loop's state,
including deleted-but-unreaped records, the dirty and gated sets and the poll slots, which
`records()` does not show and `snapshot()` does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import linecache
import os
import select
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from iohandler.impl import POLLERS, MainLoop, Tracer

NAMES = sorted(POLLERS)


class Pairs:
    """Non-blocking AF_UNIX socket pairs, closed at the end: the loop gets `a`, the test the peer."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []

    def pair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.socks += [a, b]
        return a, b

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()


@contextlib.contextmanager
def pairs() -> Iterator[Pairs]:
    p = Pairs()
    try:
        yield p
    finally:
        p.close()


def drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, ConnectionError):
        while sock.recv(65536):
            pass


# ------------------------------------------------------------------------------ state


def epoll_kernel_set(epfd: int) -> dict[int, int]:
    """What the kernel holds for an epoll fd (/proc/self/fdinfo): target fd -> event mask."""
    out: dict[int, int] = {}
    for line in Path(f"/proc/self/fdinfo/{epfd}").read_text().splitlines():
        if line.startswith("tfd:"):
            parts = line.split()
            out[int(parts[1])] = int(parts[3], 16)
    return out


def kernel_registrations(loop: MainLoop) -> tuple[tuple[int, int], ...]:
    """The poller's book, checked against the kernel's own epoll set where there is one."""
    poller = loop.poller
    book = poller.registered()
    epfd = poller.fileno()
    if epfd >= 0:
        kernel = epoll_kernel_set(epfd)
        if poller.name == "epoll":  # poll flags are epoll flags; the kernel adds HUP and ERR
            always = select.EPOLLHUP | select.EPOLLERR
            assert {fd: ev | always for fd, ev in kernel.items()} == {fd: ev | always for fd, ev in book.items()}, (
                f"kernel {kernel} != book {book}"
            )
        else:  # selectors: its own masks
            assert set(kernel) == set(book), f"kernel {kernel} != book {book}"
    return tuple(sorted(book.items()))


def wakeup_pending(loop: MainLoop) -> bool:
    """Is the loop's notifier readable? Asked of the kernel without consuming it."""
    p = select.poll()
    p.register(loop.wakeup_fd, select.POLLIN)
    return bool(p.poll(0))


def snapshot(loop: MainLoop) -> tuple[Any, ...]:
    """Everything a call could change: records (live and flagged deleted) with their handlers
    (by identity), opaque (by identity), position (seq), poll slot state and membership of the
    bookkeeping sets; timers; the kernel registrations; the pending wakeup."""
    snap = loop.snapshot()
    recs = tuple(
        sorted(
            (
                r.seq,
                r.fd,
                r.fd,
                r.deleted,
                r.stale,
                r.kev,
                r.renew,
                r.ident,
                id(r.read),
                id(r.write),
                id(r.can_read),
                id(r.opaque),
            )
            for r in snap.records
        )
    )
    ids = (
        frozenset(r.fd for r in snap.records if r.dirty),
        frozenset(r.fd for r in snap.records if r.gated),
        frozenset(r.fd for r in snap.records if r.deleted),
    )
    timers = tuple((d, s, id(h), h.cancelled) for d, s, h in snap.timers)
    return (
        recs,
        ids,
        snap.seq,
        snap.fd_errors,
        timers,
        kernel_registrations(loop),
        wakeup_pending(loop),
        snap.wakeup_pending,
        snap.notified,
        snap.stopping,
        snap.closed,
    )


def record_count(loop: MainLoop) -> int:
    """Records held, live or flagged deleted but not yet reaped."""
    return len(loop.snapshot().records)


# ---------------------------------------------------------------------------- process


def open_fds() -> set[int]:
    """The process's open fds. The listing's own directory fd appears in it already closed, so
    only the numbers that are still open count."""
    return {fd for fd in map(int, os.listdir("/proc/self/fd")) if is_open(fd)}


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0  # pragma: no cover


# ---------------------------------------------------------------------------- figures


def add_stats(**figures: int | float) -> None:
    """Merge figures into $IOHANDLER_STATS_DIR/reliability.json (nothing if unset). Counters
    (keys ending in `_total`) add up across tests, keys ending in `_max` (and `peak_rss_bytes`)
    keep the maximum, everything else is the latest value."""
    d = os.environ.get("IOHANDLER_STATS_DIR")
    if not d:
        return
    path = Path(d) / "reliability.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            data = {}
        for key, value in figures.items():
            if key.endswith("_total"):
                data[key] = data.get(key, 0) + value
            elif key == "peak_rss_bytes" or key.endswith("_max"):
                data[key] = max(data.get(key, 0), value)
            else:
                data[key] = value
        data["peak_rss_bytes"] = max(data.get("peak_rss_bytes", 0), peak_rss_bytes())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)


class FakeClock:
    """The loop's clock for the `clock` fixture: `now` moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@contextlib.contextmanager
def interrupt_before(module: ModuleType, qualname: str, line: str) -> Iterator[list[str]]:
    """Raise KeyboardInterrupt once, as a signal handler's exception would, just before the
    first line of `qualname` (a function of `module`) whose text contains `line`: one chosen
    point between two steps that R35 says may be cut apart. Yields the points it fired at.

    The function is found by file and name, not by its code object, so that it is also found
    when mutation testing runs a renamed copy of it (mutmut: `xǁClassǁmethod__mutmut_N`)."""
    path = module.__file__
    mangled = "x\u01c1" + qualname.replace(".", "\u01c1") + "__mutmut_"
    fired: list[str] = []

    def local(frame: FrameType, event: str, arg: object) -> object:
        if event == "line" and not fired and line in linecache.getline(path or "", frame.f_lineno):
            fired.append(f"{qualname}:{frame.f_lineno}")
            raise KeyboardInterrupt(f"planted before {line!r} in {qualname}")
        return local

    def calls(frame: FrameType, event: str, arg: object) -> object:
        code = frame.f_code
        if code.co_filename == path and (code.co_qualname == qualname or code.co_name.startswith(mangled)):
            return local
        return None

    old = sys.gettrace()
    sys.settrace(calls)  # type: ignore[arg-type]
    try:
        yield fired
    finally:
        sys.settrace(old)


def lock_is_free(loop: MainLoop) -> bool:
    """Another thread can take the loop's lock (within 2 s): nobody kept it."""
    got: list[bool] = []

    def probe() -> None:
        ok = loop.lock.acquire(timeout=2)
        got.append(ok)
        if ok:
            loop.lock.release()

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return got == [True]


def wrapped_by_mutation(module: ModuleType) -> bool:
    """Mutation testing (mutmut) runs `module` with each function behind a trampoline: one more
    frame per call, so frame-counting behaviour (a warning's stacklevel) cannot be checked."""
    return hasattr(module, "_mutmut_mutated")


class WaitSignal(Tracer):
    """Sets `waiting` from the poll hook: the loop has released its lock for the kernel wait."""

    def __init__(self) -> None:
        self.waiting = threading.Event()

    def poll(self, entries: list[tuple[int, int]]) -> None:
        self.waiting.set()


@contextlib.contextmanager
def run_before(module: ModuleType, qualname: str, line: str, action: Callable[[], object]) -> Iterator[list[str]]:
    """Call `action()` once, as a signal handler would run, just before the first line of
    `qualname` (a function of `module`) whose text contains `line`, on whichever thread runs
    it. Yields the points it ran at."""
    path = module.__file__
    fired: list[str] = []

    def local(frame: FrameType, event: str, arg: object) -> object:
        if event == "line" and not fired and line in linecache.getline(path or "", frame.f_lineno):
            fired.append(f"{qualname}:{frame.f_lineno}")
            action()
        return local

    def calls(frame: FrameType, event: str, arg: object) -> object:
        code = frame.f_code
        if code.co_filename == path and code.co_qualname == qualname:
            return local
        return None

    old = sys.gettrace()
    sys.settrace(calls)  # type: ignore[arg-type]
    try:
        yield fired
    finally:
        sys.settrace(old)
