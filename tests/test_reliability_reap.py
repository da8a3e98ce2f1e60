"""R19 at scale: a walk costs O(ready + reaped), not O(ready x deleted).

Deleted records wait, flagged, for a walk to pass them (R19). A walk that looked through every
pending deleted record at each ready record cost O(ready x deleted): 2 000 ready and 8 000
deleted records made one walk 185 times slower than with none. Reaping is real work, so a walk
that reaps 4 000 records does cost more than one that reaps none; what must not happen is the
product. The figure here is a ratio measured in the same run (machine speed cancels out): the
iteration with READY ready records and DELETED pending deleted records (all older than the ready
ones, so that the walk passes every ready record before it reaches them), over the sum of the
iteration with the ready records alone and the one with one ready record and the deleted ones.
Linear costs add up to about 1; the product makes it about READY times the scan per record.
"""

from __future__ import annotations

import os
import resource
import socket
import time

from iohandler.impl import MainLoop
from tests.harness import budget
from tests.support import add_stats

READY = 1000
DELETED = 4000
BOUND = 3.0


def _noop(_: object) -> None:
    return None


def test_r19_walk_with_many_deleted_records_stays_linear() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * READY + DELETED + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    socks: list[socket.socket] = []
    dups: list[int] = []
    rounds = budget(dev=3, ci=3, thorough=10)
    try:
        base = socket.socketpair()
        socks += base
        dups = [os.dup(base[0].fileno()) for _ in range(DELETED)]  # never ready
        ready: list[socket.socket] = []
        for _ in range(READY):
            a, b = socket.socketpair()
            socks += [a, b]
            b.send(b"x")  # never read: ready at every iteration
            ready.append(a)

        def timed(n_ready: int, with_deleted: bool) -> float:
            with MainLoop("epoll") as loop:
                for fd in dups:  # registered first: older than every ready record
                    loop.set_fd_handler(fd, _noop)
                for a in ready[:n_ready]:
                    loop.set_fd_handler(a, _noop)
                loop.main_loop_wait(nonblocking=True)
                loop.main_loop_wait(nonblocking=True)
                if with_deleted:
                    for fd in dups:  # pending until a walk passes them: after every ready one
                        loop.set_fd_handler(fd, None, None)
                t0 = time.perf_counter()
                loop.main_loop_wait(nonblocking=True)
                elapsed = time.perf_counter() - t0
                assert len(loop.snapshot().records) == n_ready + (0 if with_deleted else DELETED)
            return elapsed

        ready_only = min(timed(READY, False) for _ in range(rounds))
        deleted_only = min(timed(1, True) for _ in range(rounds))
        both = min(timed(READY, True) for _ in range(rounds))
    finally:
        for fd in dups:
            os.close(fd)
        for s in socks:
            s.close()
    ratio = both / (ready_only + deleted_only)
    add_stats(
        reap_walk_ratio=round(ratio, 2),
        reap_walk_vs_none=round(both / ready_only, 1),
        reap_walk_ready=READY,
        reap_walk_deleted=DELETED,
    )
    assert ratio < BOUND, (
        f"{READY} ready and {DELETED} deleted: {both * 1e3:.1f} ms, against {ready_only * 1e3:.1f} ms "
        f"(ready only) + {deleted_only * 1e3:.1f} ms (deleted only)"
    )
