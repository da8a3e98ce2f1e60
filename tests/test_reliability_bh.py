"""Bottom halves under threads (impl/context.py, R35, R32): 8 threads schedule, cancel, delete
and create BHs while the loop runs in its own thread with no timeout, some callbacks raising.

Checked: no exception but the planted ones, no deadlock (every join is bounded), no lost run
(a probe schedules while the loop usually blocks and must see its callback within
PROBE_DEADLINE; at the end every BH whose last operation was a schedule has run after it), no
run after a delete made under the loop's lock, the list holds exactly the BHs not deleted once
a walk has passed, and no busy loop: CPU per idle second, measured. Then a delete from a thread
while a walk is in progress, and close() while workers schedule.

Duration by Hypothesis profile: 1 s (dev), 3 s (ci), 10 s (thorough, the issue's figure).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from iohandler.impl import BottomHalf, LoopClosedError, MainLoop, default_poller_name
from tests.harness.config import budget
from tests.support import NAMES, add_stats

THREADS = 8
OWN_BHS = 4  # per thread, operated on by that thread only (cancel and delete are its own)
SHARED_BHS = 4  # scheduled by every thread, never cancelled
PROBE_DEADLINE = 5.0
IDLE_SECONDS = 0.5
IDLE_CPU_PER_SECOND = 0.05  # nothing scheduled: the loop blocks
IDLE_BH_CPU_PER_SECOND = 0.25  # an idle BH rescheduling itself: woken every 10 ms (QEMU's bound)


class Planted(Exception):
    """Raised by some callbacks on purpose (R32): the loop thread catches it and goes on."""


class Runs:
    """Run counts per BH id, written by callbacks (loop thread), read by workers."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.lock = threading.Lock()

    def callback(self, key: int, raises: bool = False) -> Any:
        def cb(_: Any) -> None:
            with self.lock:
                self.count[key] = self.count.get(key, 0) + 1
            if raises:
                raise Planted(key)

        return cb

    def get(self, key: int) -> int:
        with self.lock:
            return self.count.get(key, 0)


class Worker:
    def __init__(self, loop: MainLoop, runs: Runs, shared: list[tuple[int, BottomHalf]], seed: int) -> None:
        self.loop = loop
        self.runs = runs
        self.shared = shared
        self.rng = random.Random(seed)
        self.next_key = seed * 1_000_000 + 1000
        self.own: list[tuple[int, BottomHalf]] = [self._new() for _ in range(OWN_BHS)]
        # key -> run count read before this thread's last schedule of it, while that schedule
        # is still owed a run (cleared by a cancel or delete of its own).
        self.owed: dict[int, int] = {}
        self.shared_owed: dict[int, int] = {}
        self.locked_deletes: dict[int, int] = {}  # key -> runs when deleted under the lock
        self.errors: list[str] = []
        self.ops = 0
        self.probes = 0

    def _new(self) -> tuple[int, BottomHalf]:
        self.next_key += 1
        key = self.next_key
        return key, self.loop.bh_new(self.runs.callback(key, raises=self.rng.random() < 0.1))

    def probe(self) -> None:
        """A schedule into a loop that usually blocks with no timeout: only the notify wakes it."""
        key, bh = self.own[self.rng.randrange(OWN_BHS)]
        before = self.runs.get(key)
        bh.schedule()
        self.owed[key] = before
        deadline = time.monotonic() + PROBE_DEADLINE
        while self.runs.get(key) <= before:
            if time.monotonic() > deadline:
                self.errors.append(f"lost run: BH {key} scheduled with {before} runs never ran again")
                return
            time.sleep(0.0002)
        self.owed.pop(key, None)
        self.probes += 1

    def step(self) -> None:
        op = self.rng.random()
        i = self.rng.randrange(OWN_BHS)
        key, bh = self.own[i]
        if op < 0.1:
            self.probe()
        elif op < 0.4:
            before = self.runs.get(key)
            bh.schedule()
            self.owed.setdefault(key, before)  # the oldest owed count: a later run pays all
        elif op < 0.5:
            bh.schedule_idle()  # idle: runs within 10 ms, owes nothing we wait for here
        elif op < 0.6:
            bh.cancel()
            self.owed.pop(key, None)
        elif op < 0.7:
            if self.rng.random() < 0.5:
                with self.loop.lock:  # no walk in progress: it must never run again
                    bh.delete()
                    self.locked_deletes[key] = self.runs.get(key)
            else:
                bh.delete()  # may race with a walk that already took it (QEMU's caveat)
            self.owed.pop(key, None)
            self.own[i] = self._new()
        elif op < 0.9:
            skey, sbh = self.shared[self.rng.randrange(SHARED_BHS)]
            before = self.runs.get(skey)
            sbh.schedule()
            self.shared_owed.setdefault(skey, before)
            if self.rng.random() < 0.05:
                self.shared_owed[skey] = before
        else:
            self.loop.context.bottom_halves()
        self.ops += 1

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.step()
        except BaseException as e:
            self.errors.append(f"{type(e).__name__}: {e}")


def cpu_per_second(seconds: float) -> float:
    cpu0, t0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - cpu0) / (time.monotonic() - t0)


def run_stress(poller: str, seconds: float) -> None:
    runs = Runs()
    loop_errors: list[str] = []
    planted = 0
    with MainLoop(poller) as loop:
        shared = [(k, loop.bh_new(runs.callback(k))) for k in range(1, SHARED_BHS + 1)]
        workers = [Worker(loop, runs, shared, seed) for seed in range(1, THREADS + 1)]
        done = threading.Event()

        def loop_thread() -> None:
            nonlocal planted
            while not done.is_set():
                try:
                    loop.main_loop_wait()  # no timeout: only notifies (and idle BHs) wake it
                except Planted:
                    planted += 1
                except BaseException as e:
                    loop_errors.append(f"loop: {type(e).__name__}: {e}")
                    return

        lt = threading.Thread(target=loop_thread, name="loop")
        lt.start()
        stop = threading.Event()
        wts = [threading.Thread(target=w.run, args=(stop,), name=f"worker{i}") for i, w in enumerate(workers)]
        try:
            for t in wts:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in wts:
                t.join(PROBE_DEADLINE + 5)
            # Every schedule still owed a run gets one: wait for them (the loop blocks between).
            owed = [(k, n) for w in workers for k, n in [*w.owed.items(), *w.shared_owed.items()]]
            deadline = time.monotonic() + PROBE_DEADLINE
            while any(runs.get(k) <= n for k, n in owed) and time.monotonic() < deadline:
                time.sleep(0.001)
            lost = [(k, n, runs.get(k)) for k, n in owed if runs.get(k) <= n]
            # Idle: nothing scheduled (idle BHs settle within 10 ms), the loop must block.
            time.sleep(0.05)
            idle_cpu = cpu_per_second(IDLE_SECONDS)
            ticks = [0]
            idle_bh: BottomHalf

            def again(_: Any) -> None:
                ticks[0] += 1
                idle_bh.schedule_idle()

            idle_bh = loop.bh_new(again)
            idle_bh.schedule_idle()
            loop.notify()
            idle_bh_cpu = cpu_per_second(IDLE_SECONDS)
            with loop.lock:
                idle_bh.delete()
            stuck = [t.name for t in wts if t.is_alive()]
            assert stuck == [], f"deadlock: {stuck}"
            errors = loop_errors + [e for w in workers for e in w.errors]
            assert errors == [], errors[:5]
            assert lost == [], f"schedules never followed by a run: {lost[:5]}"
            late = [(k, n, runs.get(k)) for w in workers for k, n in w.locked_deletes.items() if runs.get(k) != n]
            assert late == [], f"BHs run after a delete made under the lock: {late[:5]}"
            # After a walk (a schedule forces one), the list is exactly the BHs not deleted.
            with loop.lock:
                shared[0][1].schedule()
            time.sleep(0.05)
            with loop.lock:
                listed = loop.context.bottom_halves()
            assert all(not bh.deleted for bh in listed)
            expected = {id(bh) for w in workers for _, bh in w.own} | {id(bh) for _, bh in shared}
            assert {id(bh) for bh in listed} == expected
            assert idle_cpu < IDLE_CPU_PER_SECOND, f"{idle_cpu:.3f} s CPU per idle second: a busy loop"
            assert ticks[0] > 20, f"an idle BH ran {ticks[0]} times in {IDLE_SECONDS} s (every 10 ms expected)"
            assert idle_bh_cpu < IDLE_BH_CPU_PER_SECOND, f"{idle_bh_cpu:.3f} s CPU per second with an idle BH"
        finally:
            stop.set()
            done.set()
            loop.notify()
            lt.join(5)
        assert not lt.is_alive()
    ops = sum(w.ops for w in workers)
    probes = sum(w.probes for w in workers)
    assert ops > 0 and probes > 0 and planted > 0
    add_stats(
        **{
            f"bh_threads_{poller}_seconds": seconds,
            f"bh_threads_{poller}_ops": ops,
            f"bh_threads_{poller}_probes": probes,
            "bh_idle_cpu_per_second_max": round(idle_cpu, 4),
            "bh_idle_bh_cpu_per_second_max": round(idle_bh_cpu, 4),
        }
    )


@pytest.mark.slow
def test_bh_threads_default_poller() -> None:
    """8 threads against the default poller for the profile's duration (10 s in `thorough`)."""
    run_stress(default_poller_name(), budget(dev=1, ci=3, thorough=10))


@pytest.mark.slow
@pytest.mark.parametrize("poller", [n for n in NAMES if n != default_poller_name()])
def test_bh_threads_other_pollers(poller: str) -> None:
    run_stress(poller, budget(dev=1, ci=1, thorough=3))


@pytest.mark.parametrize("poller", NAMES)
def test_delete_from_a_thread_during_a_walk(poller: str) -> None:
    """A callback blocks mid-walk; another thread deletes a BH the walk has not reached yet,
    and creates and schedules a new one: the deleted one does not run, is not freed while the
    walk is in progress, and the new one waits for the next walk."""
    log: list[str] = []
    entered, release = threading.Event(), threading.Event()
    with MainLoop(poller) as loop:
        victim = loop.bh_new(lambda _: log.append("victim"))

        def blocker(_: Any) -> None:
            log.append("blocker")
            entered.set()
            assert release.wait(5)

        first = loop.bh_new(blocker)
        victim.schedule()
        first.schedule()
        made: list[BottomHalf] = []
        seen: list[list[BottomHalf]] = []

        def other() -> None:
            assert entered.wait(5)
            victim.delete()  # the walk holds the loop's lock: delete takes none
            bh = loop.bh_new(lambda _: log.append("new"))
            bh.schedule()
            made.append(bh)
            seen.append(loop.context.bottom_halves())
            release.set()

        t = threading.Thread(target=other)
        t.start()
        loop.main_loop_wait(nonblocking=True)
        t.join(5)
        assert log == ["blocker"]
        assert seen == [[made[0], first, victim]]  # new at the head, victim still listed
        assert loop.context.bottom_halves() == [made[0], first]
        loop.main_loop_wait(nonblocking=True)
        assert log == ["blocker", "new"]


def test_close_while_workers_schedule() -> None:
    """close() from the main thread while the loop runs and 4 workers schedule: the loop's
    thread returns, each worker gets LoopClosedError, nothing hangs, no fd is written after."""
    loop = MainLoop()
    runs = Runs()
    bhs = [loop.bh_new(runs.callback(k)) for k in range(4)]
    refused: list[BaseException] = []
    others: list[BaseException] = []
    stop = threading.Event()

    def worker(bh: BottomHalf) -> None:
        while not stop.is_set():
            try:
                bh.schedule()
            except LoopClosedError as e:
                refused.append(e)
                return
            except BaseException as e:
                others.append(e)
                return

    ts = [threading.Thread(target=worker, args=(bh,)) for bh in bhs]
    runner = threading.Thread(target=loop.run)
    runner.start()
    for t in ts:
        t.start()
    time.sleep(0.2)
    loop.close()
    runner.join(5)
    for t in ts:
        t.join(5)
    stop.set()
    for t in ts:
        t.join(5)
    assert not runner.is_alive() and not any(t.is_alive() for t in ts)
    assert others == [] and len(refused) == 4
    assert sum(runs.count.values()) > 0


def _then_set(fn: Any, done: threading.Event) -> None:
    fn()
    done.set()


@pytest.mark.parametrize("poller", NAMES)
def test_a_blocking_context_poll_lets_other_threads_in(poller: str) -> None:
    """While one thread blocks in context.poll(blocking=True), other threads' registrations and
    close() return at once (R31, R35: the lock is released around the wait, as main_loop_wait
    does); the registration wakes the poll, close() waits for it to return, then closes."""
    loop = MainLoop(poller)
    import os

    r, w = os.pipe()
    try:
        loop.context.call_later(4.0, lambda: None)  # bounds the wait if the poll is never woken
        loop.context.poll()
        results: list[object] = []
        poller_thread = threading.Thread(target=lambda: results.append(loop.context.poll(blocking=True)), daemon=True)
        poller_thread.start()
        time.sleep(0.2)
        for name, fn in (
            ("set_fd_handler", lambda: loop.set_fd_handler(r, read=lambda _: None)),
            ("context.set_fd_handler", lambda: loop.context.set_fd_handler(w, None, lambda _: None)),
        ):
            done = threading.Event()
            threading.Thread(target=_then_set, args=(fn, done), daemon=True).start()
            assert done.wait(2.0), f"{name} from another thread hung while a thread polled"
        poller_thread.join(2.0)
        assert len(results) == 1  # woken by the registrations' notify
        poller_thread = threading.Thread(target=lambda: results.append(loop.context.poll(blocking=True)), daemon=True)
        poller_thread.start()
        time.sleep(0.2)
        done = threading.Event()
        threading.Thread(target=_then_set, args=(loop.close, done), daemon=True).start()
        assert done.wait(2.0), "close() from another thread hung while a thread polled"
        poller_thread.join(2.0)
        assert not poller_thread.is_alive()
        assert loop.closed
    finally:
        loop.close()
        os.close(r)
        os.close(w)
