"""Readable scenarios and counterexamples (a v1 vector a porter can replay)."""

from __future__ import annotations

from collections.abc import Sequence

from iohandler.model import env as model_env
from iohandler.model.iterate import step
from iohandler.specs.scenarios import (
    Config,
    to_vector,
)
from iohandler.specs.vector import (
    Action,
    BhCancel,
    BhDelete,
    BhEvent,
    BhNew,
    BhSchedule,
    BhScheduleIdle,
    CtxPoll,
    CtxPollEvent,
    CtxProgressEvent,
    CtxReadEvent,
    CtxSet,
    CtxWriteEvent,
    Drain,
    Event,
    GateEvent,
    HandlersEvent,
    Hangup,
    Iterate,
    Notify,
    PollEvent,
    Raise,
    ReadEvent,
    ReadyEvent,
    Send,
    Set,
    SetGate,
    Snapshot,
    Timeout,
    TimeoutEvent,
    WriteEvent,
    dump_vector,
)
from tests.harness.config import world_for


def describe_action(a: Action) -> str:
    match a:
        case Set(fd, None, None, _):
            return f"delete {fd}"
        case Set(fd, read, write, gate):
            parts = [f"read={read}" if read else "", f"write={write}" if write else "", f"gate={gate}" if gate else ""]
            return f"set {fd} " + " ".join(p for p in parts if p)
        case Send(fd):
            return f"send {fd}"
        case Drain(fd):
            return f"drain {fd}"
        case Hangup(fd):
            return f"hangup {fd}"
        case Raise(fd):
            return f"raise {fd}"
        case SetGate(gate, value):
            return f"gate {gate}={'open' if value else 'closed'}"
        case Notify():
            return "notify"
        case Snapshot():
            return "snapshot"
        case Iterate(during):
            return "iterate" + (f" (during the wait: {'; '.join(map(describe_action, during))})" if during else "")
        case BhNew(bh, script):
            return f"bh-new {bh} -> {script}"
        case BhSchedule(bh):
            return f"bh-schedule {bh}"
        case BhScheduleIdle(bh):
            return f"bh-schedule-idle {bh}"
        case BhCancel(bh):
            return f"bh-cancel {bh}"
        case BhDelete(bh):
            return f"bh-delete {bh}"
        case CtxSet(fd, None, None):
            return f"ctx-delete {fd}"
        case CtxSet(fd, read, write):
            parts = [f"read={read}" if read else "", f"write={write}" if write else ""]
            return f"ctx-set {fd} " + " ".join(p for p in parts if p)
        case CtxPoll():
            return "ctx-poll"
        case Timeout():
            return "timeout"
    raise AssertionError(a)


def describe_event(e: Event) -> str:
    def fl(pairs: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
        return ", ".join(f"{fd}:{'|'.join(f)}" for fd, f in pairs) or "-"

    match e:
        case GateEvent(fd, gate):
            return f"gate {gate} consulted for {fd}"
        case PollEvent(entries):
            return f"poll {fl(entries)}"
        case ReadyEvent(fds, walk):
            return f"ready {fl(fds)}" + (" -> walk" if walk else " (no walk)")
        case ReadEvent(fd, script):
            return f"read {fd} -> {script}"
        case WriteEvent(fd, script):
            return f"write {fd} -> {script}"
        case HandlersEvent(rows):
            return (
                "handlers ["
                + ", ".join(f"{fd}(" + ",".join(x or "-" for x in (r, w, g)) + ")" for fd, r, w, g in rows)
                + "]"
            )
        case CtxPollEvent(entries):
            return f"ctx-poll {fl(entries)}"
        case BhEvent(bh, script):
            return f"bh {bh} -> {script}"
        case CtxReadEvent(fd, script):
            return f"ctx-read {fd} -> {script}"
        case CtxWriteEvent(fd, script):
            return f"ctx-write {fd} -> {script}"
        case CtxProgressEvent(progress):
            return f"ctx-progress {progress}"
        case TimeoutEvent(ms):
            return f"timeout {ms}"
    raise AssertionError(e)


def scenario(config: Config, steps: Sequence[Action]) -> str:
    lines = ["fds: " + ", ".join(f"{f}={k}" for f, k in config.fds.items())]
    if config.gates:
        lines.append("gates: " + ", ".join(f"{g}={'open' if v else 'closed'}" for g, v in config.gates.items()))
    if config.gate_runs:
        lines.append("gate scripts (R22): " + ", ".join(f"{g} runs {s}" for g, s in config.gate_runs.items()))
    lines.append("scripts:")
    for name, body in config.scripts.items():
        lines.append(f"  {name}: " + ("; ".join(map(describe_action, body)) or "(nothing)"))
    lines.append("steps:")
    lines += [f"  {i}. {describe_action(a)}" for i, a in enumerate(steps, 1)]
    return "\n".join(lines)


def counterexample(config: Config, steps: Sequence[Action], *, fold: bool = False) -> str:
    """The readable scenario and a v1 vector (the model's trace as `expect`, unfolded: it is the
    spec) to save under specs/vectors."""
    world = world_for(config)
    expect: list[Event] = []
    try:
        for a in steps:
            world, out = step(world, a, config.scripts, config.gate_runs)
            expect.extend(out)
    except model_env.InvalidAction as e:  # pragma: no cover - the machine's preconditions forbid it
        return scenario(config, steps) + f"\n(model refused the steps: {e})"
    note = " (selectors folds HUP/ERR: this vector's expect is the unfolded spec trace)" if fold else ""
    return (
        f"{scenario(config, steps)}\n\nv1 vector{note} (save as specs/vectors/<name>.json):\n"
        f"{dump_vector(to_vector(config, steps, expect))}"
    )
