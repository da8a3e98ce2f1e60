"""The bundled vectors: the model reproduces every committed trace; the rules are all covered."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from iohandler.model.iterate import run_vector
from iohandler.model.regen import main as regen_main
from iohandler.specs.vector import bundled_vectors_dir, load_vector, vector_files

VECTORS = vector_files([bundled_vectors_dir()])
SPEC = (bundled_vectors_dir().parent / "SPEC.md").read_text(encoding="utf-8")
ALL_RULES = re.findall(r"^### (R\d+)\b", SPEC, re.MULTILINE)
SEED_RULES = sorted((r for r in ALL_RULES if int(r[1:]) < 30), key=lambda r: int(r[1:]))


def test_there_are_vectors_for_every_rule_file() -> None:
    assert len(VECTORS) >= 40


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_model_reproduces_committed_trace(path: Path) -> None:
    vector = load_vector(path)
    assert vector.expect is not None
    assert run_vector(vector) == vector.expect


def test_regen_check_is_clean() -> None:
    # CI fails when a committed trace or the SPEC table differs from what the model produces.
    assert regen_main(["--check"]) == 0


def test_every_seed_rule_has_a_vector() -> None:
    covered = {r for p in VECTORS for r in load_vector(p).rules}
    assert [f"R{i}" for i in range(1, 23)] == SEED_RULES
    assert [r for r in SEED_RULES if r not in covered] == []


def test_vectors_name_only_rules_that_exist() -> None:
    known = set(re.findall(r"^### (R\d+)\b", SPEC, re.MULTILINE))
    for p in VECTORS:
        assert set(load_vector(p).rules) <= known, p


def test_vector_names_are_unique_and_match_files() -> None:
    names = [load_vector(p).name for p in VECTORS]
    assert len(names) == len(set(names))
    assert all(load_vector(p).name == p.stem for p in VECTORS)


def test_schema_accepts_every_bundled_vector() -> None:
    schema = json.loads((bundled_vectors_dir().parent / "vector.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for p in VECTORS:
        errors = list(validator.iter_errors(json.loads(p.read_text())))
        assert errors == [], (p, errors[0].message if errors else "")


def test_qemu_reference_vectors_are_bundled_verbatim() -> None:
    # The three traces taken from QEMU itself anchor the model to the seed.
    shared = Path(__file__).resolve().parents[2] / "shared" / "vector-examples"
    if not shared.is_dir():
        pytest.skip(f"{shared} is not beside this checkout")
    for src in shared.glob("*.json"):
        bundled = bundled_vectors_dir() / "qemu" / src.name
        assert json.loads(bundled.read_text()) == json.loads(src.read_text())


def test_format_2_is_exactly_the_vectors_with_gate_scripts() -> None:
    # v2 = v1 + gate_scripts (VECTORS.md): a file says v2 only when it needs it, and the schema
    # refuses gate_scripts in a v1 file as the loader does.
    schema_text = (bundled_vectors_dir().parent / "vector.schema.json").read_text()
    schema = jsonschema.Draft202012Validator(json.loads(schema_text))
    for p in VECTORS:
        doc = json.loads(p.read_text())
        assert (doc["format"] == "iohandler-vector/2") == ("gate_scripts" in doc), p
        assert (p.parent.name == "gate-scripts") == ("gate_scripts" in doc), p
        if "gate_scripts" in doc:
            assert not schema.is_valid({**doc, "format": "iohandler-vector/1"}), p
