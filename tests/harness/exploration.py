"""Exhaustive bounded exploration of the model (tests/test_exhaustive.py, tests/test_catalogue.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import iohandler.model.iterate as model_iterate
from iohandler.model import env as model_env
from iohandler.model.dispatch import Callback
from iohandler.model.state import ERR, HUP, READ_EVENTS, WRITE_EVENTS, Loop, PollSet, World, fds_unique, flag_mask
from iohandler.specs.scenarios import Config
from iohandler.specs.vector import (
    Action,
    Drain,
    Event,
    Hangup,
    Iterate,
    Notify,
    PollEvent,
    ReadEvent,
    ReadyEvent,
    Send,
    Set,
    SetGate,
    Snapshot,
    WriteEvent,
)
from tests.harness.config import world_for
from tests.harness.printing import scenario

# Used by tests/test_exhaustive.py (the search and its checks) and tests/test_catalogue.py
# (the shortest sequence of the alphabet that kills a planted bug).


CONFIG = Config(
    fds={"a": "socket", "b": "pipe-read", "c": "pipe-write"},
    gates={"g": True},
    scripts={
        "n": (),  # does nothing
        "x": (Set("b", None, None, None), Drain("a")),  # deletes another record, drains
        "y": (Set("a", "n", "x", None),),  # adds / updates / revives a (itself, when a's)
        "z": (Set("c", None, None, None), SetGate("g", False), Notify()),  # deletes c, closes the gate
    },
    gate_runs={},
)

ALPHABET: tuple[Action, ...] = (
    Set("a", "n", None, None),
    Set("a", "y", "n", "g"),
    Set("a", None, None, None),
    Set("b", "x", None, "g"),
    Set("b", "z", None, None),
    Set("b", None, None, None),
    Set("c", None, "y", None),
    Set("c", "n", "z", None),
    Set("c", None, None, None),
    Send("a"),
    Send("b"),
    Drain("b"),
    Hangup("b"),
    Hangup("c"),
    SetGate("g", True),
    Notify(),
    Snapshot(),
    Iterate(),
    Iterate((Set("a", None, None, None),)),
    Iterate((Set("b", "n", None, None), Send("a"))),
    Iterate((SetGate("g", False), Notify())),
)


class Violation(AssertionError):
    pass


@dataclass
class _Walk:
    """What the checking wrapper around the model's dispatch saw in one walk."""

    start: World | None = None
    called: set[str] = field(default_factory=set)
    changed: bool = False


@contextlib.contextmanager
def checked_model() -> Iterator[list[int]]:
    """Wrap model.iterate's `fill`, `set_fd_handler` and `dispatch` (patched through the module,
    which calls them by name) so every callback is checked as it runs (R6, R15, R17) and each
    walk as a whole after it (R14, R19). R6 is checked against the registrations themselves, not
    the model's poll_index bookkeeping. Yields a counter of walks seen, so a test can tell the
    wrappers are really in the path."""
    names = vars(model_iterate)
    real_fill: Callable[..., tuple[World, PollSet, tuple[Event, ...]]] = names["fill"]
    real_set: Callable[..., Loop] = names["set_fd_handler"]
    real: Callable[..., tuple[World, tuple[Event, ...]]] = names["dispatch"]
    seen = [0]
    registered: set[str] = set()  # fds added or updated since the last fill finished

    def fill(*args: object, **kwargs: object) -> tuple[World, PollSet, tuple[Event, ...]]:
        out = real_fill(*args, **kwargs)
        registered.clear()  # R22: a gate's registrations during fill are part of this fill
        return out

    def set_fd_handler(loop: Loop, fd: str, read: str | None, write: str | None, gate: str | None) -> Loop:
        if read is not None or write is not None:
            registered.add(fd)
        return real_set(loop, fd, read, write, gate)

    def dispatch(world: World, revents: tuple[int, ...], ret: int, call: Callback
                 ) -> tuple[World, tuple[Event, ...]]:
        seen[0] += 1
        walk = _Walk(start=world)
        start_fds = {r.fd for r in world.loop.records}

        def checked(w: World, fd: str, script: str) -> tuple[World, tuple[Event, ...]]:
            rec = next((r for r in w.loop.records if r.fd == fd), None)
            if fd not in start_fds:
                raise Violation(f"R15: callback for {fd}, which was not in the list when the walk started")
            if rec is None or rec.deleted:
                raise Violation(f"R17: {script} ran for {fd}, whose record is deleted")
            if script not in (rec.read, rec.write):
                raise Violation(f"R17: {script} ran for {fd}, whose handlers are {rec.read}/{rec.write}")
            if fd not in walk.called and fd in registered:
                raise Violation(f"R6: {fd} was registered after the fill, yet called in this walk")
            walk.called.add(fd)
            out = call(w, fd, script)
            if out[0].loop.records != w.loop.records:
                walk.changed = True
            return out

        result = real(world, revents, ret, checked)
        after = result[0]
        if ret <= 0 and (walk.called or after.loop.records != world.loop.records):
            raise Violation("R14: a walk ran (or reaped) although poll returned 0")
        if ret > 0 and not walk.changed and any(r.deleted for r in after.loop.records):
            raise Violation("R19: a walk that changed nothing left a deleted record in the list")
        return result

    patched = {"fill": fill, "set_fd_handler": set_fd_handler, "dispatch": dispatch}
    saved = {k: names[k] for k in patched}
    names.update(patched)
    try:
        yield seen
    finally:
        names.update(saved)


def check_transition(before: World, action: Action, after: World, events: tuple[Event, ...]) -> None:
    if not fds_unique(after.loop.records):
        raise Violation("R1: two records for one fd")
    if isinstance(action, Set):
        if action.read is None and action.write is None:
            if after.loop.wakeup != before.loop.wakeup:
                raise Violation("R7: a delete changed the wakeup")
        elif not after.loop.wakeup:
            raise Violation("R7: an add/update left no wakeup pending")
    if isinstance(action, Iterate):
        check_iteration(events)


def check_iteration(events: tuple[Event, ...]) -> None:
    polls = [i for i, e in enumerate(events) if isinstance(e, PollEvent)]
    readies = [i for i, e in enumerate(events) if isinstance(e, ReadyEvent)]
    if len(polls) != 1 or len(readies) != 1 or polls[0] > readies[0]:
        raise Violation("R21: one poll event, then one ready event")
    poll = events[polls[0]]
    ready = events[readies[0]]
    assert isinstance(poll, PollEvent) and isinstance(ready, ReadyEvent)
    asked = {fd: flag_mask(flags) for fd, flags in poll.entries}
    for fd, mask in asked.items():
        if mask & ~(READ_EVENTS | WRITE_EVENTS) or mask not in (READ_EVENTS, WRITE_EVENTS, READ_EVENTS | WRITE_EVENTS):
            raise Violation(f"R8: {fd} polled for {mask:#x}")
    order = [fd for fd, _ in poll.entries]
    got = [fd for fd, _ in ready.fds]
    if got != [fd for fd in order if fd in got]:
        raise Violation("R21: ready fds are not in poll-set order")
    for fd, flags in ready.fds:
        if fd not in asked or flag_mask(flags) & ~(asked[fd] | HUP | ERR):
            raise Violation(f"R11: {fd} reported {flags}, more than requested plus HUP/ERR")
    calls = [e for e in events[readies[0] + 1 :] if isinstance(e, ReadEvent | WriteEvent)]
    if not ready.walk and calls:
        raise Violation("R14: callbacks without a walk")


@dataclass
class Exploration:
    states: int
    depth: int
    sequences: int
    invalid: int
    parent: dict[World, tuple[World, Action] | None]
    frontier_sizes: list[int]

    def path(self, world: World) -> list[Action]:
        out: list[Action] = []
        link = self.parent[world]
        while link is not None:
            prev, action = link
            out.append(action)
            link = self.parent[prev]
        return out[::-1]


def explore(config: Config, alphabet: tuple[Action, ...], depth: int) -> Exploration:
    start = world_for(config)
    parent: dict[World, tuple[World, Action] | None] = {start: None}
    frontier = [start]
    sequences = invalid = 0
    sizes = [1]
    with checked_model() as walks:
        for _ in range(depth):
            nxt: list[World] = []
            for world in frontier:
                for action in alphabet:
                    try:
                        after, events = model_iterate.step(world, action, config.scripts, config.gate_runs)
                    except model_env.InvalidAction:
                        invalid += 1  # a send after hangup: not a valid sequence
                        continue
                    except Violation as e:
                        raise Violation(f"{e}\n\n{scenario(config, [*_path(parent, world), action])}") from None
                    sequences += 1
                    try:
                        check_transition(world, action, after, events)
                    except Violation as e:
                        raise Violation(f"{e}\n\n{scenario(config, [*_path(parent, world), action])}") from None
                    if after not in parent:
                        parent[after] = (world, action)
                        nxt.append(after)
            frontier = nxt
            sizes.append(len(nxt))
        assert walks[0] > 0, "the wrappers were never called: model.iterate no longer calls `dispatch` by name"
    return Exploration(len(parent), depth, sequences, invalid, parent, sizes)


def _path(parent: dict[World, tuple[World, Action] | None], world: World) -> list[Action]:
    return Exploration(0, 0, 0, 0, parent, []).path(world)


