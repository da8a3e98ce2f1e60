"""Bounded-exhaustive conformance: `iohandler conform --exhaustive`.

The model's state space, closed: from the initial world of a configuration (`Scope`: fds,
gates, scripts, an alphabet of steps), every step of the alphabet is taken from every state
reached, breadth first, until no new state appears (`explore`). The closure is then walked:
covering walks from the initial state take every transition (state x enabled step) at least
once (`covering_walks`), each walk a vector whose expected trace is the model's. A driver that
passes them all has, within the configuration's bounds, the model's trace on every reachable
transition (SPEC.md, "Exhaustive conformance").

This is the project's one closure search. It is generic over the model's steps: a step is
whatever `model.iterate.step` takes, and `explore` takes the step function as an argument
(`StepFn`), so the test suite's closures (tests/exploration.py) run this same search with its
invariant checks in each step, over the same scopes: the fd-handler ones (`fd_scopes`), the
signal fd's (`signal_scope`) and the context's (`context_scopes`, format v3).

* the scope (`Scope`): fds, gates, scripts (data), optional gate scripts (R22), the alphabet of
  steps, the BHs of the initial state (format v3), and an optional symmetry: two fds of one
  kind that are interchangeable once the scripts naming them are swapped too (checked, not
  assumed: `Scope.check_symmetry`);
* the state encoding (`encode`/`decode`): a World as nested tuples of str/int/bool, compact to
  hash and cheap to send between processes, with the context as a fifth part when it is not
  empty (`encode_ctx`); `canonical` picks the smaller of a state and its mirror image under the
  symmetry;
* the search (`explore`): breadth first until no new state appears, over one or two processes;
* the walks (`covering_walks`) and their replay through the runner (`run_exhaustive`).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeAlias

import iohandler.model.iterate as model_iterate
from iohandler.model import bh as model_bh
from iohandler.model import env as model_env
from iohandler.model.state import Bh, Context, CtxNode, FdState, Loop, Record, Table, World
from iohandler.specs.runner import Outcome, run_conformance
from iohandler.specs.vector import (
    Action,
    BhCancel,
    BhDelete,
    BhSchedule,
    BhScheduleIdle,
    CtxPoll,
    CtxSet,
    Drain,
    Hangup,
    Iterate,
    Notify,
    Raise,
    ScriptAction,
    Send,
    Set,
    SetGate,
    Snapshot,
    Vector,
    dump_vector,
    load_vector,
)

# ------------------------------------------------------------------------------- the scope


@dataclass(frozen=True)
class Scope:
    name: str
    fds: Mapping[str, str]  # fd -> kind
    gates: Mapping[str, bool]
    scripts: Mapping[str, tuple[ScriptAction, ...]]
    alphabet: tuple[Action, ...]
    gate_runs: Mapping[str, str] = field(default_factory=dict)
    # The symmetry: an involution on fd names and the matching one on script names.
    swap_fds: Mapping[str, str] = field(default_factory=dict)
    swap_scripts: Mapping[str, str] = field(default_factory=dict)
    max_depth: int = 200  # the step bound: the search must close before it
    bhs: tuple[tuple[str, str], ...] = ()  # format v3: BHs (name, script) the initial state has, oldest first

    def describe(self) -> str:
        fds = ", ".join(f"{f}:{k}" for f, k in self.fds.items())
        longest = max((len(s) for s in self.scripts.values()), default=0)
        text = (
            f"fds {fds}; gates {', '.join(self.gates)}; {len(self.scripts)} scripts of up to {longest} actions; "
            f"alphabet of {len(self.alphabet)} steps"
        )
        if self.gate_runs:
            text += f"; gate scripts {dict(self.gate_runs)}"
        if self.swap_fds:
            text += f"; symmetry {'<->'.join(sorted(self.swap_fds)[:2])}"
        return text

    def mirror_action(self, a: Action) -> Action:
        f, s = self.swap_fds, self.swap_scripts

        def sc(name: str | None) -> str | None:
            return None if name is None else s.get(name, name)

        match a:
            case Set(fd, read, write, gate):
                return Set(f.get(fd, fd), sc(read), sc(write), gate)
            case Send(fd):
                return Send(f.get(fd, fd))
            case Drain(fd):
                return Drain(f.get(fd, fd))
            case Hangup(fd):
                return Hangup(f.get(fd, fd))
            case Raise(fd):
                return Raise(f.get(fd, fd))
            case Iterate(during):
                return Iterate(tuple(self.mirror_script_action(x) for x in during))
        return a

    def mirror_script_action(self, a: ScriptAction) -> ScriptAction:
        out = self.mirror_action(a)
        assert not isinstance(out, Iterate)
        return out

    def check_symmetry(self) -> None:
        """The reduction is sound only if mirroring maps the scope onto itself."""
        f, s = self.swap_fds, self.swap_scripts
        if not f:
            return
        context_actions = (BhSchedule, BhScheduleIdle, BhCancel, BhDelete, CtxSet, CtxPoll)
        if self.bhs or any(isinstance(a, context_actions) for a in self.alphabet):
            # mirror() and _key() look at the fd-handler parts only: the context would be
            # reduced wrongly.
            raise ValueError(f"{self.name}: a symmetry is not supported with the context (format v3)")
        if any(f.get(f[x]) != x for x in f) or any(s.get(s[x]) != x for x in s):
            raise ValueError(f"swap_fds/swap_scripts of {self.name} must be involutions")
        if any(self.fds[x] != self.fds[f[x]] for x in f):
            raise ValueError(f"swap_fds of {self.name} swaps fds of different kinds")
        for name, body in self.scripts.items():
            if tuple(self.mirror_script_action(a) for a in body) != self.scripts[s.get(name, name)]:
                raise ValueError(f"script {name!r} of {self.name} is not mapped onto its mirror")
        if {self.mirror_action(a) for a in self.alphabet} != set(self.alphabet):
            raise ValueError(f"the alphabet of {self.name} is not closed under its symmetry")
        if any(s.get(v, v) != v for v in self.gate_runs.values()):
            raise ValueError(f"gate scripts of {self.name} must be fixed by the symmetry")


# ------------------------------------------------------------------------ the state encoding

# (records, wakeup, env, gates); a record is (fd, read, write, gate, poll_index, deleted),
# an fd state (fd, kind, pending, hung_up), a gate (name, value). A world with a context (format
# v3 scopes) has a fifth part, the context (`encode_ctx`).
RecordT: TypeAlias = tuple[str, str | None, str | None, str | None, int, bool]
FdT: TypeAlias = tuple[str, str, bool, bool]
State: TypeAlias = tuple[tuple[RecordT, ...], bool, tuple[FdT, ...], tuple[tuple[str, bool], ...]]
CtxT: TypeAlias = tuple[object, ...]


def encode(w: World) -> State:
    s = (
        tuple((r.fd, r.read, r.write, r.gate, r.poll_index, r.deleted) for r in w.loop.records),
        w.loop.wakeup,
        tuple((fd, s.kind, s.pending, s.hung_up) for fd, s in w.env.pairs),
        w.gates.pairs,
    )
    if w.ctx == Context():
        return s
    return (*s, encode_ctx(w.ctx))  # type: ignore[return-value]  # the v3 scopes' five-part state


def encode_ctx(ctx: Context) -> CtxT:
    """The context with its idents renumbered by age (BHs 0.., then nodes): the model compares
    idents only for equality and draws new ones above all, so the renaming loses nothing and
    keeps the state space finite."""
    nb, nn = len(ctx.bhs), len(ctx.nodes)
    bh_ident = {b.ident: nb - 1 - i for i, b in enumerate(ctx.bhs)}
    return (
        tuple((b.name, b.script, b.scheduled, b.idle, b.deleted, b.freed) for b in ctx.bhs),
        tuple(sorted((name, bh_ident[i]) for name, i in ctx.names.pairs)),
        ctx.walking_bh,
        tuple((n.fd, n.read, n.write, n.revents, n.deleted) for n in ctx.nodes),
        ctx.walking_handlers,
        ctx.notifier_revents,
        ctx.dispatching,
        nn,  # nn: a check on decode's count
    )


def decode_ctx(c: CtxT) -> Context:
    bhs, names, walking_bh, nodes, walking_handlers, notifier_revents, dispatching, _ = c
    assert isinstance(bhs, tuple) and isinstance(nodes, tuple) and isinstance(names, tuple)
    nb = len(bhs)
    return Context(
        bhs=tuple(Bh(nb - 1 - i, *b) for i, b in enumerate(bhs)),
        names=Table(names),
        walking_bh=walking_bh,  # type: ignore[arg-type]
        nodes=tuple(CtxNode(nb + len(nodes) - 1 - i, *n) for i, n in enumerate(nodes)),
        walking_handlers=walking_handlers,  # type: ignore[arg-type]
        notifier_revents=notifier_revents,  # type: ignore[arg-type]
        dispatching=dispatching,  # type: ignore[arg-type]
        next_ident=nb + len(nodes),
    )


def decode(s: State) -> World:
    records, wakeup, env, gates = s[:4]
    ctx: tuple[CtxT, ...] = tuple(s[4:])  # the v3 scopes' fifth part
    return World(
        Loop(tuple(Record(*r) for r in records), wakeup),
        Table(tuple((fd, FdState(kind, pending, hung)) for fd, kind, pending, hung in env)),
        Table(gates),
        decode_ctx(ctx[0]) if ctx else Context(),
    )


def mirror(scope: Scope, s: State) -> State:
    f, sc = scope.swap_fds, scope.swap_scripts
    records, wakeup, env, gates = s[:4]  # the v3 scopes have no symmetry

    def n(x: str | None) -> str | None:
        return None if x is None else sc.get(x, x)

    return (
        tuple((f.get(fd, fd), n(r), n(w), g, i, d) for fd, r, w, g, i, d in records),
        wakeup,
        tuple(sorted((f.get(fd, fd), k, p, h) for fd, k, p, h in env)),
        gates,
    )


def _key(s: State) -> tuple[object, ...]:
    # None sorts before any name: a total order on states.
    records, wakeup, env, gates = s[:4]
    return (tuple((fd, r or "", w or "", g or "", i, d) for fd, r, w, g, i, d in records), wakeup, env, gates)


def canonical(scope: Scope, s: State) -> tuple[State, bool]:
    """The representative of `s`'s class under the symmetry, and whether it is the mirror."""
    if not scope.swap_fds:
        return s, False
    m = mirror(scope, s)
    return (m, True) if _key(m) < _key(s) else (s, False)


# ---------------------------------------------------------------------- the successor function

Edge: TypeAlias = tuple[int, State, bool]  # action index, canonical successor, mirrored
# One step of the model from a world; None for a step the vector format forbids (a send after
# a hangup). The test suite passes one that also checks every invariant.
StepFn: TypeAlias = Callable[[Scope, World, Action], "World | None"]


def model_step(scope: Scope, world: World, action: Action) -> World | None:
    try:
        after, _ = model_iterate.step(world, action, scope.scripts, scope.gate_runs)
    except model_env.InvalidAction:
        return None
    return after


def successors(scope: Scope, state: State, step: StepFn = model_step) -> list[Edge]:
    world = decode(state)
    out: list[Edge] = []
    for i, action in enumerate(scope.alphabet):
        after = step(scope, world, action)
        if after is not None:
            canon, mirrored = canonical(scope, encode(after))
            out.append((i, canon, mirrored))
    return out


# ------------------------------------------------------------------------------- the search


@dataclass
class Closure:
    scope: Scope
    closed: bool
    states: int
    transitions: int
    invalid: int
    diameter: int
    seconds: float
    parent: dict[State, tuple[State, int, bool] | None]
    layers: list[int]
    valid: dict[State, int] = field(default_factory=dict)  # per state: bit i set if action i is valid
    # per state, its edges (only with `explore(keep_edges=True)`: the walks need the graph)
    edges: dict[State, list[Edge]] = field(default_factory=dict)
    invariants: Mapping[str, str] = field(default_factory=dict)  # rule -> what each step checked

    def path(self, state: State) -> list[Action]:
        """A concrete action sequence from the initial state to `state` (up to the symmetry)."""
        links: list[tuple[int, bool]] = []
        link = self.parent[state]
        while link is not None:
            prev, i, m = link
            links.append((i, m))
            link = self.parent[prev]
        out: list[Action] = []
        flipped = False  # the concrete state is the mirror of the canonical one
        for i, m in reversed(links):
            a = self.scope.alphabet[i]
            out.append(self.scope.mirror_action(a) if flipped else a)
            flipped ^= m
        return out

    def flipped(self, state: State) -> bool:
        """Whether `path(state)` reaches the mirror image of `state` rather than `state`."""
        flipped = False
        link = self.parent[state]
        while link is not None:
            flipped ^= link[2]
            link = self.parent[link[0]]
        return flipped

    def stats(self) -> dict[str, object]:
        return {
            "name": self.scope.name,
            "closed": self.closed,
            "states": self.states,
            "transitions": self.transitions,
            "diameter": self.diameter,
            "seconds": round(self.seconds, 2),
            "scope": self.scope.describe(),
            "invariants": dict(sorted(self.invariants.items(), key=_rule_key)),
        }


def _rule_key(kv: tuple[str, str]) -> int:
    return int(kv[0][1:])


_WORKER: list[tuple[Scope, StepFn]] = []  # the worker's scope and step (set by the pool initialiser)
# Smaller layers are expanded in process: sending states to a worker and back costs more.
PARALLEL_FROM = 1500


def _init(scope: Scope, step: StepFn) -> None:
    # A forked worker inherits the command's handlers, which turn SIGTERM/SIGHUP into an
    # exception (runner.on_termination): the pool's terminate() must end a worker, not raise in
    # it (that left the pool's lock held: a hang, or a traceback per worker).
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    _WORKER[:] = [(scope, step)]


def _expand(chunk: list[State]) -> list[list[Edge]]:
    scope, step = _WORKER[0]
    return [successors(scope, s, step) for s in chunk]


def initial_state(scope: Scope) -> State:
    w = World(
        Loop(),
        Table(tuple(sorted((fd, FdState(k)) for fd, k in scope.fds.items()))),
        Table(tuple(sorted(scope.gates.items()))),
    )
    for name, script in scope.bhs:
        w = w.with_ctx(model_bh.bh_new(w.ctx, name, script))
    return canonical(scope, encode(w))[0]


def explore(
    scope: Scope,
    *,
    step: StepFn = model_step,
    workers: int | None = None,
    max_depth: int | None = None,
    keep_edges: bool = False,
) -> Closure:
    """Breadth first until no new state appears (closed) or `max_depth` layers (not closed).
    A step that fails a check (an AssertionError) is re-raised, same type, with its depth and
    shortest action path after the message."""
    scope.check_symmetry()
    bound = scope.max_depth if max_depth is None else max_depth
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()
    start = initial_state(scope)
    parent: dict[State, tuple[State, int, bool] | None] = {start: None}
    closure = Closure(scope, False, 0, 0, 0, 0, 0.0, parent, [1])
    frontier = [start]
    pool = multiprocessing.get_context("fork").Pool(workers, _init, (scope, step)) if workers > 1 else None
    try:
        depth = 0
        while frontier and depth < bound:
            expanded = _expand_all(scope, step, frontier, pool, closure, depth)
            nxt: list[State] = []
            for state, edges in zip(frontier, expanded, strict=True):
                closure.transitions += len(edges)
                closure.invalid += len(scope.alphabet) - len(edges)
                closure.valid[state] = sum(1 << i for i, _, _ in edges)
                if keep_edges:
                    closure.edges[state] = edges
                for i, succ, m in edges:
                    if succ not in parent:
                        parent[succ] = (state, i, m)
                        nxt.append(succ)
            depth += 1
            if nxt:
                closure.diameter = depth
            frontier = nxt
            closure.layers.append(len(nxt))
    finally:
        if pool is not None:
            pool.terminate()
    closure.closed = not frontier
    closure.states = len(parent)
    closure.seconds = time.perf_counter() - t0
    return closure


def _expand_all(
    scope: Scope, step: StepFn, frontier: list[State], pool: object, closure: Closure, depth: int
) -> list[list[Edge]]:
    try:
        if pool is None or len(frontier) < PARALLEL_FROM:
            return [successors(scope, s, step) for s in frontier]
        size = max(16, len(frontier) // 64)
        chunks = [frontier[k : k + size] for k in range(0, len(frontier), size)]
        return [edges for part in pool.map(_expand, chunks) for edges in part]  # type: ignore[attr-defined]
    except AssertionError:
        # Find the state again, in this process, for the shortest path to it.
        for s in frontier:
            for action in scope.alphabet:
                try:
                    step(scope, decode(s), action)
                except AssertionError as e:
                    steps = [*closure.path(s), _concrete(closure, s, action)]
                    raise type(e)(f"{e}\n  at depth {depth + 1}: " + "; ".join(map(str, steps))) from None
        raise


def _concrete(closure: Closure, s: State, a: Action) -> Action:
    return closure.scope.mirror_action(a) if closure.flipped(s) else a


# ------------------------------------------------------------------------------- the scopes
# Two sockets s and t are interchangeable (the symmetry swaps them and their scripts), so
# records of one kind interfere; q is a pipe's write end, and the large scope adds p, its read
# end (four fds). Scripts chain up to three actions: rs registers on t a reader whose script
# deletes s; gates are toggled from scripts; during_wait acts between fill and poll.

SCRIPTS: dict[str, tuple[ScriptAction, ...]] = {
    "n": (),
    "ks": (Set("t", None, None, None), Drain("s"), SetGate("g", False)),  # deletes t, closes g
    "kt": (Set("s", None, None, None), Drain("t"), SetGate("g", False)),
    # a chain: t gets a reader that deletes s; s's record changes under its own read handler
    "rs": (Set("t", "kt", None, None), Set("s", "ks", None, "g"), Drain("s")),
    "rt": (Set("s", "ks", None, None), Set("t", "kt", None, "g"), Drain("t")),
    "w": (Set("q", None, None, None), SetGate("g", True), Notify()),  # q's writer deletes q, opens g
    "gs": (Set("q", None, "n", None), SetGate("g", False)),  # gate g's script (R22): q's writer n, closes g
}
SWAP_FDS = {"s": "t", "t": "s"}
SWAP_SCRIPTS = {"ks": "kt", "kt": "ks", "rs": "rt", "rt": "rs"}


def _alphabet(large: bool) -> tuple[Action, ...]:
    a: list[Action] = []
    for x in ("s", "t"):
        a += [Set(x, "k" + x, None, "g"), Set(x, "r" + x, "n", None), Set(x, None, None, None), Send(x)]
    a += [Set("q", None, "w", None), Iterate(), Iterate((Set("q", None, None, None), SetGate("g", False), Notify()))]
    if large:
        a += [Set("q", None, None, None), Hangup("q"), SetGate("g", True), Notify(), Snapshot()]
    return tuple(a)


def fd_scopes(large: bool) -> list[Scope]:
    """The fd-handler closures: `large` for `make verify`, the other for CI (the same fds and
    scripts, fewer steps: gates are then toggled by scripts only). A fourth fd (a pipe's read
    end) multiplied the states past what `make verify` affords."""
    fds = {"s": "socket", "t": "socket", "q": "pipe-write"}
    suffix = "-large" if large else ""
    alphabet = _alphabet(large)
    base = Scope(
        "fds" + suffix,
        fds,
        {"g": True},
        {k: v for k, v in SCRIPTS.items() if k != "gs"},
        alphabet,
        swap_fds=SWAP_FDS,
        swap_scripts=SWAP_SCRIPTS,
    )
    gated = Scope(
        "gate-scripts" + suffix,
        fds,
        {"g": True},
        SCRIPTS,
        (*(x for x in alphabet if not isinstance(x, Notify | SetGate)), Set("q", "n", None, "g")),
        gate_runs={"g": "gs"},
        swap_fds=SWAP_FDS,
        swap_scripts=SWAP_SCRIPTS,
    )
    return [base, gated]


def scopes(large: bool) -> list[Scope]:
    """The configurations `conform --exhaustive` runs: the fd-handler closures and a small one."""
    # A small one the test suite replays whole: a gate that deletes the record it is consulted
    # for (R4, R22: the record keeps its handlers, so fill still asks OUT|ERR for its writer)
    # and registers s again (R7 during fill: this iteration's poll returns); a reader that drops its
    # own writer (R18) and registers q's (R13: a notify during the walk); a gate closed while the
    # loop waits (R9); list order against fd order (R15).
    small = Scope(
        "small" + ("-large" if large else ""),
        {"s": "socket", "q": "pipe-write"},
        {"g": True},
        {
            "n": (),
            "gd": (Set("q", None, None, None), Set("s", "n", None, "g")),
            "rs": (Set("s", "rs", None, None), Set("q", None, "n", None)),
        },
        (
            Set("q", "n", "n", "g"),
            Set("q", None, "n", None),
            Set("q", None, None, None),
            Set("s", "n", None, "g"),
            Set("s", "rs", "n", None),
            Set("s", None, None, None),
            Send("s"),
            SetGate("g", True),
            Iterate(),
            Iterate((SetGate("g", False),)),
        ),
        gate_runs={"g": "gd"},
    )
    return [*fd_scopes(large), small]


def scope_named(name: str, *, large: bool | None = None) -> Scope:
    """A bundled configuration by name (the CI-sized ones, or `-large` ones for `make verify`)."""
    found = {s.name: s for s in (*scopes(False), *scopes(True))}
    if name not in found:
        raise ValueError(f"config must be one of {', '.join(found)}, got {name!r}")
    return found[name]


# The signal scope (SPEC R60, R61, R63): the two sockets and a signal fd x (format v3), whose
# handler drains it or, deleting itself, raises it again; raises come as steps, from a socket's
# script and during the wait.
SIGNAL_SCRIPTS: dict[str, tuple[ScriptAction, ...]] = {
    "n": (),
    "ks": (Set("t", None, None, None), Drain("s"), Raise("x")),  # deletes t, raises x
    "kt": (Set("s", None, None, None), Drain("t"), Raise("x")),
    "dx": (Drain("x"),),  # the signal record's handler: reads the pending signal
    "ox": (Set("x", None, None, None), Raise("x")),  # deletes its own record, raises again
}


def signal_scope(large: bool) -> Scope:
    a: list[Action] = []
    for x in ("s", "t"):
        a += [Set(x, "k" + x, None, None), Set(x, None, None, None), Send(x)]
    a += [Set("x", "dx", None, None), Set("x", "ox", None, None), Raise("x"), Iterate(), Iterate((Raise("x"),))]
    if large:
        a += [Set("x", None, None, None), Drain("x")]
    return Scope(
        "signals" + ("-large" if large else ""),
        {"s": "socket", "t": "socket", "x": "signal"},
        {},
        SIGNAL_SCRIPTS,
        tuple(a),
        swap_fds=SWAP_FDS,
        swap_scripts={"ks": "kt", "kt": "ks"},
    )


# ------------------------------------------------------------------- the context's scope (v3)
# BHs p and q (q the newer, so walked first) and the context's fd x (a pipe's read end) beside
# the socket s of the fd-handler list. p's callback schedules q (already passed: next walk) and
# notifies (skipped: dispatching); q's drains x, schedules p and polls the context (a nested
# walk that runs p); x's read handler deletes and re-adds its own node (a new node, behind the
# walk) and schedules p, or (dx) only drains x; s's write handler drops itself, schedules q (a notify) and polls the
# context (a nested aio_poll outside any walk, which consumes that notify).

CTX_SCRIPTS: dict[str, tuple[ScriptAction, ...]] = {
    "sp": (BhSchedule("q"), Notify()),
    "sq": (Drain("x"), BhSchedule("p"), CtxPoll()),
    "rx": (Drain("x"), CtxSet("x", None, None), CtxSet("x", "rx", None), BhSchedule("p")),
    "ws": (Set("s", None, None, None), BhSchedule("q"), CtxPoll()),
    "dx": (Drain("x"),),
}


def context_scopes() -> list[Scope]:
    """The context's closure (format v3): 2 BHs and one context fd beside a record's socket."""
    alphabet: tuple[Action, ...] = (
        BhSchedule("p"),
        BhScheduleIdle("p"),
        BhCancel("p"),
        BhDelete("p"),
        BhSchedule("q"),
        CtxSet("x", "rx", None),
        CtxSet("x", "dx", None),
        CtxSet("x", None, None),
        Send("x"),
        Set("s", None, "ws", None),
        Iterate(),
        CtxPoll(),
        Iterate((BhSchedule("q"),)),
        Notify(),
    )
    return [
        Scope("context", {"s": "socket", "x": "pipe-read"}, {}, CTX_SCRIPTS, alphabet, bhs=(("p", "sp"), ("q", "sq")))
    ]


# ------------------------------------------------------------------------------- the walks


@dataclass(frozen=True)
class Walk:
    """A covering walk: concrete steps from the initial state, and for each step the closure's
    transition it takes (the state before it, the action's index in the alphabet)."""

    scope: Scope
    steps: tuple[Action, ...]
    transitions: tuple[tuple[State, int], ...]


def covering_walks(c: Closure, max_steps: int = 2000) -> list[Walk]:
    """Walks from the initial state that together take every transition of the closure `c`
    (explored with `keep_edges`). Greedy: take a transition not yet taken from the current state,
    preferring one into a state that still has some; when there is none, go by a shortest path
    to the nearest state that has one. A walk ends past `max_steps` steps or when nothing new is
    reachable from it (a hangup cannot be undone); the next goes by the closure's shortest path
    to the first state, in breadth-first order, that still has one. Deterministic: the
    alphabet's order breaks ties."""
    if not c.closed or len(c.edges) != c.states:
        raise ValueError("covering_walks needs a closed closure explored with keep_edges=True")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    scope = c.scope
    # States as numbers in breadth-first order (a state's hash walks its nested tuples each time).
    states = list(c.parent)
    number = {st: n for n, st in enumerate(states)}
    graph: list[dict[int, tuple[int, bool]]] = [{i: (number[t], m) for i, t, m in c.edges[st]} for st in states]
    todo: dict[int, list[int]] = {n: sorted(g) for n, g in enumerate(graph) if g}
    router = _Router(graph, todo)
    k = 0
    walks: list[Walk] = []
    while todo:
        walk = _Walker(scope, graph, todo)
        if 0 not in todo:
            while k not in todo:
                k += 1
            for i in _path_indices(c, states[k]):
                walk.take(i)
        while len(walk.steps) < max_steps:
            left = todo.get(walk.state)
            if left is not None:
                walk.take(next((i for i in left if graph[walk.state][i][0] in todo), left[0]))
                continue
            route = router.route(walk.state)
            if route is None:
                break
            for i in route:
                walk.take(i)
        walks.append(Walk(scope, tuple(walk.steps), tuple((states[n], i) for n, i in walk.taken)))
    return walks


class _Router:
    """Shortest paths to a state with a transition not yet taken: first a search forward from
    the walk's state, bounded (usually one is near); else a map from every state to its next
    step toward the nearest such state, built by one search backwards from all of them, and
    rebuilt only when the state it leads to has none left any more."""

    NEAR = 64  # states the forward search looks at

    def __init__(self, graph: list[dict[int, tuple[int, bool]]], todo: Mapping[int, object]) -> None:
        self.graph, self.todo = graph, todo
        self.back: list[list[tuple[int, int]]] = [[] for _ in graph]
        for s, edges in enumerate(graph):
            for i, (t, _) in edges.items():
                self.back[t].append((s, i))
        self.hop: dict[int, tuple[int, int]] = {}

    def route(self, state: int) -> list[int] | None:
        near = _nearest(self.graph, self.todo, state, self.NEAR)
        if near is not None:
            return near
        for _ in range(2):
            path: list[int] = []
            s = state
            while s not in self.todo and s in self.hop:
                i, s = self.hop[s]
                path.append(i)
            if s in self.todo:
                return path
            self._rebuild()
        return None  # nothing left is reachable from `state`

    def _rebuild(self) -> None:
        self.hop = {}
        seen = set(self.todo)
        queue = deque(self.todo)
        while queue:
            t = queue.popleft()
            for s, i in self.back[t]:
                if s not in seen:
                    seen.add(s)
                    self.hop[s] = (i, t)
                    queue.append(s)


@dataclass
class _Walker:
    """A walk in progress: where it is (a state's number; `flipped`: the concrete world is the
    state's mirror image), what it did, and the transitions not yet taken (`todo`, shared by all
    walks). It starts at state 0, the initial state."""

    scope: Scope
    graph: list[dict[int, tuple[int, bool]]]
    todo: dict[int, list[int]]
    state: int = 0
    flipped: bool = False
    steps: list[Action] = field(default_factory=list)
    taken: list[tuple[int, int]] = field(default_factory=list)

    def take(self, i: int) -> None:
        left = self.todo.get(self.state)
        if left is not None and i in left:
            left.remove(i)
            if not left:
                del self.todo[self.state]
        a = self.scope.alphabet[i]
        self.steps.append(self.scope.mirror_action(a) if self.flipped else a)
        self.taken.append((self.state, i))
        self.state, m = self.graph[self.state][i]
        self.flipped ^= m


def _nearest(
    graph: list[dict[int, tuple[int, bool]]], todo: Mapping[int, object], state: int, bound: int
) -> list[int] | None:
    """The action indices of a shortest path from `state` to a state in `todo`, looking at no
    more than `bound` states (None: none that near)."""
    back: dict[int, tuple[int, int] | None] = {state: None}
    queue = deque([state])
    while queue and len(back) < bound:
        s = queue.popleft()
        for i, (t, _) in graph[s].items():
            if t in back:
                continue
            back[t] = (s, i)
            if t in todo:
                path: list[int] = []
                link = back[t]
                while link is not None:
                    path.append(link[1])
                    link = back[link[0]]
                return path[::-1]
            queue.append(t)
    return None


def _path_indices(c: Closure, state: State) -> list[int]:
    """The closure's shortest path (its BFS tree) from the initial state to `state`, as indices."""
    out: list[int] = []
    link = c.parent[state]
    while link is not None:
        out.append(link[1])
        link = c.parent[link[0]]
    return out[::-1]


def vector_of(scope: Scope, steps: Sequence[Action], name: str, description: str) -> Vector:
    """A vector running `steps` in the scope's world; its expected trace is the model's."""
    v = Vector(
        name,
        description,
        (),
        dict(scope.fds),  # type: ignore[arg-type]
        dict(scope.scripts),
        dict(scope.gates),
        tuple(steps),
        None,
        gate_scripts=dict(scope.gate_runs),
    )
    return replace(v, expect=model_iterate.run_vector(v))


# ------------------------------------------------------------------------ against a driver


@dataclass
class ConfigResult:
    """One configuration's run: the walks' outcomes and the transitions the passing ones took."""

    scope: Scope
    states: int
    transitions: int
    walks: list[Walk]
    outcomes: list[Outcome]
    covered: int
    seconds: float
    shortest: Vector | None = None  # for a failure: the shortest vector found that shows it
    shortest_detail: str = ""  # its failure, as the runner reports it (side by side)
    saved: Path | None = None


def closure_for(scope: Scope, *, symmetric: bool = True) -> Closure:
    """The closure the walks cover: with `symmetric`, the proof's (a state and its mirror image
    are one state; the walks take each transition from one of the two, in whichever of them they
    come to it); without, twice the states, each concrete state one of its own."""
    plain = scope if symmetric else replace(scope, swap_fds={}, swap_scripts={})
    c = explore(plain, keep_edges=True)
    if not c.closed:
        raise AssertionError(f"{scope.name}: the closure did not close within {scope.max_depth} steps")
    return c


def run_exhaustive(
    driver_command: str,
    names: Sequence[str] | None = None,
    *,
    timeout: float = 10.0,
    max_steps: int = 2000,
    driver_format: int = 2,
    full: bool = False,
    save: Path | None = None,
    symmetric: bool = True,
    report: Callable[[str], None] | None = None,
    fold: bool = False,
) -> list[ConfigResult]:
    """Every configuration named (default: the CI-sized ones), its covering walks replayed
    through the runner (`run_conformance`, unchanged). For a failing configuration, the first
    failing walk is cut down to the transition that shows the difference: the shortest prefix
    the driver fails, then the closure's shortest path to that transition's state plus its step
    (`shortest`), saved under `save` when given."""
    say = report or (lambda text: None)
    chosen = [scope_named(n) for n in names] if names else scopes(False)
    results = []
    for scope in chosen:
        t0 = time.perf_counter()
        c = closure_for(scope, symmetric=symmetric)
        walks = covering_walks(c, max_steps)
        vectors = [
            vector_of(
                scope,
                w.steps,
                f"exhaustive-{scope.name}-{k + 1:04d}",
                f"Covering walk {k + 1} of {len(walks)} over the closure of configuration "
                f"{scope.name} (iohandler conform --exhaustive).",
            )
            for k, w in enumerate(walks)
        ]
        say(
            f"{scope.name}: {c.states} states, {c.transitions} transitions, {len(walks)} walks of "
            f"{sum(len(w.steps) for w in walks)} steps ({scope.describe()})"
        )
        with tempfile.TemporaryDirectory(prefix="iohandler-exhaustive-") as tmp:
            for v in vectors:
                (Path(tmp) / f"{v.name}.json").write_text(dump_vector(v))

            said: set[str] = set()

            def each(o: Outcome, said: set[str] = said) -> None:
                if not o.passed and not o.skipped:
                    first = o.detail.splitlines()[0] if o.detail else ""
                    if first.startswith(CANNOT_START) and first in said:
                        return  # said once: every walk would repeat it
                    said.add(first)
                    say(f"FAIL {o.name}: {first}")

            outcomes = run_conformance(
                driver_command, [tmp], timeout=timeout, report=each, driver_format=driver_format, full=full, fold=fold
            )
        by_name = {o.name: o for o in outcomes}
        if any(o.fatal for o in outcomes):  # the driver did not start: said once, nothing more to run
            results.append(ConfigResult(scope, c.states, c.transitions, walks, outcomes, 0, time.perf_counter() - t0))
            break
        taken = {t for w, v in zip(walks, vectors, strict=True) if _passed(by_name.get(v.name)) for t in w.transitions}
        result = ConfigResult(scope, c.states, c.transitions, walks, outcomes, len(taken), 0.0)
        # Each failing walk cut down costs a dozen runs of a walk's prefix: the first few only.
        failing = [
            k
            for k, v in enumerate(vectors)
            if _failed(by_name.get(v.name)) and not by_name[v.name].detail.startswith(CANNOT_START)
        ][:DIAGNOSED]  # by_name has every walk here
        for k in failing:
            v, detail = _shortest(c, walks[k], driver_command, timeout, driver_format, full, fold)
            if result.shortest is None or len(v.steps) < len(result.shortest.steps):
                result.shortest, result.shortest_detail = v, detail
        if result.shortest is not None and save is not None:
            save.mkdir(parents=True, exist_ok=True)
            result.saved = save / f"{result.shortest.name}.json"
            result.saved.write_text(dump_vector(result.shortest))
        result.seconds = time.perf_counter() - t0
        results.append(result)
    return results


def _passed(o: Outcome | None) -> bool:
    return o is not None and o.passed


def _failed(o: Outcome | None) -> bool:
    return o is None or not (o.passed or o.skipped)


CANNOT_START = "cannot start driver"  # the runner's message for a command that does not start
DIAGNOSED = 3  # failing walks cut down to their shortest vector; the shortest of those is shown


def _shortest(
    c: Closure, walk: Walk, driver: str, timeout: float, driver_format: int, full: bool, fold: bool = False
) -> tuple[Vector, str]:
    scope = c.scope
    with tempfile.TemporaryDirectory(prefix="iohandler-exhaustive-") as tmp:

        def fails(steps: Sequence[Action], name: str, description: str) -> tuple[Vector, Outcome]:
            v = vector_of(scope, steps, name, description)
            path = Path(tmp) / f"{name}.json"
            path.write_text(dump_vector(v))
            [o] = run_conformance(driver, [path], timeout=timeout, driver_format=driver_format, full=full, fold=fold)
            return load_vector(path), o

        # The shortest failing prefix (a prefix of a passing prefix passes: bisect).
        lo, hi = 0, len(walk.steps)  # steps[:lo] passes (the empty vector), steps[:hi] fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            _, o = fails(walk.steps[:mid], "probe", "a prefix")
            if o.passed:
                lo = mid
            else:
                hi = mid
        state, i = walk.transitions[hi - 1]
        path = c.path(state)
        action = _concrete(c, state, scope.alphabet[i])
        what = (
            f"The closure's shortest path to a state of configuration {scope.name} ({len(path)} steps), then "
            f"the step {action}: the driver's trace differs from the model's."
        )
        v, o = fails([*path, action], f"exhaustive-{scope.name}-shortest", what)
        if o.passed:  # the driver's difference needs more history than the state: keep the prefix
            v, o = fails(
                walk.steps[:hi],
                f"exhaustive-{scope.name}-shortest",
                f"The first {hi} steps of a covering walk of configuration {scope.name}: the driver's "
                "trace differs from the model's (the shortest path to the same state passes).",
            )
        return v, o.detail
