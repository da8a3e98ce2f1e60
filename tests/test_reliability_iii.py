"""Reliability III (issue 20, "The loop"): what a third adversarial review and peers' test suites
found in the loop, each reproduced here on every poller (R30-R41)."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import pytest

from iohandler.impl import ClosedFdError, EpollPoller, FdError, LoopClosedError, MainLoop, Seams, UnpollableFdError
from iohandler.impl.kernel import Kernel, _probe_kcmp, same_file_check
from iohandler.impl.registry import Record
from tests.support import Pairs, open_fds, run_before

POLLERS = ["epoll", "poll", "selectors"]


@pytest.fixture
def fds() -> Iterator[list[int]]:
    owned: list[int] = []
    yield owned
    for fd in owned:
        with contextlib.suppress(OSError):
            os.close(fd)


def _eventfd(owned: list[int]) -> int:
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    owned.append(fd)
    return fd


def _reuse_as_eventfd(old: int, owned: list[int]) -> int:
    """Close `old` without a delete and open a new eventfd on the same number."""
    os.close(old)
    owned.remove(old)
    new = _eventfd(owned)
    assert new == old, "the number was not reused"
    return new


def _needs_kcmp() -> None:
    if same_file_check() is None:
        pytest.skip("kcmp(2) is missing or refused here: anonymous files cannot be told apart (R34)")


def _iterations(loop: MainLoop, n: int) -> list[int]:
    """`n` non-blocking iterations; the fds of the ClosedFdErrors they raised."""
    raised: list[int] = []
    for _ in range(n):
        try:
            loop.main_loop_wait(nonblocking=True)
        except ClosedFdError as e:
            raised.append(e.fd)
    return raised


# ----------------------------------------------------- 1, 2: anonymous-inode files (R33, R34)


@pytest.mark.parametrize("poller", POLLERS)
def test_r34_eventfd_closed_while_a_dup_keeps_it_and_number_reused_never_calls_the_old_handler(
    poller: str, fds: list[int]
) -> None:
    """QEMU's EventNotifier cleaned up without a delete while KVM holds the eventfd: the old file
    stays alive (and readable) behind the number a new eventfd took."""
    _needs_kcmp()
    calls: list[int] = []
    with MainLoop(poller) as loop:
        old = _eventfd(fds)
        keep = os.dup(old)
        fds.append(keep)
        loop.set_fd_handler(old, lambda _: calls.append(1))
        loop.main_loop_wait(nonblocking=True)  # polled
        os.eventfd_write(keep, 1)  # the old file is readable for good (nobody reads it)
        _reuse_as_eventfd(old, fds)
        raised = _iterations(loop, 50)
        assert calls == []
        if not raised:  # poll follows the number: the new file is not ready, nothing reported
            with pytest.raises(ClosedFdError):
                loop.check_fds()
        else:
            assert raised == [old]  # once: no spin
        assert loop.records() == []


@pytest.mark.parametrize("poller", POLLERS)
def test_r34_check_fds_finds_an_idle_eventfd_whose_number_a_new_eventfd_took(poller: str, fds: list[int]) -> None:
    _needs_kcmp()
    with MainLoop(poller) as loop:
        old = _eventfd(fds)
        keep = os.dup(old)
        fds.append(keep)
        loop.set_fd_handler(old, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        _reuse_as_eventfd(old, fds)
        with pytest.raises(ClosedFdError) as e:
            loop.check_fds()
        assert e.value.fd == old
        assert loop.records() == []


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("how", ["not-yet-filled", "gate-closed"])
@pytest.mark.parametrize("kind", ["eventfd", "socket"])
def test_r34_a_record_not_in_the_kernel_set_never_reaches_a_file_that_took_its_number(
    poller: str, how: str, kind: str, fds: list[int], socks: Pairs
) -> None:
    """Registered and not yet filled, or behind a closed gate (R10): closed without a delete,
    its number taken by a new eventfd. The old handler never runs; the fd is reported once, as
    for a socket in the same sequence (R34: on every backend)."""
    _needs_kcmp()
    calls: list[int] = []
    gate = [how != "gate-closed"]
    with MainLoop(poller) as loop:
        if kind == "eventfd":
            old = _eventfd(fds)
        else:
            a, _ = socks.pair()
            old = os.dup(a.fileno())
            fds.append(old)
        loop.set_fd_handler(old, lambda _: calls.append(1), can_read=lambda _: gate[0])
        if how == "gate-closed":
            loop.main_loop_wait(nonblocking=True)  # filled: not polled (R10)
            assert loop.snapshot().kernel.keys() == {loop.wakeup_fd}
        new = _reuse_as_eventfd(old, fds)
        os.eventfd_write(new, 1)  # somebody else's eventfd, readable
        gate[0] = True
        raised = _iterations(loop, 5)
        assert calls == []
        assert raised == [old]
        assert loop.records() == []


# ------------------------------------------------- 3: close() from another thread (R31)


@pytest.mark.parametrize("poller", POLLERS)
def test_r31_close_from_another_thread_is_not_starved_by_a_loop_of_main_loop_wait(poller: str) -> None:
    """QEMU's shape: the loop's thread calls main_loop_wait() again and again; close() from
    another thread gets the loop between two of them, every time."""
    for _ in range(4):
        loop = MainLoop(poller)
        iterations = [0]

        def run(loop: MainLoop = loop, iterations: list[int] = iterations) -> None:
            while True:
                try:
                    loop.main_loop_wait()
                except LoopClosedError:
                    return
                iterations[0] += 1

        t = threading.Thread(target=run, daemon=True)
        t.start()
        while not loop.snapshot().waiting:
            time.sleep(0.001)
        t0 = time.monotonic()
        closer = threading.Thread(target=loop.close, daemon=True)
        closer.start()
        closer.join(2.0)
        took = time.monotonic() - t0
        if closer.is_alive():  # starved: let it finish so that the test ends
            loop.stop()
        t.join(5.0)
        closer.join(5.0)
        assert not t.is_alive() and not closer.is_alive()
        assert took < 1.0, f"close() took {took:.2f} s ({iterations[0]} iterations meanwhile)"
        assert loop.closed


# ------------------------------------- 4: a callback whose repr() raises (R32, R35)


class _NoRepr:
    """A bound method of this has a repr() that raises (as repr(self) does)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __repr__(self) -> str:
        raise AttributeError("no repr here")

    def handler(self, _: object) -> None:
        raise self.exc

    def gate(self, _: object) -> bool:
        raise self.exc

    def timer(self) -> None:
        raise self.exc


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("where", ["read", "write", "gate", "timer"])
@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
def test_r32_the_original_exception_leaves_even_if_the_callbacks_repr_raises(
    poller: str, where: str, exc: type[BaseException], socks: Pairs
) -> None:
    bad = _NoRepr(exc("the original"))
    with MainLoop(poller) as loop:
        a, b = socks.pair()
        b.send(b"x")
        if where == "read":
            loop.set_fd_handler(a, bad.handler)
        elif where == "write":
            loop.set_fd_handler(a, None, bad.handler)
        elif where == "gate":
            loop.set_fd_handler(a, print, can_read=bad.gate)
        else:
            loop.call_later(0, bad.timer)
        with pytest.raises(exc, match="the original") as e:
            loop.main_loop_wait(timeout=1.0)
        notes = getattr(e.value, "__notes__", [])
        assert len(notes) == 1 and "_NoRepr" in notes[0], notes  # named all the same
        if where != "timer":
            assert f"fd {a.fileno()}" in notes[0]
        loop.set_fd_handler(a, None)
        assert loop.main_loop_wait(nonblocking=True) >= 0  # still usable


# ------------------------------------------------ 5: a wait that blocked is not a spin (R40)


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("how", ["notify", "call_later"])
def test_r40_hand_offs_from_another_thread_after_the_loop_blocked_are_not_spins(poller: str, how: str) -> None:
    n = 1100  # beyond SPIN_LIMIT
    done = threading.Event()
    ran: list[int] = []
    iterations = [0]
    with MainLoop(poller) as loop:

        def hand_off() -> None:
            for k in range(n):
                while iterations[0] != k or not loop.snapshot().waiting:  # after the loop blocked
                    if done.is_set():
                        return
                    time.sleep(0)
                if how == "notify":
                    loop.notify()
                else:
                    loop.call_later(0, ran.append, 1)

        t = threading.Thread(target=hand_off, daemon=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t.start()
            try:
                for _ in range(n):
                    loop.main_loop_wait(timeout=5.0)
                    iterations[0] += 1
            finally:
                done.set()
                t.join(10.0)
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
        if how == "call_later":
            assert len(ran) == n


# --------------------------------------- 6: one identity check per ready fd (R33)


class _CountingKernel(Kernel):
    checks = 0

    def check_ready(self, rec: Record) -> FdError | None:
        _CountingKernel.checks += 1
        return super().check_ready(rec)


class _CountingEpoll(EpollPoller):
    """epoll whose confirm (the loop's per-ready-fd check there) counts its calls."""

    def _hot(self, ep: object) -> None:
        super()._hot(ep)  # type: ignore[arg-type]
        confirm = self.confirm
        assert confirm is not None

        def counted(fd: int, events: int) -> object:
            _CountingKernel.checks += 1
            return confirm(fd, events)

        self.confirm = counted


@pytest.mark.parametrize("poller", POLLERS)
def test_r33_write_only_ready_records_cost_one_check_each(poller: str, socks: Pairs) -> None:
    _CountingKernel.checks = 0
    calls: list[int] = []
    impl = _CountingEpoll() if poller == "epoll" else poller
    with MainLoop(impl, seams=Seams(kernel=_CountingKernel)) as loop:
        for _ in range(100):
            a, _ = socks.pair()
            loop.set_fd_handler(a, None, lambda _: calls.append(1))  # writable at once
        loop.main_loop_wait(nonblocking=True)  # fill: no ready fds checked yet
        _CountingKernel.checks = 0
        assert loop.main_loop_wait(nonblocking=True) == 100
        assert len(calls) == 200
        assert _CountingKernel.checks == 100


# ---------------------------------------------- 7: stop() during main_loop_wait (R31)


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("where", ["timer", "handler", "other-thread"])
def test_r31_a_stop_during_main_loop_wait_ends_with_it(poller: str, where: str, socks: Pairs) -> None:
    """libuv's rule: the stop flag is cleared when a run ends; main_loop_wait is a run of one
    iteration, so a later run_until is not ended by it."""
    with MainLoop(poller) as loop:
        a, b = socks.pair()
        if where == "timer":
            loop.call_later(0, loop.stop)
            loop.main_loop_wait(timeout=1.0)
        elif where == "handler":
            b.send(b"x")
            loop.set_fd_handler(a, lambda _: loop.stop())
            loop.main_loop_wait(timeout=1.0)
            loop.set_fd_handler(a, None)
        else:
            t = threading.Timer(0.05, loop.stop)
            t.start()
            loop.main_loop_wait(timeout=5.0)  # woken by the stop
            t.join()
        assert not loop.snapshot().stopping
        asked = [0]

        def pred() -> bool:
            asked[0] += 1
            return asked[0] > 3

        tick = loop.call_every(0.005, lambda: None)  # iterations for the predicate to see
        loop.run_until(pred)
        tick.cancel()
        assert asked[0] == 4


@pytest.mark.parametrize("poller", POLLERS)
def test_r31_a_stop_before_a_run_still_ends_that_run_at_once(poller: str) -> None:
    """What stays: a stop() with no run in progress ends the next run without an iteration
    (libuv's uv_stop before uv_run), and the run clears it."""
    with MainLoop(poller) as loop:
        loop.stop()
        asked: list[int] = []
        loop.run_until(lambda: asked.append(1))
        assert asked == []
        assert not loop.snapshot().stopping


# -------------------------------------- 8: kcmp's probe at the fd limit (R34)


@contextlib.contextmanager
def _at_fd_limit() -> Iterator[None]:
    """Every fd number below a lowered soft limit taken (the hard limit untouched)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(open_fds()) + 8, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                filler.append(os.dup(0))
        yield
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("poller", POLLERS)
def test_r34_an_eventfd_registered_at_the_fd_limit_carries_on_without_a_witness(poller: str, fds: list[int]) -> None:
    calls: list[int] = []
    with MainLoop(poller) as loop:
        ev = _eventfd(fds)

        def on_read(_: object) -> None:
            calls.append(1)
            os.eventfd_read(ev)

        same_file_check.cache_clear()  # kcmp is probed at the first anonymous file, here
        try:
            with _at_fd_limit():
                loop.set_fd_handler(ev, on_read)
                loop.main_loop_wait(nonblocking=True)
                os.eventfd_write(ev, 1)
                loop.main_loop_wait(nonblocking=True)
            assert calls == [1]
            if _probe_kcmp() is not None:  # kcmp works here: the failed probe was not cached
                assert same_file_check() is not None
        finally:
            same_file_check.cache_clear()


# ------------------------------------------- 9: an int subclass as the fd (R1, R30)


class _Fd(int):
    """An fd number whose equality and hash are by identity."""

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __hash__(self) -> int:
        return id(self)


@pytest.mark.parametrize("poller", POLLERS)
def test_r1_an_int_subclass_is_normalised_to_its_number(poller: str, socks: Pairs) -> None:
    calls: list[str] = []
    with MainLoop(poller) as loop:
        a, b = socks.pair()
        n = a.fileno()
        loop.set_fd_handler(_Fd(n), lambda _: calls.append("first"))
        loop.set_fd_handler(_Fd(n), lambda _: calls.append("second"))  # an update (R1, R3)
        records = loop.records()
        assert [type(r.fd) for r in records] == [int]
        b.send(b"x")
        loop.main_loop_wait(timeout=1.0)  # no spurious ClosedFdError
        assert calls == ["second"]
        loop.set_fd_handler(n, None)  # a delete by the plain number
        assert loop.records() == []


# ------------------------------------------------------- 10: an O_PATH fd (R30, R33)


@pytest.mark.parametrize("poller", POLLERS)
def test_r30_an_o_path_fd_is_reported_unpollable_and_never_spins(poller: str, fds: list[int]) -> None:
    fd = os.open("/dev/null", os.O_PATH)  # a character device: fstat cannot refuse it
    fds.append(fd)
    calls: list[int] = []
    with MainLoop(poller) as loop:
        loop.set_fd_handler(fd, lambda _: calls.append(1))
        with pytest.raises(UnpollableFdError) as e:
            loop.main_loop_wait(timeout=1.0)
        assert e.value.fd == fd
        assert loop.records() == []
        t0 = time.monotonic()
        assert loop.main_loop_wait(timeout=0.2) == 0  # blocks: no spin
        assert time.monotonic() - t0 >= 0.15
        assert calls == []


# ----------------------------- 11: a signal handler's wakeup before the wait (R35)


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("how", ["register", "call_later", "notify"])
def test_r35_a_signal_handler_between_the_timeout_and_the_wait_is_not_lost(poller: str, how: str, socks: Pairs) -> None:
    """A Python signal handler runs on the loop's thread at any eval-breaker point; one that
    registers or adds a due timer after the loop decided its timeout, and before the wait, must
    still end that wait (run here at the last such point)."""
    a, b = socks.pair()
    b.send(b"x")
    calls: list[int] = []
    with MainLoop(poller) as loop:

        def signal_handler() -> None:
            if how == "register":
                loop.set_fd_handler(a, lambda _: calls.append(1))
            elif how == "call_later":
                loop.call_later(0, calls.append, 1)
            else:
                loop.notify()

        t0 = time.monotonic()
        with run_before_wait(loop, signal_handler) as fired:
            loop.main_loop_wait(timeout=2.0)
        assert fired
        assert time.monotonic() - t0 < 1.0  # the wait did not block for its old timeout
        if how == "call_later":
            assert calls == [1]


def run_before_wait(loop: MainLoop, action: Callable[[], object]) -> contextlib.AbstractContextManager[list[str]]:
    """`action` at the iteration's last point before its kernel wait where the loop's state
    still says it is not waiting (impl/loop.py)."""
    import iohandler.impl.loop as loop_module

    return run_before(loop_module, "MainLoop._iterations", "wait = poller.wait_once or poller.wait", action)


# --------------------- 12: check_fds() from another thread during a long wait (R35, R39)


@pytest.mark.parametrize("poller", POLLERS)
def test_r35_check_fds_from_another_thread_during_a_stepped_wait(
    poller: str, socks: Pairs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_fds() is allowed from any thread: during a wait made of R39's steps, the rebuild
    it may need must not leave the loop's wait on a closed kernel object."""
    import iohandler.impl.loop as loop_module

    monkeypatch.setattr(loop_module, "MAX_WAIT", 0.05)
    a, _ = socks.pair()
    n = os.dup(a.fileno())
    result: list[object] = []
    with MainLoop(poller) as loop:
        loop.set_fd_handler(n, print)
        loop.main_loop_wait(nonblocking=True)

        def waiter() -> None:
            try:
                result.append(loop.main_loop_wait(timeout=0.5))
            except BaseException as e:
                result.append(e)

        t = threading.Thread(target=waiter)
        t.start()
        while not loop.snapshot().waiting:
            time.sleep(0.001)
        os.close(n)  # closed while registered: the next check finds it (R33)
        try:
            loop.check_fds()
            found_here = False
        except ClosedFdError:
            found_here = True
        t.join(5.0)
        # poll(2) reports the closed fd itself (NVAL), so on a loaded machine the waiting loop
        # may find it before check_fds() does: exactly one of them reports it, nothing else fails.
        if found_here:
            assert result == [0], result
        else:
            assert len(result) == 1 and isinstance(result[0], ClosedFdError), result
        assert loop.records() == []
        assert loop.main_loop_wait(nonblocking=True) == 0
