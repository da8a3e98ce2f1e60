"""R35, R32: an exception from a signal handler (KeyboardInterrupt) at ANY bytecode of an
iteration leaves the lock released, the loop consistent and usable, and nothing pending lost:
no handler of a ready fd, no registration, no due timer.

The exception is planted by a trace function (`sys.settrace` with `f_trace_opcodes`) that raises
at the N-th opportunity in impl/'s own modules during one `main_loop_wait`, for N over every
opportunity of that iteration. An
opportunity is a bytecode where CPython runs pending signal handlers (its "eval breaker"): the
instruction after a call returns (a C call: a lock's acquire, a system call), a function's
entry (RESUME) and a backward jump. Elsewhere no signal handler runs, so an exception there is a
trace function's, not a signal's: out of scope.
"""

from __future__ import annotations

import contextlib
import dis
import gc
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import pytest

import iohandler.impl.context
import iohandler.impl.kernel
import iohandler.impl.loop
import iohandler.impl.pollers
import iohandler.impl.registry
import iohandler.impl.signals
import iohandler.impl.timers
import iohandler.impl.wakeup
from iohandler.impl import ClosedFdError, MainLoop, SignalInfo, signalfd_available
from tests.support import add_stats, kernel_registrations, lock_is_free

_IMPL_FILES = frozenset(
    m.__file__
    for m in (
        iohandler.impl.context,
        iohandler.impl.loop,
        iohandler.impl.registry,
        iohandler.impl.signals,
        iohandler.impl.kernel,
        iohandler.impl.pollers,
        iohandler.impl.timers,
        iohandler.impl.wakeup,
    )
    if m.__file__ is not None
)


_CALLS = frozenset({"CALL", "CALL_FUNCTION_EX", "CALL_INTRINSIC_1", "CALL_KW"})
_BREAKERS = frozenset({"RESUME", "JUMP_BACKWARD"})
_POINTS: dict[CodeType, frozenset[int]] = {}


def signal_points(code: CodeType) -> frozenset[int]:
    """Offsets of `code` where CPython may run a signal handler (see the module docstring)."""
    points = _POINTS.get(code)
    if points is None:
        found: set[int] = set()
        after_call = False
        for ins in dis.get_instructions(code):
            if after_call or ins.opname in _BREAKERS:
                found.add(ins.offset)
            after_call = ins.opname in _CALLS
        points = _POINTS[code] = frozenset(found)
    return points


class Injector:
    """Raises KeyboardInterrupt at the `at`-th signal point reached in impl/ (never if `at` is
    None); counts them all. With `entries`, a function's entry counts too: CPython runs signal
    handlers at RESUME, which the opcode trace (it starts after it) does not report."""

    def __init__(self, at: int | None, entries: bool = False) -> None:
        self.at = at
        self.entries = entries
        self.count = 0
        self.fired = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename not in _IMPL_FILES:
            return None
        if self.entries and event == "call":
            self.count += 1
            if self.count == self.at:
                self.fired = True
                raise KeyboardInterrupt(f"planted at the entry of {frame.f_code.co_name}")
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and frame.f_lasti in signal_points(frame.f_code):
            self.count += 1
            if self.count == self.at:
                self.fired = True
                raise KeyboardInterrupt(f"planted at opcode {self.count}")
        return self._local


@dataclass
class Scene:
    """Three records whose handlers must run (reader, gated reader, writer), a timer, one record
    deleted and one added since the last fill, and (`orphan`) an fd closed while registered
    while a dup keeps its file, so that the iteration quarantines it and rebuilds the kernel set."""

    loop: MainLoop
    socks: list[socket.socket] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    expected: frozenset[str] = frozenset()
    forbidden: frozenset[str] = frozenset()
    extra_fds: list[int] = field(default_factory=list)

    def pair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.socks += [a, b]
        return a, b

    def reader(self, name: str) -> Any:
        def cb(sock: socket.socket) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            try:
                while sock.recv(4096):
                    pass
            except BlockingIOError:
                pass

        return cb

    def counter(self, name: str) -> Any:
        def cb(*_: object) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1

        return cb

    def close(self) -> None:
        self.loop.close()
        for s in self.socks:
            s.close()
        for fd in self.extra_fds:
            os.close(fd)


def build(poller: str, *, orphan: bool) -> Scene:
    scene = Scene(MainLoop(poller))
    loop = scene.loop
    old, old_peer = scene.pair()
    gone, _ = scene.pair()
    loop.set_fd_handler(old, scene.reader("old"), opaque=old)
    loop.set_fd_handler(gone, scene.counter("gone"))
    if orphan:
        lost, lost_peer = scene.pair()
        loop.set_fd_handler(lost, scene.counter("lost"))
    loop.main_loop_wait(nonblocking=True)  # everything above is in the kernel now
    a, pa = scene.pair()
    b, pb = scene.pair()
    c, _ = scene.pair()
    loop.set_fd_handler(a, scene.reader("a"), opaque=a)  # fresh registrations: the fill syncs them
    loop.set_fd_handler(b, scene.reader("b"), can_read=lambda _: True, opaque=b)
    loop.set_fd_handler(c, None, scene.counter("c"))
    loop.set_fd_handler(gone, None, None)  # deleted, not yet dropped from the poll set
    loop.call_later(0, scene.counter("timer"))
    for peer in (pa, pb, old_peer):
        peer.send(b"x")
    # A due one-shot timer: not lost, wherever the exception comes (impl/timers.py `fire`).
    expected = {"a", "b", "c", "old", "timer"}
    if orphan:
        scene.extra_fds.append(os.dup(lost.fileno()))  # keeps the file (and its epoll entry)
        lost.close()
        lost_peer.send(b"x")
    scene.expected = frozenset(expected)
    scene.forbidden = frozenset({"gone", "lost"})
    return scene


def run_with(
    injector: Injector, loop: MainLoop, call: Callable[[MainLoop], object] | None = None
) -> BaseException | None:
    """`call(loop)` (one nonblocking iteration by default) under the injector; the exception it
    left with, if any (the planted one, or the orphan's ClosedFdError)."""
    # No garbage collection inside the traced iteration: a collection there would run other
    # objects' finalizers (a loop another test dropped, R41) and move the opcode count, so the
    # counting run and the planted runs would not see the same iteration.
    gc.collect()
    gc.disable()
    sys.settrace(injector)
    try:
        if call is None:
            loop.main_loop_wait(nonblocking=True)
        else:
            call(loop)
    except BaseException as e:
        return e
    finally:
        sys.settrace(None)
        gc.enable()
    return None


def check_after(scene: Scene, planted: int, exc: BaseException | None) -> None:
    loop = scene.loop
    where = f"planted at opcode {planted}"
    if exc is not None and not isinstance(exc, KeyboardInterrupt | ClosedFdError):
        raise AssertionError(f"{where}: the planted exception was replaced by {exc!r}") from exc
    assert lock_is_free(loop), f"{where}: the lock is still held"
    snap = loop.snapshot()
    assert not (snap.running or snap.waiting), f"{where}: state left {snap}"
    for _ in range(6):  # ready fds are level-triggered; the rest waits for a few iterations
        if scene.expected <= scene.calls.keys():
            break
        with contextlib.suppress(ClosedFdError):  # the orphan, found by a later iteration
            loop.main_loop_wait(nonblocking=True)
    missing = scene.expected - scene.calls.keys()
    assert not missing, f"{where}: handlers never called afterwards: {sorted(missing)} ({scene.calls})"
    assert scene.calls["timer"] == 1, f"{where}: the one-shot timer ran {scene.calls['timer']} times"
    bad = scene.forbidden & scene.calls.keys()
    assert not bad, f"{where}: handlers called that must not be: {sorted(bad)}"
    # Nothing is half-registered: with every handler deleted, two iterations leave the kernel
    # holding the wakeup fd only, and an idle iteration finds nothing ready (no spin).
    for rec in loop.records():
        loop.set_fd_handler(rec.fd, None, None)
    for _ in range(2):
        with contextlib.suppress(ClosedFdError):
            loop.main_loop_wait(nonblocking=True)
    assert loop.main_loop_wait(nonblocking=True) == 0, f"{where}: an idle iteration found something ready"
    assert loop.records() == []
    book = dict(kernel_registrations(loop))
    assert set(book) == {loop.wakeup_fd}, f"{where}: kernel book {book}"


def opcodes_of_one_iteration(poller: str, orphan: bool) -> int:
    scene = build(poller, orphan=orphan)
    try:
        counter = Injector(None, entries=True)
        run_with(counter, scene.loop)
        return counter.count
    finally:
        scene.close()


@pytest.fixture(autouse=True)
def _no_leftover_trace() -> Iterator[None]:
    yield
    sys.settrace(None)


@pytest.mark.parametrize("orphan", [False, True], ids=["plain", "orphan"])
@pytest.mark.parametrize("poller", ["epoll", "poll", "selectors"])
def test_r35_interrupt_at_any_opcode_leaves_the_loop_usable(poller: str, orphan: bool) -> None:
    total = opcodes_of_one_iteration(poller, orphan)
    assert total > 50  # the trace does see the iteration
    for n in range(1, total + 1):
        scene = build(poller, orphan=orphan)
        try:
            injector = Injector(n, entries=True)
            exc = run_with(injector, scene.loop)
            assert injector.fired, f"opcode {n} of {total} not reached"
            check_after(scene, n, exc)
        finally:
            scene.close()
    add_stats(interrupt_points_total=total)


_RT = int(signal.SIGRTMIN)
_SIGNALS = (int(signal.SIGUSR1), int(signal.SIGUSR2), _RT)
_RAISED = (_RT, _RT, _RT, int(signal.SIGUSR1), int(signal.SIGUSR2))


@pytest.fixture
def _signals_ignored() -> Iterator[None]:
    """A stray test signal cannot end the worker (raised at the main thread only, blocked or
    caught by the loop meanwhile)."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def _signal_scene(poller: str, mech: str) -> tuple[MainLoop, list[int]]:
    loop = MainLoop(poller, signal_mechanism=mech)
    got: list[int] = []

    def on_signal(info: SignalInfo) -> None:
        got.append(info.signo)

    for s in _SIGNALS:
        loop.add_signal_handler(s, on_signal)
    main = threading.main_thread().ident or 0
    for s in _RAISED:
        signal.pthread_kill(main, s)
    return loop, got


@pytest.mark.usefixtures("_signals_ignored")
@pytest.mark.parametrize("mech", ["signalfd", "wakeup"] if signalfd_available() else ["wakeup"])
@pytest.mark.parametrize("poller", ["epoll", "poll", "selectors"])
def test_r35_interrupt_in_the_signal_record_loses_no_signal(poller: str, mech: str) -> None:
    """R35 and R63 for the signal record: 3 real-time and 2 standard signals pending, an
    interrupt at every opportunity of the iteration that delivers them; afterwards each is
    delivered exactly once (the one in the callback's hands when it raised counts as delivered:
    the callbacks here do not raise), and an idle iteration finds nothing ready."""
    total = 0
    n = 0
    while True:
        n += 1
        loop, got = _signal_scene(poller, mech)
        try:
            injector = Injector(n, entries=True)
            exc = run_with(injector, loop, lambda lp: lp.main_loop_wait(timeout=1))  # signals may reach a pipe late
            where = f"planted at opcode {n}"
            if exc is not None and not isinstance(exc, KeyboardInterrupt):
                raise AssertionError(f"{where}: {exc!r}") from exc
            assert lock_is_free(loop), f"{where}: the lock is still held"
            for _ in range(4):
                loop.main_loop_wait(nonblocking=True)
            assert sorted(got) == sorted(_RAISED), f"{where}: delivered {sorted(got)}"
            assert loop.main_loop_wait(nonblocking=True) == 0, f"{where}: an idle iteration found something ready"
        finally:
            loop.close()
        if not injector.fired:
            total = injector.count
            break
    assert total > 20  # the trace does see the signal record's work


# ------------------------------------------------------------------- the AioContext (R47, R46)


def _context_scene(poller: str) -> tuple[Scene, Any]:
    """A scheduled BH, a ready context fd and a due context timer, beside a ready record."""
    scene = Scene(MainLoop(poller))
    loop = scene.loop
    rec, rec_peer = scene.pair()
    cfd, cfd_peer = scene.pair()
    loop.set_fd_handler(rec, scene.reader("record"), opaque=rec)
    loop.context.set_fd_handler(cfd, scene.reader("ctxfd"), None, opaque=cfd)
    loop.main_loop_wait(nonblocking=True)  # both in the kernel set
    bh = loop.bh_new(scene.counter("bh"))
    bh.schedule()
    loop.context.call_later(0, scene.counter("ctxtimer"))
    rec_peer.send(b"x")
    cfd_peer.send(b"x")
    scene.expected = frozenset({"record", "ctxfd", "bh", "ctxtimer"})
    return scene, bh


def _check_context_after(scene: Scene, where: str, exc: BaseException | None) -> None:
    loop = scene.loop
    if exc is not None and not isinstance(exc, KeyboardInterrupt):
        raise AssertionError(f"{where}: the planted exception was replaced by {exc!r}") from exc
    assert lock_is_free(loop), f"{where}: the lock is still held"
    snap = loop.snapshot()
    assert not (snap.running or snap.waiting), f"{where}: state left {snap}"
    for _ in range(4):
        if scene.expected <= scene.calls.keys():
            break
        loop.main_loop_wait(nonblocking=True)
    missing = scene.expected - scene.calls.keys()
    assert not missing, f"{where}: never called afterwards: {sorted(missing)} ({scene.calls})"
    assert scene.calls["bh"] == 1 and scene.calls["ctxtimer"] == 1, f"{where}: ran {scene.calls}"
    # R45: the context is not left "dispatching", which would swallow a notify made on the
    # loop's thread with the lock held: the next wait would sleep its whole timeout.
    with loop.lock:
        loop.notify()
    t0 = time.monotonic()
    assert loop.main_loop_wait(timeout=5.0) > 0 and time.monotonic() - t0 < 2.5, f"{where}: notify lost"


@pytest.mark.parametrize("poller", ["epoll", "poll", "selectors"])
def test_r35_interrupt_in_the_context_s_dispatch_leaves_it_usable(poller: str) -> None:
    """R35 and R47: an interrupt at every opportunity of an iteration that runs a BH, a context
    fd handler and a context timer: afterwards the lock is free, the loop neither running nor
    the context dispatching, and each ran exactly once (the BH and the timer) or afterwards."""
    n = 0
    while True:
        n += 1
        scene, _bh = _context_scene(poller)
        try:
            injector = Injector(n, entries=True)
            exc = run_with(injector, scene.loop)
            _check_context_after(scene, f"planted at opcode {n}", exc)
        finally:
            scene.close()
        if not injector.fired:
            break
    assert n > 50  # the trace does see the context's work


@pytest.mark.parametrize("poller", ["epoll", "poll", "selectors"])
def test_r35_interrupt_in_a_blocking_context_poll_leaves_the_lock_free(poller: str) -> None:
    """R35 and R46: a top-level blocking `context.poll()` releases the loop's lock for its wait
    and takes it back; an interrupt at every opportunity leaves the lock free and the context
    usable (a planted exception as its poll returned once kept the lock released, then held)."""
    n = 0
    while True:
        n += 1
        scene = Scene(MainLoop(poller))
        try:
            cfd, cfd_peer = scene.pair()
            scene.loop.context.set_fd_handler(cfd, scene.reader("ctxfd"), None, opaque=cfd)
            cfd_peer.send(b"x")
            injector = Injector(n, entries=True)
            exc = run_with(injector, scene.loop, lambda lp: lp.context.poll(blocking=True))
            where = f"planted at opcode {n}"
            if exc is not None and not isinstance(exc, KeyboardInterrupt):
                raise AssertionError(f"{where}: the planted exception was replaced by {exc!r}") from exc
            assert lock_is_free(scene.loop), f"{where}: the lock is still held"
            snap = scene.loop.snapshot()
            assert not (snap.running or snap.waiting), f"{where}: state left {snap}"
            for _ in range(3):
                if "ctxfd" in scene.calls:
                    break
                scene.loop.context.poll()
            assert "ctxfd" in scene.calls, f"{where}: the context handler never ran afterwards"
        finally:
            scene.close()
        if not injector.fired:
            break
    assert n > 20
