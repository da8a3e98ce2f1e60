"""Format v3 (the AioContext, SPEC R42 on): the loader's new actions and events, the format tag
they need, and the schema saying the same (VECTORS.md, "Format v3")."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from iohandler.specs.runner import run_conformance
from iohandler.specs.vector import (
    FORMAT,
    FORMAT_V2,
    FORMAT_V3,
    BhCancel,
    BhDelete,
    BhEvent,
    BhNew,
    BhSchedule,
    BhScheduleIdle,
    CtxPoll,
    CtxPollEvent,
    CtxProgressEvent,
    CtxReadEvent,
    CtxSet,
    CtxWriteEvent,
    Iterate,
    Timeout,
    TimeoutEvent,
    VectorError,
    bundled_vectors_dir,
    load_vector,
    parse_vector,
    vector_to_json,
)

SCHEMA = jsonschema.Draft202012Validator(
    json.loads((bundled_vectors_dir().parent / "vector.schema.json").read_text(encoding="utf-8"))
)


def doc(
    steps: list[Any], scripts: dict[str, Any] | None = None, fmt: str = FORMAT_V3, expect: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "format": fmt,
        "name": "v",
        "description": "",
        "rules": [],
        "fds": {"a": "socket"},
        "scripts": scripts if scripts is not None else {"s": []},
        "gates": {},
        "steps": steps,
        "expect": expect or [],
    }


EVERY_ACTION = [
    {"do": "bh-new", "bh": "b", "script": "s"},
    {"do": "bh-schedule", "bh": "b"},
    {"do": "bh-schedule-idle", "bh": "b"},
    {"do": "bh-cancel", "bh": "b"},
    {"do": "bh-delete", "bh": "b"},
    {"do": "ctx-set", "fd": "a", "read": "s", "write": None},
    {"do": "ctx-poll"},
    {"do": "timeout"},
    {"do": "iterate", "during_wait": [{"do": "bh-schedule", "bh": "b"}, {"do": "ctx-set", "fd": "a"}]},
]
EVERY_EVENT = [
    {"event": "bh", "bh": "b", "script": "s"},
    {"event": "ctx-poll", "set": [["a", ["IN", "HUP", "ERR"]]]},
    {"event": "ctx-read", "fd": "a", "script": "s"},
    {"event": "ctx-write", "fd": "a", "script": "s"},
    {"event": "ctx-progress", "progress": True},
    {"event": "timeout", "ms": 0},
    {"event": "timeout", "ms": None},
]


def test_every_v3_action_and_event_loads_and_round_trips() -> None:
    v = parse_vector(doc(EVERY_ACTION, expect=EVERY_EVENT))
    assert v.steps == (
        BhNew("b", "s"),
        BhSchedule("b"),
        BhScheduleIdle("b"),
        BhCancel("b"),
        BhDelete("b"),
        CtxSet("a", "s", None),
        CtxPoll(),
        Timeout(),
        Iterate((BhSchedule("b"), CtxSet("a", None, None))),
    )
    assert v.expect == (
        BhEvent("b", "s"),
        CtxPollEvent((("a", ("IN", "HUP", "ERR")),)),
        CtxReadEvent("a", "s"),
        CtxWriteEvent("a", "s"),
        CtxProgressEvent(True),
        TimeoutEvent(0),
        TimeoutEvent(None),
    )
    assert v.format == FORMAT_V3
    assert parse_vector(vector_to_json(v)) == v
    SCHEMA.validate(vector_to_json(v))


@pytest.mark.parametrize("fmt", [FORMAT, FORMAT_V2])
@pytest.mark.parametrize("action", EVERY_ACTION[:-1], ids=lambda a: str(a["do"]))
def test_an_older_file_using_a_v3_action_is_refused_naming_where(fmt: str, action: dict[str, Any]) -> None:
    steps = [{"do": "bh-new", "bh": "b", "script": "s"}] if action["do"].startswith("bh-") else []
    with pytest.raises(VectorError, match=r"steps\[\d\].*needs \"format\": \"iohandler-vector/3\""):
        parse_vector(doc([*steps, action], fmt=fmt))


def test_a_v3_action_in_a_script_of_a_v2_file_is_refused() -> None:
    with pytest.raises(VectorError, match=r"scripts\.s\[0\]"):
        parse_vector(doc([], scripts={"s": [{"do": "ctx-poll"}]}, fmt=FORMAT_V2))


def test_a_file_without_v3_actions_keeps_its_older_format() -> None:
    assert parse_vector(doc([{"do": "notify"}], fmt=FORMAT_V3)).format == FORMAT


def test_ctx_poll_is_refused_in_during_wait() -> None:
    bad = doc([{"do": "iterate", "during_wait": [{"do": "ctx-poll"}]}])
    with pytest.raises(VectorError, match=r"during_wait\[0\].*not allowed inside during_wait"):
        parse_vector(bad)
    assert not SCHEMA.is_valid(bad)
    assert SCHEMA.is_valid(doc([{"do": "ctx-poll"}], scripts={"s": [{"do": "ctx-poll"}]}))


@pytest.mark.parametrize(
    ("steps", "scripts", "message"),
    [
        ([{"do": "bh-schedule", "bh": "x"}], None, r"steps\[0\]\.bh: bh 'x' is never created"),
        ([{"do": "bh-new", "bh": "x", "script": "nope"}], None, r"steps\[0\]\.script: script 'nope'"),
        ([{"do": "ctx-set", "fd": "a", "write": "nope"}], None, r"steps\[0\]\.write: script 'nope'"),
        ([{"do": "ctx-set", "fd": "z", "read": "s"}], None, r"steps\[0\]\.fd: fd 'z' is not declared"),
        ([{"do": "bh-new", "bh": "x"}], None, r"missing field\(s\) \['script'\]"),
        ([{"do": "ctx-set", "fd": "a", "gate": None}], None, r"unknown field\(s\) \['gate'\]"),
        ([{"do": "timeout", "ms": 3}], None, r"unknown field\(s\) \['ms'\]"),
    ],
)
def test_bad_v3_actions_are_refused_naming_the_place(
    steps: list[Any], scripts: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(VectorError, match=message):
        parse_vector(doc(steps, scripts))


def test_a_bh_created_only_in_a_script_may_be_used_in_steps() -> None:
    v = parse_vector(doc([{"do": "bh-cancel", "bh": "x"}], scripts={"s": [{"do": "bh-new", "bh": "x", "script": "s"}]}))
    assert v.steps == (BhCancel("x"),)


@pytest.mark.parametrize("ms", [-1, 1.5, True, "0"])
def test_a_timeout_event_needs_whole_non_negative_ms_or_null(ms: object) -> None:
    bad = doc([], expect=[{"event": "timeout", "ms": ms}])
    with pytest.raises(VectorError, match=r"expect: \[0\]\.ms"):
        parse_vector(bad)
    assert not SCHEMA.is_valid(bad)


def test_unknown_action_message_lists_the_v3_actions() -> None:
    with pytest.raises(VectorError, match="bh-new, bh-schedule, bh-schedule-idle, bh-cancel, bh-delete, ctx-set"):
        parse_vector(doc([{"do": "bh-run", "bh": "b"}]))


# ------------------------------------------------------------------ runner and bundled vectors

V3_FILES = sorted((bundled_vectors_dir() / "context").glob("*.json"))


def test_every_context_rule_has_a_bundled_v3_vector() -> None:
    spec = (bundled_vectors_dir().parent / "SPEC.md").read_text(encoding="utf-8")
    rules = [r for r in re.findall(r"^### (R\d+)\b", spec, re.MULTILINE) if 42 <= int(r[1:]) < 60]  # R60 on: signals
    assert rules == [f"R{i}" for i in range(42, 51)]
    covered = {r for p in V3_FILES for r in load_vector(p).rules}
    assert [r for r in rules if r not in covered] == []
    assert all(load_vector(p).format == FORMAT_V3 for p in V3_FILES)


def test_a_driver_declaring_format_2_gets_the_v3_vectors_skipped(tmp_path: Path) -> None:
    # A v2 driver that dies if it is ever sent a v3 vector.
    script = tmp_path / "v2_driver.py"
    script.write_text(
        "import sys, json\nfrom iohandler.model.driver import run\nfrom iohandler.specs.protocol import answer_for\n"
        "for line in sys.stdin:\n"
        "    if 'iohandler-vector/3' in line: sys.exit(5)\n"
        "    print(json.dumps(answer_for(line, run)), flush=True)\n"
    )
    driver = f"{sys.executable} {script}"
    v2 = bundled_vectors_dir() / "gate-scripts" / "r22-gate-adds-record.json"
    outcomes = run_conformance(driver, [*V3_FILES[:2], v2], driver_format=2)
    assert [(o.passed, o.skipped) for o in outcomes] == [(False, True), (False, True), (True, False)]
    assert "format iohandler-vector/3 (driver reads up to iohandler-vector/2)" in outcomes[0].detail
    # Without --format 2 the same driver fails them (it exits), never passes them.
    assert not any(o.passed for o in run_conformance(driver, V3_FILES[:1]))


def test_the_model_driver_passes_the_v3_vectors() -> None:
    outcomes = run_conformance(f"{sys.executable} -m iohandler.model.driver", V3_FILES)
    assert len(outcomes) == len(V3_FILES) >= 30
    assert [o.detail for o in outcomes if not o.passed] == []


@pytest.mark.parametrize("order", ["set-first", "ctx-first"])
def test_an_fd_in_both_lists_is_refused(order: str) -> None:
    steps = [{"do": "set", "fd": "a", "read": "s"}, {"do": "ctx-set", "fd": "a", "read": "s"}]
    if order == "ctx-first":
        steps.reverse()
    with pytest.raises(VectorError, match=r"'a' .*set.*ctx-set|'a' has a set action too"):
        parse_vector(doc(steps))
    # Different fds are fine, and a script's registration counts as much as a step's.
    with pytest.raises(VectorError, match="'a'"):
        parse_vector(doc([{"do": "ctx-set", "fd": "a", "read": "s"}], scripts={"s": [{"do": "set", "fd": "a"}]}))
