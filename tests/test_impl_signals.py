"""Signals through the loop (R60-R65), on every poller and both mechanisms (signalfd, and the
set_wakeup_fd fallback), which must give the same callbacks.

Signals are raised with `pthread_kill` at the main thread: a thread-directed signal cannot be
delivered to another thread of the test process (pytest-xdist has some), so a wrong mask cannot
kill the worker. The test signals are set to SIG_IGN around each test for the same reason (a
blocked signal is queued even when ignored: R60), and every test checks that the mask and the
dispositions are exactly as before once its loop is closed (R64)."""

from __future__ import annotations

import fcntl
import gc
import os
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from iohandler.impl import (
    POLLERS,
    ListTracer,
    LoopClosedError,
    LoopForkedError,
    MainLoop,
    SignalInfo,
    SignalSet,
    signalfd_available,
)

MECHS = ["signalfd", "wakeup"] if signalfd_available() else ["wakeup"]
RT = signal.SIGRTMIN
TEST_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGWINCH, RT, RT + 1, RT + 2)
SI_TKILL = -6  # si_code of tgkill/pthread_kill


def raise_(sig: int) -> None:
    signal.pthread_kill(threading.main_thread().ident or 0, sig)


def mask() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def dispositions() -> dict[int, Any]:
    return {s: signal.getsignal(s) for s in TEST_SIGNALS}


@pytest.fixture(autouse=True)
def _signal_state() -> Iterator[None]:
    """Test signals ignored (a stray one cannot end the worker); state checked unchanged after."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in TEST_SIGNALS}
    before_mask, before_disp = mask(), dispositions()
    try:
        yield
        assert mask() == before_mask, "R64: the mask is restored"
        assert dispositions() == before_disp, "R64: the dispositions are restored"
        assert not (set(signal.sigpending()) & set(TEST_SIGNALS)), "nothing of ours left pending"
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before_mask)
        for s, h in saved.items():
            signal.signal(s, h)


@pytest.fixture(params=[(p, m) for p in sorted(POLLERS) for m in MECHS], ids=lambda pm: f"{pm[0]}-{pm[1]}")
def sigloop(request: pytest.FixtureRequest) -> Iterator[MainLoop]:
    poller, mech = request.param
    with MainLoop(poller, signal_mechanism=mech) as lp:
        yield lp


def collect(loop: MainLoop, *sigs: int) -> list[SignalInfo]:
    got: list[SignalInfo] = []
    for s in sigs:
        loop.add_signal_handler(s, got.append)
    return got


def signos(infos: list[SignalInfo]) -> list[int]:
    return [i.signo for i in infos]


def test_delivery_with_details_and_args(sigloop: MainLoop) -> None:
    """R60: the callback gets a SignalInfo and the extra args; pid, uid and code where known."""
    got: list[tuple[SignalInfo, str, int]] = []
    sigloop.add_signal_handler(signal.SIGUSR1, lambda info, a, b: got.append((info, a, b)), "a", 2)
    raise_(signal.SIGUSR1)
    assert sigloop.main_loop_wait(timeout=5) >= 1
    assert len(got) == 1
    info, a, b = got[0]
    assert (info.signo, a, b) == (signal.SIGUSR1, "a", 2)
    sigset = sigloop.signal_set
    assert sigset is not None
    if sigset.mechanism == "signalfd":
        assert (info.pid, info.uid, info.code) == (os.getpid(), os.getuid(), SI_TKILL)
    else:
        assert (info.pid, info.uid, info.code) == (None, None, None)


def test_the_record_is_the_loops_own_and_ordinary(sigloop: MainLoop) -> None:
    """R60: one read record (no gate, no writer), visible in records() and snapshot(), created by
    the first add, deleted by the last remove; R38: the caller cannot register it, and a delete
    of it is a no-op."""
    assert sigloop.records() == []
    collect(sigloop, signal.SIGUSR1, signal.SIGUSR2)
    (rec,) = sigloop.records()
    sigset = sigloop.signal_set
    assert isinstance(rec.opaque, SignalSet) and rec.opaque is sigset
    assert rec.fd == sigset.fileno() and rec.write is None and rec.can_read is None
    assert rec.read == sigset.dispatch
    assert [r.fd for r in sigloop.snapshot().records] == [rec.fd]
    with pytest.raises(ValueError, match="signal record"):
        sigloop.set_fd_handler(rec.fd, read=print)
    sigloop.set_fd_handler(rec.fd, None, None)  # R38: a delete of the loop's own fd is a no-op
    assert sigloop.records() == [rec]
    assert sigloop.remove_signal_handler(signal.SIGUSR1) is True
    assert len(sigloop.records()) == 1
    assert sigloop.remove_signal_handler(signal.SIGUSR2) is True
    assert sigloop.records() == []
    assert sigloop.remove_signal_handler(signal.SIGUSR2) is False


def test_walk_position_follows_r2(sigloop: MainLoop) -> None:
    """R60: added first (as the seed's qemu_init_main_loop does), the signal record is the tail
    and its callbacks run after every other ready record of the walk (R15)."""
    a, b = socket.socketpair()
    try:
        order: list[str] = []
        sigloop.add_signal_handler(signal.SIGUSR1, lambda info: order.append("signal"))

        def on_socket(s: socket.socket) -> None:
            order.append("socket")
            s.recv(10)

        sigloop.set_fd_handler(a, read=on_socket, opaque=a)
        tracer = ListTracer()
        sigloop.set_tracer(tracer)
        b.send(b"x")
        raise_(signal.SIGUSR1)
        assert sigloop.main_loop_wait(timeout=5) >= 2
        assert order == ["socket", "signal"]
        assert [e[1] for e in tracer.events if e[0] == "read"] == [a.fileno(), sigloop.signal_set.fileno()]  # type: ignore[union-attr]
    finally:
        sigloop.set_fd_handler(a, None, None)
        a.close()
        b.close()


def test_standard_signals_coalesce_realtime_queue(sigloop: MainLoop) -> None:
    """R61: a standard signal raised three times before the read is delivered once; each
    real-time one is delivered."""
    got = collect(sigloop, signal.SIGUSR1, RT)
    for _ in range(3):
        raise_(signal.SIGUSR1)
        raise_(RT)
    sigloop.main_loop_wait(timeout=5)
    assert signos(got) == [signal.SIGUSR1, RT, RT, RT]


def test_several_pending_lowest_number_first(sigloop: MainLoop) -> None:
    """R61: several pending signals are delivered lowest number first, whatever the raise order."""
    sigs = [signal.SIGUSR2, RT + 2, signal.SIGWINCH, RT, signal.SIGUSR1, signal.SIGHUP, RT + 1]
    got = collect(sigloop, *sigs)
    for s in sigs:
        raise_(s)
    sigloop.main_loop_wait(timeout=5)
    assert signos(got) == sorted(sigs)


def test_a_walk_delivers_at_most_a_batch(sigloop: MainLoop) -> None:
    """R61: at most 64 per walk; the rest stays pending and the next iteration goes on."""
    got = collect(sigloop, RT)
    for _ in range(100):
        raise_(RT)
    sigloop.main_loop_wait(timeout=5)
    assert len(got) == 64
    assert sigloop.main_loop_wait(nonblocking=True) >= 1
    assert len(got) == 100
    assert sigloop.main_loop_wait(nonblocking=True) == 0


def test_a_signal_wakes_a_blocked_loop(sigloop: MainLoop) -> None:
    """R60: a signal raised while the loop blocks ends its wait (no wakeup lost)."""
    got = collect(sigloop, signal.SIGUSR1)
    t = threading.Timer(0.05, raise_, (signal.SIGUSR1,))
    t.start()
    try:
        sigloop.main_loop_wait(nonblocking=True)  # the add's own wakeup (R7) consumed
        assert sigloop.main_loop_wait(timeout=10) >= 1
    finally:
        t.join()
    assert signos(got) == [signal.SIGUSR1]


def test_remove_from_inside_the_walk_drops_pending(sigloop: MainLoop) -> None:
    """R62: a callback removing another signal's handler: that signal, pending, is not
    delivered, and its mask and disposition are restored at once."""
    got: list[int] = []

    def on_usr1(info: SignalInfo) -> None:
        got.append(info.signo)
        assert sigloop.remove_signal_handler(signal.SIGUSR2)
        assert signal.SIGUSR2 not in mask()
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN

    sigloop.add_signal_handler(signal.SIGUSR1, on_usr1)
    sigloop.add_signal_handler(signal.SIGUSR2, lambda info: got.append(info.signo))
    raise_(signal.SIGUSR2)
    raise_(signal.SIGUSR1)
    sigloop.main_loop_wait(timeout=5)
    assert got == [signal.SIGUSR1]
    assert sigloop.main_loop_wait(nonblocking=True) == 0


def test_add_from_inside_the_walk(sigloop: MainLoop) -> None:
    """R62: a handler added by a callback gets the signals raised from then on, in this walk too."""
    got: list[int] = []

    def on_usr1(info: SignalInfo) -> None:
        got.append(info.signo)
        sigloop.add_signal_handler(signal.SIGHUP, lambda i: got.append(i.signo))
        raise_(signal.SIGHUP)

    sigloop.add_signal_handler(signal.SIGUSR1, on_usr1)
    raise_(signal.SIGUSR1)
    sigloop.main_loop_wait(timeout=5)
    assert got == [signal.SIGUSR1, signal.SIGHUP]


def test_replacing_a_handler(sigloop: MainLoop) -> None:
    got: list[str] = []
    sigloop.add_signal_handler(signal.SIGUSR1, lambda i: got.append("old"))
    sigloop.add_signal_handler(signal.SIGUSR1, lambda i: got.append("new"))
    raise_(signal.SIGUSR1)
    sigloop.main_loop_wait(timeout=5)
    assert got == ["new"]


def test_exception_from_a_callback_loses_nothing(sigloop: MainLoop) -> None:
    """R63 (R32's standard): the exception propagates with notes naming the signal, the handler
    and the record; the other pending signals are delivered by the next iteration."""
    got: list[int] = []

    def boom(info: SignalInfo) -> None:
        got.append(info.signo)
        raise KeyError("boom")

    sigloop.add_signal_handler(signal.SIGUSR1, boom)
    sigloop.add_signal_handler(signal.SIGUSR2, lambda i: got.append(i.signo))
    sigloop.add_signal_handler(RT, lambda i: got.append(i.signo))
    for s in (RT, signal.SIGUSR2, signal.SIGUSR1, RT):
        raise_(s)
    with pytest.raises(KeyError) as exc:
        sigloop.main_loop_wait(timeout=5)
    notes = "\n".join(exc.value.__notes__)
    assert "SIGUSR1" in notes and "boom" in notes and f"fd {sigloop.signal_set.fileno()}" in notes  # type: ignore[union-attr]
    assert got == [signal.SIGUSR1]
    assert sigloop.main_loop_wait(nonblocking=True) >= 1
    assert got == [signal.SIGUSR1, signal.SIGUSR2, RT, RT]


def test_close_restores_and_drops_pending() -> None:
    """R64: close() with handlers installed and signals pending: mask and dispositions as
    before (the autouse fixture checks), nothing of ours left pending."""
    for mech in MECHS:
        loop = MainLoop(signal_mechanism=mech)
        collect(loop, signal.SIGUSR1, RT)
        raise_(signal.SIGUSR1)
        raise_(RT)
        loop.close()
        assert loop.signal_set is not None and loop.signal_set.closed
        with pytest.raises(LoopClosedError):
            loop.add_signal_handler(signal.SIGUSR1, print)
        with pytest.raises(LoopClosedError):
            loop.remove_signal_handler(signal.SIGUSR1)


def test_signalfd_gets_ignored_signals() -> None:
    """R60: blocked, a signal whose disposition is SIG_IGN is still queued for the signalfd
    (Python ignores SIGPIPE; the fixture ignores the test signals), and stays SIG_IGN."""
    if "signalfd" not in MECHS:
        pytest.skip("no signalfd on this kernel")
    with MainLoop(signal_mechanism="signalfd") as loop:
        got = collect(loop, signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        raise_(signal.SIGUSR1)
        loop.main_loop_wait(timeout=5)
        assert signos(got) == [signal.SIGUSR1]


@pytest.mark.parametrize(
    ("signum", "exc", "text"),
    [
        (0, ValueError, "signum must be a signal number"),
        (-1, ValueError, "signum must be a signal number"),
        (signal.NSIG, ValueError, "signum must be a signal number"),
        (32, ValueError, "signum must be a signal number"),  # the C library's own
        (signal.SIGKILL, ValueError, "signum SIGKILL cannot be caught"),
        (signal.SIGSTOP, ValueError, "signum SIGSTOP cannot be caught"),
        (True, TypeError, "signum must be an int"),
        ("SIGUSR1", TypeError, "signum must be an int"),
        (10.0, TypeError, "signum must be an int"),
    ],
)
def test_bad_signum_changes_nothing(signum: Any, exc: type[Exception], text: str) -> None:
    """R30's standard: the argument named, nothing changed (records, mask, dispositions)."""
    with MainLoop() as loop:
        collect(loop, signal.SIGUSR2)
        before = (loop.records(), mask(), dispositions())
        with pytest.raises(exc, match=text):
            loop.add_signal_handler(signum, print)
        with pytest.raises(exc, match=text):
            loop.remove_signal_handler(signum)
        assert (loop.records(), mask(), dispositions()) == before


def test_bad_callback_and_mechanism() -> None:
    with pytest.raises(ValueError, match="signal_mechanism must be one of"):
        MainLoop(signal_mechanism="sigwait")
    with MainLoop() as loop:
        before = (loop.records(), mask(), dispositions())
        with pytest.raises(TypeError, match="callback must be callable, got int"):
            loop.add_signal_handler(signal.SIGUSR1, 3)  # type: ignore[arg-type]
        assert (loop.records(), mask(), dispositions()) == before
        assert loop.signal_set is None or loop.signal_set.handlers == {}


def test_off_the_main_thread_is_refused() -> None:
    """R65: the mask is the calling thread's and Python's dispositions the main thread's."""
    errors: list[BaseException] = []
    with MainLoop() as loop:

        def worker() -> None:
            try:
                loop.add_signal_handler(signal.SIGUSR1, print)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        assert "main thread" in str(errors[0])
        assert loop.records() == []


def test_threads_started_before_the_mask_are_warned_about() -> None:
    """R65: with signalfd, a thread already running does not block the signal: warned, naming
    it. The wakeup mechanism works whatever thread the kernel picks: no warning."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="early-thread")
    t.start()
    try:
        if "signalfd" in MECHS:
            with MainLoop(signal_mechanism="signalfd") as loop, pytest.warns(RuntimeWarning, match="early-thread"):
                loop.add_signal_handler(signal.SIGUSR1, print)
        with MainLoop(signal_mechanism="wakeup") as loop, warnings.catch_warnings():
            warnings.simplefilter("error")
            loop.add_signal_handler(signal.SIGUSR1, print)
    finally:
        stop.set()
        t.join()


def test_one_loop_per_process_holds_signals() -> None:
    with MainLoop() as first, MainLoop() as second:
        first.add_signal_handler(signal.SIGUSR1, print)
        with pytest.raises(RuntimeError, match="another loop holds signal handlers"):
            second.add_signal_handler(signal.SIGUSR2, print)
        assert second.records() == [] and signal.SIGUSR2 not in mask()
        first.remove_signal_handler(signal.SIGUSR1)
        second.add_signal_handler(signal.SIGUSR2, print)  # released with the last handler


def test_wakeup_refuses_a_taken_wakeup_fd() -> None:
    a, b = socket.socketpair()
    b.setblocking(False)
    prev = signal.set_wakeup_fd(b.fileno())
    try:
        with MainLoop(signal_mechanism="wakeup") as loop:
            with pytest.raises(RuntimeError, match="set_wakeup_fd is already in use"):
                loop.add_signal_handler(signal.SIGUSR1, print)
            assert loop.records() == []
        assert signal.set_wakeup_fd(prev) == b.fileno()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mech", MECHS)
def test_fork_child_gets_the_previous_signal_state(mech: str) -> None:
    """R65 (R41): in a forked child the mask and dispositions are as before the first add, the
    inherited loop is closed, and a new loop of the child can take signals."""
    with MainLoop(signal_mechanism=mech) as loop:
        collect(loop, signal.SIGUSR1, RT)
        parent_mask, parent_usr1 = mask(), signal.getsignal(signal.SIGUSR1)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running pytest's cleanup
            code = 1
            try:
                child_mask = mask()
                ok = [signal.SIGUSR1 not in child_mask, RT not in child_mask]
                ok.append(signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN)
                try:
                    loop.add_signal_handler(signal.SIGUSR2, print)
                    ok.append(False)
                except LoopForkedError:
                    ok.append(True)
                loop.close()
                with MainLoop(signal_mechanism=mech) as child_loop:
                    got = collect(child_loop, signal.SIGUSR2)
                    raise_(signal.SIGUSR2)
                    child_loop.main_loop_wait(timeout=5)
                    ok.append(signos(got) == [signal.SIGUSR2])
                os.write(w, repr(ok).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r) as f:
            report = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert report == repr([True] * 5)
        assert mask() == parent_mask and signal.getsignal(signal.SIGUSR1) == parent_usr1  # parent untouched
        if mech == "signalfd":
            assert {signal.SIGUSR1, RT} <= parent_mask


def test_remove_drops_pending_rather_than_run_the_old_disposition(sigloop: MainLoop) -> None:
    """R64: a signal of the removed kind still pending is dropped, not handed to the previous
    disposition when unblocked (a pending SIGTERM would end the process)."""
    old: list[int] = []
    signal.signal(signal.SIGUSR2, lambda s, f: old.append(s))
    got = collect(sigloop, signal.SIGUSR2)
    raise_(signal.SIGUSR2)
    assert sigloop.remove_signal_handler(signal.SIGUSR2)
    for _ in range(3):  # Python runs its handlers at the next bytecode boundaries
        sigloop.main_loop_wait(nonblocking=True)
    assert (old, got) == ([], [])
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _child_sigblk(**popen: Any) -> int:
    import subprocess

    out = subprocess.run(["grep", "SigBlk", "/proc/self/status"], capture_output=True, text=True, check=True, **popen)
    return int(out.stdout.split()[1], 16)


def test_children_and_the_mask() -> None:
    """R65, as documented: a subprocess started without the at-fork hooks inherits the blocked
    mask (signalfd); with a preexec_fn the hook runs and the child gets the mask from before."""
    if "signalfd" not in MECHS:
        pytest.skip("no signalfd on this kernel: the wakeup mechanism blocks nothing")
    bit = 1 << (signal.SIGUSR1 - 1)
    with MainLoop(signal_mechanism="signalfd") as loop:
        loop.add_signal_handler(signal.SIGUSR1, print)
        assert _child_sigblk() & bit
        assert not _child_sigblk(preexec_fn=lambda: None) & bit
    with MainLoop(signal_mechanism="wakeup") as loop:
        loop.add_signal_handler(signal.SIGUSR1, print)
        assert not _child_sigblk() & bit


def test_readme_subprocess_example_works_as_printed() -> None:
    """The README's Signals example, run as printed (in its own process: SIGCHLD is
    process-directed, and a pytest worker may have threads), prints what its comment says."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Signals", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    expected = re.search(r"print\(.*\)  # (.*)\n", code.group(1))
    assert expected is not None
    for mech in MECHS:
        src = code.group(1).replace("MainLoop()", f"MainLoop(signal_mechanism={mech!r})")
        out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected.group(1)


CTRL_C = """
import os, signal, sys
from iohandler.impl import MainLoop
seen = []
with MainLoop(signal_mechanism=sys.argv[1]) as loop:
    loop.add_signal_handler(signal.SIGINT, lambda info: seen.append(info.signo))
    os.kill(os.getpid(), signal.SIGINT)
    loop.main_loop_wait(timeout=5)
    loop.remove_signal_handler(signal.SIGINT)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        loop.main_loop_wait(timeout=5)
    except KeyboardInterrupt:
        seen.append("KeyboardInterrupt")
    loop.main_loop_wait(nonblocking=True)  # still usable
print(seen)
"""


@pytest.mark.parametrize("mech", MECHS)
def test_ctrl_c_with_and_without_a_handler(mech: str) -> None:
    """README: with a SIGINT handler Ctrl-C is a callback; removed, KeyboardInterrupt is back."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", CTRL_C, mech], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"[{int(signal.SIGINT)}, 'KeyboardInterrupt']"


def test_a_collected_loop_restores_the_signal_state() -> None:
    """R64: a loop collected without close() warns (R41) and restores as close() would (the
    autouse fixture checks the mask and dispositions)."""
    import gc

    for mech in MECHS:
        loop = MainLoop(signal_mechanism=mech)
        collect(loop, signal.SIGUSR1)
        assert mech == "wakeup" or signal.SIGUSR1 in mask()
        with pytest.warns(ResourceWarning, match="unclosed loop"):
            del loop
            gc.collect()
        assert signal.SIGUSR1 not in mask()


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="needs F_SETPIPE_SZ (Linux) to shrink the pipe")
def test_wakeup_pipe_full_loses_no_kind() -> None:
    """R61 on the wakeup mechanism: when a flood fills the pipe the runtime's writes fail
    silently; the kinds recorded by the Python-level handler stand in for the lost bytes."""
    with MainLoop(signal_mechanism="wakeup") as loop:
        got = collect(loop, signal.SIGUSR1, RT)
        sigset = loop.signal_set
        assert sigset is not None
        size = fcntl.fcntl(sigset.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        for _ in range(size + 500):
            raise_(RT)
        raise_(signal.SIGUSR1)  # its byte finds the pipe full
        for _ in range(size // 64 + 20):
            if loop.main_loop_wait(nonblocking=True) == 0:
                break
        assert signos(got).count(signal.SIGUSR1) == 1
        assert size <= signos(got).count(RT) <= size + 500


def test_remove_keeps_other_pending_signals_ready(sigloop: MainLoop) -> None:
    """R62/R63: removing one handler drops that kind only; another kind already pending is
    still delivered by the next iteration (the record stays readable)."""
    got = collect(sigloop, signal.SIGUSR1, signal.SIGUSR2)
    raise_(signal.SIGUSR1)
    assert sigloop.remove_signal_handler(signal.SIGUSR2) is True
    assert sigloop.main_loop_wait(timeout=2) >= 1
    assert signos(got) == [signal.SIGUSR1]


@pytest.mark.parametrize("mech", MECHS)
def test_close_off_the_main_thread_is_refused_and_changes_nothing(mech: str) -> None:
    """R64: the mask and the dispositions can only be restored from the main thread, so close()
    from another thread with signal handlers installed raises, and the loop stays as it was."""
    with MainLoop(signal_mechanism=mech) as loop:
        got = collect(loop, signal.SIGUSR1)
        errors: list[BaseException] = []

        def closer() -> None:
            try:
                loop.close()
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=closer)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
        assert "main thread" in str(errors[0])
        assert not loop.closed
        raise_(signal.SIGUSR1)
        assert loop.main_loop_wait(timeout=5) >= 1
        assert signos(got) == [signal.SIGUSR1]
        loop.remove_signal_handler(signal.SIGUSR1)
        t = threading.Thread(target=loop.close)  # no handler left: any thread may close (R31)
        t.start()
        t.join()
        assert loop.closed


@pytest.mark.parametrize("mech", MECHS)
def test_collected_off_the_main_thread_restores_later_on_the_main_thread(mech: str) -> None:
    """R64: a loop collected in another thread cannot restore there; its fds stay open (the
    wakeup fd still names its pipe) and the main thread's next signal call restores it."""
    holder = [MainLoop(signal_mechanism=mech)]
    holder[0].add_signal_handler(signal.SIGUSR1, print)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def release() -> None:
            holder.clear()
            gc.collect()  # the loop and its context refer to each other

        t = threading.Thread(target=release)
        t.start()
        t.join()
    assert any("main thread" in str(w.message) for w in caught), [str(w.message) for w in caught]
    with MainLoop(signal_mechanism=mech) as loop:
        got = collect(loop, signal.SIGUSR2)  # restores the collected loop's state first
        assert signal.SIGUSR1 not in mask()
        raise_(signal.SIGUSR2)
        assert loop.main_loop_wait(timeout=5) >= 1
        assert signos(got) == [signal.SIGUSR2]


def test_the_context_cannot_take_the_signal_fd(sigloop: MainLoop) -> None:
    """R38/R60: the signal record's fd stays the loop's own after the last handler is removed
    (it is kept open until close()): the context refuses it too, and a later add works whole."""
    got = collect(sigloop, signal.SIGUSR1)
    sigset = sigloop.signal_set
    assert sigset is not None
    fd = sigset.fileno()
    with pytest.raises(ValueError, match="signal record"):
        sigloop.context.set_fd_handler(fd, print, None)
    sigloop.remove_signal_handler(signal.SIGUSR1)
    sigloop.main_loop_wait(nonblocking=True)  # the walk reaps the deleted record
    with pytest.raises(ValueError, match="signal record"):
        sigloop.context.set_fd_handler(fd, print, None)
    sigloop.add_signal_handler(signal.SIGUSR1, got.append)
    raise_(signal.SIGUSR1)
    assert sigloop.main_loop_wait(timeout=5) >= 1
    assert signos(got) == [signal.SIGUSR1]


@pytest.mark.skipif(not signalfd_available(), reason="signalfd only")
def test_remove_drops_pending_of_a_signal_blocked_before() -> None:
    """R64 with a signal the program blocked itself: it stays blocked after the remove, and its
    pending delivery is dropped with the handler, not handed to the next one."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        with MainLoop(signal_mechanism="signalfd") as loop:
            got = collect(loop, signal.SIGUSR1)
            raise_(signal.SIGUSR1)
            assert loop.remove_signal_handler(signal.SIGUSR1) is True
            assert signal.SIGUSR1 in mask()
            loop.add_signal_handler(signal.SIGUSR1, got.append)
            loop.main_loop_wait(timeout=0.2)
            assert got == []
            assert signal.SIGUSR1 not in signal.sigpending()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})


def test_wakeup_refuses_a_signal_blocked_before() -> None:
    """R60: the wakeup mechanism never sees a signal the main thread blocks (the runtime's
    handler cannot run for it there): refused, naming it, nothing changed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        with MainLoop(signal_mechanism="wakeup") as loop:
            before = dispositions()
            with pytest.raises(ValueError, match=r"SIGUSR1.*blocked"):
                loop.add_signal_handler(signal.SIGUSR1, print)
            assert dispositions() == before and loop.records() == []
            assert loop.signal_set is None or not loop.signal_set.handlers
            loop.add_signal_handler(signal.SIGUSR2, print)  # the loop is still usable
            loop.remove_signal_handler(signal.SIGUSR2)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})


SIGCHLD_IGNORED = """
import signal, subprocess, sys
from iohandler.impl import MainLoop
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
with MainLoop(signal_mechanism=sys.argv[1]) as loop:
    got = []
    loop.add_signal_handler(signal.SIGCHLD, lambda info: got.append(info.signo))
    child = subprocess.Popen(["sh", "-c", "exit 3"])
    loop.call_later(20.0, loop.stop)  # a bound for a loaded machine, not a timing
    loop.run_until(lambda: bool(got))
    print(sorted(set(got)), child.wait(5))  # the child's status: not reaped by the kernel
print(signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN)
"""


@pytest.mark.parametrize("mech", MECHS)
def test_sigchld_ignored_before_is_delivered_and_restored(mech: str) -> None:
    """R60: with SIGCHLD at SIG_IGN the kernel reaps children itself and sends no SIGCHLD (a
    blocked signal is not enough for this one), so the add sets SIG_DFL while the handler is
    installed, on both mechanisms alike, and the remove puts SIG_IGN back. In a process of its
    own: SIGCHLD is process-directed, and a test worker's other threads (which do not block it,
    R65) would take it."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", SIGCHLD_IGNORED, mech], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [f"[{int(signal.SIGCHLD)}] 3", "True"], out.stdout


def test_wakeup_fd_replaced_later_is_detected_and_kept() -> None:
    """R65: a set_wakeup_fd made after the loop took it (the program, an asyncio loop) is
    detected by the next add, which refuses, and close() leaves the program's fd in place."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        loop = MainLoop(signal_mechanism="wakeup")
        loop.add_signal_handler(signal.SIGUSR1, print)
        signal.set_wakeup_fd(w)
        with pytest.raises(RuntimeError, match=f"fd {w}"):
            loop.add_signal_handler(signal.SIGUSR2, print)
        with pytest.warns(RuntimeWarning, match=f"fd {w}"):
            loop.close()
        assert signal.set_wakeup_fd(-1) == w
    finally:
        os.close(r)
        os.close(w)


def _in_thread(fn: Any) -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


@pytest.mark.skipif(not signalfd_available(), reason="signalfd only")
def test_signalfd_loop_run_off_the_main_thread_warns() -> None:
    """R65: a signalfd read by another thread does not see signals sent to the main thread
    itself (signal.raise_signal, pthread_kill), only the process's: running the loop there warns
    once. The wakeup mechanism sees both, and does not warn."""
    with MainLoop(signal_mechanism="signalfd") as loop:
        collect(loop, signal.SIGUSR1)
        with pytest.warns(RuntimeWarning, match="main thread"):
            _in_thread(lambda: loop.main_loop_wait(nonblocking=True))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _in_thread(lambda: loop.main_loop_wait(nonblocking=True))  # once
    with MainLoop(signal_mechanism="wakeup") as loop:
        collect(loop, signal.SIGUSR1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _in_thread(lambda: loop.main_loop_wait(nonblocking=True))


@pytest.mark.skipif(not signalfd_available(), reason="signalfd only")
def test_threads_started_while_installed_keep_the_mask_and_are_named() -> None:
    """R64/R65: close() restores the main thread's mask only; a thread started while the loop's
    signals were blocked inherited the mask and keeps it (no thread can change another's), so
    the remove that unblocks them warns, naming it."""
    go, seen = threading.Event(), threading.Event()
    masks: list[set[int]] = []

    def worker() -> None:
        go.wait(5)
        masks.append(mask())
        seen.set()

    with MainLoop(signal_mechanism="signalfd") as loop:
        collect(loop, signal.SIGUSR1)
        t = threading.Thread(target=worker, name="late-worker")
        t.start()
        with pytest.warns(RuntimeWarning, match="late-worker"):
            loop.remove_signal_handler(signal.SIGUSR1)
    go.set()
    seen.wait(5)
    t.join()
    assert signal.SIGUSR1 in masks[0] and signal.SIGUSR1 not in mask()
