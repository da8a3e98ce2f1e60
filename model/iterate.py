"""One `main_loop_wait`, the actions of a vector, and whole vectors. Scripts are data.

    main_loop_wait(nonblocking):   fill -> (during_wait) -> poll -> dispatch -> timers
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from iohandler.model import env
from iohandler.model.dispatch import dispatch
from iohandler.model.fill import fill
from iohandler.model.registry import live_records, set_fd_handler
from iohandler.model.state import Env, Fd, FdState, GateName, Loop, PollSet, ScriptName, Table, World, flag_names
from iohandler.specs.vector import (
    Action,
    Drain,
    Event,
    HandlersEvent,
    Hangup,
    Iterate,
    Notify,
    PollEvent,
    ReadyEvent,
    ScriptAction,
    Send,
    Set,
    SetGate,
    Snapshot,
    Vector,
)

Scripts = Mapping[ScriptName, tuple[ScriptAction, ...]]
# How poll answers: (fds' states, poll set, notifier readable) -> (revents per entry, ret).
# `env.poll` is Linux's poll(2) (R11, R12); tests pass another view (R36's folded one).
PollFn = Callable[[Env, PollSet, bool], tuple[tuple[int, ...], int]]


@dataclass(frozen=True, slots=True)
class Observer:
    """Optional callbacks that watch one step from inside, so a checker needs no patching.
    None of them can change the world; with no observer nothing is called.

    on_fill(before, after, poll_set)      after fill (gate scripts included, R22)
    on_register(fd, read, write, gate)    each set_fd_handler, before it applies
    on_call(before, fd, script, after)    each handler the dispatch walk calls, after it ran
    on_walk(before, after, revents, ret)  after the dispatch walk (also when poll returned 0)
    """

    on_fill: Callable[[World, World, PollSet], None] | None = None
    on_register: Callable[[Fd, ScriptName | None, ScriptName | None, GateName | None], None] | None = None
    on_call: Callable[[World, Fd, ScriptName, World], None] | None = None
    on_walk: Callable[[World, World, tuple[int, ...], int], None] | None = None


def gate_scripts(vector: Vector) -> dict[GateName, ScriptName]:
    """R22: gate name -> the script it runs when consulted (format v2; parsed in specs/vector.py)."""
    return dict(vector.gate_scripts)


def initial_world(vector: Vector) -> World:
    return World(
        loop=Loop(),
        env=Table(tuple(sorted((fd, FdState(kind)) for fd, kind in vector.fds.items()))),
        gates=Table(tuple(sorted(vector.gates.items()))),
    )


def apply(world: World, action: ScriptAction, *, observer: Observer | None = None) -> tuple[World, tuple[Event, ...]]:
    """One action outside the loop's own steps: from a step, a script or during_wait."""
    match action:
        case Set(fd, read, write, gate):
            if observer is not None and observer.on_register is not None:
                observer.on_register(fd, read, write, gate)
            return world.with_loop(set_fd_handler(world.loop, fd, read, write, gate)), ()
        case Send(fd):
            return _env(world, fd, env.send(fd, world.env[fd])), ()
        case Drain(fd):
            return _env(world, fd, env.drain(fd, world.env[fd])), ()
        case Hangup(fd):
            return _env(world, fd, env.hangup(world.env[fd])), ()
        case SetGate(gate, value):
            return World(world.loop, world.env, world.gates.set(gate, value)), ()
        case Notify():
            return world.with_loop(Loop(world.loop.records, wakeup=True)), ()
        case Snapshot():
            rows = tuple((r.fd, r.read, r.write, r.gate) for r in live_records(world.loop))
            return world, (HandlersEvent(rows),)
        case _:
            raise env.InvalidAction(f"{action} is format v3: the model's AioContext comes in the next commit")


def run_script(
    world: World, name: ScriptName, scripts: Scripts, *, observer: Observer | None = None
) -> tuple[World, tuple[Event, ...]]:
    """A callback: the script's actions, in order."""
    events: list[Event] = []
    for action in scripts[name]:
        world, out = apply(world, action, observer=observer)
        events.extend(out)
    return world, tuple(events)


def iterate(
    world: World,
    during_wait: tuple[ScriptAction, ...],
    scripts: Scripts,
    gate_runs: Mapping[GateName, ScriptName] | None = None,
    *,
    poll: PollFn = env.poll,
    observer: Observer | None = None,
) -> tuple[World, tuple[Event, ...]]:
    """One non-blocking `main_loop_wait` (R13, R20, R21, R22)."""

    def consult(w: World, fd: str, gate: GateName) -> tuple[World, bool, tuple[Event, ...]]:
        # R22: a gate with a script runs it, then answers its (possibly changed) value.
        out: tuple[Event, ...] = ()
        if gate_runs and gate in gate_runs:
            w, out = run_script(w, gate_runs[gate], scripts, observer=observer)
        return w, w.gates[gate], out

    def call(w: World, fd: Fd, script: ScriptName) -> tuple[World, tuple[Event, ...]]:
        after, out = run_script(w, script, scripts, observer=observer)
        if observer is not None and observer.on_call is not None:
            observer.on_call(w, fd, script, after)
        return after, out

    before = world
    world, poll_set, filled = fill(world, consult)
    if observer is not None and observer.on_fill is not None:
        observer.on_fill(before, world, poll_set)
    events: list[Event] = list(filled)
    events.append(PollEvent(tuple((fd, flag_names(ev)) for fd, ev in poll_set)))
    # R20: another thread acts while the loop blocks; the poll set is already built.
    for action in during_wait:
        world, out = apply(world, action, observer=observer)
        events.extend(out)
    revents, ret = poll(world.env, poll_set, world.loop.wakeup)
    # R13: the notifier is read (glib's dispatch) before qemu_iohandler_poll runs the walk,
    # so a notify from inside the walk is still pending for the next iteration.
    world = world.with_loop(Loop(world.loop.records, wakeup=False))
    ready = tuple((fd, flag_names(rev)) for (fd, _), rev in zip(poll_set, revents, strict=True) if rev)
    events.append(ReadyEvent(ready, walk=ret > 0))
    before = world
    world, out = dispatch(world, revents, ret, call)
    if observer is not None and observer.on_walk is not None:
        observer.on_walk(before, world, revents, ret)
    events.extend(out)
    return world, tuple(events)


def step(
    world: World,
    action: Action,
    scripts: Scripts,
    gate_runs: Mapping[GateName, ScriptName] | None = None,
    *,
    poll: PollFn = env.poll,
    observer: Observer | None = None,
) -> tuple[World, tuple[Event, ...]]:
    if isinstance(action, Iterate):
        return iterate(world, action.during_wait, scripts, gate_runs, poll=poll, observer=observer)
    return apply(world, action, observer=observer)


def run_vector(vector: Vector) -> tuple[Event, ...]:
    """The whole trace the vector's steps produce. Raises env.InvalidAction for invalid ones."""
    world = initial_world(vector)
    gate_runs = gate_scripts(vector)
    events: list[Event] = []
    for action in vector.steps:
        world, out = step(world, action, vector.scripts, gate_runs)
        events.extend(out)
    return tuple(events)


def _env(world: World, fd: str, state: FdState) -> World:
    return World(world.loop, world.env.set(fd, state), world.gates)
