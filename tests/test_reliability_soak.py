"""Soak (issue 6, item 7; R19, R33, R34 under load): IOHANDLER_SOAK_EVENTS (default 1 000 000)
read-handler calls through 64 socket pairs on the default poller, with the handlers churning
their own records all the time: revival in place (delete + re-add in the handler), updates to
other handlers and gates, write handlers that remove themselves, and whole pairs deleted,
closed and replaced (fd numbers reused). After warm-up, memory is flat: RSS and the number of
records held (live or deleted-but-unreaped) stay bounded; no fd leaks once the loop is closed.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
from typing import Any

import pytest

from iohandler.impl import MainLoop, default_poller_name
from tests.support import add_stats, open_fds, peak_rss_bytes, record_count, rss_bytes

EVENTS = int(os.environ.get("IOHANDLER_SOAK_EVENTS", "1000000"))
PAIRS = 64
WARMUP = EVENTS // 10
RSS_GROWTH_LIMIT = 2 * 2**20  # bytes allowed after warm-up (allocator noise, not per-event growth)
BLOCKS_GROWTH_LIMIT = 2000  # Python allocator blocks: a leak of one per delete would be ~20 000
WALL_LIMIT = 600.0  # seconds: a hang fails instead of blocking CI forever


class Soak:
    def __init__(self, loop: MainLoop) -> None:
        self.loop = loop
        self.events = 0
        self.writes = 0
        self.replaced = 0
        self.revived = 0
        self.updated = 0
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.max_records = 0
        self.max_deleted = 0

    def new_pair(self, slot: int, old: tuple[socket.socket, socket.socket] | None = None) -> None:
        a, b = socket.socketpair()  # opened before the old pair closes: new numbers
        if old is not None:
            for sock in old:
                sock.close()
        a.setblocking(False)
        b.setblocking(False)
        if slot < len(self.pairs):
            self.pairs[slot] = (a, b)
        else:
            self.pairs.append((a, b))
        for s, peer in ((a, b), (b, a)):
            self.loop.set_fd_handler(s, self.handler_for(slot, s, peer), opaque=s)
        a.send(b"t")  # one token per pair, bouncing between its ends

    def handler_for(self, slot: int, s: socket.socket, peer: socket.socket) -> Any:
        loop = self.loop

        def write_once(sock: socket.socket) -> None:
            self.writes += 1
            loop.set_fd_handler(sock, on_read, opaque=sock)  # drop the write handler again

        def on_read(sock: socket.socket) -> None:
            try:
                data = sock.recv(64)
            except BlockingIOError:
                return
            if not data:
                return
            self.events += 1
            n = self.events
            if n % 5003 == 0:  # delete, close and replace the whole pair (numbers get reused)
                loop.set_fd_handler(s, None, None)
                loop.set_fd_handler(peer, None, None)
                self.replaced += 1
                self.new_pair(slot, (s, peer))
                return
            peer.send(data)
            if n % 97 == 0:  # revival in place, in its own handler
                loop.set_fd_handler(sock, None, None)
                loop.set_fd_handler(sock, on_read, opaque=sock)
                self.revived += 1
            elif n % 101 == 0:  # an update to a gated handler (the gate is open)
                loop.set_fd_handler(sock, on_read, can_read=lambda _: True, opaque=sock)
                self.updated += 1
            elif n % 103 == 0:  # and back
                loop.set_fd_handler(sock, on_read, opaque=sock)
            elif n % 211 == 0:
                loop.set_fd_handler(sock, on_read, write_once, opaque=sock)

        return on_read

    def sample(self) -> None:
        self.max_records = max(self.max_records, record_count(self.loop))


@pytest.mark.slow
def test_soak_events_memory_flat_no_fd_leak() -> None:
    """Issue 6 item 7 (R19, R34): EVENTS handler calls, churning; RSS growth after warm-up below
    RSS_GROWTH_LIMIT and Python allocator blocks below BLOCKS_GROWTH_LIMIT; records held never
    above the two ends of every pair, and at most a few deleted ones unreaped after any
    iteration (R19: the next walk reaps them); every fd the loop opened is closed by close()."""
    fds_before = open_fds()
    t0 = time.monotonic()
    cpu0 = time.process_time()
    iterations = 0
    samples: list[tuple[int, int]] = []
    with MainLoop(default_poller_name()) as loop:
        soak = Soak(loop)
        for slot in range(PAIRS):
            soak.new_pair(slot)
        rss_warm = blocks_warm = 0
        next_sample = WARMUP
        while soak.events < EVENTS:
            loop.main_loop_wait(timeout=1.0)
            iterations += 1
            soak.max_deleted = max(soak.max_deleted, sum(r.deleted for r in loop.snapshot().records))
            if soak.events >= next_sample:
                soak.sample()
                if not rss_warm:
                    gc.collect()  # count live blocks, not cycles the collector has not reached yet
                    rss_warm = rss_bytes()
                    blocks_warm = sys.getallocatedblocks()
                samples.append((soak.events, rss_bytes()))
                next_sample += max(1, EVENTS // 20)
            assert time.monotonic() - t0 < WALL_LIMIT, f"only {soak.events} events in {WALL_LIMIT}s"
        soak.sample()
        gc.collect()
        rss_end = rss_bytes()
        blocks_end = sys.getallocatedblocks()
        for a, b in soak.pairs:
            loop.set_fd_handler(a, None, None)
            loop.set_fd_handler(b, None, None)
    for a, b in soak.pairs:
        a.close()
        b.close()
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    leaked = open_fds() - fds_before
    add_stats(
        soak_events=soak.events,
        soak_iterations=iterations,
        soak_pairs=PAIRS,
        soak_replaced_pairs=soak.replaced,
        soak_revivals=soak.revived,
        soak_updates=soak.updated,
        soak_write_handler_calls=soak.writes,
        soak_wall_seconds=round(wall, 2),
        soak_cpu_seconds=round(cpu, 2),
        soak_rss_after_warmup_bytes=rss_warm,
        soak_rss_end_bytes=rss_end,
        soak_max_records_held=soak.max_records,
        soak_max_unreaped_after_iteration=soak.max_deleted,
        soak_allocated_blocks_growth=blocks_end - blocks_warm,
        peak_rss_bytes=peak_rss_bytes(),
    )
    assert soak.events >= EVENTS
    assert soak.replaced >= EVENTS // 5003 and soak.revived > 0 and soak.writes > 0
    assert rss_end - rss_warm < RSS_GROWTH_LIMIT, f"RSS grew {rss_end - rss_warm} bytes: {samples}"
    assert soak.max_records <= 2 * PAIRS + 2, soak.max_records
    assert soak.max_deleted <= 1, soak.max_deleted  # at most a passed peer waits for the next walk
    assert blocks_end - blocks_warm < BLOCKS_GROWTH_LIMIT, f"{blocks_end - blocks_warm} Python blocks more"
    assert leaked == set(), f"fds left open: {sorted(leaked)}"
