"""The loader refuses malformed vectors with a message that names the file and the place."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from iohandler.specs.vector import (
    GateEvent,
    Iterate,
    Set,
    VectorError,
    dump_vector,
    load_vector,
    parse_trace,
    parse_vector,
)

GOOD: dict[str, Any] = {
    "format": "iohandler-vector/1",
    "name": "good-one",
    "description": "d",
    "rules": ["R1"],
    "fds": {"a": "socket", "p": "pipe-write"},
    "scripts": {"r": [{"do": "set", "fd": "a", "read": None, "write": None, "gate": None}]},
    "gates": {"g": True},
    "steps": [
        {"do": "set", "fd": "a", "read": "r", "write": None, "gate": "g"},
        {"do": "iterate", "during_wait": [{"do": "notify"}]},
    ],
    "expect": [{"event": "gate", "fd": "a", "gate": "g"}],
}


def mutated(path: list[str | int], value: object) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


def test_good_vector_parses() -> None:
    v = parse_vector(GOOD, "good.json")
    assert v.steps[0] == Set("a", "r", None, "g")
    assert isinstance(v.steps[1], Iterate) and len(v.steps[1].during_wait) == 1
    assert v.expect == (GateEvent("a", "g"),)


def test_round_trip_through_the_file_form(tmp_path: Path) -> None:
    v = parse_vector(GOOD, "good.json")
    f = tmp_path / "good-one.json"
    f.write_text(dump_vector(v))
    again = load_vector(f)
    assert (again.steps, again.expect, again.scripts, again.fds) == (v.steps, v.expect, v.scripts, v.fds)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["format"], "iohandler-vector/4", 'unsupported format "iohandler-vector/4"'),
        (["gate_scripts"], {"g": "r"}, 'gate_scripts: "gate_scripts" needs "format": "iohandler-vector/2"'),
        (["format"], KeyError, 'missing field "format"'),
        (["expect"], KeyError, "missing field(s) ['expect']"),
        (["name"], "Not Kebab", "is not kebab-case"),
        (["fds", "a"], "tty", 'unknown fd kind "tty"'),
        (["gates", "g"], 1, "gates.g: expected true or false"),
        (["steps", 0, "do"], "sett", 'unknown action "sett"'),
        (["steps", 0, "fd"], "zz", "steps[0].fd: fd 'zz' is not declared"),
        (["steps", 0, "read"], "nope", "steps[0].read: script 'nope' is not declared"),
        (["steps", 0, "gate"], "nope", "steps[0].gate: gate 'nope' is not declared"),
        (["steps", 0, "colour"], "red", "unknown field(s) ['colour']"),
        (["steps", 1, "during_wait", 0], {"do": "iterate"}, "not allowed inside a script"),
        (["scripts", "r", 0], {"do": "iterate"}, 'scripts.r[0]: "iterate" is not allowed'),
        (["scripts", "r", 0], {"do": "send", "fd": "p"}, "send on pipe-write fd 'p' is invalid"),
        (["steps", 1], {"do": "drain", "fd": "p"}, "drain on pipe-write fd 'p' is invalid"),
        (["expect", 0], {"event": "poll", "set": [["a", ["HUP", "IN"]]]}, "must be distinct and in the order"),
        (["expect", 0], {"event": "ready", "fds": [], "walk": "yes"}, "expected true or false"),
        (["expect", 0], {"event": "bang"}, 'unknown event "bang"'),
        (["expect", 0], {"event": "handlers", "list": [["a", None]]}, "expected [fd, read, write, gate]"),
    ],
)
def test_malformed_vectors_are_named(path: list[str | int], value: object, message: str) -> None:
    with pytest.raises(VectorError) as info:
        parse_vector(mutated(path, value), "bad.json")
    assert str(info.value).startswith("bad.json")
    assert message in str(info.value)


def test_send_after_hangup_in_steps_is_invalid() -> None:
    steps = [{"do": "hangup", "fd": "a"}, {"do": "iterate", "during_wait": [{"do": "send", "fd": "a"}]}]
    doc = mutated(["steps"], steps)
    with pytest.raises(VectorError, match=r"steps\[1\]\.during_wait\[0\]: send on 'a' after its hangup"):
        parse_vector(doc, "bad.json")


def test_set_fields_default_to_null_and_comments_are_ignored() -> None:
    doc = mutated(["steps", 0], {"do": "set", "fd": "a", "comment": "a delete"})
    assert parse_vector(doc, "x").steps[0] == Set("a", None, None, None)


def test_unknown_top_level_fields_are_kept() -> None:
    doc = mutated(["x-origin"], "qemu 2.3")
    v = parse_vector(doc, "x")
    assert v.extra == {"x-origin": "qemu 2.3"}
    assert json.loads(dump_vector(v))["x-origin"] == "qemu 2.3"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.json"
    f.write_text("{ not json")
    with pytest.raises(VectorError, match=r"broken\.json: not JSON"):
        load_vector(f)
    with pytest.raises(VectorError, match="cannot read"):
        load_vector(tmp_path / "missing.json")


def test_trace_parse_rejects_non_list() -> None:
    with pytest.raises(VectorError, match="expected a list"):
        parse_trace({"event": "gate"}, "driver")


def v2(gate_scripts: object) -> dict[str, Any]:
    doc = mutated(["format"], "iohandler-vector/2")
    doc["gate_scripts"] = gate_scripts
    return doc


def test_gate_scripts_is_a_field_of_format_2(tmp_path: Path) -> None:
    v = parse_vector(v2({"g": "r"}), "x")
    assert v.gate_scripts == {"g": "r"} and v.format == "iohandler-vector/2"
    assert v.extra == {}  # parsed into the field, not kept raw
    f = tmp_path / "good-one.json"
    f.write_text(dump_vector(v))
    again = load_vector(f)
    assert again.gate_scripts == v.gate_scripts and json.loads(f.read_text())["format"] == "iohandler-vector/2"
    # A v2 file without gate_scripts is still v2 on the way in; written out it needs only v1.
    plain = parse_vector(mutated(["format"], "iohandler-vector/2"), "x")
    assert plain.gate_scripts == {} and plain.format == "iohandler-vector/1"
    assert parse_vector(GOOD, "x").format == "iohandler-vector/1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["g"], "gate_scripts: expected an object"),
        ({"nope": "r"}, "gate_scripts.nope: gate 'nope' is not declared"),
        ({"g": "nope"}, "gate_scripts.g: script 'nope' is not declared"),
        ({"g": 1}, "gate_scripts.g: expected a string"),
    ],
)
def test_gate_scripts_are_validated(value: object, message: str) -> None:
    with pytest.raises(VectorError) as info:
        parse_vector(v2(value), "bad.json")
    assert message in str(info.value)
