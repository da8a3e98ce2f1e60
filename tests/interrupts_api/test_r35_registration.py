"""R35 attack: an exception from a signal handler (KeyboardInterrupt) during a registration.

Each test plants it at one named point of a top-level call (tests/interrupts_api/plant.py) and asserts
what R35 asks afterwards: the call happened or did not (nothing half), the loop usable, nothing
pending lost. Each was red at 945d444 (see /work/notes/attack-r35-report.md).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from iohandler.impl import MainLoop
from tests.interrupts_api.plant import EntryInjector, Injector, point_index, run_with
from tests.support import kernel_registrations, lock_is_free

POLLERS = ["epoll", "poll", "selectors"]


@pytest.fixture
def socks() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def _pair(held: list[socket.socket]) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    held += [a, b]
    return a, b


def _plant(loop: MainLoop, call: object, n: int, entry: bool) -> BaseException | None:
    inj = (EntryInjector if entry else Injector)(n)
    exc = run_with(inj, loop, lambda _lp: call())  # type: ignore[operator]
    assert inj.fired
    assert isinstance(exc, KeyboardInterrupt), f"the planted exception was replaced: {exc!r}"
    assert lock_is_free(loop)
    return exc


@pytest.mark.parametrize("poller", POLLERS)
def test_add_cut_before_it_is_marked_dirty_is_applied_or_not(poller: str, socks: list[socket.socket]) -> None:
    """set_fd_handler (add), cut at loop.py:288 as `stat.S_ISCHR` returns (the first point
    after `reg.add(n)` at :278, a Python call whose return CPython does not check): the record
    is in the registry with its handlers but without `ident` and `stale`, and not dirty.
    snapshot() and check_fds() raise AttributeError from then on, and the fd is never polled:
    its read handler never runs though records() lists it (R35: consistent and usable, the call
    happened or not). At :278 itself (the tool's point) records() raises too."""
    a, pa = _pair(socks)
    got: list[str] = []

    def reader(sock: socket.socket) -> None:
        got.append("read")
        with contextlib.suppress(BlockingIOError):
            sock.recv(100)

    with MainLoop(poller) as probe:
        n, entry = point_index(lambda: probe.set_fd_handler(a, reader, opaque=a), "_register", "S_ISCHR")
    with MainLoop(poller) as loop:
        _plant(loop, lambda: loop.set_fd_handler(a, reader, opaque=a), n, entry)
        listed = bool(loop.records())
        problems = []
        for what in (loop.snapshot, loop.check_fds):
            try:
                what()
            except AttributeError as e:
                problems.append(f"{what.__name__}() raises {e!r}")
        pa.send(b"x")
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        if listed and got != ["read"]:
            problems.append(f"records() lists the handler, which ran {got}")
        assert not problems, problems


@pytest.mark.parametrize("poller", POLLERS)
def test_gate_added_by_a_cut_update_is_obeyed_or_absent(poller: str, socks: list[socket.socket]) -> None:
    """set_fd_handler (update adding a closed gate), cut at loop.py:288 (the `stat.S_ISCHR`
    call returns): the record shows the gate, but is neither dirty nor in the gated set, so fill
    never asks the gate and the kernel keeps polling the fd for IN: its read handler runs behind
    a closed gate (R9, R10). Cut at :299 (`reg.dirty.add(rec)` returns) it is dirty but still
    not gated: the same."""
    a, pa = _pair(socks)
    calls: list[str] = []

    def reader(sock: socket.socket) -> None:
        calls.append("read")
        with contextlib.suppress(BlockingIOError):
            sock.recv(100)

    def update(loop: MainLoop) -> None:
        loop.set_fd_handler(a, reader, can_read=lambda _o: False, opaque=a)

    with MainLoop(poller) as probe:
        probe.set_fd_handler(a, reader, opaque=a)
        probe.main_loop_wait(nonblocking=True)
        n, entry = point_index(lambda: update(probe), "_register", "S_ISCHR")
    with MainLoop(poller) as loop:
        loop.set_fd_handler(a, reader, opaque=a)
        loop.main_loop_wait(nonblocking=True)
        _plant(loop, lambda: update(loop), n, entry)
        (info,) = loop.records()
        pa.send(b"x")
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        if info.can_read is not None:  # the update happened: its gate is closed
            assert calls == [], "read handler ran behind a closed gate"
        else:
            assert calls == ["read"]


@pytest.mark.parametrize("poller", POLLERS)
def test_update_cut_before_it_is_marked_dirty_is_applied_or_not(poller: str, socks: list[socket.socket]) -> None:
    """set_fd_handler (update: read handler -> write handler), cut at loop.py:288 (the
    `stat.S_ISCHR` call returns): the record shows the new write handler but is neither dirty
    nor stale, so the kernel keeps polling the old events and the writer is never called."""
    a, pa = _pair(socks)
    got: list[str] = []

    def update(loop: MainLoop) -> None:
        loop.set_fd_handler(a, None, lambda _o: got.append("write"))

    def old(sock: socket.socket) -> None:
        got.append("read")
        with contextlib.suppress(BlockingIOError):
            sock.recv(100)

    with MainLoop(poller) as probe:
        probe.set_fd_handler(a, old, opaque=a)
        probe.main_loop_wait(nonblocking=True)
        n, entry = point_index(lambda: update(probe), "_register", "S_ISCHR")
    with MainLoop(poller) as loop:
        loop.set_fd_handler(a, old, opaque=a)
        loop.main_loop_wait(nonblocking=True)
        _plant(loop, lambda: update(loop), n, entry)
        (info,) = loop.records()
        pa.send(b"x")
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        if info.write is not None:
            assert "write" in got, f"the new write handler never ran: {got}"
        else:
            assert "read" in got


@pytest.mark.parametrize("poller", POLLERS)
def test_context_delete_cut_after_the_unlink_drops_the_kernel_registration(
    poller: str, socks: list[socket.socket]
) -> None:
    """loop.context.set_fd_handler(fd, None, None), cut at the entry of `_sync_or_defer`
    (context.py:367, right after `_unlink(node)`; also at :404/:405 inside `_unlink`, after its
    C calls): the handler is gone but the kernel keeps the fd for good; readable, it makes every
    iteration return ready with nothing to run (a spin, R40)."""
    a, pa = _pair(socks)

    def build() -> MainLoop:
        loop = MainLoop(poller)
        loop.context.set_fd_handler(a, lambda _o: None, None)
        loop.main_loop_wait(nonblocking=True)
        return loop

    probe = build()
    n, entry = point_index(lambda: probe.context.set_fd_handler(a, None, None), "_sync_or_defer", entry=True)
    probe.close()
    loop = build()
    try:
        _plant(loop, lambda: loop.context.set_fd_handler(a, None, None), n, entry)
        assert loop.context.handlers() == []  # the delete happened ...
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        assert a.fileno() not in dict(kernel_registrations(loop)), "... but the kernel still polls the fd"
        pa.send(b"x")
        assert loop.main_loop_wait(nonblocking=True) == 0, "an idle loop finds the deleted fd ready"
    finally:
        loop.close()


@pytest.mark.parametrize("poller", POLLERS)
def test_context_add_cut_inside_its_sync_leaves_no_kernel_registration(poller: str, socks: list[socket.socket]) -> None:
    """loop.context.set_fd_handler (add), cut inside the poller's `modify` as its register call
    returns (pollers.py:186 epoll, :254 poll; selectors: at `_sync`'s `kernel.sync` line,
    context.py:474): the fresh node is unlinked by set_fd_handler's except clause (R30), but the
    registration made stays, never dropped; readable, the fd makes every idle iteration return
    ready (epoll: the kernel holds an fd the poller's book lacks)."""
    a, pa = _pair(socks)
    func, text = {
        "epoll": ("modify", "ep.register(fd, events)"),
        "poll": ("modify", "self._poll.register(fd, events)"),
        "selectors": ("_sync", "kernel.sync(slot, ev)"),
    }[poller]
    with MainLoop(poller) as probe:
        n, entry = point_index(lambda: probe.context.set_fd_handler(a, lambda _o: None, None), func, text)
    with MainLoop(poller) as loop:
        _plant(loop, lambda: loop.context.set_fd_handler(a, lambda _o: None, None), n, entry)
        live = [h for h in loop.context.handlers() if not h.deleted]
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        assert (a.fileno() in dict(kernel_registrations(loop))) == bool(live), (
            f"handlers {live}, kernel {kernel_registrations(loop)}"
        )
        if not live:
            pa.send(b"x")
            loop.main_loop_wait(nonblocking=True)
            assert loop.main_loop_wait(nonblocking=True) == 0, "an idle loop finds the fd of no handler ready"


@pytest.mark.parametrize(
    "what",
    ["set_fd_handler", "call_later", "stop", "bh_schedule"],
)
def test_a_cut_call_from_the_main_thread_still_wakes_the_loop_thread(what: str, socks: list[socket.socket]) -> None:
    """The loop waits in another thread (R35: these calls are for any thread); the main thread's
    call is cut after its change is made and before the notifier is written: the change is
    there and the wait sleeps its whole timeout (R7, R35: no notify lost). Points:
    set_fd_handler at loop.py:299 (`reg.dirty.add(rec)` returns), call_later at timers.py:89
    (heappush returns), stop at the entry of Wakeup.wake, bh.schedule at the entry of
    AioContext._notify."""
    a, pa = _pair(socks)
    pa.send(b"x")
    loop = MainLoop("epoll")
    bh = loop.bh_new(lambda _o: None)
    try:
        calls = {
            "set_fd_handler": (
                lambda: loop.set_fd_handler(a, lambda _o: None),
                "_register",
                "reg.dirty.add(rec)",
                False,
            ),
            "call_later": (lambda: loop.call_later(0, lambda: None), "push", "heappush", False),
            "stop": (loop.stop, "wake", "", True),
            "bh_schedule": (bh.schedule, "_notify", "", True),
        }
        call, func, text, entry = calls[what]
        with MainLoop("epoll") as probe:
            pb = probe.bh_new(lambda _o: None)
            twin = {
                "set_fd_handler": lambda: probe.set_fd_handler(a, lambda _o: None),
                "call_later": lambda: probe.call_later(0, lambda: None),
                "stop": probe.stop,
                "bh_schedule": pb.schedule,
            }[what]
            n, entry = point_index(twin, func, text, entry=entry)
        loop.main_loop_wait(nonblocking=True)
        took: list[float] = []

        def waiter() -> None:
            t0 = time.monotonic()
            loop.main_loop_wait(timeout=3.0)
            took.append(time.monotonic() - t0)

        t = threading.Thread(target=waiter)
        t.start()
        for _ in range(400):
            if loop.snapshot().waiting:
                break
            time.sleep(0.005)
        time.sleep(0.05)
        _plant(loop, call, n, entry)
        snap = loop.snapshot()
        changed = {
            "set_fd_handler": bool(loop.records()),
            "call_later": bool(snap.timers),
            "stop": snap.stopping,
            "bh_schedule": bh.scheduled,
        }[what]
        t.join()
        # Either the call happened and woke the wait (which may have run it already: the timer,
        # the BH, the stop are gone by now), or it did not happen and the wait sleeps on.
        assert took, "the wait is still running"
        if took[0] >= 1.5:
            assert not changed, f"{what} happened, but the loop's wait slept {took[0]:.2f}s: its notify was lost"
    finally:
        loop.close()


@pytest.mark.parametrize("poller", POLLERS)
def test_context_add_cut_after_the_node_is_listed_is_applied_or_not(poller: str, socks: list[socket.socket]) -> None:
    """loop.context.set_fd_handler (add), cut at context.py:384 as `self._nodes.append(node)`
    returns, before `self._by_fd[n] = node`: handlers() lists the handler, but the kernel is
    never given the fd (`_sync` looks the node up by fd): its input does not wake a blocking
    wait, which sleeps its whole timeout (R35, R47; the handler runs only when something else
    wakes the loop)."""
    a, pa = _pair(socks)
    got: list[str] = []

    def reader(sock: socket.socket) -> None:
        got.append("read")
        with contextlib.suppress(BlockingIOError):
            sock.recv(100)

    with MainLoop(poller) as probe:
        n, entry = point_index(
            lambda: probe.context.set_fd_handler(a, reader, None, opaque=a),
            "_publish",
            "self._nodes.append(node)",
        )
    with MainLoop(poller) as loop:
        _plant(loop, lambda: loop.context.set_fd_handler(a, reader, None, opaque=a), n, entry)
        listed = [h for h in loop.context.handlers() if not h.deleted]
        loop.main_loop_wait(nonblocking=True)  # settle
        pa.send(b"x")
        t0 = time.monotonic()
        loop.main_loop_wait(timeout=2.0)
        took = time.monotonic() - t0
        assert listed, "the point is before the add"
        assert took < 1.0 and got == ["read"], f"listed handler's input: wait slept {took:.2f}s, ran {got}"
