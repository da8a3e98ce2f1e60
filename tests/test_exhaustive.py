"""The model's state space, closed: explicit-state exploration to a fixpoint (specs/exhaustive.py's
search, every step checked by tests/exploration.py).

Per configuration the search runs breadth first until no new state appears; a configuration
that does not close within its step bound fails. Every state and transition is checked by the
invariants of tests/exploration.py (INVARIANTS: rule -> what). IOHANDLER_EXPLORE=large (set by
`make verify`) runs the large scope (four fds); the default runs the CI scope, which also closes.

The closure is then replayed on the real loop, epoll and poll, through the lockstep harness
(trace equality plus its invariants): one path per transition *kind* (the action, from a state
class: the multiset of the records' flags, and the wakeup), longest paths first, each replayed path
covering every kind along it.

Stats: $IOHANDLER_STATS_DIR/exploration-<name>.json {name, closed, states, transitions,
diameter, seconds, scope, invariants, replayed, kinds, kinds_covered}.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from iohandler.impl import POLLERS
from iohandler.model.state import READ_EVENTS, WRITE_EVENTS
from iohandler.specs.exhaustive import Closure, State, canonical
from iohandler.specs.vector import Action, GateEvent, Hangup, Iterate, Send, Set
from tests.exploration import Violation, explore, lockstep_config, scopes, step_checked, successors
from tests.harness import CONFIG, budget, replay, write_stats

LARGE = os.environ.get("IOHANDLER_EXPLORE") == "large"
SCOPES = {s.name: s for s in scopes(LARGE)}
# Covering walks replayed per poller and scope; thorough and large replay every kind.
REPLAYS = 10**9 if LARGE else budget(dev=100, ci=300, thorough=10**9)

_CLOSURES: dict[str, Closure] = {}
_REPLAYED: dict[str, dict[str, int]] = {}


def closure(name: str) -> Closure:
    if name not in _CLOSURES:
        _CLOSURES[name] = explore(SCOPES[name])
    return _CLOSURES[name]


def _write(c: Closure) -> None:
    write_stats(f"exploration-{c.scope.name}", {**c.stats(), **_REPLAYED.get(c.scope.name, {})})


@pytest.mark.parametrize("name", list(SCOPES))
def test_state_space_closes(name: str) -> None:
    c = closure(name)
    assert c.closed, f"{name}: still {c.layers[-1]} new states at depth {c.diameter} (bound {c.scope.max_depth})"
    assert c.states == len(c.parent) and c.transitions >= c.states - 1
    assert c.layers[-1] == 0 and sum(c.layers) == c.states  # the last layer is empty: a fixpoint
    _write(c)


def test_a_search_cut_short_is_not_closed() -> None:
    c = explore(next(iter(SCOPES.values())), workers=1, max_depth=3)
    assert not c.closed and c.layers[-1] > 0 and c.diameter == 3


def test_an_asymmetric_scope_is_refused() -> None:
    """The reduction is only sound when mirroring maps the scope onto itself: it is checked."""
    scope = next(iter(SCOPES.values()))
    lopsided = replace(scope, alphabet=(*scope.alphabet, Send("s")))  # no Send("t") to mirror it
    lopsided = replace(lopsided, alphabet=tuple(a for a in lopsided.alphabet if a != Send("t")))
    with pytest.raises(ValueError, match="not closed under its symmetry"):
        explore(lopsided, workers=1, max_depth=1)
    with pytest.raises(ValueError, match="mirror"):
        explore(replace(scope, scripts={**scope.scripts, "ks": ()}), workers=1, max_depth=1)


def test_a_symmetry_with_the_context_is_refused() -> None:
    """mirror() and the state key look at the fd-handler parts only: a context scope with a
    symmetry would be reduced wrongly, so it is refused before the search."""
    from iohandler.specs.exhaustive import context_scopes

    ctx = context_scopes()[0]
    swapped = replace(
        ctx,
        fds={**ctx.fds, "t": "socket"},
        swap_fds={"s": "t", "t": "s"},
        alphabet=(*ctx.alphabet, Set("t", None, "ws", None)),
    )
    with pytest.raises(ValueError, match="not supported with the context"):
        explore(swapped, workers=1, max_depth=1)


def test_symmetry_reduction_is_sound() -> None:
    """Within a depth, the reduced search finds exactly the classes of the states the unreduced
    search finds (mirroring preserves distances, so BFS layers agree)."""
    scope = next(iter(SCOPES.values()))
    plain = replace(scope, swap_fds={}, swap_scripts={})
    depth = 5
    full = explore(plain, workers=1, max_depth=depth)
    reduced = explore(scope, workers=1, max_depth=depth)
    assert {canonical(scope, s)[0] for s in full.parent} == set(reduced.parent)
    assert len(reduced.parent) < len(full.parent)  # it does reduce


def test_the_forked_workers_run_the_checked_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search is specs/exhaustive.py's; its forked pool workers must run the step the suite
    passes in (`step_checked`), not the model's bare step: a violation only a worker raises
    comes back from the pool."""
    import iohandler.specs.exhaustive as exhaustive
    from iohandler.model.state import World

    parent = os.getpid()

    def step(scope: exhaustive.Scope, world: World, action: Action) -> World | None:
        if os.getpid() != parent:
            raise Violation("raised in a worker")  # no rule id: a planted failure, checks no rule
        return step_checked(scope, world, action)

    monkeypatch.setattr(exhaustive, "PARALLEL_FROM", 1)  # every layer goes to the pool
    with pytest.raises(Violation, match="raised in a worker"):
        exhaustive.explore(next(iter(SCOPES.values())), step=step, workers=2, max_depth=2)


# ------------------------------------------------------------ the closure on the real loop


def state_class(s: State) -> tuple[object, ...]:
    """The multiset of the records' flags (reader, writer, gated, deleted, has a slot), the wakeup."""
    records, wakeup, _, _ = s
    flags = sorted((r is not None, w is not None, g is not None, d, i != -1) for _, r, w, g, i, d in records)
    return tuple(flags), wakeup


Kind = tuple[object, int]  # (state class, action index)


def kinds_and_paths(c: Closure) -> tuple[set[Kind], list[list[Kind]], dict[int, State]]:
    """Every transition kind of the closure, and for each a witness: the kinds along the
    shortest path to a state of that class, then the kind itself."""
    kinds: set[tuple[object, int]] = set()
    witness: dict[tuple[object, int], State] = {}
    for s in c.parent:  # BFS order: the first witness is a shallowest one
        cls = state_class(s)
        for i in range(len(c.scope.alphabet)):
            if c.valid[s] >> i & 1:
                kinds.add((cls, i))
                witness.setdefault((cls, i), s)
    paths = []
    states = {}
    for (kcls, i), s in witness.items():
        along: list[tuple[object, int]] = []
        link = c.parent[s]
        while link is not None:
            prev, j, _ = link
            along.append((state_class(prev), j))
            link = c.parent[prev]
        paths.append([*along[::-1], (kcls, i)])
        states[len(paths) - 1] = s
    return kinds, paths, states


def covering_walk(c: Closure, s: State, covered: set[Kind], limit: int = 60) -> tuple[list[Action], set[Kind]]:
    """The path to `s`, then greedily a step of a kind not yet covered, while there is one."""
    steps = c.path(s)
    flipped = c.flipped(s)
    new: set[Kind] = set()
    for _ in range(limit):
        cls = state_class(s)
        edges = {i: (succ, m) for i, succ, m in successors(c.scope, s)}
        pick = next((i for i in edges if (cls, i) not in covered and (cls, i) not in new), None)
        if pick is None:
            break
        new.add((cls, pick))
        a = c.scope.alphabet[pick]
        steps.append(c.scope.mirror_action(a) if flipped else a)
        s, m = edges[pick]
        flipped ^= m
    return steps, new


@pytest.mark.parametrize("poller", [p for p in ("epoll", "poll") if p in POLLERS])
@pytest.mark.parametrize("name", list(SCOPES))
def test_closure_replays_on_real_loop(name: str, poller: str) -> None:
    """Covering walks, from the deepest witnesses first, until every transition kind is
    replayed (a kind is a valid transition: a send after a hangup is none)."""
    c = closure(name)
    assert c.closed
    kinds, paths, states = kinds_and_paths(c)
    config = lockstep_config(c.scope)
    covered: set[Kind] = set()
    replayed = 0
    for k in sorted(range(len(paths)), key=lambda k: -len(paths[k])):
        if replayed >= REPLAYS:
            break
        if set(paths[k]) <= covered:
            continue
        steps, new = covering_walk(c, states[k], covered)
        failed = replay(config, steps, poller)
        assert failed is None, f"{name} on {poller}: {failed}"
        covered |= set(paths[k][:-1]) | new
        replayed += 1
    stats = _REPLAYED.setdefault(name, {"replayed": 0})
    stats["replayed"] += replayed
    stats["kinds"] = len(kinds)
    stats["kinds_covered"] = len(covered & kinds)
    _write(c)
    assert covered <= kinds
    if replayed < REPLAYS:  # the budget did not stop it: every kind is covered
        assert covered == kinds, f"{len(kinds - covered)} kinds not replayed"


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


def test_model_reads_gate_scripts_from_the_parsed_field() -> None:
    """The model takes R22's gate scripts from `Vector.gate_scripts`; the one parser
    (specs/vector.py, tests/test_vector_loader.py) validates them."""
    from iohandler.model.iterate import gate_scripts
    from tests.harness import to_vector

    good = replace(CONFIG, gate_runs={"g": "n"})
    assert gate_scripts(to_vector(good, ())) == {"g": "n"}
    assert gate_scripts(to_vector(CONFIG, ())) == {}


def test_model_step_without_gate_scripts() -> None:
    """step's gate_runs is optional: a gated record is consulted without any gate script."""
    from iohandler.model.iterate import step
    from tests.harness import world_for

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
    from tests.harness import to_vector

    assert list(run(to_vector(CONFIG, (Set("a", "n", None, None), Iterate())))) != []
    with pytest.raises(InvalidVector, match="hangup"):
        run(to_vector(CONFIG, (Hangup("b"), Iterate((Send("b"),)))))
