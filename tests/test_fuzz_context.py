"""`iohandler fuzz` with format v3 (the AioContext, SPEC R42 on): the generated vectors are valid
and use the new actions, the driver is probed for them, and a driver that cannot run them gets
none (specs/scenarios.py, specs/fuzz.py)."""

from __future__ import annotations

import collections
import json
import sys
from dataclasses import replace

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from iohandler.model.iterate import run_vector
from iohandler.specs.fuzz import context_probe_vector, fuzz
from iohandler.specs.scenarios import vectors
from iohandler.specs.vector import (
    FORMAT_V3,
    V3_ACTIONS,
    BhEvent,
    CtxReadEvent,
    CtxWriteEvent,
    Iterate,
    bundled_vectors_dir,
    parse_vector,
    vector_to_json,
)
from tests.harness.config import budget, model_trace

MODEL = f"{sys.executable} -m iohandler.model.driver"
SCHEMA = jsonschema.Draft202012Validator(json.loads((bundled_vectors_dir().parent / "vector.schema.json").read_text()))
SEEN: collections.Counter[str] = collections.Counter()


@settings(max_examples=budget(dev=300, ci=300, thorough=2000))
@given(data=st.data())
def test_generated_v3_vectors_are_valid(data: st.DataObject) -> None:
    vector = data.draw(vectors(context=True))
    doc = vector_to_json(vector)
    assert list(SCHEMA.iter_errors(doc)) == []
    assert replace(parse_vector(json.loads(json.dumps(doc)), require_expect=False), expect=None) == vector
    model_trace(vector)  # InvalidAction here would fail the test
    model_trace(vector, fold=True)
    actions = [*vector.steps, *(a for body in vector.scripts.values() for a in body)]
    actions += [a for s in vector.steps if isinstance(s, Iterate) for a in s.during_wait]
    SEEN.update(type(a).__name__ for a in actions if isinstance(a, V3_ACTIONS))
    SEEN.update(type(e).__name__ for e in run_vector(vector) if isinstance(e, BhEvent | CtxReadEvent | CtxWriteEvent))


def test_the_generator_reaches_every_v3_action_and_event() -> None:
    # Runs after the property above (same module, no random order): it must have seen them all.
    if not SEEN:
        test_generated_v3_vectors_are_valid()
    wanted = {t.__name__ for t in V3_ACTIONS} | {"BhEvent", "CtxReadEvent", "CtxWriteEvent"}
    assert wanted <= set(SEEN), wanted - set(SEEN)


def test_a_v3_driver_is_probed_and_fuzzed_with_the_context() -> None:
    assert context_probe_vector().format == FORMAT_V3
    result = fuzz(MODEL, examples=budget(dev=20, ci=30, thorough=300), seed=3, save=None, report=lambda _: None)
    assert (result.context, result.context_how, result.mismatches) == (True, "probed", [])
    assert result.summary().endswith("seed 3; context on (probed)")


def test_a_driver_that_refuses_v3_gets_no_context_actions(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    script = tmp_path / "v2.py"
    script.write_text(
        "import sys, json\nfrom iohandler.model.driver import run\nfrom iohandler.specs.protocol import answer_for\n"
        "for line in sys.stdin:\n"
        "    if 'iohandler-vector/3' in line:\n"
        "        print(json.dumps({'error': 'v2 only'}), flush=True); continue\n"
        "    print(json.dumps(answer_for(line, run)), flush=True)\n"
    )
    result = fuzz(f"{sys.executable} {script}", examples=20, seed=1, save=None, report=lambda _: None)
    assert (result.context, result.mismatches) == (False, [])  # a v3 vector would have been a mismatch
