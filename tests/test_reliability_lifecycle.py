"""The loop's lifecycle on real fds (issue 14, rule R41 with R31, R35 and R37): notify racing
close, cancelled timers, loops dropped without close, close from another thread, fork with a
live loop.

Races are forced with hooks (a patched system call that runs the other side at the worst
moment) or bounded rounds; no test relies on a sleep to line a race up.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable

import pytest

from iohandler.impl import LoopClosedError, MainLoop, Tracer
from iohandler.impl.errors import LoopForkedError
from iohandler.impl.wakeup import Wakeup
from tests.support import NAMES, WaitSignal, add_stats, kernel_registrations, open_fds, rss_bytes, wakeup_pending

KINDS = [True, False]  # use_eventfd: the eventfd, then the pipe fallback
KIND_IDS = ["eventfd", "pipe"]


def _unread(fd: int) -> bytes:
    """Whatever was written into a non-blocking pipe's read end (b"" if nothing)."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


# --------------------------------------------------------------- notify racing close (defect 3)


@pytest.mark.parametrize("use_eventfd", KINDS, ids=KIND_IDS)
def test_wake_racing_close_never_writes_into_the_reused_number(
    use_eventfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window: wake() has read the fd number and is about to write. A hook in the write
    runs close() in another thread, which then opens pipes until one reuses the number. The
    8-byte counter (or the pipe's byte) must not land in that pipe."""
    w = Wakeup(use_eventfd=use_eventfd)
    wfd = w._wfd
    name = "eventfd_write" if use_eventfd else "write"
    real: Callable[..., object] = getattr(os, name)
    grabbed: list[tuple[int, int]] = []  # (read end, write end) of pipes opened by the closer
    closer_done = threading.Event()
    fired = False

    def closer() -> None:
        w.close()
        for _ in range(8):  # the lowest free number is the one close() freed
            r, wr = os.pipe()
            os.set_blocking(r, False)
            grabbed.append((r, wr))
            if wfd in (r, wr):
                break
        closer_done.set()

    def hooked(fd: int, data: object) -> object:
        nonlocal fired
        if fd == wfd and not fired:
            fired = True
            t = threading.Thread(target=closer)
            t.start()
            # Bounded: unfixed, close() returns at once; fixed, it waits for this write.
            closer_done.wait(0.3)
        return real(fd, data)

    monkeypatch.setattr(os, name, hooked)
    try:
        w.wake()
        assert fired
        assert closer_done.wait(5.0), "close() never returned"
        monkeypatch.undo()
        assert any(wfd in p for p in grabbed), "the test did not get the number reused"
        for r, wr in grabbed:
            assert _unread(r) == b"", f"wake() wrote into pipe {r, wr} after close()"
    finally:
        monkeypatch.undo()
        for r, wr in grabbed:
            os.close(r)
            os.close(wr)
        w.close()


ROUNDS = 300


@pytest.mark.parametrize("name", NAMES)
def test_notify_and_stop_racing_close_touch_nothing_they_do_not_own(name: str) -> None:
    """Bounded rounds of the real race through MainLoop: one thread notifies (and stops) in a
    tight loop while this one closes the loop and opens pipes that reuse its numbers. No byte
    may reach those pipes; notify() and stop() after close() are no-ops."""
    leaked = 0
    errors: list[BaseException] = []
    for _ in range(ROUNDS):
        loop = MainLoop(name)
        go = threading.Event()
        done = threading.Event()

        def notifier(loop: MainLoop = loop, go: threading.Event = go, done: threading.Event = done) -> None:
            go.set()
            try:
                while not done.is_set():
                    loop.notify()
                    loop.stop()
            except BaseException as e:  # e.g. EBADF: the number was closed under the write
                errors.append(e)

        t = threading.Thread(target=notifier)
        t.start()
        go.wait(5.0)
        loop.close()
        pipes = [os.pipe() for _ in range(3)]
        for r, _w in pipes:
            os.set_blocking(r, False)
        done.set()
        t.join(5.0)
        assert not t.is_alive()
        for r, wr in pipes:
            if _unread(r):
                leaked += 1
            os.close(r)
            os.close(wr)
    assert leaked == 0, f"{leaked} of {ROUNDS} rounds wrote into a pipe that reused a loop's fd"
    assert not errors, f"notify()/stop() raised in {len(errors)} rounds: {errors[0]!r}"
    add_stats(lifecycle_close_race_rounds_total=ROUNDS)


# ---------------------------------------------------------- cancelled timers (defect 8)

CANCELLED = 20_000
PAYLOAD = 4096  # bytes per timer argument: what the cancelled timers would keep alive


class Big:
    """A timer argument holding PAYLOAD bytes, watched through a weakref."""

    def __init__(self) -> None:
        self.data = bytearray(PAYLOAD)


def test_cancelled_timers_release_their_arguments_and_heap_entries() -> None:
    """The issue's pattern, `call_later(3600, cb, big).cancel()` in a loop, without running the
    loop: arguments are freed at cancel, the heap stays small, RSS does not grow with them."""
    with MainLoop() as loop:
        refs = []
        gc.collect()
        rss0 = rss_bytes()
        most = 0
        for _ in range(CANCELLED):
            big = Big()
            refs.append(weakref.ref(big))
            loop.call_later(3600, lambda b: None, big).cancel()
            most = max(most, len(loop.snapshot().timers))
        del big
        rss1 = rss_bytes()
        alive = sum(r() is not None for r in refs)
        assert alive == 0, f"{alive} of {CANCELLED} cancelled timers' arguments still alive"
        assert most <= 200, f"the heap held {most} entries for cancelled timers"
        # The loop still runs the timers that are live.
        fired: list[int] = []
        loop.call_later(0, fired.append, 1)
        loop.call_later(3600, fired.append, 2).cancel()
        loop.main_loop_wait(nonblocking=True)
        assert fired == [1]
    add_stats(lifecycle_cancelled_timers=CANCELLED, lifecycle_cancelled_rss_growth_bytes=rss1 - rss0)


# ------------------------------------------------- loops dropped without close (defect 9)

DROPPED = 1_000


@pytest.mark.parametrize(("name", "use_eventfd"), [(n, True) for n in NAMES] + [("epoll", False)])
def test_a_loop_dropped_without_close_releases_its_fds_and_warns(name: str, use_eventfd: bool) -> None:
    count = DROPPED if name == "epoll" and use_eventfd else 100
    gc.collect()
    before = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(count):
            loop = MainLoop(name, use_eventfd=use_eventfd)
            loop.call_later(3600, print)  # some state, to be dropped with it
            del loop
        gc.collect()
    left = len(open_fds() - before)
    assert left == 0, f"{left} fds left open by {count} loops dropped without close()"
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(unclosed) == count
    assert "unclosed" in str(unclosed[0].message) and unclosed[0].source is not None
    if count == DROPPED:
        add_stats(lifecycle_dropped_loops=count, lifecycle_dropped_loops_fds_left=left)


def test_a_closed_loop_dropped_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        loop = MainLoop()
        loop.close()
        del loop
        gc.collect()


def test_a_loop_left_open_at_interpreter_exit_does_not_raise() -> None:
    """__del__ at shutdown, when module globals may already be gone: a warning at most, never
    an 'Exception ignored' traceback."""
    code = (
        "from iohandler.impl import MainLoop\n"
        "import os\n"
        "loop = MainLoop()\n"
        "loop.set_fd_handler(os.pipe()[0], read=print)\n"
        "cycle = [loop]\n"
        "cycle.append(cycle)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------ fork with a live loop (defect 13)

# Exit-code bits the forked child reports to the parent.
REFUSED_DELETE = 1  # set_fd_handler (a delete) raised LoopForkedError
REFUSED_WAIT = 2  # main_loop_wait raised LoopClosedError
REFUSED_TIMER = 4  # call_later raised LoopForkedError
CLOSED = 8  # close() returned, and the inherited loop's fds are closed in the child
OWN_LOOP = 16  # a loop created in the child works
ALL_BITS = 31
CHILD_RAISED = 100
FORKED_TEXT = (
    "the loop was inherited through fork(): its kernel objects are the parent's; "
    "create a new loop in the child (close() on this one is allowed)"
)


def _child(body: Callable[[], int]) -> int:
    """Fork; the child runs `body` and exits with its code (never returns into pytest). Returns
    the child's exit code, waiting at most 10 s (a hung child is killed: code -9)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child process)
        code = CHILD_RAISED
        try:
            code = body()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -9


def _use_inherited_loop(loop: MainLoop, fd: int, inherited: set[int]) -> int:
    """In the child; `inherited`: the loop's own fds, read in the parent before the fork."""
    code = 0
    try:
        loop.set_fd_handler(fd, None)  # the delete that used to drop the parent's registration
    except LoopForkedError as e:
        code |= REFUSED_DELETE if str(e) == FORKED_TEXT else 0
    try:
        loop.main_loop_wait(nonblocking=True)
    except LoopClosedError:
        code |= REFUSED_WAIT
    try:
        loop.call_later(0, print)
    except LoopForkedError:
        code |= REFUSED_TIMER
    loop.notify()  # no-ops: must not wake the parent's loop
    loop.stop()
    loop.check_fds()
    loop.close()
    if loop.closed and not inherited & open_fds():
        code |= CLOSED
    with MainLoop() as own:
        r, w = os.pipe()
        called: list[object] = []
        own.set_fd_handler(r, read=called.append, opaque=r)
        os.write(w, b"x")
        own.main_loop_wait(timeout=5.0)
        if called == [r]:
            code |= OWN_LOOP
    return code


@pytest.mark.parametrize("name", NAMES)
def test_a_forked_child_cannot_disturb_the_parents_loop(name: str) -> None:
    a, b = socket.socketpair()
    got: list[bytes] = []
    try:
        with MainLoop(name) as loop:
            loop.set_fd_handler(a, read=lambda _: got.append(a.recv(100)))
            loop.main_loop_wait(nonblocking=True)  # the fill: a is in the kernel's set now
            registered = kernel_registrations(loop)
            assert a.fileno() in dict(registered)
            own_fds = {loop.poller.fileno(), loop.wakeup_fd}
            code = _child(lambda: _use_inherited_loop(loop, a.fileno(), own_fds))
            woken = wakeup_pending(loop)
            b.send(b"x")
            ret = loop.main_loop_wait(timeout=2.0)
            assert got == [b"x"]  # the parent's handler still runs
            assert not woken  # the child's notify() did not reach the parent
            assert ret == 1
            assert kernel_registrations(loop) == registered
            assert code == ALL_BITS, f"child reported {code} (bits: see REFUSED_DELETE...)"
    finally:
        a.close()
        b.close()


def test_a_child_forked_while_another_thread_holds_the_loop_can_close_it() -> None:
    """fork() while the loop's thread is in a handler (the loop's lock held): the child's copy of
    the lock is held by a thread that does not exist there; close() must not wait for it."""
    r, w = os.pipe()
    in_handler = threading.Event()
    release = threading.Event()

    def handler(_: object) -> None:
        os.read(r, 1)
        in_handler.set()
        release.wait(10.0)

    loop = MainLoop()
    try:
        loop.set_fd_handler(r, read=handler)
        os.write(w, b"x")  # before the wait: its first iteration is the one that dispatches
        t = threading.Thread(target=loop.main_loop_wait)
        t.start()
        assert in_handler.wait(5.0)

        def close_inherited() -> int:
            loop.close()
            return 0

        code = _child(close_inherited)
        release.set()
        t.join(5.0)
        assert code == 0, "the child hung in close() (killed)" if code == -9 else code
    finally:
        release.set()
        loop.close()
        os.close(r)
        os.close(w)


# --------------------------------------------- close() from another thread during a wait (12b)


@pytest.mark.parametrize("how", ["run", "run_until", "main_loop_wait"])
@pytest.mark.parametrize("name", NAMES)
def test_close_from_another_thread_during_a_wait_ends_the_iteration_then_closes(name: str, how: str) -> None:
    """R31: nothing is re-entrant, so close() waits for the iteration: it wakes the loop (and
    ends run/run_until as stop() would), then closes once the iteration has returned."""
    gc.collect()
    before = open_fds()
    signal_ = WaitSignal()
    loop = MainLoop(name, tracer=signal_)
    errors: list[BaseException] = []
    calls: dict[str, Callable[[], object]] = {
        "run": loop.run,
        "run_until": lambda: loop.run_until(lambda: False),
        "main_loop_wait": loop.main_loop_wait,  # no timeout: only a wakeup ends it
    }

    def runner() -> None:
        try:
            calls[how]()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=runner)
    t.start()
    try:
        assert signal_.waiting.wait(5.0)
        loop.close()
        t.join(5.0)
        assert not t.is_alive(), f"{how} did not return after close()"
        assert errors == []
        assert loop.closed and open_fds() == before
        with pytest.raises(LoopClosedError):
            loop.main_loop_wait(nonblocking=True)
    finally:
        if t.is_alive():
            loop.stop()
            t.join(5.0)
        loop.close()


def test_close_from_another_thread_waits_for_a_running_handler() -> None:
    """The iteration holds the lock while a handler runs: close() returns after it, never
    under it (the handler may still use the loop)."""
    r, w = os.pipe()
    in_handler = threading.Event()
    release = threading.Event()
    used: list[int] = []
    loop = MainLoop()

    def handler(_: object) -> None:
        os.read(r, 1)
        in_handler.set()
        release.wait(10.0)
        loop.set_fd_handler(r, None)  # the loop is still open here
        used.append(1)

    loop.set_fd_handler(r, read=handler)
    t = threading.Thread(target=loop.run)
    closer = threading.Thread(target=loop.close)
    try:
        t.start()
        os.write(w, b"x")
        assert in_handler.wait(5.0)
        closer.start()
        closer.join(0.05)  # bounded look: it cannot return while the handler holds the lock
        assert closer.is_alive() and not loop.closed
        release.set()
        closer.join(5.0)
        t.join(5.0)
        assert not closer.is_alive() and not t.is_alive()
        assert used == [1] and loop.closed
    finally:
        release.set()
        loop.stop()
        t.join(5.0)
        closer.join(5.0)
        loop.close()
        os.close(r)
        os.close(w)


class ReadyCounter(Tracer):
    """Counts iterations (the `ready` hook, lock held) and fires `reached` at `at`."""

    def __init__(self, at: int) -> None:
        self.n = 0
        self.at = at
        self.reached = threading.Event()

    def ready(self, entries: list[tuple[int, int]], walk: bool) -> None:
        self.n += 1
        if self.n == self.at:
            self.reached.set()


CLOSE_ROUNDS = 60


@pytest.mark.parametrize("name", NAMES)
def test_close_from_another_thread_at_any_point_of_a_busy_run(name: str) -> None:
    """Bounded rounds: a loop runs with a busy handler while a feeder thread keeps it ready;
    another thread closes it after 1 to 20 iterations, wherever the loop then is (its wait,
    a handler, between iterations). run() returns without an error, the loop's fds are
    released, and no call after close reaches the kernel."""
    gc.collect()
    before = open_fds()
    for i in range(CLOSE_ROUNDS):
        a, b = socket.socketpair()
        a.setblocking(False)
        counter = ReadyCounter(1 + i % 20)
        loop = MainLoop(name, tracer=counter)
        errors: list[BaseException] = []
        stop_feeding = threading.Event()

        def on_read(_: object, a: socket.socket = a) -> None:
            with contextlib.suppress(BlockingIOError):
                a.recv(4096)

        def feeder(b: socket.socket = b, stop: threading.Event = stop_feeding) -> None:
            while not stop.is_set():
                with contextlib.suppress(BlockingIOError):
                    b.send(b"x")

        def runner(loop: MainLoop = loop, errors: list[BaseException] = errors) -> None:
            try:
                loop.run()
            except BaseException as e:
                errors.append(e)

        b.setblocking(False)
        loop.set_fd_handler(a, read=on_read)
        threads = [threading.Thread(target=feeder), threading.Thread(target=runner)]
        for t in threads:
            t.start()
        try:
            assert counter.reached.wait(5.0)
            loop.close()
            threads[1].join(5.0)
            assert not threads[1].is_alive() and errors == []
            assert loop.closed
            with pytest.raises(LoopClosedError):
                loop.set_fd_handler(a, read=on_read)
            loop.notify()
            loop.stop()
        finally:
            stop_feeding.set()
            loop.stop()
            for t in threads:
                t.join(5.0)
            loop.close()
            a.close()
            b.close()
    assert open_fds() == before
    add_stats(lifecycle_close_from_thread_rounds_total=CLOSE_ROUNDS)
