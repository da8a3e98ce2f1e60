"""impl's conformance driver: the QEMU example traces and the bundled vectors, on every poller."""

from __future__ import annotations

import io
import json
import os
import re
import select
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from iohandler.impl import POLLERS, MainLoop, default_poller_name
from iohandler.impl.driver import RealFd, VectorSession, callback_name, main, run_vector
from iohandler.specs.protocol import InvalidVector
from iohandler.specs.vector import (
    Event,
    HandlersEvent,
    Iterate,
    ReadyEvent,
    Vector,
    bundled_vectors_dir,
    event_to_json,
    load_vector,
    parse_vector,
    vector_files,
)
from tests.harness.config import model_trace
from tests.support import open_fds

# The traces taken from QEMU itself, as bundled (test_vectors checks them against their source).
EXAMPLES = sorted((bundled_vectors_dir() / "qemu").glob("*.json"))
BUNDLED = vector_files([bundled_vectors_dir()]) if bundled_vectors_dir().is_dir() else []
ROOT = Path(__file__).resolve().parents[1]

needs_examples = pytest.mark.skipif(
    not EXAMPLES, reason=f"the QEMU example vectors are not there ({bundled_vectors_dir() / 'qemu'})"
)


def _reports_hup_or_err(vector: Vector) -> bool:
    """Does the vector's trace show HUP or ERR (which selectors folds, R36)?"""
    return any(
        isinstance(e, ReadyEvent) and any({"HUP", "ERR"} & set(flags) for _, flags in e.fds)
        for e in vector.expect or ()
    )


def _cases(paths: list[Path]) -> list[object]:
    return [pytest.param(path, poller, id=f"{path.stem}-{poller}") for path in paths for poller in sorted(POLLERS)]


def _expected(vector: Vector, poller: str) -> list[Event]:
    """The committed trace; for selectors, which folds HUP/ERR into readable and writable (SPEC
    R36), the model's trace over R36's folded poll. The fold must matter exactly where the trace
    shows HUP or ERR, so the folded model is not excusing anything else."""
    expect = list(vector.expect or ())
    if poller != "selectors":
        return expect
    folded = model_trace(vector, fold=True)
    assert (folded != expect) == _reports_hup_or_err(vector), vector.name
    return folded


@needs_examples
@pytest.mark.parametrize(("path", "poller"), _cases(EXAMPLES))
def test_qemu_examples(path: Path, poller: str) -> None:
    vector = load_vector(path)
    assert run_vector(vector, poller) == _expected(vector, poller)


@pytest.mark.parametrize(("path", "poller"), _cases(BUNDLED))
def test_bundled_vectors(path: Path, poller: str) -> None:
    vector = load_vector(path)
    assert run_vector(vector, poller) == _expected(vector, poller)


@needs_examples
def test_driver_protocol_over_stdin_stdout() -> None:
    lines = [json.dumps(json.loads(p.read_text())) for p in EXAMPLES]
    lines.insert(1, "not json")
    out = subprocess.run(
        [sys.executable, "-m", "iohandler.impl.driver"],
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


def test_snapshot_names_handlers_and_gates() -> None:
    vector = parse_vector(
        {
            "format": "iohandler-vector/1",
            "name": "t",
            "description": "",
            "rules": [],
            "fds": {"a": "socket", "b": "pipe-write"},
            "scripts": {"r": [], "w": []},
            "gates": {"g": True},
            "steps": [
                {"do": "set", "fd": "a", "read": "r", "write": None, "gate": "g"},
                {"do": "set", "fd": "b", "read": None, "write": "w", "gate": None},
                {"do": "snapshot"},
            ],
        },
        require_expect=False,
    )
    assert run_vector(vector) == [HandlersEvent((("b", None, "w", None), ("a", "r", None, "g")))]


def test_a_run_closes_every_fd_it_opened() -> None:
    vector = load_vector(BUNDLED[0]) if BUNDLED else _vector([{"do": "iterate"}], {})
    before = open_fds()
    run_vector(vector)
    assert open_fds() == before


def test_a_loop_that_cannot_start_leaves_no_fds_behind() -> None:
    before = open_fds()
    with pytest.raises(ValueError, match="poller must be one of"):
        run_vector(_vector([], {}), "no-such-poller")
    assert open_fds() == before


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.mark.parametrize("kind", ["socket", "pipe-read", "pipe-write"])
def test_real_fd_kinds(kind: str) -> None:
    """VECTORS.md's fd kinds: both ends non-blocking (the driver never hangs on a full or empty
    fd); a socket is an AF_UNIX stream; `send` writes one byte toward the loop's end; `drain`
    empties it; `hangup` closes the peer once; `close` closes both ends."""
    before = open_fds()
    f = RealFd(kind)
    assert not os.get_blocking(f.fd) and not os.get_blocking(f.peer_fd)
    if kind == "socket":
        with socket.socket(fileno=os.dup(f.fd)) as s:
            assert (s.family, s.type) == (socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        assert stat.S_ISFIFO(os.fstat(f.fd).st_mode)
        loop_end_writes = kind == "pipe-write"
        assert bool(select.select([], [f.fd], [], 0)[1]) == loop_end_writes
    if kind != "pipe-write":
        assert not _readable(f.fd)
        f.send()
        f.send()
        assert len(os.read(f.fd, 100)) == 2
        f.send()
        f.drain()
        assert not _readable(f.fd)
        f.drain()  # nothing pending: returns at once
    assert f.hung is False
    f.hangup()
    f.hangup()
    assert f.hung is True
    if kind != "pipe-write":
        f.drain()  # end of file
        assert _readable(f.fd)  # the hangup
    f.close()
    assert open_fds() == before


def test_main_help_names_the_program_the_protocol_and_the_default_poller(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m iohandler.impl.driver [-h] [--poller {")
    assert "The loop's conformance driver" in out
    assert re.search(rf"^\s+the loop's poller \(default: {default_poller_name()}\)$", out, re.MULTILINE)


def test_main_serves_on_the_poller_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--poller reaches the loop: selectors folds HUP/ERR, so a vector whose trace shows them
    matches on poll and not on selectors."""
    path = next(p for p in BUNDLED if _reports_hup_or_err(load_vector(p)))
    line = json.dumps(json.loads(path.read_text())) + "\n"
    expect = json.loads(line)["expect"]
    answers = {}
    for poller in ("poll", "selectors"):
        monkeypatch.setattr(sys, "stdin", io.StringIO(line))
        assert main(["--poller", poller]) == 0
        answers[poller] = json.loads(capsys.readouterr().out)
    assert answers["poll"] == {"trace": expect}
    assert answers["selectors"] != {"trace": expect} and "trace" in answers["selectors"]
    folded = [event_to_json(e) for e in model_trace(load_vector(path), fold=True)]
    assert answers["selectors"] == {"trace": folded}


@pytest.mark.parametrize(
    "runs",
    [{"g": "nope"}, {"nope": "s"}, {"nope": "nope"}],
    ids=["undeclared-script", "undeclared-gate", "neither"],
)
def test_gate_scripts_must_name_a_declared_gate_and_a_declared_script(runs: dict[str, str]) -> None:
    with pytest.raises(InvalidVector, match="gate_scripts must map declared gates to declared scripts"):
        VectorSession({"a": "socket"}, {"s": ()}, {"g": True}, runs)


def test_a_closed_session_refuses_actions_and_closes_again_quietly() -> None:
    before = open_fds()
    session = VectorSession({"a": "socket"}, {}, {})
    session.close()
    assert open_fds() == before
    session.close()  # twice: nothing left to close
    with pytest.raises(RuntimeError, match=r"^the session is closed$"):
        session.act(Iterate(()))


def test_for_vector_builds_the_loop_with_the_factory_given() -> None:
    made: list[str | None] = []

    def factory(poller: str | None, **kw: object) -> MainLoop:
        made.append(poller)
        return MainLoop(poller, **kw)  # type: ignore[arg-type]

    session = VectorSession.for_vector(_vector([], {}), "poll", make_loop=factory)
    try:
        assert made == ["poll"] and session.loop is not None and session.loop.poller.name == "poll"
    finally:
        session.close()


def test_callback_name_is_the_script_name_or_the_callables_own_text() -> None:
    class Named:
        name = "s1"

    assert callback_name(None) is None
    assert callback_name(Named()) == "s1"
    assert callback_name(print) == str(print)  # a loop that calls something else shows it
