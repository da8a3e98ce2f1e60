"""PROOFS.md's rule table is current, as `regen --check` is for traces: for every rule of SPEC.md,
the CrossHair conditions that state it (read from their source, as `iohandler verify` does), the
bundled vectors that name it and the test files that name it are what the table says. The run's
own results (status, confirmed or not, state counts, seconds) come from `make verify` and are not
checked here: a run that changes them rewrites the file."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from iohandler.specs import verify

ROOT = Path(__file__).resolve().parent.parent
PROOFS = ROOT / "specs" / "PROOFS.md"
SPEC = ROOT / "specs" / "SPEC.md"


def conditions_by_rule() -> dict[str, set[str]]:
    """rule -> names of the functions whose CrossHair conditions are tagged with it: each
    `post:` line of a docstring, and each lemma (all its asserts' tags)."""
    out: dict[str, set[str]] = {}
    for module in verify.CROSSHAIR_TARGETS:
        path = Path(importlib.import_module(module).__file__ or "").resolve()
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef):
                continue
            doc = ast.get_docstring(node) or ""
            lines = [ln for ln in doc.splitlines() if ln.strip().startswith("post:")]
            if lines:
                rules = {r for ln in lines for r in verify.RULE_TAG.findall(ln.partition("#")[2])}
            elif node.name.startswith("lemma_"):
                body = text.splitlines()[node.lineno - 1 : node.end_lineno]
                rules = {r for ln in body for r in verify.RULE_TAG.findall(ln.partition("#")[2])}
            else:
                continue
            for r in rules:
                out.setdefault(r, set()).add(node.name)
    return out


def table_rows() -> dict[str, list[str]]:
    rows = {}
    for line in PROOFS.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| (R\d+) \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split(" | ")]
    return rows


def test_proof_table_names_every_rule_and_what_it_rests_on() -> None:
    rows = table_rows()
    spec_rules = re.findall(r"^### (R\d+)\b", SPEC.read_text(encoding="utf-8"), re.MULTILINE)
    stale = "run `iohandler verify --proofs-from verify-report.json` (or `make verify`)"
    assert sorted(rows, key=lambda r: int(r[1:])) == spec_rules, stale
    conditions = conditions_by_rule()
    rule_map = verify.rule_map()
    for rule, (_status, crosshair, _inv, vectors, tests) in rows.items():
        assert set(re.findall(r"`(\w+)`", crosshair)) == conditions.get(rule, set()), (rule, stale)
        assert vectors == str(len(rule_map[rule]["vectors"]) or "-"), (rule, stale)
        want = ", ".join(t.removeprefix("tests/") for t in rule_map[rule]["tests"]) or "-"
        assert tests == want, (rule, stale)
