"""Conformance vector format, versions 1 and 2: the types, the loader and its validation.

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
FORMATS: tuple[str, ...] = (FORMAT, FORMAT_V2)
GATE_SCRIPTS = "gate_scripts"
FD_KINDS: tuple[str, ...] = ("socket", "pipe-read", "pipe-write")
FdKind: TypeAlias = Literal["socket", "pipe-read", "pipe-write"]
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


ScriptAction: TypeAlias = Set | Send | Drain | Hangup | SetGate | Notify | Snapshot
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


Event: TypeAlias = GateEvent | PollEvent | ReadyEvent | ReadEvent | WriteEvent | HandlersEvent


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
        """The oldest format that can carry this vector: v2 only when it uses `gate_scripts`."""
        return FORMAT_V2 if self.gate_scripts else FORMAT


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
        case SetGate(gate, value):
            return {"do": "gate", "gate": gate, "value": value}
        case Notify():
            return {"do": "notify"}
        case Snapshot():
            return {"do": "snapshot"}
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


def parse_action(value: object, at: _At, *, in_script: bool = False) -> Action:
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
        case "gate":
            _keys(obj, ["do", "gate", "value"], [], at)
            return SetGate(_str(obj["gate"], at / "gate"), _bool(obj["value"], at / "value"))
        case "notify":
            _keys(obj, ["do"], [], at)
            return Notify()
        case "snapshot":
            _keys(obj, ["do"], [], at)
            return Snapshot()
        case "iterate":
            if in_script:
                raise at.error('"iterate" is not allowed inside a script or during_wait')
            _keys(obj, ["do"], ["during_wait"], at)
            during: list[ScriptAction] = []
            if "during_wait" in obj:
                dw = at / "during_wait"
                for i, a in enumerate(_list(obj["during_wait"], dw)):
                    parsed = parse_action(a, dw / i, in_script=True)
                    assert not isinstance(parsed, Iterate)
                    during.append(parsed)
            return Iterate(tuple(during))
        case _:
            raise at.error(
                f'unknown action "{do}"; actions are set, send, drain, hangup, gate, notify, '
                "snapshot, iterate"
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
        case None:
            raise at.error('missing field "event"')
        case _:
            raise at.error(
                f'unknown event "{kind}"; events are gate, poll, ready, read, write, handlers'
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
        raise at.error(f'missing field "format" (expected "{FORMAT}" or "{FORMAT_V2}")')
    if obj["format"] not in FORMATS:
        raise (at / "format").error(
            f"unsupported format {show(obj['format'])}; this runner reads "
            + " and ".join(f'"{f}"' for f in FORMATS)
        )
    if GATE_SCRIPTS in obj and obj["format"] == FORMAT:
        raise (at / GATE_SCRIPTS).error(f'"{GATE_SCRIPTS}" needs "format": "{FORMAT_V2}"')
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


def _check_references(vector: Vector, at: _At) -> None:
    """Names must resolve; sends and drains only on fds that can take them (VECTORS.md)."""
    places = [(vector.steps, at / "steps")] + [
        (body, at / "scripts" / name) for name, body in vector.scripts.items()
    ]
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
            if isinstance(action, SetGate) and action.gate not in vector.gates:
                raise (where / "gate").error(f"gate {action.gate!r} is not declared in gates")
            if isinstance(action, Send | Drain) and vector.fds[action.fd] == "pipe-write":
                kind = "send" if isinstance(action, Send) else "drain"
                raise where.error(f"{kind} on pipe-write fd {action.fd!r} is invalid")
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
            kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                     (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
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
