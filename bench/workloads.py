"""The four benchmark bodies. Each `measure_*` call sets up (not timed), runs one timed sample,
tears down, and returns the sample; `bench.run` interleaves them round-robin.

1. dispatch  ns per event: ping-pong over K socketpairs (bench.candidates.Ring), no idle fds.
2. idle      ns per event: the same ring with K=1 plus N idle registered fds (never readable).
3. churn     cycles per second of register + update + delete on a rotating set of fds.
4. gated     ns per iteration: ring K=1 plus G idle records whose can_read gate (always open) the
             loop must consult at every fill.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from bench.candidates import Candidate, Ring, make
from iohandler.impl import MainLoop


def raise_fd_limit(need: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `need` (up to the hard limit); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


class IdleFds:
    """n fds that are never readable: both ends of n/2 socketpairs nobody writes to."""

    def __init__(self, n: int) -> None:
        raise_fd_limit(n + 512)
        self.socks = [s for _ in range((n + 1) // 2) for s in socket.socketpair()][:n]
        self.fds = [s.fileno() for s in self.socks]

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _timed_run(cand: Candidate, ring: Ring, events: int) -> tuple[int, int]:
    """Run `events` events (a few more if the last iteration had several); (ns, events run)."""
    ring.left[0] = events
    gc.collect()
    t0 = time.perf_counter_ns()
    cand.run()
    t1 = time.perf_counter_ns()
    return t1 - t0, events - ring.left[0]


class PingPong:
    """One candidate's standing setup for sections 1, 2 and 4: a candidate with its idle fds
    registered (once, not timed). Each `sample` attaches a fresh ring, warms up, times one run,
    detaches."""

    def __init__(self, name: str, idle: IdleFds | None = None, gated: bool = False) -> None:
        self.name = name
        self.cand = make(name)
        self.idle = idle
        if idle is not None:
            self.cand.add_idle(idle.fds, gated)

    def sample(self, k: int, events: int) -> float:
        """ns per event over about `events` events on a ring of k pairs."""
        ring = Ring(k)
        try:
            self.cand.attach(ring)
            try:
                _timed_run(self.cand, ring, max(2 * k, 64))  # warm-up: registrations, caches
                ns, done = _timed_run(self.cand, ring, events)
            finally:
                self.cand.detach(ring)
        finally:
            ring.close()
        return ns / done

    def close(self) -> None:
        if self.idle is not None:
            self.cand.remove_idle(self.idle.fds)
        self.cand.close()


def calibrate(sample: Callable[[int], float], seconds: float, lo: int = 200, hi: int = 2_000_000) -> int:
    """How many units make one sample last about `seconds` (from one short probe)."""
    per = sample(lo)
    return max(lo, min(hi, int(seconds * 1e9 / max(per, 1.0))))


# ---------------------------------------------------------------------------------- churn

CHURN_FDS = 64


def _noop(_arg: object) -> None:
    pass


def _noop2(_arg: object) -> None:
    pass


def churn_impl(poller: str, fds: list[int], cycles: int, settle: bool) -> int:
    """impl: set_fd_handler(fd, read) / (fd, read, write) / (fd, None, None) per cycle. With
    `settle`, a nonblocking main_loop_wait after each call, so each change reaches the kernel
    (the loop defers kernel work to the next fill; without it add+update+delete of the same fd
    between two fills coalesce to nothing)."""
    with MainLoop(poller) as loop:
        s = loop.set_fd_handler
        m = len(fds)
        gc.collect()
        if settle:
            w = loop.main_loop_wait
            t0 = time.perf_counter_ns()
            for i in range(cycles):
                fd = fds[i % m]
                s(fd, _noop, opaque=fd)
                w(True)
                s(fd, _noop, _noop2, opaque=fd)
                w(True)
                s(fd, None)
                w(True)
            return time.perf_counter_ns() - t0
        t0 = time.perf_counter_ns()
        for i in range(cycles):
            fd = fds[i % m]
            s(fd, _noop, opaque=fd)
            s(fd, _noop, _noop2, opaque=fd)
            s(fd, None)
        return time.perf_counter_ns() - t0


def churn_selectors(fds: list[int], cycles: int, settle: bool) -> int:
    """selectors.DefaultSelector: register(READ) / modify(READ|WRITE) / unregister per cycle
    (one epoll_ctl each); with `settle`, a select(0) after each call."""
    r, rw = selectors.EVENT_READ, selectors.EVENT_READ | selectors.EVENT_WRITE
    with selectors.DefaultSelector() as sel:
        reg, mod, unreg, sel_ = sel.register, sel.modify, sel.unregister, sel.select
        m = len(fds)
        gc.collect()
        t0 = time.perf_counter_ns()
        if settle:
            for i in range(cycles):
                fd = fds[i % m]
                reg(fd, r, _noop)
                sel_(0)
                mod(fd, rw, _noop)
                sel_(0)
                unreg(fd)
                sel_(0)
        else:
            for i in range(cycles):
                fd = fds[i % m]
                reg(fd, r, _noop)
                mod(fd, rw, _noop)
                unreg(fd)
        return time.perf_counter_ns() - t0


def churn_asyncio_like(loop: asyncio.AbstractEventLoop, fds: list[int], cycles: int) -> int:
    """add_reader / add_writer (the update: read -> read+write) / remove_reader + remove_writer
    per cycle: asyncio has no single call for either of the last two."""
    try:
        ar, aw, rr, rw = loop.add_reader, loop.add_writer, loop.remove_reader, loop.remove_writer
        m = len(fds)
        gc.collect()
        t0 = time.perf_counter_ns()
        for i in range(cycles):
            fd = fds[i % m]
            ar(fd, _noop, fd)
            aw(fd, _noop2, fd)
            rr(fd)
            rw(fd)
        return time.perf_counter_ns() - t0
    finally:
        loop.close()


def churn(name: str, fds: list[int], cycles: int, settle: bool = False) -> int:
    """ns for `cycles` cycles of the named candidate."""
    if name.startswith("impl/"):
        return churn_impl(name.removeprefix("impl/"), fds, cycles, settle)
    if name == "bare-selectors":
        return churn_selectors(fds, cycles, settle)
    if settle:
        raise ValueError(f"no settled churn for {name}")
    loop: Any
    if name == "asyncio":
        loop = asyncio.SelectorEventLoop()
    elif name == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        raise ValueError(f"no churn for {name}")
    return churn_asyncio_like(loop, fds, cycles)


class ChurnFds:
    def __init__(self, n: int = CHURN_FDS) -> None:
        self.socks = [s for _ in range((n + 1) // 2) for s in socket.socketpair()][:n]
        self.fds = [s.fileno() for s in self.socks]

    def close(self) -> None:
        for s in self.socks:
            s.close()


def cpu_info() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
