"""Exhaustive bounded exploration of the model (small scope, as TLC does).

Every sequence of operations from a fixed alphabet, over three fds (one of each kind), one gate
and a few scripts, up to DEPTH steps, breadth first, with states deduplicated (model Worlds are
frozen and hashable). Each transition is checked:

* R1   at most one record per fd;
* R7   an add/update leaves the wakeup pending, a delete leaves it as it was;
* R8/R11 the poll set asks only what R8 allows, ready fds are polled fds in poll-set order and
       report only requested events plus HUP/ERR;
* R14  no walk: no callback and the registry unchanged;
* R15/R17/R6 every callback runs for a record that was in the list when the walk started, is
       live and has that handler when called, and (its first call in the walk) had a poll slot;
* R19  a walk whose callbacks changed nothing leaves no deleted record behind.

A sample of the explored sequences (the BFS paths to evenly spaced states) is replayed on the
real loop, epoll and poll, through the lockstep harness (trace equality plus its invariants).
Stats: $IOHANDLER_STATS_DIR/exhaustive.json {"states", "depth", "sequences", "replayed"};
`sequences` counts the transitions explored, each standing for every sequence reaching it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

import pytest

import iohandler.model.iterate as model_iterate
from iohandler.impl import POLLERS
from iohandler.model.dispatch import Callback
from iohandler.model.state import READ_EVENTS, WRITE_EVENTS, Loop, Record, World
from iohandler.specs.vector import Event, GateEvent, Hangup, Iterate, ReadEvent, Send, Set, WriteEvent
from tests.lockstep import ALPHABET, CONFIG, Exploration, Violation, budget, explore, replay, write_stats

DEPTH = max(5, budget(dev=6, ci=7, thorough=8))  # 5 under the mutation budget
REPLAYS = budget(dev=1000, ci=5000, thorough=10**9)  # about 0.5 ms each: thorough replays all

# ------------------------------------------------------------------------------ the tests

_RESULT: dict[str, Exploration] = {}


def _explored() -> Exploration:
    if "e" not in _RESULT:
        _RESULT["e"] = explore(CONFIG, ALPHABET, DEPTH)
    return _RESULT["e"]


def test_exhaustive_model_invariants() -> None:
    e = _explored()
    assert e.frontier_sizes[-1] > 0, "the search ran dry before its depth: enlarge the alphabet"
    write_stats("exhaustive", {"states": e.states, "depth": e.depth, "sequences": e.sequences,
                               "replayed": _REPLAYED.get("n", 0)})


_REPLAYED: dict[str, int] = {}


@pytest.mark.parametrize("poller", [p for p in ("epoll", "poll") if p in POLLERS])
def test_exhaustive_sample_replays_on_real_loop(poller: str) -> None:
    """Evenly spaced explored states, deepest first; each one's BFS path runs in lockstep."""
    e = _explored()
    worlds = list(e.parent)
    step = max(1, len(worlds) // REPLAYS)
    sample = worlds[::-1][::step][:REPLAYS]
    for world in sample:
        steps = e.path(world)
        failed = replay(CONFIG, steps, poller)
        assert failed is None, str(failed)
    _REPLAYED["n"] = _REPLAYED.get("n", 0) + len(sample)
    write_stats("exhaustive", {"states": e.states, "depth": e.depth, "sequences": e.sequences,
                               "replayed": _REPLAYED["n"]})


# ------------------------------------------------------- the checks fail on planted model bugs


@pytest.mark.parametrize(
    ("bug", "expect"),
    [
        ("duplicates", "R1"),
        ("no-wakeup", "R7"),
        ("calls-deleted", "R17"),
        ("no-slot-reset", "R6"),
        ("reaps-on-zero", "R14"),
        ("never-reaps", "R19"),
    ],
)
def test_exhaustive_checks_fail_on_planted_model_bugs(bug: str, expect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check of the explorer is seen to fail: a planted bug in the model, a shallow search."""
    real_set: Callable[[Loop, str, str | None, str | None, str | None], Loop] = vars(model_iterate)["set_fd_handler"]

    def set_duplicates(loop: Loop, fd: str, read: str | None, write: str | None, gate: str | None) -> Loop:
        if read is None and write is None:
            return real_set(loop, fd, read, write, gate)
        return Loop((Record(fd, read, write, gate), *loop.records), wakeup=True)  # no lookup

    def set_no_wakeup(loop: Loop, fd: str, read: str | None, write: str | None, gate: str | None) -> Loop:
        return replace(real_set(loop, fd, read, write, gate), wakeup=loop.wakeup)

    def set_keeps_slot(loop: Loop, fd: str, read: str | None, write: str | None, gate: str | None) -> Loop:
        out = real_set(loop, fd, read, write, gate)
        old = next((r for r in loop.records if r.fd == fd), None)
        if old is None or old.deleted or (read is None and write is None):
            return out  # (a deleted record's slot is from an older poll set)
        return Loop(tuple(replace(r, poll_index=old.poll_index) if r.fd == fd else r for r in out.records), out.wakeup)

    def walk(world: World, revents: tuple[int, ...], ret: int, call: Callback,
             *, skip_deleted: bool = True, reap: bool = True, reap_on_zero: bool = False
             ) -> tuple[World, tuple[Event, ...]]:
        """A small walk with switchable mistakes (the real one is model.dispatch.dispatch)."""
        if ret <= 0:
            if reap_on_zero:
                return world.with_loop(Loop(tuple(r for r in world.loop.records if not r.deleted))), ()
            return world, ()
        events: list[Event] = []
        for fd in [r.fd for r in world.loop.records]:
            rec = _record(world, fd)
            ready = 0 if rec.poll_index == -1 or (skip_deleted and rec.deleted) else revents[rec.poll_index]
            if rec.read is not None and ready & READ_EVENTS:
                events.append(ReadEvent(fd, rec.read))
                world, out = call(world, fd, rec.read)
                events.extend(out)
            rec = _record(world, fd)
            if (not skip_deleted or not rec.deleted) and rec.write is not None and ready & WRITE_EVENTS:
                events.append(WriteEvent(fd, rec.write))
                world, out = call(world, fd, rec.write)
                events.extend(out)
            if reap and _record(world, fd).deleted:
                world = world.with_loop(replace(world.loop, records=tuple(r for r in world.loop.records if r.fd != fd)))
        return world, tuple(events)

    patches: dict[str, tuple[str, object]] = {
        "duplicates": ("set_fd_handler", set_duplicates),
        "no-wakeup": ("set_fd_handler", set_no_wakeup),
        "no-slot-reset": ("set_fd_handler", set_keeps_slot),
        "calls-deleted": ("dispatch", functools.partial(walk, skip_deleted=False)),
        "reaps-on-zero": ("dispatch", functools.partial(walk, reap_on_zero=True)),
        "never-reaps": ("dispatch", functools.partial(walk, reap=False)),
    }
    name, fake = patches[bug]
    monkeypatch.setattr(model_iterate, name, fake)
    # The unpatched walk through the same harness passes: the checks are not trigger-happy.
    if bug == "calls-deleted":
        monkeypatch.setattr(model_iterate, "dispatch", walk)
        explore(CONFIG, ALPHABET, 3)
        monkeypatch.setattr(model_iterate, "dispatch", fake)
    with pytest.raises(Violation, match=expect):
        explore(CONFIG, ALPHABET, 4)


def _record(world: World, fd: str) -> Record:
    return next(r for r in world.loop.records if r.fd == fd)


# ------------------------------------------- model units that the mutation run showed unpinned
# (.ci/mutation/RESULTS.md): behaviour no trace shows, checked directly.


def test_model_poll_returns_the_count() -> None:
    """R13/R14: poll's return value is the number of ready entries plus the notifier, not just
    "> 0" (the walk only looks at > 0, the contract says the count)."""
    from iohandler.model.env import poll
    from iohandler.model.state import FdState, Table

    env = Table((("a", FdState("socket", pending=True)), ("b", FdState("pipe-write"))))
    revents, ret = poll(env, (("a", READ_EVENTS), ("b", WRITE_EVENTS)), True)
    assert ret == 3 and all(revents)
    assert poll(env, (("a", READ_EVENTS),), False)[1] == 1


def test_model_refuses_invalid_actions_with_a_message() -> None:
    """The format's invalid actions (VECTORS.md) raise InvalidAction naming the fd, even when
    a vector bypasses the loader's checks."""
    from iohandler.model.env import InvalidAction, drain, send
    from iohandler.model.state import FdState

    for op, state, words in [
        (send, FdState("pipe-write"), "pipe-write"),
        (drain, FdState("pipe-write"), "pipe-write"),
        (send, FdState("socket", hung_up=True), "hangup"),
    ]:
        with pytest.raises(InvalidAction, match=rf"{words}.*'x'|'x'.*{words}"):
            op("x", state)
    assert drain("x", FdState("socket", pending=True)).pending is False


def test_model_gate_scripts_field_is_validated() -> None:
    from iohandler.model.env import InvalidAction
    from iohandler.model.iterate import gate_scripts
    from tests.lockstep import to_vector

    good = replace(CONFIG, gate_runs={"g": "n"})
    assert gate_scripts(to_vector(good, ())) == {"g": "n"}
    for bad in ({"g": "nope"}, {"nope": "n"}, {"g": 1}, ["g"]):
        v = replace(to_vector(CONFIG, ()), extra={"gate_scripts": bad})
        with pytest.raises(InvalidAction, match="gate_scripts"):
            gate_scripts(v)


def test_model_step_without_gate_scripts() -> None:
    """step's gate_runs is optional: a gated record is consulted without any gate script."""
    from iohandler.model.iterate import step
    from tests.lockstep import world_for

    world, _ = step(world_for(CONFIG), Set("a", "n", None, "g"), CONFIG.scripts)
    after, events = step(world, Iterate(), CONFIG.scripts)
    assert events[0] == GateEvent("a", "g")
    assert world.loop.wakeup is True and after.loop.wakeup is False  # consumed, as a bool


def test_model_table_stays_sorted_and_names_missing_keys() -> None:
    from iohandler.model.state import Table, implies

    t: Table[bool] = Table()
    for k, v in [("b", False), ("a", True), ("c", False)]:
        t = t.set(k, v)
    assert t.pairs == (("a", True), ("b", False), ("c", False))  # by key: equal states hash equal
    assert t.set("b", True).pairs == (("a", True), ("b", True), ("c", False))
    with pytest.raises(KeyError, match="zz"):
        t["zz"]
    assert [implies(a, b) for a in (False, True) for b in (False, True)] == [True, True, False, True]


def test_model_driver_runs_in_process() -> None:
    """model.driver.run (the runner starts it as a subprocess; here it runs in process)."""
    from iohandler.model.driver import run
    from iohandler.specs.protocol import InvalidVector
    from tests.lockstep import to_vector

    assert list(run(to_vector(CONFIG, (Set("a", "n", None, None), Iterate())))) != []
    with pytest.raises(InvalidVector, match="hangup"):
        run(to_vector(CONFIG, (Hangup("b"), Iterate((Send("b"),)))))
