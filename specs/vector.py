"""Conformance vector format, versions 1, 2 and 3: the types, the loader and its validation.

This is the only place the format is parsed (the model's driver, the loop's driver and the
runner all come through here), so they cannot drift apart. The contract is VECTORS.md, restated
in specs/VECTORS.md; `vector.schema.json` says the same for other languages.

Errors are `VectorError`, whose message names the file and the JSON path of the problem.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

FORMAT = "iohandler-vector/1"
# Version 2 is version 1 plus the field `gate_scripts` (VECTORS.md); a file that uses it says so.
FORMAT_V2 = "iohandler-vector/2"
# Version 3 adds the AioContext: bottom halves, the context's fd handlers and its own poll
# (SPEC R42 on); a file that uses any of its actions says so.
FORMAT_V3 = "iohandler-vector/3"
FORMATS: tuple[str, ...] = (FORMAT, FORMAT_V2, FORMAT_V3)
GATE_SCRIPTS = "gate_scripts"
FD_KINDS: tuple[str, ...] = ("socket", "pipe-read", "pipe-write", "signal")
FdKind: TypeAlias = Literal["socket", "pipe-read", "pipe-write", "signal"]
# The `signal` kind (format v3, SPEC R60-R61): a signalfd for a signal of the driver's choice,
# readable while that signal is pending; the `raise` action raises it.
SIGNAL_KIND = "signal"
# Flags are always written in this order inside a list (VECTORS.md, "Events").
FLAG_ORDER: tuple[str, ...] = ("IN", "OUT", "HUP", "ERR")
Flags: TypeAlias = tuple[str, ...]

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class VectorError(ValueError):
    """A vector (or a driver's answer) does not follow the format. The message names where."""


# ----------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Set:
    """`set_fd_handler`: read and write both None deletes; `gate` is kept even with no reader."""

    fd: str
    read: str | None
    write: str | None
    gate: str | None


@dataclass(frozen=True, slots=True)
class Send:
    fd: str


@dataclass(frozen=True, slots=True)
class Drain:
    fd: str


@dataclass(frozen=True, slots=True)
class Hangup:
    fd: str


@dataclass(frozen=True, slots=True)
class Raise:
    """Format v3: raise the signal of a `signal` fd (it is pending until a `drain`)."""

    fd: str


@dataclass(frozen=True, slots=True)
class SetGate:
    """The `gate` action: from now on the gate answers `value`."""

    gate: str
    value: bool


@dataclass(frozen=True, slots=True)
class Notify:
    pass


@dataclass(frozen=True, slots=True)
class Snapshot:
    pass


@dataclass(frozen=True, slots=True)
class Iterate:
    """One non-blocking `main_loop_wait`; `during_wait` runs between building the poll set and
    sampling readiness, as another thread would while the loop blocks in poll."""

    during_wait: tuple[ScriptAction, ...] = ()


# Format v3: the AioContext (SPEC R42 on). A BH is named by the vector; `bh-new` binds the name
# to a new BH (a name created again then means the newer BH; the older one stays in the list).


@dataclass(frozen=True, slots=True)
class BhNew:
    """`aio_bh_new(ctx, cb, opaque)`: cb runs `script`."""

    bh: str
    script: str


@dataclass(frozen=True, slots=True)
class BhSchedule:
    bh: str


@dataclass(frozen=True, slots=True)
class BhScheduleIdle:
    bh: str


@dataclass(frozen=True, slots=True)
class BhCancel:
    bh: str


@dataclass(frozen=True, slots=True)
class BhDelete:
    bh: str


@dataclass(frozen=True, slots=True)
class CtxSet:
    """`aio_set_fd_handler`: read and write both None deletes."""

    fd: str
    read: str | None
    write: str | None


@dataclass(frozen=True, slots=True)
class CtxPoll:
    """`aio_poll(ctx, false)`, from a step or a callback; emits a `ctx-progress` event."""


@dataclass(frozen=True, slots=True)
class Timeout:
    """Emit the context's `aio_compute_timeout` as a `timeout` event."""


BhAction: TypeAlias = BhNew | BhSchedule | BhScheduleIdle | BhCancel | BhDelete
V3Action: TypeAlias = BhAction | CtxSet | CtxPoll | Timeout | Raise
# The AioContext's actions; `raise` (signals, R60) is format v3 too but kept apart: a driver's
# fuzz reaches the context's actions without signal fds (V3_ONLY is both).
V3_ACTIONS = (BhNew, BhSchedule, BhScheduleIdle, BhCancel, BhDelete, CtxSet, CtxPoll, Timeout)
V3_ONLY = (*V3_ACTIONS, Raise)
ScriptAction: TypeAlias = Set | Send | Drain | Hangup | SetGate | Notify | Snapshot | V3Action
Action: TypeAlias = ScriptAction | Iterate

# ------------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class GateEvent:
    fd: str
    gate: str


@dataclass(frozen=True, slots=True)
class PollEvent:
    """The poll set built by fill, in list order: (fd, requested flags)."""

    entries: tuple[tuple[str, Flags], ...]


@dataclass(frozen=True, slots=True)
class ReadyEvent:
    """Handler fds with non-zero revents, in poll-set order, and whether a dispatch walk runs."""

    fds: tuple[tuple[str, Flags], ...]
    walk: bool


@dataclass(frozen=True, slots=True)
class ReadEvent:
    fd: str
    script: str


@dataclass(frozen=True, slots=True)
class WriteEvent:
    fd: str
    script: str


@dataclass(frozen=True, slots=True)
class HandlersEvent:
    """Live records in list order: (fd, read, write, gate)."""

    records: tuple[tuple[str, str | None, str | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class BhEvent:
    """A BH's callback is called (format v3)."""

    bh: str
    script: str


@dataclass(frozen=True, slots=True)
class CtxPollEvent:
    """The context's fds in the main wait, in list order, with the events asked (format v3)."""

    entries: tuple[tuple[str, Flags], ...]


@dataclass(frozen=True, slots=True)
class CtxReadEvent:
    fd: str
    script: str


@dataclass(frozen=True, slots=True)
class CtxWriteEvent:
    fd: str
    script: str


@dataclass(frozen=True, slots=True)
class CtxProgressEvent:
    """What a `ctx-poll` action's `aio_poll` returned."""

    progress: bool


@dataclass(frozen=True, slots=True)
class TimeoutEvent:
    """`aio_compute_timeout` in milliseconds; None is "no timeout" (-1 in QEMU)."""

    ms: int | None


V3Event: TypeAlias = BhEvent | CtxPollEvent | CtxReadEvent | CtxWriteEvent | CtxProgressEvent | TimeoutEvent
Event: TypeAlias = GateEvent | PollEvent | ReadyEvent | ReadEvent | WriteEvent | HandlersEvent | V3Event


# ------------------------------------------------------------------------------------ vector


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    rules: tuple[str, ...]
    fds: Mapping[str, FdKind]
    scripts: Mapping[str, tuple[ScriptAction, ...]]
    gates: Mapping[str, bool]
    steps: tuple[Action, ...]
    expect: tuple[Event, ...] | None
    # Fields the format does not define are kept verbatim so a rewrite preserves them.
    extra: Mapping[str, object] = field(default_factory=dict)
    source: str = "<vector>"
    # Format v2 (R22): gate name -> the script it runs when fill consults it, before it answers.
    gate_scripts: Mapping[str, str] = field(default_factory=dict)

    @property
    def format(self) -> str:
        """The oldest format that can carry this vector: v3 when it uses an AioContext action or
        a signal fd, else v2 when it uses `gate_scripts`, else v1."""
        if uses_v3(self.steps, self.scripts) or self.uses_signals:
            return FORMAT_V3
        return FORMAT_V2 if self.gate_scripts else FORMAT

    @property
    def uses_signals(self) -> bool:
        """It has a `signal` fd: a driver that cannot raise signals skips it (`--no-signals`)."""
        return SIGNAL_KIND in self.fds.values()


def uses_v3(steps: Sequence[Action], scripts: Mapping[str, Sequence[ScriptAction]]) -> bool:
    actions: list[Action] = [*steps, *(a for body in scripts.values() for a in body)]
    actions += [a for step in steps if isinstance(step, Iterate) for a in step.during_wait]
    return any(isinstance(a, V3_ONLY) for a in actions)


# ------------------------------------------------------------------------------- flag helpers


def flags_from_names(names: Iterable[str]) -> Flags:
    """Canonical order, duplicates dropped; unknown names are a VectorError."""
    wanted = set(names)
    unknown = wanted - set(FLAG_ORDER)
    if unknown:
        raise VectorError(f"unknown flag(s) {sorted(unknown)}; flags are {list(FLAG_ORDER)}")
    return tuple(f for f in FLAG_ORDER if f in wanted)


# ---------------------------------------------------------------------------------- to JSON


def action_to_json(action: Action) -> dict[str, object]:
    match action:
        case Set(fd, read, write, gate):
            return {"do": "set", "fd": fd, "read": read, "write": write, "gate": gate}
        case Send(fd):
            return {"do": "send", "fd": fd}
        case Drain(fd):
            return {"do": "drain", "fd": fd}
        case Hangup(fd):
            return {"do": "hangup", "fd": fd}
        case Raise(fd):
            return {"do": "raise", "fd": fd}
        case SetGate(gate, value):
            return {"do": "gate", "gate": gate, "value": value}
        case Notify():
            return {"do": "notify"}
        case Snapshot():
            return {"do": "snapshot"}
        case BhNew(bh, script):
            return {"do": "bh-new", "bh": bh, "script": script}
        case BhSchedule(bh):
            return {"do": "bh-schedule", "bh": bh}
        case BhScheduleIdle(bh):
            return {"do": "bh-schedule-idle", "bh": bh}
        case BhCancel(bh):
            return {"do": "bh-cancel", "bh": bh}
        case BhDelete(bh):
            return {"do": "bh-delete", "bh": bh}
        case CtxSet(fd, read, write):
            return {"do": "ctx-set", "fd": fd, "read": read, "write": write}
        case CtxPoll():
            return {"do": "ctx-poll"}
        case Timeout():
            return {"do": "timeout"}
        case Iterate(during_wait):
            if not during_wait:
                return {"do": "iterate"}
            return {"do": "iterate", "during_wait": [action_to_json(a) for a in during_wait]}


def event_to_json(event: Event) -> dict[str, object]:
    match event:
        case GateEvent(fd, gate):
            return {"event": "gate", "fd": fd, "gate": gate}
        case PollEvent(entries):
            return {"event": "poll", "set": [[fd, list(flags)] for fd, flags in entries]}
        case ReadyEvent(fds, walk):
            return {"event": "ready", "fds": [[fd, list(flags)] for fd, flags in fds], "walk": walk}
        case ReadEvent(fd, script):
            return {"event": "read", "fd": fd, "script": script}
        case WriteEvent(fd, script):
            return {"event": "write", "fd": fd, "script": script}
        case HandlersEvent(records):
            return {"event": "handlers", "list": [list(r) for r in records]}
        case BhEvent(bh, script):
            return {"event": "bh", "bh": bh, "script": script}
        case CtxPollEvent(entries):
            return {"event": "ctx-poll", "set": [[fd, list(flags)] for fd, flags in entries]}
        case CtxReadEvent(fd, script):
            return {"event": "ctx-read", "fd": fd, "script": script}
        case CtxWriteEvent(fd, script):
            return {"event": "ctx-write", "fd": fd, "script": script}
        case CtxProgressEvent(progress):
            return {"event": "ctx-progress", "progress": progress}
        case TimeoutEvent(ms):
            return {"event": "timeout", "ms": ms}


def vector_to_json(vector: Vector) -> dict[str, object]:
    out: dict[str, object] = {
        "format": vector.format,
        "name": vector.name,
        "description": vector.description,
        "rules": list(vector.rules),
        "fds": dict(vector.fds),
        "scripts": {k: [action_to_json(a) for a in v] for k, v in vector.scripts.items()},
        "gates": dict(vector.gates),
        "steps": [action_to_json(a) for a in vector.steps],
    }
    out.update(vector.extra)
    if vector.gate_scripts:
        out[GATE_SCRIPTS] = dict(vector.gate_scripts)
    out["expect"] = [event_to_json(e) for e in vector.expect or ()]
    return out


def dump_vector(vector: Vector) -> str:
    """The file form: one space indent, as the examples from QEMU are written."""
    return json.dumps(vector_to_json(vector), indent=1, ensure_ascii=False) + "\n"


# -------------------------------------------------------------------------------- from JSON


class _At:
    """Where we are in a document, for error messages: `file: steps[3].fd: ...`."""

    def __init__(self, source: str, path: str = "") -> None:
        self.source = source
        self.path = path

    def __truediv__(self, part: str | int) -> _At:
        if isinstance(part, int):
            return _At(self.source, f"{self.path}[{part}]")
        return _At(self.source, f"{self.path}.{part}" if self.path else part)

    def error(self, message: str) -> VectorError:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return VectorError(f"{where}: {message}")


def _obj(value: object, at: _At) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise at.error(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: object, at: _At) -> list[object]:
    if not isinstance(value, list):
        raise at.error(f"expected a list, got {type(value).__name__}")
    return value


def _str(value: object, at: _At) -> str:
    if not isinstance(value, str):
        raise at.error(f"expected a string, got {show(value)}")
    return value


def _opt_str(value: object, at: _At) -> str | None:
    return None if value is None else _str(value, at)


def _bool(value: object, at: _At) -> bool:
    if not isinstance(value, bool):
        raise at.error(f"expected true or false, got {show(value)}")
    return value


def _keys(obj: Mapping[str, object], required: Sequence[str], optional: Sequence[str], at: _At) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise at.error(f"missing field(s) {missing}")
    unknown = sorted(set(obj) - set(required) - set(optional) - {"comment"})
    if unknown:
        raise at.error(f"unknown field(s) {unknown}")


def _flags(value: object, at: _At) -> Flags:
    names = [_str(x, at / i) for i, x in enumerate(_list(value, at))]
    try:
        canonical = flags_from_names(names)
    except VectorError as e:
        raise at.error(str(e)) from None
    if list(canonical) != names:
        raise at.error(f"flags {names} must be distinct and in the order {list(FLAG_ORDER)}")
    return canonical


def _fd_flags(value: object, at: _At) -> tuple[str, Flags]:
    pair = _list(value, at)
    if len(pair) != 2:
        raise at.error("expected [fd, [flags]]")
    return _str(pair[0], at / 0), _flags(pair[1], at / 1)


def _bh_action(do: str, bh: str) -> BhAction:
    kinds: dict[str, type[BhSchedule | BhScheduleIdle | BhCancel | BhDelete]] = {
        "bh-schedule": BhSchedule,
        "bh-schedule-idle": BhScheduleIdle,
        "bh-cancel": BhCancel,
        "bh-delete": BhDelete,
    }
    return kinds[do](bh)


def parse_action(value: object, at: _At, *, in_script: bool = False, in_wait: bool = False) -> Action:
    obj = _obj(value, at)
    do = _str(obj.get("do"), at / "do") if "do" in obj else None
    if do is None:
        raise at.error('missing field "do"')
    match do:
        case "set":
            # read/write/gate default to null: `{"do": "set", "fd": "a"}` is a delete.
            _keys(obj, ["do", "fd"], ["read", "write", "gate"], at)
            return Set(
                _str(obj["fd"], at / "fd"),
                _opt_str(obj.get("read"), at / "read"),
                _opt_str(obj.get("write"), at / "write"),
                _opt_str(obj.get("gate"), at / "gate"),
            )
        case "send" | "drain" | "hangup":
            _keys(obj, ["do", "fd"], [], at)
            fd = _str(obj["fd"], at / "fd")
            return Send(fd) if do == "send" else Drain(fd) if do == "drain" else Hangup(fd)
        case "raise":
            _keys(obj, ["do", "fd"], [], at)
            return Raise(_str(obj["fd"], at / "fd"))
        case "gate":
            _keys(obj, ["do", "gate", "value"], [], at)
            return SetGate(_str(obj["gate"], at / "gate"), _bool(obj["value"], at / "value"))
        case "notify":
            _keys(obj, ["do"], [], at)
            return Notify()
        case "snapshot":
            _keys(obj, ["do"], [], at)
            return Snapshot()
        case "bh-new":
            _keys(obj, ["do", "bh", "script"], [], at)
            return BhNew(_str(obj["bh"], at / "bh"), _str(obj["script"], at / "script"))
        case "bh-schedule" | "bh-schedule-idle" | "bh-cancel" | "bh-delete":
            _keys(obj, ["do", "bh"], [], at)
            return _bh_action(do, _str(obj["bh"], at / "bh"))
        case "ctx-set":
            _keys(obj, ["do", "fd"], ["read", "write"], at)
            return CtxSet(
                _str(obj["fd"], at / "fd"),
                _opt_str(obj.get("read"), at / "read"),
                _opt_str(obj.get("write"), at / "write"),
            )
        case "ctx-poll":
            if in_wait:
                # aio_poll runs in the context's own thread, never in another one (R46).
                raise at.error('"ctx-poll" is not allowed inside during_wait')
            _keys(obj, ["do"], [], at)
            return CtxPoll()
        case "timeout":
            _keys(obj, ["do"], [], at)
            return Timeout()
        case "iterate":
            if in_script:
                raise at.error('"iterate" is not allowed inside a script or during_wait')
            _keys(obj, ["do"], ["during_wait"], at)
            during: list[ScriptAction] = []
            if "during_wait" in obj:
                dw = at / "during_wait"
                for i, a in enumerate(_list(obj["during_wait"], dw)):
                    parsed = parse_action(a, dw / i, in_script=True, in_wait=True)
                    assert not isinstance(parsed, Iterate)
                    during.append(parsed)
            return Iterate(tuple(during))
        case _:
            raise at.error(
                f'unknown action "{do}"; actions are set, send, drain, hangup, gate, notify, '
                "snapshot, iterate, and in format v3 bh-new, bh-schedule, bh-schedule-idle, bh-cancel, "
                "bh-delete, ctx-set, ctx-poll, timeout, raise"
            )


def parse_event(value: object, at: _At) -> Event:
    obj = _obj(value, at)
    kind = _str(obj.get("event"), at / "event") if "event" in obj else None
    match kind:
        case "gate":
            _keys(obj, ["event", "fd", "gate"], [], at)
            return GateEvent(_str(obj["fd"], at / "fd"), _str(obj["gate"], at / "gate"))
        case "poll":
            _keys(obj, ["event", "set"], [], at)
            s = at / "set"
            return PollEvent(tuple(_fd_flags(x, s / i) for i, x in enumerate(_list(obj["set"], s))))
        case "ready":
            _keys(obj, ["event", "fds", "walk"], [], at)
            f = at / "fds"
            fds = tuple(_fd_flags(x, f / i) for i, x in enumerate(_list(obj["fds"], f)))
            return ReadyEvent(fds, _bool(obj["walk"], at / "walk"))
        case "read" | "write":
            _keys(obj, ["event", "fd", "script"], [], at)
            fd, script = _str(obj["fd"], at / "fd"), _str(obj["script"], at / "script")
            return ReadEvent(fd, script) if kind == "read" else WriteEvent(fd, script)
        case "handlers":
            _keys(obj, ["event", "list"], [], at)
            lat = at / "list"
            records = []
            for i, r in enumerate(_list(obj["list"], lat)):
                row = _list(r, lat / i)
                if len(row) != 4:
                    raise (lat / i).error("expected [fd, read, write, gate]")
                records.append(
                    (
                        _str(row[0], lat / i / 0),
                        _opt_str(row[1], lat / i / 1),
                        _opt_str(row[2], lat / i / 2),
                        _opt_str(row[3], lat / i / 3),
                    )
                )
            return HandlersEvent(tuple(records))
        case "bh":
            _keys(obj, ["event", "bh", "script"], [], at)
            return BhEvent(_str(obj["bh"], at / "bh"), _str(obj["script"], at / "script"))
        case "ctx-poll":
            _keys(obj, ["event", "set"], [], at)
            s = at / "set"
            return CtxPollEvent(tuple(_fd_flags(x, s / i) for i, x in enumerate(_list(obj["set"], s))))
        case "ctx-read" | "ctx-write":
            _keys(obj, ["event", "fd", "script"], [], at)
            fd, script = _str(obj["fd"], at / "fd"), _str(obj["script"], at / "script")
            return CtxReadEvent(fd, script) if kind == "ctx-read" else CtxWriteEvent(fd, script)
        case "ctx-progress":
            _keys(obj, ["event", "progress"], [], at)
            return CtxProgressEvent(_bool(obj["progress"], at / "progress"))
        case "timeout":
            _keys(obj, ["event", "ms"], [], at)
            ms = obj["ms"]
            if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or ms < 0):
                raise (at / "ms").error(f"expected a whole number of milliseconds >= 0 or null, got {json.dumps(ms)}")
            return TimeoutEvent(ms)
        case None:
            raise at.error('missing field "event"')
        case _:
            raise at.error(
                f'unknown event "{kind}"; events are gate, poll, ready, read, write, handlers, and in '
                "format v3 bh, ctx-poll, ctx-read, ctx-write, ctx-progress, timeout"
            )


def parse_trace(value: object, source: str = "<trace>") -> tuple[Event, ...]:
    at = _At(source)
    return tuple(parse_event(e, at / i) for i, e in enumerate(_list(value, at)))


_TOP_REQUIRED = ("format", "name", "description", "rules", "fds", "scripts", "gates", "steps")


def parse_vector(value: object, source: str = "<vector>", *, require_expect: bool = True) -> Vector:
    """Validate and type a decoded vector. Unknown top-level fields are kept in `extra`."""
    at = _At(source)
    obj = _obj(value, at)
    if "format" not in obj:
        raise at.error(f'missing field "format" (expected one of {", ".join(map(json.dumps, FORMATS))})')
    if obj["format"] not in FORMATS:
        raise (at / "format").error(
            f"unsupported format {show(obj['format'])}; this runner reads " + " and ".join(f'"{f}"' for f in FORMATS)
        )
    if GATE_SCRIPTS in obj and obj["format"] == FORMAT:
        raise (at / GATE_SCRIPTS).error(f'"{GATE_SCRIPTS}" needs "format": "{FORMAT_V2}" or newer')
    missing = [k for k in (*_TOP_REQUIRED, *(("expect",) if require_expect else ())) if k not in obj]
    if missing:
        raise at.error(f"missing field(s) {missing}")
    name = _str(obj["name"], at / "name")
    if not _NAME.match(name):
        raise (at / "name").error(f"name {name!r} is not kebab-case")
    description = _str(obj["description"], at / "description")
    rules = tuple(_str(r, at / "rules" / i) for i, r in enumerate(_list(obj["rules"], at / "rules")))

    fds: dict[str, FdKind] = {}
    for fd, kind in _obj(obj["fds"], at / "fds").items():
        if kind not in FD_KINDS:
            raise (at / "fds" / fd).error(f"unknown fd kind {show(kind)}; kinds are {list(FD_KINDS)}")
        fds[fd] = kind  # type: ignore[assignment]  # checked against FD_KINDS just above
    gates = {g: _bool(v, at / "gates" / g) for g, v in _obj(obj["gates"], at / "gates").items()}

    scripts: dict[str, tuple[ScriptAction, ...]] = {}
    for sname, body in _obj(obj["scripts"], at / "scripts").items():
        sat = at / "scripts" / sname
        actions: list[ScriptAction] = []
        for i, a in enumerate(_list(body, sat)):
            parsed = parse_action(a, sat / i, in_script=True)
            assert not isinstance(parsed, Iterate)
            actions.append(parsed)
        scripts[sname] = tuple(actions)
    steps = tuple(parse_action(a, at / "steps" / i) for i, a in enumerate(_list(obj["steps"], at / "steps")))
    expect = parse_trace(obj["expect"], f"{source}: expect") if "expect" in obj else None
    gate_runs: dict[str, str] = {}
    if GATE_SCRIPTS in obj:
        for gate, script in _obj(obj[GATE_SCRIPTS], at / GATE_SCRIPTS).items():
            gat = at / GATE_SCRIPTS / gate
            if gate not in gates:
                raise gat.error(f"gate {gate!r} is not declared in gates")
            gate_runs[gate] = _str(script, gat)
            if gate_runs[gate] not in scripts:
                raise gat.error(f"script {gate_runs[gate]!r} is not declared in scripts")

    if obj["format"] != FORMAT_V3:
        _refuse_v3(steps, scripts, at, str(obj["format"]))
        for fd, kind in fds.items():
            if kind == SIGNAL_KIND:
                raise (at / "fds" / fd).error(f'fd kind "signal" needs "format": "{FORMAT_V3}"')

    known = {*_TOP_REQUIRED, "expect", GATE_SCRIPTS}
    vector = Vector(
        name=name,
        description=description,
        rules=rules,
        fds=fds,
        scripts=scripts,
        gates=gates,
        steps=steps,
        expect=expect,
        extra={k: v for k, v in obj.items() if k not in known},
        source=source,
        gate_scripts=gate_runs,
    )
    _check_references(vector, at)
    return vector


def _walk(actions: Sequence[Action], at: _At) -> Iterator[tuple[Action, _At]]:
    for i, a in enumerate(actions):
        yield a, at / i
        if isinstance(a, Iterate):
            yield from _walk(a.during_wait, at / i / "during_wait")


def _refuse_v3(steps: Sequence[Action], scripts: Mapping[str, Sequence[ScriptAction]], at: _At, fmt: str) -> None:
    places = [(steps, at / "steps")] + [(body, at / "scripts" / name) for name, body in scripts.items()]
    for actions, base in places:
        for action, where in _walk(actions, base):
            if isinstance(action, V3_ONLY):
                do = action_to_json(action)["do"]
                raise where.error(f'"{do}" needs "format": "{FORMAT_V3}" (this file says {json.dumps(fmt)})')


def _check_references(vector: Vector, at: _At) -> None:
    """Names must resolve; sends and drains only on fds that can take them (VECTORS.md)."""
    places = [(vector.steps, at / "steps")] + [(body, at / "scripts" / name) for name, body in vector.scripts.items()]
    created = {a.bh for actions, base in places for a, _ in _walk(actions, base) if isinstance(a, BhNew)}
    for actions, base in places:
        for action, where in _walk(actions, base):
            fd = getattr(action, "fd", None)
            if fd is not None and fd not in vector.fds:
                raise (where / "fd").error(f"fd {fd!r} is not declared in fds")
            if isinstance(action, Set):
                for role in ("read", "write"):
                    script = getattr(action, role)
                    if script is not None and script not in vector.scripts:
                        raise (where / role).error(f"script {script!r} is not declared in scripts")
                if action.gate is not None and action.gate not in vector.gates:
                    raise (where / "gate").error(f"gate {action.gate!r} is not declared in gates")
            if isinstance(action, CtxSet | BhNew):
                for role in ("read", "write", "script"):
                    script = getattr(action, role, None)
                    if script is not None and script not in vector.scripts:
                        raise (where / role).error(f"script {script!r} is not declared in scripts")
            if isinstance(action, BhSchedule | BhScheduleIdle | BhCancel | BhDelete) and action.bh not in created:
                raise (where / "bh").error(f"bh {action.bh!r} is never created (no bh-new names it)")
            if isinstance(action, SetGate) and action.gate not in vector.gates:
                raise (where / "gate").error(f"gate {action.gate!r} is not declared in gates")
            if isinstance(action, Send | Drain) and vector.fds[action.fd] == "pipe-write":
                kind = "send" if isinstance(action, Send) else "drain"
                raise where.error(f"{kind} on pipe-write fd {action.fd!r} is invalid")
            if isinstance(action, Send | Hangup | CtxSet) and vector.fds[action.fd] == SIGNAL_KIND:
                do = action_to_json(action)["do"]
                raise where.error(f"{do} on signal fd {action.fd!r} is invalid (raise and drain it)")
            if isinstance(action, Raise) and vector.fds[action.fd] != SIGNAL_KIND:
                raise where.error(f"raise on {vector.fds[action.fd]} fd {action.fd!r} is invalid (signal fds only)")
    # Format v3: an fd is the fd-handler list's or the context's, never both (SPEC R48: the loop
    # keeps one kernel registration per fd).
    main_fds, ctx_fds = set(), set()
    for actions, base in places:
        for action, where in _walk(actions, base):
            if isinstance(action, Set):
                main_fds.add(action.fd)
            elif isinstance(action, CtxSet):
                ctx_fds.add(action.fd)
                if action.fd in main_fds:
                    raise (where / "fd").error(
                        f"fd {action.fd!r} has a set action too: an fd is registered with set or with ctx-set, not both"
                    )
    if both := sorted(main_fds & ctx_fds):
        raise at.error(f"fd {both[0]!r} is registered with set and with ctx-set: an fd is one list's, not both")
    # A send after a hangup of the same fd is invalid; in steps the order is static.
    hung: set[str] = set()
    for action, where in _walk(vector.steps, at / "steps"):
        if isinstance(action, Hangup):
            hung.add(action.fd)
        elif isinstance(action, Send) and action.fd in hung:
            raise where.error(f"send on {action.fd!r} after its hangup is invalid")


VALUE_LIMIT = 1_000_000  # JSON values in one document (VECTORS.md): what parsing may build is bounded


def decode_json(text: str | bytes) -> object:
    """`json.loads`, with every way hostile text can fail it as a VectorError: not JSON, nested
    deeper than the decoder's recursion allows, an integer past Python's limit on digits, or
    more than VALUE_LIMIT values. The values are counted before parsing, as an upper bound that
    costs no objects: every value but the first follows a `[`, `{` or `,` (some of those counted
    may sit inside strings)."""
    if isinstance(text, str):
        values = text.count("[") + text.count("{") + text.count(",")
    else:
        values = text.count(b"[") + text.count(b"{") + text.count(b",")
    if values > VALUE_LIMIT:
        raise VectorError(f"JSON holds more than {VALUE_LIMIT} values (the limit; counted as its '[', '{{' and ',')")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique_keys)
    except VectorError:
        raise
    except json.JSONDecodeError as e:
        raise VectorError(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise VectorError("JSON nested too deeply to read") from None
    except ValueError as e:  # int(str) refuses more than sys.get_int_max_str_digits() digits
        raise VectorError(f"JSON holds an integer with too many digits ({e})") from None


def _no_constant(name: str) -> object:
    raise VectorError(f"{name} is not JSON (Python's reader accepts it; the format does not)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise VectorError(f"{text[:40]} is not a finite number (JSON has no infinity)")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # rare: only then look for the key to name
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise VectorError(f"JSON object has the key {show(key)} twice (which one counts is not defined)")
            seen.add(key)
    return obj


def show(value: object, limit: int = 80) -> str:
    """A value quoted in an error message: JSON, clipped, never failing on a hostile value."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError, TypeError):
        text = f"(a {type(value).__name__} too deep or too large to show)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


FILE_LIMIT = 16 * 2**20  # bytes in a vector file (VECTORS.md); the bundled ones are a few KiB


def _read_vector_file(p: Path) -> bytes:
    """The bytes of a regular file of at most FILE_LIMIT bytes. Opened without blocking, so a
    FIFO is refused rather than waited on; a device (/dev/zero) is refused rather than read."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise VectorError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kinds = (
                (stat.S_ISFIFO, "a FIFO"),
                (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"),
                (stat.S_ISDIR, "a folder"),
            )
            kind = next((name for test, name in kinds if test(mode)), "not a file")
            raise VectorError(f"{p}: not a regular file ({kind}): a vector is a file")
        chunks: list[bytes] = []
        size = 0
        while size <= FILE_LIMIT:  # in chunks: read(FILE_LIMIT + 1) would allocate all of it at once
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise VectorError(f"{p}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > FILE_LIMIT:
        raise VectorError(f"{p}: larger than {FILE_LIMIT // 2**20} MiB (the limit on a vector file)")
    return data


def load_vector(path: str | Path, *, require_expect: bool = True) -> Vector:
    p = Path(path)
    try:
        text = _read_vector_file(p).decode("utf-8")
    except UnicodeDecodeError as e:
        raise VectorError(f"{p}: not UTF-8: {e}") from None
    try:
        obj = decode_json(text)
    except VectorError as e:
        raise VectorError(f"{p}: {e}") from None
    return parse_vector(obj, str(p), require_expect=require_expect)


def vector_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every `*.json` file named or found (recursively, sorted) under the named folders. In a
    folder, every such name but a folder's is taken: a dangling link or a FIFO then fails to
    load with a message, rather than being passed over without a word."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.json") if not q.is_dir()))
        elif p.exists():
            found.append(p)
        else:
            raise VectorError(f"{p}: no such file or folder")
    return found


def bundled_vectors_dir() -> Path:
    return Path(__file__).resolve().parent / "vectors"
