"""One `main_loop_wait`, the actions of a vector, and whole vectors. Scripts are data.

main_loop_wait(nonblocking):   fill -> the context's fds (glib's query) -> (during_wait) -> poll
                               -> the context's dispatch (aio_poll: BH walk, its handler walk)
                               -> dispatch (the fd-handler walk) -> timers          (R47)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from iohandler.model import aio, bh, env
from iohandler.model.dispatch import dispatch
from iohandler.model.fill import fill
from iohandler.model.registry import live_records, set_fd_handler
from iohandler.model.state import Fd, FdState, GateName, Loop, PollSet, ScriptName, Table, World, flag_names
from iohandler.specs.vector import (
    Action,
    BhCancel,
    BhDelete,
    BhNew,
    BhSchedule,
    BhScheduleIdle,
    CtxPoll,
    CtxPollEvent,
    CtxProgressEvent,
    CtxSet,
    Drain,
    Event,
    HandlersEvent,
    Hangup,
    Iterate,
    Notify,
    PollEvent,
    Raise,
    ReadyEvent,
    ScriptAction,
    Send,
    Set,
    SetGate,
    Snapshot,
    Timeout,
    TimeoutEvent,
    Vector,
)

Scripts = Mapping[ScriptName, tuple[ScriptAction, ...]]
# How poll answers: (fds' states, poll set, notifier readable) -> (revents per entry, ret).
# `env.poll` is Linux's poll(2) (R11, R12); tests pass another view (R36's folded one).
PollFn = aio.PollFn


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


def apply(
    world: World,
    action: ScriptAction,
    *,
    observer: Observer | None = None,
    scripts: Scripts | None = None,
    poll: PollFn = env.poll,
) -> tuple[World, tuple[Event, ...]]:
    """One action outside the loop's own steps: from a step, a script or during_wait. `scripts`
    is needed by `ctx-poll` only (it runs callbacks), and `poll` is its poll (R36)."""
    match action:
        case Set(fd, read, write, gate):
            if observer is not None and observer.on_register is not None:
                observer.on_register(fd, read, write, gate)
            loop = set_fd_handler(world.loop, fd, read, write, gate)
            if world.ctx.dispatching:  # R45: R7's notify is aio_notify, skipped inside aio_poll
                loop = Loop(loop.records, world.loop.wakeup)
            return world.with_loop(loop), ()
        case Send(fd):
            return _env(world, fd, env.send(fd, world.env[fd])), ()
        case Drain(fd):
            return _env(world, fd, env.drain(fd, world.env[fd])), ()
        case Hangup(fd):
            return _env(world, fd, env.hangup(world.env[fd])), ()
        case Raise(fd):
            return _env(world, fd, env.raise_signal(fd, world.env[fd])), ()
        case SetGate(gate, value):
            return replace(world, gates=world.gates.set(gate, value)), ()
        case Notify():
            return aio.notify(world), ()
        case Snapshot():
            rows = tuple((r.fd, r.read, r.write, r.gate) for r in live_records(world.loop))
            return world, (HandlersEvent(rows),)
        case BhNew(name, script):
            return world.with_ctx(bh.bh_new(world.ctx, name, script)), ()
        case BhSchedule(name):
            ctx, notifies = bh.schedule(world.ctx, name)
            world = world.with_ctx(ctx)
            return (aio.notify(world) if notifies else world), ()
        case BhScheduleIdle(name):
            return world.with_ctx(bh.schedule_idle(world.ctx, name)), ()
        case BhCancel(name):
            return world.with_ctx(bh.cancel(world.ctx, name)), ()
        case BhDelete(name):
            return world.with_ctx(bh.delete(world.ctx, name)), ()
        case CtxSet(fd, read, write):
            return aio.set_fd_handler(world, fd, read, write), ()
        case CtxPoll():
            if scripts is None:
                raise ValueError("scripts: ctx-poll runs callbacks, so apply needs the vector's scripts")
            world, progress, out = aio.aio_poll(world, _runner(scripts, observer, poll), poll)
            return world, (*out, CtxProgressEvent(progress))
        case Timeout():
            return world, (TimeoutEvent(bh.compute_timeout_ms(world.ctx)),)


def _runner(scripts: Scripts, observer: Observer | None, poll: PollFn) -> aio.Callback:
    def call(world: World, script: ScriptName) -> tuple[World, tuple[Event, ...]]:
        return run_script(world, script, scripts, observer=observer, poll=poll)

    return call


def run_script(
    world: World, name: ScriptName, scripts: Scripts, *, observer: Observer | None = None, poll: PollFn = env.poll
) -> tuple[World, tuple[Event, ...]]:
    """A callback: the script's actions, in order."""
    events: list[Event] = []
    for action in scripts[name]:
        world, out = apply(world, action, observer=observer, scripts=scripts, poll=poll)
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
            w, out = run_script(w, gate_runs[gate], scripts, observer=observer, poll=poll)
        return w, w.gates[gate], out

    def call(w: World, fd: Fd, script: ScriptName) -> tuple[World, tuple[Event, ...]]:
        after, out = run_script(w, script, scripts, observer=observer, poll=poll)
        if observer is not None and observer.on_call is not None:
            observer.on_call(w, fd, script, after)
        return after, out

    before = world
    world, poll_set, filled = fill(world, consult)
    if observer is not None and observer.on_fill is not None:
        observer.on_fill(before, world, poll_set)
    events: list[Event] = list(filled)
    events.append(PollEvent(tuple((fd, flag_names(ev)) for fd, ev in poll_set)))
    # R47: glib's query, after fill, adds the context's fds to the same wait.
    ctx_set = aio.poll_set(world.ctx)
    if ctx_set:
        events.append(CtxPollEvent(tuple((fd, flag_names(ev)) for fd, ev in ctx_set)))
    # R20: another thread acts while the loop blocks; the poll set is already built.
    for action in during_wait:
        world, out = apply(world, action, observer=observer, scripts=scripts, poll=poll)
        events.extend(out)
    revents, ret = poll(world.env, poll_set, world.loop.wakeup)
    # R47: the wait's return value counts the context's fds too (qemu_iohandler_poll needs > 0).
    ret += aio.ready_count(world, ctx_set, poll)
    ready = tuple((fd, flag_names(rev)) for (fd, _), rev in zip(poll_set, revents, strict=True) if rev)
    events.append(ReadyEvent(ready, walk=ret > 0))
    # R47: glib dispatches the context (aio_ctx_dispatch -> aio_poll(ctx, false)) before
    # qemu_iohandler_poll. R13: the notifier is read there (its node, the oldest, ends the
    # context's handler walk), so a notify from the fd-handler walk is pending for the next
    # iteration.
    world, _, out = aio.aio_poll(world, _runner(scripts, observer, poll), poll)
    events.extend(out)
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
    return apply(world, action, observer=observer, scripts=scripts, poll=poll)


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
    return replace(world, env=world.env.set(fd, state))
