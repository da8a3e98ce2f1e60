"""The context's state space (format v3, SPEC R42 on), closed: 2 bottom halves and one context
fd beside a record's socket (specs/exhaustive.py `context_scopes`), every state and transition
checked by the invariants (R42-R49 among them), nested aio_poll from a BH callback and from an
fd handler included. `make verify` runs it with the other closures (specs/verify.py).

Stats: $IOHANDLER_STATS_DIR/exploration-context.json, as test_exhaustive.py writes its own.
"""

from __future__ import annotations

from iohandler.model.state import Context
from iohandler.specs.exhaustive import context_scopes, decode, encode
from iohandler.specs.vector import BhEvent, CtxPoll, CtxReadEvent, Iterate
from tests.exploration import INVARIANTS, explore, step_checked
from tests.harness import write_stats


def test_the_context_state_space_closes() -> None:
    (scope,) = context_scopes()
    c = explore(scope, workers=1)
    assert c.closed, f"still {c.layers[-1]} new states at depth {c.diameter}"
    assert c.layers[-1] == 0 and sum(c.layers) == c.states == len(c.parent)
    assert c.states >= 100  # the scope is not trivially small
    assert {"R42", "R44", "R45", "R46", "R47", "R48", "R49"} <= set(INVARIANTS)
    write_stats(f"exploration-{scope.name}", c.stats())


def test_the_closure_reaches_nested_polls_and_context_calls() -> None:
    """The scope is not vacuous: from its states, BH callbacks, context handlers and nested
    walks happen (a BH event inside a ctx-poll's events, and a context read in an iteration)."""
    (scope,) = context_scopes()
    c = explore(scope, workers=1)
    seen: set[str] = set()
    from iohandler.model.iterate import step

    for state in c.parent:
        world = decode(state)
        for action in (CtxPoll(), Iterate()):
            _, events = step(world, action, scope.scripts, scope.gate_runs)
            names = [type(e).__name__ for e in events]
            if isinstance(action, CtxPoll) and names.count("BhEvent") >= 2:
                seen.add("nested BH walk")  # q's callback polls: p runs inside it
            if any(isinstance(e, CtxReadEvent) for e in events):
                seen.add("context read")
            if any(isinstance(e, BhEvent) for e in events) and isinstance(action, Iterate):
                seen.add("BH in an iteration")
    assert seen == {"nested BH walk", "context read", "BH in an iteration"}


def test_the_context_encoding_round_trips_and_renumbers() -> None:
    (scope,) = context_scopes()
    c = explore(scope, workers=1, max_depth=3)
    for state in c.parent:
        assert encode(decode(state)) == state
    # A world with no context encodes as the four-part state of the other scopes.
    world = decode(next(iter(c.parent)))
    assert len(encode(world.with_ctx(Context()))) == 4
    assert step_checked(scope, world, CtxPoll()) is not None
