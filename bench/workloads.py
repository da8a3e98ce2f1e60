"""The four benchmark bodies. Each `measure_*` call sets up (not timed), runs one timed sample,
tears down, and returns the sample; `bench.run` interleaves them round-robin.

1. dispatch  ns per event: ping-pong over K socketpairs (bench.candidates.Ring), no idle fds.
2. idle      ns per event: the same ring with K=1 plus N idle registered fds (never readable).
3. churn     cycles per second of register + update + delete on a rotating set of fds.
4. gated     ns per iteration: ring K=1 plus G idle records whose can_read gate (always open) the
             loop must consult at every fill.
5. bh        ns per call of a deferred call: a bottom half scheduled and run on the loop's thread
             (param 0), and handed from another thread (param 1), against asyncio's and uvloop's
             call_soon / call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import selectors
import socket
import threading
import time
from collections import deque
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


# ------------------------------------------------------------------------ 5. bottom halves


def _deferred_loop(name: str) -> Any:
    if name.startswith("impl/"):
        return MainLoop(name.removeprefix("impl/"))
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    raise ValueError(f"no bh workload for {name}")


def bh_same_thread(name: str, calls: int) -> int:
    """ns for `calls` deferred calls made on the loop's thread, each from the previous one's
    callback, so each runs in the next iteration: a BH that schedules itself (impl), a callback
    that call_soon()s itself (asyncio, uvloop). Per call: the schedule and one loop iteration."""
    loop = _deferred_loop(name)
    left = [calls]
    try:
        if isinstance(loop, MainLoop):
            impl_loop = loop

            def cb(_: object) -> None:
                left[0] -= 1
                if left[0] > 0:
                    bh.schedule()
                else:
                    impl_loop.stop()

            bh = loop.bh_new(cb)
            gc.collect()
            t0 = time.perf_counter_ns()
            bh.schedule()
            loop.run()
        else:
            aloop = loop

            def acb() -> None:
                left[0] -= 1
                if left[0] > 0:
                    aloop.call_soon(acb)
                else:
                    aloop.stop()

            gc.collect()
            t0 = time.perf_counter_ns()
            loop.call_soon(acb)
            loop.run_forever()
        return time.perf_counter_ns() - t0
    finally:
        loop.close()


def bh_other_thread(name: str, calls: int, one_at_a_time: bool = False) -> int:
    """ns until the loop has handled `calls` items handed over by another thread, one call per
    item: impl appends the item to a deque and schedules one BH, whose callback drains the deque
    (schedules while it is scheduled coalesce: that is the mechanism); asyncio and uvloop
    call_soon_threadsafe(callback, item). The loop blocks when it has caught up.
    `one_at_a_time`: the producer waits (on a semaphore the callback releases, the same for
    every candidate) until each item was handled before handing the next: nothing coalesces,
    every call wakes a blocked loop."""
    loop = _deferred_loop(name)
    got = [0]
    go = threading.Event()
    handled = threading.Semaphore(0)
    wait = handled.acquire if one_at_a_time else _no_wait
    release = handled.release if one_at_a_time else _no_wait
    try:
        if isinstance(loop, MainLoop):
            impl_loop = loop
            items: deque[int] = deque()

            def drain(_: object) -> None:
                pop = items.popleft
                n = 0
                while items:
                    pop()
                    n += 1
                    release()
                got[0] += n
                if got[0] >= calls:
                    impl_loop.stop()

            bh = loop.bh_new(drain)
            append, schedule = items.append, bh.schedule

            def produce() -> None:
                go.wait()
                for i in range(calls):
                    append(i)
                    schedule()
                    wait()

            run: Callable[[], object] = loop.run
        else:
            aloop = loop

            def cb(_item: int) -> None:
                got[0] += 1
                release()
                if got[0] >= calls:
                    aloop.stop()

            threadsafe = aloop.call_soon_threadsafe

            def produce() -> None:
                go.wait()
                for i in range(calls):
                    threadsafe(cb, i)
                    wait()

            run = aloop.run_forever
        producer = threading.Thread(target=produce)
        producer.start()
        gc.collect()
        t0 = time.perf_counter_ns()
        go.set()
        run()
        t1 = time.perf_counter_ns()
        producer.join()
        return t1 - t0
    finally:
        loop.close()


def _no_wait() -> object:
    return None


def deferred_calls(name: str, param: int, calls: int) -> int:
    """ns for `calls` calls of section 5: param 0 on the loop's thread, 1 from another thread,
    2 from another thread one at a time."""
    if param == 0:
        return bh_same_thread(name, calls)
    return bh_other_thread(name, calls, one_at_a_time=param == 2)
