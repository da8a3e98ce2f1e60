"""`iohandler fuzz`: generated vectors against any driver, the model as the oracle.

Hypothesis draws valid vectors with the lockstep suite's strategies (specs/scenarios.py), the
model (`iohandler.model.iterate.run_vector`) gives the expected trace, and the driver's answer
(VECTORS.md, the driver protocol) must equal it. A mismatch is shrunk by Hypothesis, pruned of
the fds, gates and scripts it does not use, printed, and saved as a vector (its `expect` the
model's trace) that `iohandler conform DIR` replays.

Hypothesis is imported only when a run starts: `conform` works without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from iohandler.model.state import Env, PollSet
from iohandler.specs.runner import (
    Driver,
    DriverFailure,
    answer_error,
    check_arguments,
    clip,
    end_of_input,
    first_difference,
    printable,
    stderr_note,
)
from iohandler.specs.vector import (
    FORMAT_V2,
    FORMAT_V3,
    Action,
    Event,
    Iterate,
    Vector,
    VectorError,
    dump_vector,
    load_vector,
    parse_trace,
    parse_vector,
    vector_to_json,
)

_A = TypeVar("_A")
FOUND = "found"  # the folder of --db that keeps found vectors, replayed first by the next run
MISSING_HYPOTHESIS = "iohandler fuzz needs Hypothesis: pip install 'iohandler[fuzz]'"


class FuzzUnavailable(RuntimeError):
    """Hypothesis is not installed."""


@dataclass
class Mismatch:
    vector: Vector  # the shrunk, pruned vector, with the model's trace as `expect`
    detail: str  # what differed (or what the driver said)
    path: Path | None = None  # where it was saved
    save_error: str | None = None  # why it could not be saved where asked

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
    gate_scripts_how: str = "probed"  # "as told", or the probe's result and its reason
    context: bool = False  # format v3 actions generated (the AioContext, SPEC R42 on)
    context_how: str = "probed"
    fold: bool = False
    seed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    replayed: int = 0  # vectors an earlier run saved in --db, tried first
    end_of_input: list[str] = field(default_factory=list)  # what the driver did wrong when its input ended

    def summary(self) -> str:
        n = len(self.mismatches)
        gates = f"gate scripts {'on' if self.gate_scripts else 'off'} ({self.gate_scripts_how})"
        if self.mismatches and self.examples == 0 and not self.replayed:
            gates = f"the gate scripts probe failed ({self.gate_scripts_how})"
        if self.replayed:
            gates = f"{self.replayed} found earlier replayed first; {gates}"
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
            elif m.save_error is not None:
                line += f": not saved: {m.save_error}"
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


def model_trace(vector: Vector, *, fold: bool = False) -> tuple[Event, ...]:
    """The model's trace of `vector`; with `fold`, over `folded_poll` (R36). The model's
    InvalidAction (a vector the format allows but the model cannot run) is left to the caller."""
    from iohandler.model import env as model_env
    from iohandler.model.iterate import initial_world, step

    world = initial_world(vector)
    runs = vector.gate_scripts
    events: list[Event] = []
    for action in vector.steps:
        world, out = step(world, action, vector.scripts, runs, poll=folded_poll if fold else model_env.poll)
        events.extend(out)
    return tuple(events)


def folded_expect(vector: Vector) -> tuple[Event, ...] | str:
    """The trace a poller that folds HUP/ERR must give (R36): the model's over `folded_poll`.
    Only where the model's plain trace is the vector's `expect` (else: why not, as a string)."""
    from iohandler.model.env import InvalidAction

    try:
        plain = model_trace(vector)
        folded = model_trace(vector, fold=True)
    except InvalidAction as e:
        return f"--fold-hup-err needs the model to run this vector, and it cannot: {clip(str(e))}"
    if plain != tuple(vector.expect or ()):
        return (
            "--fold-hup-err compares with the model's folded trace, but the model's own trace differs "
            "from this vector's expect (expected = the vector's, driver = the model's):\n"
            + first_difference(vector.expect or (), plain)
        )
    return folded


REFUSED = "driver could not run it: "


@dataclass(frozen=True)
class Problem:
    """Why a vector fails on the driver: `erred` (no trace: an error answer, a crash, a hang, a
    malformed trace) or not (a trace that differs from the model's)."""

    detail: str
    erred: bool


class _Session:
    """One driver process, replaced after a crash, hang or protocol error."""

    def __init__(self, command: str, timeout: float, *, fold: bool = False) -> None:
        self.command = command
        self.timeout = timeout
        self.fold = fold
        self.driver: Driver | None = None
        self._seen: dict[str, Problem | None] = {}  # the shrinker meets the same vector many times

    def ask(self, vector: Vector) -> tuple[list[Event] | None, str]:
        """The driver's trace, or None and what went wrong."""
        if self.driver is None:
            self.driver = Driver(self.command, self.timeout)  # DriverFailure: cannot start at all
        self.driver.forget_stderr()  # a report shows what the driver wrote for this vector
        try:
            answer = self.driver.ask(vector)
        except DriverFailure as e:
            detail = str(e) + stderr_note(self.driver)
            self.driver.kill()
            self.driver = None
            return None, detail
        if "error" in answer:
            return None, f"{REFUSED}{answer_error(answer)}" + stderr_note(self.driver)
        try:
            return list(parse_trace(answer["trace"], "driver trace")), ""
        except VectorError as e:
            return None, f"driver trace is malformed: {clip(str(e))}" + stderr_note(self.driver)

    def mismatch(self, vector: Vector) -> Problem | None:
        """What differs between the driver's trace and the model's, or None."""
        key = json.dumps(vector_to_json(replace(vector, name="", description="")), sort_keys=True)
        if key not in self._seen:
            self._seen[key] = self._mismatch(vector)
        return self._seen[key]

    def _mismatch(self, vector: Vector) -> Problem | None:
        expect = model_trace(vector, fold=self.fold)
        got, problem = self.ask(vector)
        if got is None:
            return Problem(problem, erred=True)
        return None if tuple(got) == expect else Problem(first_difference(expect, got), erred=False)

    def probe(self) -> tuple[bool, str, Problem | None]:
        """Run `probe_vector()`: (gate scripts on?, what the probe showed, the failure if the
        driver answered it wrongly). Only two answers switch gate scripts off: an `{"error": ...}`
        (a v1-only driver that says so) and the trace of the probe without its gate_scripts (a
        driver that ignores the field). Any other wrong answer is the driver's failure (R22)."""
        vector = probe_vector()
        got, problem = self.ask(vector)
        if got is None and problem.startswith(REFUSED):
            reason = problem[len(REFUSED) :].split("\n")[0]
            return False, f"probed: the driver refused the v2 probe ({clip(reason, 200)})", None
        expect = model_trace(vector, fold=self.fold)
        if got is not None and tuple(got) == expect:
            return True, "probed", None
        if got is not None and tuple(got) == model_trace(replace(vector, gate_scripts={}), fold=self.fold):
            return False, "probed: the driver ignores gate_scripts (its trace is the one without them)", None
        failure = Problem(problem, erred=True) if got is None else Problem(first_difference(expect, got), erred=False)
        return False, "probed: a wrong answer, a failure (gate scripts off for the rest)", failure

    def close(self, *, kill: bool = False) -> list[str]:
        """End the driver: at end of input (what it did wrong then), or (`kill`) at once."""
        problems: list[str] = []
        if self.driver is not None:
            if kill:
                self.driver.kill()
            else:
                problems = end_of_input(self.driver)
            self.driver = None
        return problems


def probe_vector() -> Vector:
    """A tiny vector whose trace shows whether the driver runs gate scripts (R22)."""
    return parse_vector(
        {
            "format": FORMAT_V2,
            "name": "fuzz-probe-gate-scripts",
            "description": "Does the driver run a gate's script when the fill consults it?",
            "rules": ["R22"],
            "fds": {"a": "socket"},
            "scripts": {"s": [{"do": "snapshot"}]},
            "gates": {"g": True},
            "gate_scripts": {"g": "s"},
            "steps": [{"do": "set", "fd": "a", "read": "s", "write": None, "gate": "g"}, {"do": "iterate"}],
        },
        require_expect=False,
    )


def context_probe_vector() -> Vector:
    """A tiny format v3 vector whose trace shows whether the driver runs the AioContext."""
    return parse_vector(
        {
            "format": FORMAT_V3,
            "name": "fuzz-probe-context",
            "description": "Does the driver run bottom halves and the context's own poll?",
            "rules": ["R42", "R46"],
            "fds": {},
            "scripts": {"s": [{"do": "timeout"}]},
            "gates": {},
            "steps": [
                {"do": "bh-new", "bh": "p", "script": "s"},
                {"do": "bh-schedule", "bh": "p"},
                {"do": "ctx-poll"},
                {"do": "iterate"},
            ],
        },
        require_expect=False,
    )


def runs_on_the_model(vector: Vector) -> bool:
    """False for a vector the model calls invalid (format v3: polls that re-enter without end,
    VECTORS.md); the generator draws again."""
    from iohandler.model.env import InvalidAction
    from iohandler.model.iterate import run_vector

    try:
        run_vector(vector)
    except InvalidAction:
        return False
    return True


def _named(vector: Vector, expect: Sequence[Event], driver: str, fold: bool, problem: Problem) -> Vector:
    """The vector as saved: named by its content; its description says whether the driver erred
    (and how, in a line) or answered a different trace."""
    body = json.dumps(vector_to_json(replace(vector, name="", description="", expect=None)), sort_keys=True)
    digest = hashlib.sha256(body.encode()).hexdigest()[:10]
    if problem.erred:
        what = f"the driver erred on it ({printable(clip(problem.detail.splitlines()[0], 200))}); "
    else:
        what = "its trace differs from the model's; "
    return replace(
        vector,
        name=f"fuzz-{digest}",
        description=f"Found by iohandler fuzz against {driver!r}: {what}"
        + ("expect is the model's trace over R36's folded poll." if fold else "expect is the model's trace."),
        expect=tuple(expect),
    )


def _prune(session: _Session, vector: Vector) -> Vector:
    """Hypothesis's shrink, finished by hand: while the driver still fails, cut runs of identical
    actions to one and drop single actions (in steps, `during_wait` and script bodies, which
    Hypothesis's shrink of the draw often leaves whole); then the fds, gates and scripts nothing
    names."""
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
        for candidate in _smaller(vector, smaller_steps):
            if fails(candidate):
                vector, changed = candidate, True
                break
    config = config_of(vector, vector.gate_scripts)
    smaller = to_vector(pruned(config, vector.steps), vector.steps, name=vector.name)
    return smaller if smaller.fds and smaller != vector and fails(smaller) else vector


def _without_repeats(actions: Sequence[_A]) -> Iterator[tuple[_A, ...]]:
    """`actions` with one run of identical consecutive actions cut to one action, each run in turn."""
    i = 0
    while i < len(actions):
        j = i + 1
        while j < len(actions) and actions[j] == actions[i]:
            j += 1
        if j - i > 1:
            yield (*actions[: i + 1], *actions[j:])
        i = j


def _smaller(vector: Vector, smaller_steps: Callable[[Sequence[Action]], Iterator[list[Action]]]) -> Iterator[Vector]:
    """Candidates one edit smaller than `vector`, the biggest cuts first."""
    scripts = vector.scripts
    for steps in _without_repeats(vector.steps):
        yield replace(vector, steps=steps)
    for i, step in enumerate(vector.steps):
        if isinstance(step, Iterate):
            for during in _without_repeats(step.during_wait):
                yield replace(vector, steps=(*vector.steps[:i], Iterate(during), *vector.steps[i + 1 :]))
    for name, body in scripts.items():
        for shorter in _without_repeats(body):
            yield replace(vector, scripts={**scripts, name: shorter})
    for steps_list in smaller_steps(vector.steps):
        yield replace(vector, steps=tuple(steps_list))
    for name, body in scripts.items():
        for i in range(len(body)):
            yield replace(vector, scripts={**scripts, name: (*body[:i], *body[i + 1 :])})


def _found(
    result: FuzzResult,
    session: _Session,
    vector: Vector,
    problem: Problem,
    driver: str,
    save: Path | None,
    report: Callable[[str], None],
    db: Path | None = None,
) -> None:
    """Record, print, then save (printed first: the shrunk vector is the point of the run)."""
    found = Mismatch(
        _named(vector, model_trace(vector, fold=session.fold), driver, session.fold, problem), problem.detail
    )
    result.mismatches.append(found)
    report(f"MISMATCH {found.vector.name}\n  {problem.detail}\n\nvector:\n{dump_vector(found.vector)}")
    if save is not None:
        _save(found, save)
    if db is not None:
        with contextlib.suppress(OSError):  # the database is a convenience; --save is the record
            (db / FOUND).mkdir(parents=True, exist_ok=True)
            (db / FOUND / f"{found.vector.name}.json").write_text(dump_vector(found.vector), encoding="utf-8")


def _replay(
    result: FuzzResult, session: _Session, db: Path, driver: str, save: Path | None, report: Callable[[str], None]
) -> bool:
    """Try the vectors an earlier run with this `db` found, before generating any: True when one
    still fails (reported as this run's mismatch). Unreadable files, vectors the model cannot
    run, and vectors with gate_scripts while they are off are passed over."""
    from iohandler.model.env import InvalidAction

    for path in sorted((db / FOUND).glob("*.json")):
        try:
            vector = load_vector(path, require_expect=False)
            if vector.gate_scripts and not result.gate_scripts:
                continue
            problem = session.mismatch(vector)
        except (VectorError, InvalidAction):  # a file edited by hand: not this run's business
            continue
        result.replayed += 1
        if problem is not None:
            _found(result, session, vector, problem, driver, save, report, db=None)
            return True
    return False


def _save(found: Mismatch, folder: Path) -> None:
    """Write the vector into `folder` (made if missing); a failure is recorded, not raised."""
    path = folder / f"{found.vector.name}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_vector(found.vector), encoding="utf-8")
    except OSError as e:
        found.save_error = f"cannot write {path}: {e.strerror or e}"
    else:
        found.path = path


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
    db: Path | None = None,
) -> FuzzResult:
    """Fuzz `driver` with up to `examples` generated vectors. `gate_scripts`, `context` (format
    v3 actions): None probes the driver once. `fold`: the driver's poller folds HUP/ERR (R36);
    compare with the folded model. Stops at the first mismatch, shrunk and (with `save`) saved
    there. `db`: a folder for the run's files: Hypothesis's, and the shrunk vectors found (in
    db/found), which the next run with this `db` tries first; without it Hypothesis's files go to
    a temporary folder, never the current one."""
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
    check_arguments(driver, timeout)
    result = FuzzResult(seed=random.randrange(2**32) if seed is None else seed, fold=fold)
    session = _Session(driver, timeout, fold=fold)
    session.driver = Driver(driver, timeout)  # DriverFailure here: the command does not start
    home = contextlib.ExitStack()
    try:
        home.enter_context(_hypothesis_home(db))
        if gate_scripts is None:
            result.gate_scripts, result.gate_scripts_how, wrong = session.probe()
            if wrong is not None:
                _found(result, session, probe_vector(), wrong, driver, save, report)
                report(result.summary())
                return result
        else:
            result.gate_scripts, result.gate_scripts_how = gate_scripts, "as told"
        if context is None:
            result.context = session.mismatch(context_probe_vector()) is None
        else:
            result.context, result.context_how = context, "as told"
        failing: list[tuple[Vector, Problem]] = []

        def check(vector: Vector) -> None:
            if failing:
                result.shrink_runs += 1
            else:
                result.examples += 1
                result.steps += len(vector.steps)
            problem = session.mismatch(vector)
            if problem is not None:
                failing.append((vector, problem))
                raise _Found(problem.detail)

        if db is not None and _replay(result, session, db, driver, save, report):
            report(result.summary())
            return result
        # No Hypothesis database: a seed (always given or drawn) switches it off anyway, so that
        # a seed repeats a run; --db keeps the shrunk vectors instead (_replay, _found).
        run = settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )(
            given(
                vectors(
                    max_steps=max_steps,
                    gate_scripts=result.gate_scripts,
                    context=result.context,
                    valid=runs_on_the_model,
                )
            )(check)
        )
        try:
            hypothesis_seed(result.seed)(run)()
        except _Found:
            vector, _ = failing[-1]  # Hypothesis runs the shrunk example last
            vector = _prune(session, vector)
            _found(result, session, vector, session.mismatch(vector) or failing[-1][1], driver, save, report, db)
    except BaseException:  # Ctrl-C reaches only this process (the driver has its own group): kill it now
        session.close(kill=True)
        raise
    finally:
        result.end_of_input = session.close()
        home.close()
        if result.end_of_input:  # after the summary of an early return, too
            report("fuzz: at end of input: " + "; ".join(result.end_of_input))
    report(result.summary())
    return result


@contextlib.contextmanager
def _hypothesis_home(db: Path | None) -> Iterator[None]:
    """Hypothesis writes files (a cache of the code's constants, the example database) under its
    home folder, `.hypothesis` in the current folder unless set: point it at `db`, or at a
    temporary folder removed afterwards, and put back what it was."""
    from hypothesis import configuration

    previous = getattr(configuration, "__hypothesis_home_directory", None)
    with contextlib.ExitStack() as stack:
        if db is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iohandler-fuzz-")))
        else:
            folder = db
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"db: cannot make the folder {db}: {e.strerror or e}") from None
        configuration.set_hypothesis_home_dir(folder)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(previous)


__all__ = [
    "MISSING_HYPOTHESIS",
    "FuzzResult",
    "FuzzUnavailable",
    "Mismatch",
    "context_probe_vector",
    "folded_expect",
    "folded_poll",
    "fuzz",
    "model_trace",
    "probe_vector",
    "runs_on_the_model",
]
