"""Shared support for the lockstep, exhaustive and catalogue tests.

* `Config`: one machine run's symbolic world (fds, gates, scripts), drawn once by `configs()`.
* `Session`: the real loop on real fds, driven one vector action at a time. It mirrors
  `impl.driver` (which only exposes whole-vector `run_vector`) but takes a loop factory, so the
  planted-bug variants of tests/catalogue.py run through exactly the same harness, and it checks
  what a trace cannot show: a handler called for a deleted record (R17), the kernel's
  registrations against the poll set, leaked fds.
* `model_step`: the model's step, optionally with HUP/ERR folded as the selectors poller does
  (SPEC R36), so selectors can be compared exactly instead of being restricted.
* `LockstepMachine`: the Hypothesis state machine; `machine_for` makes one per poller / variant.
* Printing: `scenario()` (readable) and `to_vector()` (a v1 vector a porter can replay).

Failures carry a tag in brackets ([trace], [R1], [R17], [order], [kernel], [leak]) so the
catalogue can say which check killed a variant.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import iohandler.model.iterate as model_iterate
from iohandler.impl import IN, OUT, EpollPoller, MainLoop, PollPoller, SelectorsPoller, Tracer, flag_names
from iohandler.impl.driver import RealFd
from iohandler.impl.tracing import Handler
from iohandler.model import env as model_env
from iohandler.model.dispatch import Callback
from iohandler.model.iterate import initial_world, step
from iohandler.model.registry import live_records
from iohandler.model.state import ERR, HUP, READ_EVENTS, WRITE_EVENTS, Env, Loop, PollSet, World, fds_unique, flag_mask
from iohandler.model.state import IN as M_IN
from iohandler.model.state import OUT as M_OUT
from iohandler.specs.vector import (
    Action,
    Drain,
    Event,
    FdKind,
    GateEvent,
    HandlersEvent,
    Hangup,
    Iterate,
    Notify,
    PollEvent,
    ReadEvent,
    ReadyEvent,
    ScriptAction,
    Send,
    Set,
    SetGate,
    Snapshot,
    Vector,
    WriteEvent,
    dump_vector,
)

Scripts = Mapping[str, tuple[ScriptAction, ...]]
LoopFactory = Callable[..., MainLoop]

# --------------------------------------------------------------------------- budgets, stats


def profile() -> str:
    return os.environ.get("HYPOTHESIS_PROFILE", "dev")


def budget(*, dev: int, ci: int, thorough: int) -> int:
    """A size by Hypothesis profile: ci is what the 150 s budget of these files affords.
    IOHANDLER_BUDGET=mutation (set by .ci/mutation/run.sh) halves dev: that suite runs once per
    mutant."""
    if os.environ.get("IOHANDLER_BUDGET") == "mutation":
        return max(1, dev // 2)
    return {"dev": dev, "ci": ci, "thorough": thorough}.get(profile(), dev)


def write_stats(name: str, data: Mapping[str, object]) -> None:
    """`$IOHANDLER_STATS_DIR/<name>.json`, read by `iohandler verify` for its summary."""
    folder = os.environ.get("IOHANDLER_STATS_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class Config:
    """A machine run's symbolic world. `hangable`: fds no script sends to, so a hangup can never
    make a later send invalid (VECTORS.md: a send after a hangup is an invalid vector)."""

    fds: Mapping[str, FdKind]
    gates: Mapping[str, bool]
    scripts: Scripts
    hangable: frozenset[str] = field(default_factory=frozenset)
    gate_runs: Mapping[str, str] = field(default_factory=dict)  # R22: gate -> script it runs when consulted

    def sendable(self) -> list[str]:
        return [f for f, k in self.fds.items() if k != "pipe-write"]


FD_NAMES = ("a", "b", "c")
KINDS: tuple[FdKind, ...] = ("socket", "pipe-read", "pipe-write")


def script_actions(fds: Sequence[str], kinds: Mapping[str, FdKind], scripts: Sequence[str],
                   gates: Sequence[str]) -> st.SearchStrategy[ScriptAction]:
    # Built strategies are cached: building and validating them anew on every draw was most of
    # the machine's time.
    return _script_actions(tuple(fds), tuple(kinds[f] for f in fds), tuple(scripts), tuple(gates))


@functools.lru_cache(maxsize=512)
def _script_actions(fds: tuple[str, ...], kinds_: tuple[FdKind, ...], scripts: tuple[str, ...],
                    gates: tuple[str, ...]) -> st.SearchStrategy[ScriptAction]:
    kinds = dict(zip(fds, kinds_, strict=True))
    """What a handler (or another thread, during the wait) may do: delete, add, update or revive
    any fd (its own included), send, drain, toggle a gate, notify, snapshot."""
    handler = st.none() | st.sampled_from(scripts)
    gate = st.none() | st.sampled_from(gates) if gates else st.none()
    streams = [f for f in fds if kinds[f] != "pipe-write"]
    register = st.builds(Set, st.sampled_from(fds), handler, handler, gate)
    delete = st.builds(Set, st.sampled_from(fds), st.none(), st.none(), st.none())
    # Registry changes from inside the walk are where loops go wrong: twice the weight.
    options: list[st.SearchStrategy[ScriptAction]] = [
        register, register, delete, delete, st.just(Notify()), st.just(Snapshot())
    ]
    if streams:
        options += [st.builds(Send, st.sampled_from(streams)), st.builds(Drain, st.sampled_from(streams))]
    if gates:
        options.append(st.builds(SetGate, st.sampled_from(gates), st.booleans()))
    return st.one_of(options)


@st.composite
def configs(draw: st.DrawFn, *, max_fds: int = 3, max_scripts: int = 3) -> Config:
    n = draw(st.integers(1, max_fds), label="fds")
    names = FD_NAMES[:n]
    kinds: dict[str, FdKind] = {f: draw(st.sampled_from(KINDS), label=f"kind {f}") for f in names}
    gates = {g: draw(st.booleans(), label=f"gate {g}") for g in ("g", "h")[: draw(st.integers(0, 2))]}
    snames = [f"s{i}" for i in range(draw(st.integers(1, max_scripts), label="scripts"))]
    acts = script_actions(names, kinds, snames, list(gates))
    scripts = {s: tuple(draw(st.lists(acts, max_size=3), label=s)) for s in snames}
    sent = {a.fd for body in scripts.values() for a in body if isinstance(a, Send)}
    # R22: a gate may run a script when fill consults it (vector field gate_scripts).
    runs = {g: draw(st.sampled_from(snames), label=f"{g} runs") for g in gates if draw(st.booleans())}
    return Config(kinds, gates, scripts, frozenset(f for f in names if f not in sent), runs)


# ------------------------------------------------------------------------------ the model


def folded_poll(env: Env, poll_set: PollSet, wakeup: bool) -> tuple[tuple[int, ...], int]:
    """model.env.poll as seen through `selectors` on epoll (SPEC R36): any kernel bit but IN
    makes it writable, any but OUT readable, both masked by the registered interest."""
    revents: list[int] = []
    for fd, events in poll_set:
        rev = model_env.readiness(env[fd]) & (events | HUP | ERR)
        r = M_IN if rev & ~M_OUT and events & M_IN else 0
        w = M_OUT if rev & ~M_IN and events & M_OUT else 0
        revents.append(r | w)
    return tuple(revents), sum(1 for r in revents if r) + (1 if wakeup else 0)


def model_step(
    world: World, action: Action, config: Config, *, fold: bool = False
) -> tuple[World, tuple[Event, ...]]:
    """model.iterate.step; with `fold`, over `folded_poll` (SPEC R36)."""
    return step(world, action, config.scripts, config.gate_runs, poll=folded_poll if fold else model_env.poll)


def world_for(config: Config) -> World:
    return initial_world(to_vector(config, ()))


# ----------------------------------------------------------------------- the real session


class CheckFailed(AssertionError):
    """A lockstep check failed; `tag` names the check."""

    tag = "?"

    def __init__(self, tag: str, message: str) -> None:
        super().__init__(f"[{tag}] {message}")
        self.tag = tag


_FAILURES: dict[str, type[CheckFailed]] = {}


def failure(tag: str, message: str) -> CheckFailed:
    """A CheckFailed of a class per tag: Hypothesis tells failures apart by exception type and
    place, so while shrinking it keeps to the check that failed first instead of drifting."""
    cls = _FAILURES.get(tag)
    if cls is None:
        cls = _FAILURES[tag] = type(f"CheckFailed_{tag}", (CheckFailed,), {})
    return cls(tag, message)


class _Script:
    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name

    def __call__(self, opaque: Any) -> None:
        self.session.on_call(str(opaque), self.name)
        for action in self.session.config.scripts[self.name]:
            self.session.act(action)

    def __repr__(self) -> str:
        return f"<script {self.name}>"


class _Gate:
    """A can-read gate; with a script (R22) it runs it when consulted, then answers its value."""

    def __init__(self, session: Session, name: str, value: bool) -> None:
        self.session = session
        self.name = name
        self.value = value
        self.script = session.config.gate_runs.get(name)

    def __call__(self, opaque: Any) -> bool:
        if self.script is not None:
            for action in self.session.config.scripts[self.script]:
                self.session.act(action)
        return self.value

    def __repr__(self) -> str:
        return f"<gate {self.name}>"


def _name(callback: object) -> str | None:
    return None if callback is None else str(getattr(callback, "name", callback))


_TFD = re.compile(r"^tfd:\s*(\d+)\s+events:\s*([0-9a-fA-F]+)", re.MULTILINE)


def kernel_registrations(loop: MainLoop) -> dict[int, int] | None:
    """fd -> IN/OUT interest the backend holds *now*. For epoll (and selectors, which is epoll on
    Linux) this is the kernel's own book, /proc/self/fdinfo of the epoll fd; for poll(2), which
    has no kernel registration, the poller's table. None if the loop's internals are unknown
    (the check is then skipped, never faked)."""
    poller = getattr(loop, "_poller", None)
    epfd: int | None = None
    if isinstance(poller, EpollPoller):
        epfd = poller._epoll.fileno()
    elif isinstance(poller, SelectorsPoller):
        epfd = poller._selector.fileno()  # DefaultSelector is epoll here
    elif isinstance(poller, PollPoller):
        return {fd: ev & (IN | OUT) for fd, ev in poller._fds.items()}
    if epfd is None:
        return None
    text = Path(f"/proc/self/fdinfo/{epfd}").read_text()
    # The kernel adds HUP/ERR to every registration: compare the interest that varies.
    return {int(fd): int(ev, 16) & (IN | OUT) for fd, ev in _TFD.findall(text)}


class _SessionTracer(Tracer):
    def __init__(self, session: Session) -> None:
        self.s = session

    def gate(self, fd: int, gate: Handler) -> None:
        self.s.events.append(GateEvent(self.s.names[fd], str(_name(gate))))

    def poll(self, entries: list[tuple[int, int]]) -> None:
        s = self.s
        s.events.append(PollEvent(tuple((s.names[fd], flag_names(ev)) for fd, ev in entries)))
        s.check_kernel(entries)
        during, s.during = s.during, ()
        for action in during:
            s.act(action)

    def ready(self, entries: list[tuple[int, int]], walk: bool) -> None:
        names = self.s.names
        self.s.events.append(ReadyEvent(tuple((names[fd], flag_names(ev)) for fd, ev in entries), walk))

    def read(self, fd: int, callback: Handler) -> None:
        self.s.check_role(self.s.names[fd], 0, callback)
        self.s.events.append(ReadEvent(self.s.names[fd], str(_name(callback))))

    def write(self, fd: int, callback: Handler) -> None:
        self.s.check_role(self.s.names[fd], 1, callback)
        self.s.events.append(WriteEvent(self.s.names[fd], str(_name(callback))))


class Session:
    """The real loop on real fds, one action at a time. `violations` collects what the checks
    made inside callbacks found (raising there would be caught and re-noted by the loop)."""

    def __init__(self, config: Config, poller: str, make_loop: LoopFactory = MainLoop) -> None:
        self.config = config
        self.events: list[Event] = []
        self.during: tuple[ScriptAction, ...] = ()
        self.violations: list[CheckFailed] = []
        self.scripts = {name: _Script(self, name) for name in config.scripts}
        self.gates = {name: _Gate(self, name, value) for name, value in config.gates.items()}
        # Shadow of what the session itself registered: fd -> (read, write), None once deleted.
        self.shadow: dict[str, tuple[str | None, str | None] | None] = {}
        self.fds: dict[str, RealFd] = {}
        self.loop: MainLoop | None = None
        try:
            for name, kind in config.fds.items():
                self.fds[name] = RealFd(kind)
            self.names = {f.fd: name for name, f in self.fds.items()}
            self.loop = make_loop(poller, tracer=_SessionTracer(self))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
            self.loop = None
        for f in self.fds.values():
            f.close()
        self.fds = {}

    # -- checks made while the loop runs

    def on_call(self, fd: str, script: str) -> None:
        """R17: a handler runs only for a live record, and only as its current handler."""
        current = self.shadow.get(fd)
        if current is None:
            self.violations.append(failure("R17", f"handler {script} ran for {fd}, whose record was deleted"))
        elif script not in current:
            self.violations.append(failure("R17", f"handler {script} ran for {fd}, whose handlers are {current}"))

    def check_role(self, fd: str, role: int, callback: Handler) -> None:
        current = self.shadow.get(fd)
        if current is None or current[role] != _name(callback):
            what = "read" if role == 0 else "write"
            self.violations.append(
                failure("R17", f"{what} handler {_name(callback)} about to run for {fd}; registered: {current}")
            )

    def check_kernel(self, entries: list[tuple[int, int]]) -> None:
        """While the loop waits, the backend polls exactly the poll set (plus the notifier)."""
        assert self.loop is not None
        regs = kernel_registrations(self.loop)
        if regs is None:
            return
        mine = {fd: ev for fd, ev in regs.items() if fd in self.names}
        want = {fd: ev & (IN | OUT) for fd, ev in entries}
        others = [fd for fd in regs if fd not in self.names]
        if mine != want or len(others) != 1:
            self.violations.append(failure(
                "kernel",
                f"backend registrations {self._show(mine)} (+{len(others)} other) while the poll set is "
                f"{self._show(want)} (+ the notifier)",
            ))

    def registered_fds(self) -> set[str] | None:
        """Handler fds the backend polls now (None: unknown backend)."""
        assert self.loop is not None
        regs = kernel_registrations(self.loop)
        return None if regs is None else {self.names[fd] for fd in regs if fd in self.names}

    def _show(self, regs: Mapping[int, int]) -> str:
        return "{" + ", ".join(f"{self.names[fd]}:{'|'.join(flag_names(ev))}" for fd, ev in sorted(regs.items())) + "}"

    def full_list(self) -> list[tuple[str, bool]] | None:
        """Every record the loop holds, deleted ones included, in list order; read from the
        loop's internals (records by fd, plus unreaped deleted ones), None if they are unknown."""
        loop = self.loop
        by_fd = getattr(loop, "_by_fd", None)
        deleted = getattr(loop, "_deleted", None)
        if not isinstance(by_fd, dict) or not isinstance(deleted, set):
            return None
        held = {id(r): r for r in [*by_fd.values(), *deleted]}
        try:
            ordered = sorted(held.values(), key=lambda r: r.seq, reverse=True)
            return [(self.names[r.fd], bool(r.deleted)) for r in ordered]
        except AttributeError:
            return None

    def live_rows(self) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
        assert self.loop is not None
        return tuple(
            (self.names[r.fd], _name(r.read), _name(r.write), _name(r.can_read)) for r in self.loop.records()
        )

    # -- actions

    def run(self, action: Action) -> list[Event]:
        start = len(self.events)
        self.act(action)
        return self.events[start:]

    def act(self, action: Action) -> None:
        loop = self.loop
        assert loop is not None
        match action:
            case Set(fd, read, write, gate):
                loop.set_fd_handler(
                    self.fds[fd].fd,
                    self.scripts[read] if read is not None else None,
                    self.scripts[write] if write is not None else None,
                    can_read=self.gates[gate] if gate is not None else None,
                    opaque=fd,
                )
                if read is None and write is None:
                    if fd in self.shadow:
                        self.shadow[fd] = None
                else:
                    self.shadow[fd] = (read, write)
                # R1 right after each registration: a duplicate may be reaped before the step ends.
                held = self.full_list()
                if held is not None and len({f for f, _ in held}) != len(held):
                    self.violations.append(failure("R1", f"two records for one fd after {action}: {held}"))
            case Send(fd):
                self.fds[fd].send()
            case Drain(fd):
                self.fds[fd].drain()
            case Hangup(fd):
                self.fds[fd].hangup()
            case SetGate(gate, value):
                self.gates[gate].value = value
            case Notify():
                loop.notify()
            case Snapshot():
                self.events.append(HandlersEvent(self.live_rows()))
            case Iterate(during_wait):
                self.during = during_wait
                try:
                    loop.main_loop_wait(nonblocking=True)
                finally:
                    self.during = ()


# ------------------------------------------------------------------------------- printing


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
        case SetGate(gate, value):
            return f"gate {gate}={'open' if value else 'closed'}"
        case Notify():
            return "notify"
        case Snapshot():
            return "snapshot"
        case Iterate(during):
            return "iterate" + (f" (during the wait: {'; '.join(map(describe_action, during))})" if during else "")
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
            return "handlers [" + ", ".join(
                f"{fd}(" + ",".join(x or "-" for x in (r, w, g)) + ")" for fd, r, w, g in rows
            ) + "]"
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


def to_vector(config: Config, steps: Sequence[Action], expect: Sequence[Event] | None = None,
              name: str = "lockstep-counterexample", description: str = "") -> Vector:
    """Unused scripts and gates are kept: a script may name them."""
    return Vector(
        name=name,
        description=description or "A counterexample found by tests/test_lockstep.py; expect is the model's trace.",
        rules=(),
        fds=dict(config.fds),
        scripts=dict(config.scripts),
        gates=dict(config.gates),
        steps=tuple(steps),
        expect=tuple(expect) if expect is not None else None,
        extra={"gate_scripts": dict(config.gate_runs)} if config.gate_runs else {},
    )


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


# ------------------------------------------------------------------------ the state machine


class Lockstep:
    """One lockstep run: each `do(action)` runs the action on the model and on the real loop and
    compares their events; `check()` is the invariants; `close()` the leak check. Plain code, so
    a counterexample can be replayed and minimised without Hypothesis (`replay`, `minimise`)."""

    def __init__(self, config: Config, poller: str, make_loop: LoopFactory = MainLoop, *,
                 fold: bool | None = None) -> None:
        self.config = config
        self.fold = poller == "selectors" if fold is None else fold
        self.steps: list[Action] = []
        self.baseline = open_fds()
        self.world = world_for(config)
        self.session: Session | None = Session(config, poller, make_loop)

    def fail(self, tag: str, message: str) -> CheckFailed:
        return failure(tag, f"{message}\n\n{counterexample(self.config, self.steps, fold=self.fold)}")

    def do(self, action: Action) -> None:
        assert self.session is not None
        self.steps.append(action)
        self.world, want = model_step(self.world, action, self.config, fold=self.fold)
        got = self.session.run(action)
        if self.session.violations:
            v = self.session.violations[0]
            raise self.fail(v.tag, str(v).split("] ", 1)[1])
        if list(want) != got:
            raise self.fail("trace", "the loop's events differ from the model's at the last step\n"
                            + _diff(list(want), got))

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
            leaked = open_fds() - self.baseline
            if leaked > 0:
                raise self.fail("leak", f"{leaked} fd(s) still open after the loop and the test's fds were closed")

    def check(self) -> None:
        if self.session is None:
            return
        s = self.session
        # R1: at most one record per fd, deleted-but-unreaped ones counted.
        if not fds_unique(self.world.loop.records):
            raise self.fail("R1", "the model holds two records for one fd")
        held = s.full_list()
        rows = [fd for fd, *_ in s.live_rows()]
        fds = [fd for fd, _ in held] if held is not None else rows
        if len(set(fds)) != len(fds):
            raise self.fail("R1", f"the loop holds two records for one fd: {held or rows}")
        # The registry, live records and deleted ones, in the model's order.
        want_live = tuple((r.fd, r.read, r.write, r.gate) for r in live_records(self.world.loop))
        got_live = s.live_rows()
        if want_live != got_live:
            raise self.fail("order", f"live records: loop {got_live}, model {want_live}")
        want = [(r.fd, r.deleted) for r in self.world.loop.records]
        if held is not None and held != want:
            raise self.fail("order", f"records incl. deleted (fd, deleted): loop {held}, model {want}")
        # Between iterations the backend polls only fds that still have a record: a reaped
        # record's registration is gone (no leak in the kernel).
        regs = s.registered_fds()
        present = {r.fd for r in self.world.loop.records}
        if regs is not None and not regs <= present:
            raise self.fail("kernel", f"backend still polls {sorted(regs - present)}, which have no record")


def replay(config: Config, steps: Sequence[Action], poller: str, make_loop: LoopFactory = MainLoop
           ) -> CheckFailed | None:
    """Run `steps` in lockstep; the first failed check, or None."""
    run: Lockstep | None = None
    try:
        run = Lockstep(config, poller, make_loop)
        for action in steps:
            run.do(action)
            run.check()
        run.close()
    except CheckFailed as e:
        return e
    except model_env.InvalidAction:
        return None  # a shortened sequence the vector format forbids: not a counterexample
    finally:
        if run is not None and run.session is not None:
            run.session.close()
    return None


def minimise(config: Config, steps: Sequence[Action], poller: str, make_loop: LoopFactory = MainLoop
             ) -> tuple[Config, list[Action], CheckFailed]:
    """Greedy delta debugging: drop single steps, single during_wait actions, then single script
    actions, while the same check still fails; then drop what nothing names. Cheap next to
    Hypothesis' stateful shrinker, and it gives the counterexample's length in steps."""
    first = replay(config, steps, poller, make_loop)
    assert first is not None, "not a counterexample"
    best, err = list(steps), first

    def still(c: Config, cand: list[Action]) -> CheckFailed | None:
        e = replay(c, cand, poller, make_loop)
        return e if e is not None and e.tag == err.tag else None

    changed = True
    while changed:
        changed = False
        for cand in _smaller_steps(best):
            e = still(config, cand)
            if e is not None:
                best, err, changed = cand, e, True
                break
    for name in list(config.scripts):
        i = 0
        while i < len(config.scripts[name]):
            body = config.scripts[name]
            smaller = replace(config, scripts={**config.scripts, name: body[:i] + body[i + 1 :]})
            e = still(smaller, best)
            if e is not None:
                config, err = smaller, e
            else:
                i += 1
    pruned = _pruned(config, best)
    e = still(pruned, best)
    if e is not None:
        config, err = pruned, e
    return config, best, err


def _smaller_steps(steps: list[Action]) -> Iterator[list[Action]]:
    for i, a in enumerate(steps):
        yield [*steps[:i], *steps[i + 1 :]]
        if isinstance(a, Iterate):
            for j in range(len(a.during_wait)):
                yield [*steps[:i], Iterate(a.during_wait[:j] + a.during_wait[j + 1 :]), *steps[i + 1 :]]


def _pruned(config: Config, steps: Sequence[Action]) -> Config:
    """Only the scripts, gates and fds that the steps (and what they run) name."""
    used_scripts: set[str] = set()
    todo: list[ScriptAction | Iterate] = list(steps)
    seen_gates: set[str] = set()
    fds: set[str] = set()
    while todo:
        a = todo.pop()
        if isinstance(a, Iterate):
            todo += a.during_wait
            continue
        fd = getattr(a, "fd", None)
        if fd is not None:
            fds.add(fd)
        names: list[str] = []
        if isinstance(a, Set):
            names = [n for n in (a.read, a.write) if n is not None]
            if a.gate is not None:
                seen_gates.add(a.gate)
                if a.gate in config.gate_runs:
                    names.append(config.gate_runs[a.gate])
        elif isinstance(a, SetGate):
            seen_gates.add(a.gate)
        for n in names:
            if n not in used_scripts:
                used_scripts.add(n)
                todo += config.scripts[n]
    return Config(
        fds={f: k for f, k in config.fds.items() if f in fds},
        gates={g: v for g, v in config.gates.items() if g in seen_gates},
        scripts={n: b for n, b in config.scripts.items() if n in used_scripts},
        hangable=frozenset(f for f in config.hangable if f in fds),
        gate_runs={g: n for g, n in config.gate_runs.items() if g in seen_gates},
    )


class LockstepMachine(RuleBasedStateMachine):
    """Each rule is one vector action, run on the model and on the real loop (`Lockstep`); the
    invariants hold after every step. Subclasses (`machine_for`) fix the poller and the loop."""

    poller: ClassVar[str] = "epoll"
    make_loop: ClassVar[LoopFactory] = MainLoop
    stats: ClassVar[dict[str, int]] = {"examples": 0, "steps": 0}
    failures: ClassVar[list[tuple[Config, list[Action]]]] = []  # each failing run, in order

    def __init__(self) -> None:
        super().__init__()
        self.config: Config | None = None
        self.run: Lockstep | None = None

    @initialize(config=configs())
    def start(self, config: Config) -> None:
        self.config = config
        self.run = Lockstep(config, self.poller, type(self).make_loop)
        type(self).stats["examples"] += 1

    def teardown(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.close()
            except CheckFailed:
                type(self).failures.append((run.config, list(run.steps)))
                raise

    @property
    def world(self) -> World:
        assert self.run is not None
        return self.run.world

    def do(self, action: Action) -> None:
        assert self.run is not None
        type(self).stats["steps"] += 1
        try:
            self.run.do(action)
        except CheckFailed:
            type(self).failures.append((self.run.config, list(self.run.steps)))
            raise

    @invariant()
    def lockstep_invariants(self) -> None:
        if self.run is None:
            return
        try:
            self.run.check()
        except CheckFailed:
            type(self).failures.append((self.run.config, list(self.run.steps)))
            raise

    # -- rules: the actions of a vector

    @rule(data=st.data())
    def set_handler(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(data.draw(_strategies(self.config).register, label="set"))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(data.draw(_strategies(self.config).delete, label="delete"))

    @precondition(lambda self: self.config is not None and any(self._can_send(f) for f in self.config.fds))
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(Send(_pick(data, [f for f in self.config.fds if self._can_send(f)], "send")))

    @precondition(lambda self: self.config is not None and bool(self.config.sendable()))
    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(Drain(_pick(data, self.config.sendable(), "drain")))

    @precondition(lambda self: self.config is not None and bool(self.config.hangable))
    @rule(data=st.data())
    def hangup(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(Hangup(_pick(data, sorted(self.config.hangable), "hangup")))

    @precondition(lambda self: self.config is not None and bool(self.config.gates))
    @rule(data=st.data(), value=st.booleans())
    def toggle_gate(self, data: st.DataObject, value: bool) -> None:
        assert self.config is not None
        self.do(SetGate(_pick(data, list(self.config.gates), "gate"), value))

    @rule()
    def notify(self) -> None:
        self.do(Notify())

    @rule()
    def snapshot(self) -> None:
        self.do(Snapshot())

    @rule(data=st.data())
    def iterate(self, data: st.DataObject) -> None:
        assert self.config is not None
        during = data.draw(_strategies(self.config).during_wait, label="during_wait")
        self.do(Iterate(tuple(self._valid(during))))

    @rule()
    def iterate_plain(self) -> None:
        self.do(Iterate())  # the common case, cheap to shrink to

    def _can_send(self, fd: str) -> bool:
        assert self.config is not None
        return self.config.fds[fd] != "pipe-write" and not self.world.env[fd].hung_up

    def _valid(self, actions: Sequence[ScriptAction]) -> list[ScriptAction]:
        """Drop sends that would follow a hangup (the vector would be invalid)."""
        hung = {f for f, s in self.world.env.pairs if s.hung_up}
        out: list[ScriptAction] = []
        for a in actions:
            if isinstance(a, Hangup):
                hung.add(a.fd)
            elif isinstance(a, Send) and a.fd in hung:
                continue
            out.append(a)
        return out


@dataclass(frozen=True)
class _Strategies:
    register: st.SearchStrategy[Set]
    delete: st.SearchStrategy[Set]
    during_wait: st.SearchStrategy[list[ScriptAction]]


def _strategies(c: Config) -> _Strategies:
    return _strategies_for(tuple(c.fds.items()), tuple(c.scripts), tuple(c.gates), tuple(sorted(c.hangable)))


@functools.lru_cache(maxsize=512)
def _strategies_for(fds: tuple[tuple[str, FdKind], ...], scripts: tuple[str, ...], gates: tuple[str, ...],
                    hangable: tuple[str, ...]) -> _Strategies:
    names = [f for f, _ in fds]
    handler = st.none() | st.sampled_from(scripts)
    gate = st.none() | st.sampled_from(gates) if gates else st.none()
    acts = script_actions(names, dict(fds), scripts, gates)
    if hangable:
        acts = acts | st.builds(Hangup, st.sampled_from(hangable))
    return _Strategies(
        register=st.builds(Set, st.sampled_from(names), handler, handler, gate),
        delete=st.builds(Set, st.sampled_from(names), st.none(), st.none(), st.none()),
        during_wait=st.lists(acts, max_size=2),
    )


@functools.lru_cache(maxsize=16)
def _indices(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


def _pick(data: st.DataObject, options: Sequence[str], label: str) -> str:
    return options[data.draw(_indices(len(options)), label=label)]


def _diff(want: list[Event], got: list[Event]) -> str:
    lines = []
    for i in range(max(len(want), len(got))):
        w = describe_event(want[i]) if i < len(want) else "(nothing)"
        g = describe_event(got[i]) if i < len(got) else "(nothing)"
        lines.append(f"  {'  ' if w == g else '!!'} model: {w:<40} loop: {g}")
    return "\n".join(lines)


def machine_for(poller: str, make_loop: LoopFactory = MainLoop, *, name: str | None = None) -> type[LockstepMachine]:
    """A machine class of its own (own stats) for one poller and loop factory. selectors is
    compared against the folded model (SPEC R36), with hangups allowed."""
    attrs: dict[str, Any] = {
        "poller": poller,
        "make_loop": staticmethod(make_loop),
        "stats": {"examples": 0, "steps": 0},
        "failures": [],
    }
    return type(name or f"Lockstep_{poller}", (LockstepMachine,), attrs)


# --------------------------------------------------------------- R34: fd-number reuse


def fd_reuse_scenario(make_loop: LoopFactory, poller: str, *, iterate_first: bool, delete_first: bool,
                      ready_old: bool) -> int:
    """R34: after the loop's fd is closed and its number reused by a new, readable file, the old
    record's handler is never called for the new file (ClosedFdError may say so), and
    registering the number again reaches the new file's handler. Vectors cannot say "close the
    loop's fd", so this is a scenario of its own. Returns how many loop operations it made."""
    import contextlib

    from iohandler.impl import ClosedFdError

    calls: list[str] = []
    ops = 0

    def wait(loop: MainLoop) -> None:
        nonlocal ops
        ops += 1
        with contextlib.suppress(ClosedFdError):  # R33: reporting the closed fd is allowed
            loop.main_loop_wait(nonblocking=True)

    old, old_peer = socket.socketpair()
    new: socket.socket | None = None
    new_peer: socket.socket | None = None
    loop = make_loop(poller)
    try:
        loop.set_fd_handler(old, lambda _: calls.append("old"))
        ops += 1
        if ready_old:
            old_peer.send(b"x")
        if iterate_first:
            wait(loop)
        calls.clear()
        number = old.fileno()
        if delete_first:
            loop.set_fd_handler(number, None)
            ops += 1
        old.close()
        new, new_peer = socket.socketpair()
        if new.fileno() != number:  # force the reuse
            os.dup2(new.fileno(), number)
            new.close()
            new = socket.socket(fileno=number)
        new_peer.send(b"y")
        for _ in range(2):
            wait(loop)
            if calls:
                raise failure("R34", f"the old handler ran for the new file that reused fd {number} ({poller})")
        loop.set_fd_handler(new, lambda _: calls.append("new"))
        ops += 1
        for _ in range(2):
            wait(loop)
        if calls[:1] != ["new"] or "old" in calls:
            raise failure("R34", f"after re-registering fd {number} the calls were {calls} ({poller})")
        return ops
    finally:
        loop.close()
        for s in (old, old_peer, new, new_peer):
            if s is not None:
                s.close()


# ===================================================== exhaustive bounded exploration (model)
# Used by tests/test_exhaustive.py (the search and its checks) and tests/test_catalogue.py
# (the shortest sequence of the alphabet that kills a planted bug).

# ------------------------------------------------------------------------------- the scope

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


# ------------------------------------------------------------------------- the invariants


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


# ----------------------------------------------------------------------------- the search


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


