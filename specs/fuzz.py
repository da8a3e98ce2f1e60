"""`iohandler fuzz`: generated vectors against any driver, the model as the oracle.

Hypothesis draws valid vectors with the lockstep suite's strategies (specs/scenarios.py), the
model (`iohandler.model.iterate.run_vector`) gives the expected trace, and the driver's answer
(VECTORS.md, the driver protocol) must equal it. A mismatch is shrunk by Hypothesis, pruned of
the fds, gates and scripts it does not use, printed, and saved as a vector (its `expect` the
model's trace) that `iohandler conform DIR` replays.

Hypothesis is imported only when a run starts: `conform` works without it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from iohandler.model.state import Env, PollSet
from iohandler.specs.runner import Driver, DriverFailure, first_difference
from iohandler.specs.vector import (
    FORMAT_V2,
    FORMAT_V3,
    Event,
    Vector,
    VectorError,
    dump_vector,
    parse_trace,
    parse_vector,
    vector_to_json,
)

MISSING_HYPOTHESIS = "iohandler fuzz needs Hypothesis: pip install 'iohandler[fuzz]'"


class FuzzUnavailable(RuntimeError):
    """Hypothesis is not installed."""


@dataclass
class Mismatch:
    vector: Vector  # the shrunk, pruned vector, with the model's trace as `expect`
    detail: str  # what differed (or what the driver said)
    path: Path | None = None  # where it was saved

    @property
    def size(self) -> tuple[int, int]:
        """(steps, bytes of the saved JSON)."""
        return len(self.vector.steps), len(dump_vector(self.vector).encode())


@dataclass
class FuzzResult:
    examples: int = 0  # vectors tried before the first mismatch (or all of them)
    steps: int = 0  # their steps
    shrink_runs: int = 0  # vectors tried while shrinking a mismatch
    gate_scripts: bool = False
    gate_scripts_how: str = "probed"
    context: bool = False  # format v3 actions generated (the AioContext, SPEC R42 on)
    context_how: str = "probed"
    fold: bool = False
    seed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    def summary(self) -> str:
        n = len(self.mismatches)
        gates = f"gate scripts {'on' if self.gate_scripts else 'off'} ({self.gate_scripts_how})"
        line = (
            f"fuzz: {self.examples} examples, {self.steps} steps, {n} mismatch{'es' if n != 1 else ''}"
            f"; {gates}; {'HUP/ERR folded (R36); ' if self.fold else ''}seed {self.seed}"
            f"; context {'on' if self.context else 'off'} ({self.context_how})"
        )
        for m in self.mismatches:
            steps, size = m.size
            line += f"\n  shrunk in {self.shrink_runs} runs to {steps} steps ({size} bytes)"
            if m.path is not None:
                line += f": saved {m.path}"
        return line


class _Found(AssertionError):
    """The driver's trace differs from the model's (Hypothesis shrinks on it)."""


def folded_poll(env: Env, poll_set: PollSet, wakeup: bool) -> tuple[tuple[int, ...], int]:
    """model.env.poll as a poller that folds HUP and ERR sees it (SPEC R36; Python's selectors
    on epoll): any kernel bit but IN makes it writable, any but OUT readable, both masked by the
    registered interest."""
    from iohandler.model import env as model_env
    from iohandler.model.state import ERR, HUP, IN, OUT

    revents: list[int] = []
    for fd, events in poll_set:
        rev = model_env.readiness(env[fd]) & (events | HUP | ERR)
        r = IN if rev & ~OUT and events & IN else 0
        w = OUT if rev & ~IN and events & OUT else 0
        revents.append(r | w)
    return tuple(revents), sum(1 for r in revents if r) + (1 if wakeup else 0)


def _model_trace(vector: Vector, *, fold: bool = False) -> tuple[Event, ...]:
    """The model's trace; with `fold`, over `folded_poll` (R36). InvalidAction here is a
    generator bug: it is left to surface."""
    from iohandler.model import env as model_env
    from iohandler.model.iterate import initial_world, step

    world = initial_world(vector)
    runs = vector.gate_scripts
    events: list[Event] = []
    for action in vector.steps:
        world, out = step(world, action, vector.scripts, runs, poll=folded_poll if fold else model_env.poll)
        events.extend(out)
    return tuple(events)


class _Session:
    """One driver process, replaced after a crash, hang or protocol error."""

    def __init__(self, command: str, timeout: float, *, fold: bool = False) -> None:
        self.command = command
        self.timeout = timeout
        self.fold = fold
        self.driver: Driver | None = None
        self._seen: dict[str, str | None] = {}  # the shrinker meets the same vector many times

    def ask(self, vector: Vector) -> tuple[list[Event] | None, str]:
        """The driver's trace, or None and what went wrong."""
        if self.driver is None:
            self.driver = Driver(self.command, self.timeout)  # DriverFailure: cannot start at all
        try:
            answer = self.driver.ask(vector)
        except DriverFailure as e:
            stderr = self.driver.stderr_text()
            self.driver.kill()
            self.driver = None
            return None, str(e) + (f"\n  driver stderr:\n{stderr.rstrip()}" if stderr.strip() else "")
        if "error" in answer:
            return None, f"driver could not run it: {answer['error']}"
        try:
            return list(parse_trace(answer["trace"], "driver trace")), ""
        except VectorError as e:
            return None, f"driver trace is malformed: {e}"

    def mismatch(self, vector: Vector) -> str | None:
        """What differs between the driver's trace and the model's, or None."""
        key = json.dumps(vector_to_json(replace(vector, name="", description="")), sort_keys=True)
        if key not in self._seen:
            self._seen[key] = self._mismatch(vector)
        return self._seen[key]

    def _mismatch(self, vector: Vector) -> str | None:
        expect = _model_trace(vector, fold=self.fold)
        got, problem = self.ask(vector)
        if got is None:
            return problem
        return None if tuple(got) == expect else first_difference(expect, got)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None


def probe_vector() -> Vector:
    """A tiny vector whose trace shows whether the driver runs gate scripts (R22)."""
    return parse_vector(
        {
            "format": FORMAT_V2, "name": "fuzz-probe-gate-scripts",
            "description": "Does the driver run a gate's script when the fill consults it?",
            "rules": ["R22"], "fds": {"a": "socket"}, "scripts": {"s": [{"do": "snapshot"}]},
            "gates": {"g": True}, "gate_scripts": {"g": "s"},
            "steps": [{"do": "set", "fd": "a", "read": "s", "write": None, "gate": "g"}, {"do": "iterate"}],
        },
        require_expect=False,
    )


def context_probe_vector() -> Vector:
    """A tiny format v3 vector whose trace shows whether the driver runs the AioContext."""
    return parse_vector(
        {
            "format": FORMAT_V3, "name": "fuzz-probe-context",
            "description": "Does the driver run bottom halves and the context's own poll?",
            "rules": ["R42", "R46"], "fds": {}, "scripts": {"s": [{"do": "timeout"}]}, "gates": {},
            "steps": [{"do": "bh-new", "bh": "p", "script": "s"}, {"do": "bh-schedule", "bh": "p"},
                      {"do": "ctx-poll"}, {"do": "iterate"}],
        },
        require_expect=False,
    )


def _named(vector: Vector, expect: Sequence[Event], driver: str, fold: bool) -> Vector:
    body = json.dumps(vector_to_json(replace(vector, name="", description="")), sort_keys=True)
    digest = hashlib.sha256(body.encode()).hexdigest()[:10]
    return replace(
        vector,
        name=f"fuzz-{digest}",
        description=f"Found by iohandler fuzz against {driver!r}: its trace differs from the model's "
        + ("(expect is the model's trace over R36's folded poll)." if fold else "(expect is the model's trace)."),
        expect=tuple(expect),
    )


def _prune(session: _Session, vector: Vector) -> Vector:
    """Hypothesis's shrink, finished by hand: drop single steps (and `during_wait` actions) while
    the driver still fails, then the fds, gates and scripts nothing names."""
    from iohandler.model.env import InvalidAction
    from iohandler.specs.scenarios import config_of, pruned, smaller_steps, to_vector

    def fails(candidate: Vector) -> bool:
        try:
            parse_vector(vector_to_json(candidate), require_expect=False)
            return session.mismatch(candidate) is not None
        except (VectorError, InvalidAction):  # e.g. a send now follows a hangup: not a vector
            return False

    changed = True
    while changed:
        changed = False
        for steps in smaller_steps(vector.steps):
            if fails(candidate := replace(vector, steps=tuple(steps))):
                vector, changed = candidate, True
                break
    config = config_of(vector, vector.gate_scripts)
    smaller = to_vector(pruned(config, vector.steps), vector.steps, name=vector.name)
    return smaller if smaller.fds and smaller != vector and fails(smaller) else vector


def fuzz(
    driver: str,
    *,
    examples: int = 200,
    seed: int | None = None,
    save: Path | None = Path("fuzz-failures"),
    gate_scripts: bool | None = None,
    context: bool | None = None,
    fold: bool = False,
    max_steps: int = 20,
    timeout: float = 10.0,
    report: Callable[[str], None] = print,
) -> FuzzResult:
    """Fuzz `driver` with up to `examples` generated vectors. `gate_scripts`, `context` (format
    v3 actions): None probes the driver once. `fold`: the driver's poller folds HUP/ERR (R36);
    compare with the folded model. Stops at the first mismatch, shrunk and (with `save`) saved there."""
    try:
        import hypothesis  # noqa: F401  (the `fuzz` extra)
    except ImportError:
        raise FuzzUnavailable(MISSING_HYPOTHESIS) from None
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hypothesis_seed

    from iohandler.specs.scenarios import vectors

    if examples < 1:
        raise ValueError(f"examples must be at least 1, got {examples}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    result = FuzzResult(seed=random.randrange(2**32) if seed is None else seed, fold=fold)
    session = _Session(driver, timeout, fold=fold)
    session.driver = Driver(driver, timeout)  # DriverFailure here: the command does not start
    try:
        if gate_scripts is None:
            result.gate_scripts = session.mismatch(probe_vector()) is None
        else:
            result.gate_scripts, result.gate_scripts_how = gate_scripts, "as told"
        if context is None:
            result.context = session.mismatch(context_probe_vector()) is None
        else:
            result.context, result.context_how = context, "as told"
        failing: list[tuple[Vector, str]] = []

        def check(vector: Vector) -> None:
            if failing:
                result.shrink_runs += 1
            else:
                result.examples += 1
                result.steps += len(vector.steps)
            problem = session.mismatch(vector)
            if problem is not None:
                failing.append((vector, problem))
                raise _Found(problem)

        run = settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )(given(vectors(max_steps=max_steps, gate_scripts=result.gate_scripts, context=result.context))(check))
        try:
            hypothesis_seed(result.seed)(run)()
        except _Found:
            vector, _ = failing[-1]  # Hypothesis runs the shrunk example last
            vector = _prune(session, vector)
            detail = session.mismatch(vector) or failing[-1][1]
            found = Mismatch(_named(vector, _model_trace(vector, fold=fold), driver, fold), detail)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                found.path = save / f"{found.vector.name}.json"
                found.path.write_text(dump_vector(found.vector))
            result.mismatches.append(found)
            report(f"MISMATCH {found.vector.name}\n  {detail}\n\nvector:\n{dump_vector(found.vector)}")
    finally:
        session.close()
    report(result.summary())
    return result


__all__ = [
    "MISSING_HYPOTHESIS", "FuzzResult", "FuzzUnavailable", "Mismatch", "context_probe_vector", "folded_poll", "fuzz",
    "probe_vector",
]
