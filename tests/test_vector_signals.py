"""The `signal` fd kind and the `raise` action (format v3; SPEC R60, R61, R63): the loader, the
schema, the model's readiness, both drivers on the bundled signal vectors, and a driver that
cannot raise signals getting them reported as skipped (`--no-signals`), never passed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iohandler.impl import POLLERS
from iohandler.impl.driver import run_vector
from iohandler.model.env import InvalidAction, poll, raise_signal, readiness
from iohandler.model.state import IN, FdState, Table
from iohandler.specs.runner import run_conformance
from iohandler.specs.vector import FORMAT_V3, Raise, VectorError, bundled_vectors_dir, load_vector, parse_vector

ROOT = Path(__file__).resolve().parent.parent
SIGNAL_FILES = sorted((bundled_vectors_dir() / "signals").glob("*.json"))


def _vector(fmt: str = FORMAT_V3, fds: dict[str, str] | None = None, steps: list[Any] | None = None) -> dict[str, Any]:
    return {
        "format": fmt,
        "name": "x",
        "description": "",
        "rules": [],
        "fds": fds or {"s": "signal"},
        "scripts": {},
        "gates": {},
        "steps": steps or [{"do": "raise", "fd": "s"}],
        "expect": [],
    }


def test_the_signal_kind_and_raise_load_in_v3() -> None:
    raise_s = {"do": "raise", "fd": "s"}
    v = parse_vector(_vector(steps=[raise_s, {"do": "iterate", "during_wait": [raise_s]}]))
    assert v.uses_signals and v.format == FORMAT_V3
    assert v.steps[0] == Raise("s")


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (_vector("iohandler-vector/2", steps=[{"do": "notify"}]), r'fd kind "signal" needs "format"'),
        (_vector("iohandler-vector/1", fds={"a": "socket"}, steps=[{"do": "raise", "fd": "a"}]), r'"raise" needs'),
        (_vector(fds={"a": "socket"}, steps=[{"do": "raise", "fd": "a"}]), "raise on socket fd 'a' is invalid"),
        (_vector(steps=[{"do": "send", "fd": "s"}]), "send on signal fd 's' is invalid"),
        (_vector(steps=[{"do": "hangup", "fd": "s"}]), "hangup on signal fd 's' is invalid"),
        (_vector(steps=[{"do": "ctx-set", "fd": "s"}]), "ctx-set on signal fd 's' is invalid"),
        (_vector(steps=[{"do": "raise", "fd": "t"}]), "fd 't' is not declared"),
        (_vector(steps=[{"do": "raise"}]), "fd"),
    ],
)
def test_bad_signal_vectors_are_refused_naming_the_place(vector: dict[str, Any], message: str) -> None:
    with pytest.raises(VectorError, match=message):
        parse_vector(vector)


def test_the_schema_accepts_the_signal_vectors() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((bundled_vectors_dir().parent / "vector.schema.json").read_text(encoding="utf-8"))
    for p in SIGNAL_FILES:
        jsonschema.validate(json.loads(p.read_text(encoding="utf-8")), schema)


def test_model_readiness_of_a_signal_fd() -> None:
    """R60: IN while the signal is pending, nothing else ever; raising twice is pending once."""
    idle = FdState("signal")
    assert readiness(idle) == 0
    raised = raise_signal("s", raise_signal("s", idle))
    assert readiness(raised) == IN
    assert poll(Table((("s", raised),)), (("s", IN),), False) == ((IN,), 1)
    with pytest.raises(InvalidAction):
        raise_signal("a", FdState("socket"))


def test_there_are_signal_vectors_for_r60_r61_r63() -> None:
    covered = {r for p in SIGNAL_FILES for r in load_vector(p).rules}
    assert {"R60", "R61", "R63"} <= covered
    assert all(load_vector(p).uses_signals for p in SIGNAL_FILES)


@pytest.mark.parametrize("poller", sorted(POLLERS))
@pytest.mark.parametrize("path", SIGNAL_FILES, ids=lambda p: p.stem)
def test_the_loops_driver_passes_the_signal_vectors(path: Path, poller: str) -> None:
    """No fold needed (R36): a signal fd is only ever IN."""
    vector = load_vector(path)
    assert run_vector(vector, poller) == list(vector.expect or ())


def test_the_drivers_over_the_protocol() -> None:
    for driver in ("iohandler.model.driver", "iohandler.impl.driver"):
        outcomes = run_conformance(f"{sys.executable} -m {driver}", SIGNAL_FILES)
        assert [o.detail for o in outcomes if not o.passed] == []
        assert len(outcomes) == len(SIGNAL_FILES) >= 6


def test_a_driver_that_cannot_raise_signals_gets_them_skipped(tmp_path: Path) -> None:
    """Declared with `--no-signals` (runner: signals=False): skipped, never passed; undeclared,
    the same driver fails them."""
    script = tmp_path / "nosig_driver.py"
    script.write_text(
        "import sys, json\nfrom iohandler.model.driver import run\nfrom iohandler.specs.protocol import answer_for\n"
        "for line in sys.stdin:\n"
        "    if '\"signal\"' in line:\n"
        "        print(json.dumps({'error': 'cannot raise signals'}), flush=True)\n"
        "        continue\n"
        "    print(json.dumps(answer_for(line, run)), flush=True)\n"
    )
    driver = f"{sys.executable} {script}"
    other = bundled_vectors_dir() / "rules" / "r07-set-wakes-the-loop.json"
    outcomes = run_conformance(driver, [*SIGNAL_FILES[:2], other], signals=False)
    assert [(o.passed, o.skipped) for o in outcomes] == [(False, True), (False, True), (True, False)]
    assert "cannot raise signals (--no-signals)" in outcomes[0].detail
    assert not any(o.passed for o in run_conformance(driver, SIGNAL_FILES[:1]))
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "iohandler.specs.cli",
            "conform",
            "--no-signals",
            "--driver",
            driver,
            *map(str, SIGNAL_FILES),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    # Every vector skipped is no verdict (the runner's rule for a run that checked nothing): exit 2.
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert f"0 passed, 0 failed, {len(SIGNAL_FILES)} skipped" in cli.stdout
    assert "nothing was checked" in cli.stderr and "--no-signals" in cli.stderr
