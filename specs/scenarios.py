"""Scenario strategies: the Hypothesis strategies that generate valid vectors (VECTORS.md).

One set of strategies for `iohandler fuzz` (specs/fuzz.py) and the lockstep suite
(tests/harness/): a `Config` is a vector's symbolic world (fds, gates, scripts, gate scripts),
drawn by `configs()`; `step_actions(config)` draws the steps; `vectors()` draws whole vectors.
Scripts delete, add, update and revive any fd, their own included (R5, R17, R18); gates may run
scripts when consulted (R22); `iterate` carries `during_wait` actions (R20).

Validity: a send after its fd's hangup is an invalid vector (VECTORS.md). Scripts never send to
a `hangable` fd, and steps drop sends that would follow a hangup (`drop_invalid_sends`), so the
model's `InvalidAction` is never raised for a generated vector.

With `context=True` (format v3, SPEC R42 on) the config has bottom halves, created by the first
steps (so every `bh-*` action names a created BH), and scripts and steps also schedule, cancel,
delete and create BHs, register context handlers and poll the context (`ctx-poll`, not in
`during_wait`). A vector whose polls re-enter without end is invalid; `vectors` draws again.

Needs Hypothesis (the `fuzz` extra); the other modules of `iohandler.specs` do not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st

from iohandler.specs.vector import (
    Action,
    BhCancel,
    BhDelete,
    BhNew,
    BhSchedule,
    BhScheduleIdle,
    CtxPoll,
    CtxSet,
    Drain,
    Event,
    FdKind,
    Hangup,
    Iterate,
    Notify,
    Raise,
    ScriptAction,
    Send,
    Set,
    SetGate,
    Snapshot,
    Timeout,
    Vector,
)

Scripts = Mapping[str, tuple[ScriptAction, ...]]

FD_NAMES = ("a", "b", "c")
BH_NAMES = ("p", "q")
CTX_FD_NAMES = ("x", "y")
KINDS: tuple[FdKind, ...] = ("socket", "pipe-read", "pipe-write")
# With `signals` (the lockstep suite): signal fds too, which take raise and drain, never send or
# hangup (VECTORS.md, format v3). `iohandler fuzz` leaves them out: a porter's driver need not
# raise signals.
SIGNAL_KINDS: tuple[FdKind, ...] = (*KINDS, "signal")


@dataclass(frozen=True)
class Config:
    """A vector's symbolic world. `hangable`: fds no script sends to, so a hangup can never make
    a later send invalid. `gate_runs`: gate -> script it runs when consulted (R22)."""

    fds: Mapping[str, FdKind]
    gates: Mapping[str, bool]
    scripts: Scripts
    hangable: frozenset[str] = field(default_factory=frozenset)
    gate_runs: Mapping[str, str] = field(default_factory=dict)
    bhs: Mapping[str, str] = field(default_factory=dict)  # format v3: BH name -> its script
    ctx_fds: frozenset[str] = field(default_factory=frozenset)  # format v3: the context's fds (only ctx-set)

    def setup(self) -> list[Action]:
        """The steps that create the config's BHs (before any other step)."""
        return [BhNew(name, script) for name, script in self.bhs.items()]

    def sendable(self) -> list[str]:
        return [f for f, k in self.fds.items() if k not in ("pipe-write", "signal")]

    def drainable(self) -> list[str]:
        return [f for f, k in self.fds.items() if k != "pipe-write"]

    def raisable(self) -> list[str]:
        return [f for f, k in self.fds.items() if k == "signal"]


def config_of(vector: Vector, gate_runs: Mapping[str, str] | None = None) -> Config:
    """A vector's world as a Config (`gate_runs`: the vector's parsed gate scripts). Its BHs are
    left in the steps (their `bh-new`s are steps like any other)."""
    sent = {a.fd for body in vector.scripts.values() for a in body if isinstance(a, Send)}
    return Config(
        dict(vector.fds),
        dict(vector.gates),
        dict(vector.scripts),
        frozenset(f for f in vector.fds if f not in sent and vector.fds[f] != "signal"),
        dict(gate_runs or {}),
    )


def to_vector(
    config: Config,
    steps: Sequence[Action],
    expect: Sequence[Event] | None = None,
    name: str = "lockstep-counterexample",
    description: str = "",
) -> Vector:
    """A vector (v2 when it has gate scripts); unused scripts and gates are kept (a script may name them)."""
    return Vector(
        name=name,
        description=description or "A counterexample found by the lockstep suite; expect is the model's trace.",
        rules=(),
        fds=dict(config.fds),
        scripts=dict(config.scripts),
        gates=dict(config.gates),
        steps=tuple(steps),
        expect=tuple(expect) if expect is not None else None,
        gate_scripts=dict(config.gate_runs),
    )


# ------------------------------------------------------------------------------ strategies


def script_actions(
    fds: Sequence[str],
    kinds: Mapping[str, FdKind],
    scripts: Sequence[str],
    gates: Sequence[str],
    bhs: Sequence[str] = (),
    *,
    in_wait: bool = False,
    ctx_fds: Sequence[str] = (),
) -> st.SearchStrategy[ScriptAction]:
    """What a handler (or another thread, during the wait) may do: delete, add, update or revive
    any fd (its own included), send, drain, toggle a gate, notify, snapshot; with `bhs` (format
    v3) also act on the BHs and the handlers of `ctx_fds` (the context's fds, which `set` leaves
    alone: an fd is in one list only), and poll the context (not `in_wait`)."""
    # Built strategies are cached: building and validating them anew on every draw was most of
    # the lockstep machine's time.
    return _script_actions(
        tuple(fds), tuple(kinds[f] for f in fds), tuple(scripts), tuple(gates), tuple(bhs), in_wait, tuple(ctx_fds)
    )


def context_actions(
    fds: Sequence[str], scripts: Sequence[str], bhs: Sequence[str], *, in_wait: bool = False
) -> list[st.SearchStrategy[ScriptAction]]:
    """Format v3's actions over the config's BHs and fds (SPEC R42-R50), as weighted options."""
    return list(_context_actions(tuple(fds), tuple(scripts), tuple(bhs), in_wait))


@functools.lru_cache(maxsize=512)
def _context_actions(
    fds: tuple[str, ...], scripts: tuple[str, ...], bhs: tuple[str, ...], in_wait: bool
) -> tuple[st.SearchStrategy[ScriptAction], ...]:
    bh = st.sampled_from(bhs)
    handler = st.none() | st.sampled_from(scripts)
    options: list[st.SearchStrategy[ScriptAction]] = [
        st.builds(BhSchedule, bh),
        st.builds(BhSchedule, bh),
        st.builds(BhScheduleIdle, bh),
        st.builds(BhCancel, bh),
        st.builds(BhDelete, bh),
        st.builds(BhNew, bh, st.sampled_from(scripts)),
        # As for the fd-handler list, registrations are where loops go wrong: twice the weight.
        st.builds(CtxSet, st.sampled_from(fds), handler, handler),
        st.builds(CtxSet, st.sampled_from(fds), handler, handler),
        st.builds(CtxSet, st.sampled_from(fds), st.none(), st.none()),
        st.just(Timeout()),
    ]
    if not in_wait:  # aio_poll runs in the loop's thread only (R46)
        options.append(st.just(CtxPoll()))
    return tuple(options)


@functools.lru_cache(maxsize=512)
def _script_actions(
    fds: tuple[str, ...],
    kinds_: tuple[FdKind, ...],
    scripts: tuple[str, ...],
    gates: tuple[str, ...],
    bhs: tuple[str, ...] = (),
    in_wait: bool = False,
    ctx_fds: tuple[str, ...] = (),
) -> st.SearchStrategy[ScriptAction]:
    kinds = dict(zip(fds, kinds_, strict=True))
    handler = st.none() | st.sampled_from(scripts)
    gate = st.none() | st.sampled_from(gates) if gates else st.none()
    streams = [f for f in fds if kinds[f] not in ("pipe-write", "signal")]
    drainable = [f for f in fds if kinds[f] != "pipe-write"]
    signals = [f for f in fds if kinds[f] == "signal"]
    main = [f for f in fds if f not in ctx_fds]
    register = st.builds(Set, st.sampled_from(main), handler, handler, gate)
    delete = st.builds(Set, st.sampled_from(main), st.none(), st.none(), st.none())
    # Registry changes from inside the walk are where loops go wrong: twice the weight.
    options: list[st.SearchStrategy[ScriptAction]] = [
        register,
        register,
        delete,
        delete,
        st.just(Notify()),
        st.just(Snapshot()),
    ]
    if streams:
        options.append(st.builds(Send, st.sampled_from(streams)))
    if drainable:
        options.append(st.builds(Drain, st.sampled_from(drainable)))
    if signals:
        options.append(st.builds(Raise, st.sampled_from(signals)))
    if gates:
        options.append(st.builds(SetGate, st.sampled_from(gates), st.booleans()))
    if bhs:
        options += context_actions(ctx_fds, scripts, bhs, in_wait=in_wait)
        # Input on the context's fds, or its read handlers would rarely run.
        if ctx_streams := [f for f in ctx_fds if kinds[f] != "pipe-write"]:
            options.append(st.builds(Send, st.sampled_from(ctx_streams)))
    return st.one_of(options)


@st.composite
def configs(
    draw: st.DrawFn,
    *,
    max_fds: int = 3,
    max_scripts: int = 3,
    gate_scripts: bool = True,
    context: bool = False,
    signals: bool = False,
) -> Config:
    """A world: 1..max_fds fds of any kind (`signals`: the signal kind too), 0..2 gates, scripts
    of up to 3 actions, and (with `gate_scripts`) gates that run a script when consulted (R22);
    with `context` (format v3), 1..2 BHs, each running one of the scripts, and 1..2 more fds for
    the context's handlers."""
    n = draw(_between(1, max_fds), label="fds")
    names = FD_NAMES[:n]
    kind = _SIGNAL_KIND if signals else _KIND
    kinds: dict[str, FdKind] = {f: draw(kind, label=f"kind {f}") for f in names}
    gates = {g: draw(_BOOL, label=f"gate {g}") for g in ("g", "h")[: draw(_between(0, 2))]}
    snames = tuple(f"s{i}" for i in range(draw(_between(1, max_scripts), label="scripts")))
    bh_names = BH_NAMES[: draw(_between(1, len(BH_NAMES)), label="bhs")] if context else ()
    ctx_names = CTX_FD_NAMES[: draw(_between(1, len(CTX_FD_NAMES)), label="context fds")] if context else ()
    kinds.update({f: draw(_KIND, label=f"kind {f}") for f in ctx_names})
    names = (*names, *ctx_names)
    bodies = _bodies(names, tuple(kinds[f] for f in names), snames, tuple(gates), bh_names, ctx_names)
    scripts = {s: tuple(draw(bodies, label=s)) for s in snames}
    sent = {a.fd for body in scripts.values() for a in body if isinstance(a, Send)}
    runs = {g: draw(_sampled(snames), label=f"{g} runs") for g in gates if draw(_BOOL)} if gate_scripts else {}
    hangable = frozenset(f for f in names if f not in sent and kinds[f] != "signal")
    bhs = {b: draw(_sampled(snames), label=f"{b} runs") for b in bh_names}
    return Config(kinds, gates, scripts, hangable, runs, bhs, frozenset(ctx_names))


# Strategies are built once: building and validating them on every draw was most of the cost.
_KIND = st.sampled_from(KINDS)
_SIGNAL_KIND = st.sampled_from(SIGNAL_KINDS)
_BOOL = st.booleans()


@functools.lru_cache(maxsize=64)
def _between(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(lo, hi)


@functools.lru_cache(maxsize=64)
def _sampled(options: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.sampled_from(options)


@functools.lru_cache(maxsize=512)
def _bodies(
    fds: tuple[str, ...],
    kinds: tuple[FdKind, ...],
    scripts: tuple[str, ...],
    gates: tuple[str, ...],
    bhs: tuple[str, ...] = (),
    ctx_fds: tuple[str, ...] = (),
) -> st.SearchStrategy[list[ScriptAction]]:
    return st.lists(_script_actions(fds, kinds, scripts, gates, bhs, False, ctx_fds), max_size=3)


@dataclass(frozen=True)
class ActionStrategies:
    """Per-config strategies for the steps of a vector."""

    register: st.SearchStrategy[Set]
    delete: st.SearchStrategy[Set]
    during_wait: st.SearchStrategy[list[ScriptAction]]
    step: st.SearchStrategy[Action]


def action_strategies(c: Config) -> ActionStrategies:
    return _strategies_for(
        tuple(c.fds.items()),
        tuple(c.scripts),
        tuple(c.gates),
        tuple(sorted(c.hangable)),
        tuple(c.bhs),
        tuple(sorted(c.ctx_fds)),
    )


@functools.lru_cache(maxsize=512)
def _strategies_for(
    fds: tuple[tuple[str, FdKind], ...],
    scripts: tuple[str, ...],
    gates: tuple[str, ...],
    hangable: tuple[str, ...],
    bhs: tuple[str, ...] = (),
    ctx_fds: tuple[str, ...] = (),
) -> ActionStrategies:
    names = [f for f, _ in fds]
    main = [f for f in names if f not in ctx_fds]
    handler = st.none() | st.sampled_from(scripts)
    gate = st.none() | st.sampled_from(gates) if gates else st.none()
    acts = script_actions(names, dict(fds), scripts, gates, bhs, in_wait=True, ctx_fds=ctx_fds)
    if hangable:
        acts = acts | st.builds(Hangup, st.sampled_from(hangable))
    register = st.builds(Set, st.sampled_from(main), handler, handler, gate)
    delete = st.builds(Set, st.sampled_from(main), st.none(), st.none(), st.none())
    during_wait = st.lists(acts, max_size=2)
    # One branch per kind of step, as the lockstep machine has one rule per kind: nesting them
    # (a step is a script action or an iterate) made sends, and so ready fds, rare.
    kinds = dict(fds)
    streams = [f for f in names if kinds[f] not in ("pipe-write", "signal")]
    drainable = [f for f in names if kinds[f] != "pipe-write"]
    signals = [f for f in names if kinds[f] == "signal"]
    options: list[st.SearchStrategy[Action]] = [register, register, delete, st.just(Notify()), st.just(Snapshot())]
    if streams:
        options += [st.builds(Send, st.sampled_from(streams))] * 2
    if drainable:
        options.append(st.builds(Drain, st.sampled_from(drainable)))
    if signals:
        options += [st.builds(Raise, st.sampled_from(signals))] * 2
    if hangable:
        options.append(st.builds(Hangup, st.sampled_from(hangable)))
    if gates:
        options.append(st.builds(SetGate, st.sampled_from(gates), st.booleans()))
    options += [st.just(Iterate()), st.just(Iterate()), st.builds(lambda d: Iterate(tuple(d)), during_wait)]
    if bhs:
        options += context_actions(ctx_fds, scripts, bhs)
        if ctx_streams := [f for f in ctx_fds if kinds[f] != "pipe-write"]:
            options += [st.builds(Send, st.sampled_from(ctx_streams))] * 2
    step = st.one_of(options)
    return ActionStrategies(register, delete, during_wait, step)


def drop_invalid_sends(actions: Iterable[Action], hung: set[str]) -> list[Action]:
    """`actions` without the sends that would follow their fd's hangup (an invalid vector);
    `hung` (the fds hung up so far) is updated in place, `during_wait` actions included."""
    out: list[Action] = []
    for a in actions:
        if isinstance(a, Hangup):
            hung.add(a.fd)
        elif isinstance(a, Send) and a.fd in hung:
            continue
        elif isinstance(a, Iterate):
            kept = drop_invalid_sends(a.during_wait, hung)
            a = Iterate(tuple(x for x in kept if not isinstance(x, Iterate)))
        out.append(a)
    return out


@st.composite
def vectors(
    draw: st.DrawFn,
    *,
    max_steps: int = 20,
    gate_scripts: bool = True,
    name: str = "fuzz",
    context: bool = False,
    valid: Callable[[Vector], bool] | None = None,
) -> Vector:
    """A whole valid vector (without `expect`): a config, then up to `max_steps` steps; with
    `context`, half of them format v3 vectors (their first steps create the BHs), so the fd
    handlers' own cases stay as dense as without. A v3 vector `valid` refuses (the fuzzer's
    oracle: polls that re-enter without end) is drawn again."""
    context = context and draw(_BOOL, label="context")
    config = draw(_configs(gate_scripts, context), label="config")
    step = action_strategies(config).step
    # A "go on?" draw before each step rather than st.lists: lists average about 5 elements,
    # this about 11 (capped at max_steps), and the shrinker still deletes steps from the middle.
    steps: list[Action] = []
    while len(steps) < max_steps and draw(_go_on):
        steps.append(draw(step))
    vector = to_vector(
        config,
        config.setup() + drop_invalid_sends(steps, set()),
        name=name,
        description="Generated by iohandler fuzz; expect is the model's trace.",
    )
    if context and valid is not None:
        from hypothesis import assume

        assume(valid(vector))
    return vector


@functools.lru_cache(maxsize=4)
def _configs(gate_scripts: bool, context: bool = False) -> st.SearchStrategy[Config]:
    return configs(gate_scripts=gate_scripts, context=context)


# Uniform over its options (integers favour their bounds), and it shrinks to the first: stop.
_go_on = st.sampled_from((False, *[True] * 11))


def smaller_steps(steps: Sequence[Action]) -> Iterator[list[Action]]:
    """Each `steps` with one step, or one `during_wait` action, left out (for delta debugging)."""
    for i, a in enumerate(steps):
        yield [*steps[:i], *steps[i + 1 :]]
        if isinstance(a, Iterate):
            for j in range(len(a.during_wait)):
                yield [*steps[:i], Iterate(a.during_wait[:j] + a.during_wait[j + 1 :]), *steps[i + 1 :]]


def pruned(config: Config, steps: Sequence[Action]) -> Config:
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
        elif isinstance(a, CtxSet):
            names = [n for n in (a.read, a.write) if n is not None]
        elif isinstance(a, BhNew):
            names = [a.script]
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
