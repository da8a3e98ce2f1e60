"""impl's conformance driver: the QEMU example traces and the bundled vectors, on every poller."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from impl import POLLERS
from impl.driver import run_vector
from specs.protocol import InvalidVector
from specs.vector import (
    ReadyEvent,
    Vector,
    bundled_vectors_dir,
    load_vector,
    parse_vector,
    vector_files,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
EXAMPLES = sorted((SHARED / "vector-examples").glob("*.json"))
BUNDLED = vector_files([bundled_vectors_dir()]) if bundled_vectors_dir().is_dir() else []
ROOT = Path(__file__).resolve().parents[1]

needs_examples = pytest.mark.skipif(
    not EXAMPLES, reason=f"the QEMU example vectors are not there ({SHARED / 'vector-examples'})"
)


def _reports_hup_or_err(vector: Vector) -> bool:
    """selectors folds HUP/ERR into read/write (impl/pollers.py): vectors whose trace shows
    them cannot match there, by design."""
    return any(
        isinstance(e, ReadyEvent) and any({"HUP", "ERR"} & set(flags) for _, flags in e.fds)
        for e in vector.expect or ()
    )


def _cases(paths: list[Path]) -> list[object]:
    cases: list[object] = []
    for path in paths:
        for poller in sorted(POLLERS):
            marks = []
            if poller == "selectors" and _reports_hup_or_err(load_vector(path)):
                marks.append(
                    pytest.mark.xfail(strict=True, reason="selectors folds HUP/ERR (documented)")
                )
            cases.append(pytest.param(path, poller, marks=marks, id=f"{path.stem}-{poller}"))
    return cases


@needs_examples
@pytest.mark.parametrize(("path", "poller"), _cases(EXAMPLES))
def test_qemu_examples(path: Path, poller: str) -> None:
    vector = load_vector(path)
    assert run_vector(vector, poller) == list(vector.expect or ())


@pytest.mark.parametrize(("path", "poller"), _cases(BUNDLED))
def test_bundled_vectors(path: Path, poller: str) -> None:
    vector = load_vector(path)
    assert run_vector(vector, poller) == list(vector.expect or ())


@needs_examples
def test_driver_protocol_over_stdin_stdout() -> None:
    lines = [json.dumps(json.loads(p.read_text())) for p in EXAMPLES]
    lines.insert(1, "not json")
    out = subprocess.run(
        [sys.executable, "-m", "impl.driver"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(out) == len(lines)
    assert "error" in json.loads(out[1])
    answers = [json.loads(line) for i, line in enumerate(out) if i != 1]
    for path, answer in zip(EXAMPLES, answers, strict=True):
        assert answer == {"trace": json.loads(path.read_text())["expect"]}


def _vector(steps: list[dict[str, object]], scripts: dict[str, object]) -> Vector:
    return parse_vector(
        {
            "format": "iohandler-vector/1",
            "name": "t",
            "description": "",
            "rules": [],
            "fds": {"a": "socket"},
            "scripts": scripts,
            "gates": {},
            "steps": steps,
        },
        require_expect=False,
    )


def test_send_after_hangup_in_a_script_is_an_invalid_vector() -> None:
    vector = _vector(
        [
            {"do": "set", "fd": "a", "read": None, "write": "w", "gate": None},
            {"do": "hangup", "fd": "a"},
            {"do": "iterate"},
        ],
        {"w": [{"do": "send", "fd": "a"}]},
    )
    with pytest.raises(InvalidVector, match="after its hangup"):
        run_vector(vector)


def test_second_hangup_is_a_noop_and_drain_after_hangup_is_fine() -> None:
    vector = _vector(
        [
            {"do": "send", "fd": "a"},
            {"do": "hangup", "fd": "a"},
            {"do": "hangup", "fd": "a"},
            {"do": "drain", "fd": "a"},
            {"do": "drain", "fd": "a"},
        ],
        {},
    )
    assert run_vector(vector) == []
