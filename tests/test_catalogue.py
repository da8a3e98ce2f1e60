"""The suite kills every planted bug of tests/catalogue.py, and by the check expected.

For each variant the lockstep machine (tests/harness/) runs against it until a check fails
(generation only: Hypothesis' stateful shrinker is slow), then `minimise` drops steps while the
same check still fails; the result is the counterexample's length in steps. The fd-number-reuse
variant is killed by the R34 scenario instead (vectors cannot close the loop's fd). The exhaustive
alphabet of tests/test_exhaustive.py is replayed on each variant too, shallowest first, which
gives the shortest killing sequence within that alphabet (`exhaustive_steps`; None: it does not
kill within EXHAUSTIVE_DEPTH). Stats go to $IOHANDLER_STATS_DIR/catalogue.json: per variant
{"killed", "steps", "check", "examples", "exhaustive_steps", "exhaustive_check", ...}.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import settings

from iohandler.specs.exhaustive import Closure
from tests.catalogue import LEAKED, VARIANTS, Variant
from tests.exploration import explore, lockstep_config, scopes
from tests.harness import (
    CheckFailed,
    budget,
    fd_reuse_scenario,
    hunt,
    machine_for,
    replay,
    scenario,
    write_stats,
)

RESULTS: dict[str, dict[str, object]] = {}
EXHAUSTIVE_DEPTH = 5  # the shortest killing sequence of the exploration's alphabet, up to this depth
_EXPLORED: list[Closure] = []


def _shortest_in_alphabet(variant: Variant) -> tuple[int | None, str | None]:
    """Replay the BFS paths of the exploration (tests/exploration.py, its first CI scope) on the
    variant, shallowest first: the first failure is the shortest sequence of that alphabet that
    kills it."""
    scope = scopes(False)[0]
    if not _EXPLORED:
        _EXPLORED.append(explore(scope, workers=1, max_depth=EXHAUSTIVE_DEPTH))
    e = _EXPLORED[0]
    config = lockstep_config(scope)
    for state in e.parent:  # insertion order is BFS order
        steps = e.path(state)
        failed = replay(config, steps, variant.poller, variant.loop)
        if failed is not None:
            return len(steps), failed.tag
    return None, None


def _record(variant: Variant, result: dict[str, object]) -> None:
    RESULTS[variant.name] = {"bug": variant.bug, **result}
    write_stats("catalogue", RESULTS)  # after each variant, so a partial run still reports


@pytest.fixture(autouse=True)
def _close_leaked() -> object:
    yield None
    while LEAKED:
        os.close(LEAKED.pop())


def _hunt(variant: Variant) -> dict[str, object]:
    """The lockstep test's own hunt (tests.harness.hunt: generate, then minimise), on the variant;
    its times are the time-to-red table (seconds to the first failing example, then to the
    minimised counterexample that `make test` prints)."""
    machine = machine_for(variant.poller, variant.loop, name=f"Variant_{variant.name}")
    red = hunt(
        machine,
        settings(
            # Most variants die within 100 examples; the slowest needed ~350 (measured).
            max_examples=budget(dev=1500, ci=1500, thorough=5000),
            stateful_step_count=30,
            derandomize=True,  # same counterexample every run: the table stays stable
            database=None,
        ),
    )
    if red is None:
        return {"killed": False, "steps": None, "check": None, "examples": machine.stats["examples"]}
    return {
        "killed": True,
        "steps": len(red.steps),
        "check": red.error.tag,
        "examples": red.examples,
        "seconds_to_failure": round(red.seconds_to_failure, 2),
        "seconds_to_red": round(red.seconds_to_red, 2),
        "counterexample": scenario(red.config, red.steps).splitlines(),
    }


def _hunt_reuse(variant: Variant) -> dict[str, object]:
    fewest: int | None = None
    tag = None
    for iterate_first, delete_first, ready_old in itertools.product([False, True], repeat=3):
        try:
            fd_reuse_scenario(
                variant.loop,
                variant.poller,
                iterate_first=iterate_first,
                delete_first=delete_first,
                ready_old=ready_old,
            )
        except CheckFailed as e:
            ops = 3 + iterate_first + delete_first  # register, close+reuse, wait (the kill)
            if fewest is None or ops < fewest:
                fewest, tag = ops, e.tag
    return {"killed": fewest is not None, "steps": fewest, "check": tag, "examples": 8}


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_suite_kills_variant(variant: Variant) -> None:
    if variant.checks[0] == "R34":
        result = _hunt_reuse(variant)
    else:
        result = _hunt(variant)
        result["exhaustive_steps"], result["exhaustive_check"] = _shortest_in_alphabet(variant)
    _record(variant, result)
    assert result["killed"], f"{variant.name} ({variant.bug}) survived the lockstep suite"
    assert result["check"] in variant.checks, (
        f"{variant.name} was killed by [{result['check']}], expected one of {variant.checks}: "
        f"{result.get('counterexample')}"
    )


def test_every_check_kills_something() -> None:
    """Each lockstep check is seen to fail on at least one planted bug."""
    killed_by = (
        {str(r["check"]) for r in RESULTS.values()}
        if len(RESULTS) == len(VARIANTS)
        else {v.checks[0] for v in VARIANTS}
    )
    assert killed_by >= {"trace", "R1", "R17", "order", "kernel", "leak", "R34"}
