"""`iohandler verify`: the main job. Every check, one summary table, `N passed, M failed`.

Each check is a row; a row passes or fails as a whole. Checks that need the dev tools (mypy,
ruff, CrossHair, pytest) run them as subprocesses of this interpreter, so the job sees exactly
the venv it was started from. The test files write their figures (examples, steps, states) as
JSON into IOHANDLER_STATS_DIR, which this job sets and reads for the detail column.

Outputs:

* `--json FILE`: every row with its figures (`crosshair`: conditions and their status, with the
  rules each states and its bounds; `exploration`: one entry per closed exploration; the model
  bug catalogue), the rule -> vector and rule -> test maps, the date and the result.
* the proof table `specs/PROOFS.md`: written from that JSON (never by hand). A full run in a
  checkout rewrites the checkout's specs/PROOFS.md (`--quick` does not, its budgets confirm
  less); `--proofs PATH` writes it elsewhere. `--proofs-from FILE` rewrites the table from a saved
  JSON without running anything.

Outside a checkout (an installed wheel: no pyproject.toml and tests/ beside the package) only
the vector rows can run; the job says so in one line. The checkout is detected from `__file__`
resolved (the strict editable install symlinks files into build/).
"""

from __future__ import annotations

import ast
import datetime
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iohandler.specs.runner import run_conformance
from iohandler.specs.vector import bundled_vectors_dir, load_vector, vector_files

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PROOFS = ROOT / "specs" / "PROOFS.md"
NEEDS_CHECKOUT = (
    "The full job (mypy, ruff, CrossHair, the test suites) needs a checkout: git clone the "
    "repository, then `make verify`; here only the vectors run."
)


def in_checkout(root: Path = ROOT) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "tests").is_dir()


# Rows run as their own pytest session; "unit" is everything else under tests/.
SUITES: dict[str, list[str]] = {
    "lockstep (model vs real loop)": ["tests/test_lockstep.py"],
    "exhaustive exploration": ["tests/test_exhaustive.py", "tests/test_exhaustive_context.py"],
    "model bug catalogue": ["tests/test_model_bugs.py"],
    "bug catalogue": ["tests/test_catalogue.py"],
    "reliability": ["tests/test_reliability*.py"],
}


# Extra environment per suite: the exploration row runs the largest closure.
SUITE_ENV: dict[str, dict[str, str]] = {"exhaustive exploration": {"IOHANDLER_EXPLORE": "large"}}


# Rows whose pytest runs cover the test files that name rules (the proof table's last column).
TEST_ROWS = frozenset(("unit and conformance tests", "lockstep (model vs real loop)", "bug catalogue", "reliability"))


@dataclass(frozen=True)
class Row:
    name: str
    passed: bool
    detail: str
    seconds: float
    figures: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Contract:
    """One CrossHair condition: `confirmed` (all paths), `unconfirmed` (explored for the
    budget, no counterexample), or `refuted` (a counterexample, in `message`)."""

    where: str
    status: str
    message: str


_CH_LINE = re.compile(r"^(?P<where>\S+?:\d+): (?P<level>info|error): (?P<msg>.*)$")


def parse_crosshair(output: str) -> list[Contract]:
    results = []
    for line in output.splitlines():
        m = _CH_LINE.match(line.strip())
        if not m:
            continue
        msg = m["msg"]
        if m["level"] == "error":
            status = "refuted"
        elif msg.startswith("Confirmed over all paths"):
            status = "confirmed"
        elif msg.startswith("Not confirmed"):
            status = "unconfirmed"
        else:  # e.g. "Unable to meet precondition": nothing was explored
            status = "unexplored"
        results.append(Contract(m["where"], status, msg))
    return results


CROSSHAIR_TARGETS = (
    "iohandler.model.contracts",
    "iohandler.model.state",
    "iohandler.impl.pollers",
)
"""The modules that carry contracts: the lemmas of model/contracts.py (plain asserts) and the
PEP 316 docstrings on the event-name mappings of model/state.py and impl/pollers.py. By module
name: CrossHair does not descend into a package given by name."""


def run_crosshair(targets: Sequence[str], per_condition: float, cwd: Path = ROOT) -> tuple[list[Contract], str]:
    """Run `crosshair check` over the PEP 316 contracts of `targets`; return each condition."""
    proc = subprocess.run(
        [
            PY,
            "-m",
            "crosshair",
            "check",
            "--analysis_kind=PEP316,asserts",
            "--report_all",
            f"--per_condition_timeout={per_condition}",
            *targets,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return parse_crosshair(proc.stdout + proc.stderr), proc.stdout + proc.stderr


def _tool(args: list[str], ok: Callable[[subprocess.CompletedProcess[str]], tuple[bool, str]]) -> tuple[bool, str]:
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    return ok(proc)


def check_mypy() -> tuple[bool, str]:
    targets = [d for d in ("model", "impl", "specs", "tests", "bench") if (ROOT / d).is_dir()]

    def ok(p: subprocess.CompletedProcess[str]) -> tuple[bool, str]:
        last = (p.stdout.strip().splitlines() or ["no output"])[-1]
        return p.returncode == 0, last

    return _tool([PY, "-m", "mypy", "--strict", *targets], ok)


def check_ruff() -> tuple[bool, str]:
    def ok(p: subprocess.CompletedProcess[str]) -> tuple[bool, str]:
        out = (p.stdout + p.stderr).strip().splitlines()
        return p.returncode == 0, (out[-1] if out else "no output")

    lint_ok, lint = _tool([PY, "-m", "ruff", "check", "."], ok)
    fmt_ok, fmt = _tool([PY, "-m", "ruff", "format", "--check", "."], ok)
    return lint_ok and fmt_ok, f"{lint}; format: {fmt}"


RULE_TAG = re.compile(r"\bR\d+\b")


def describe_condition(where: str) -> dict[str, object]:
    """What a condition states, read from its source: the file (relative), the line, the lemma
    or function, the rules it is tagged with (`# R15 R17`) and its bounds (a lemma's leading
    assert, a docstring's `pre:` lines)."""
    path, _, line_s = where.rpartition(":")
    line = int(line_s)
    info: dict[str, object] = {"where": where, "line": line, "rules": [], "bounds": ""}
    try:
        resolved = Path(path).resolve()
        text = resolved.read_text(encoding="utf-8")
        info["file"] = str(resolved.relative_to(ROOT))
    except (OSError, ValueError):
        return info
    lines = text.splitlines()
    own = lines[line - 1] if 0 < line <= len(lines) else ""
    info["text"] = own.strip()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef) or not node.lineno <= line <= (node.end_lineno or node.lineno):
            continue
        info["function"] = node.name
        doc = ast.get_docstring(node) or ""
        info["states"] = " ".join(doc.split("\n\n")[0].split())  # the docstring's first paragraph
        body = lines[node.lineno - 1 : node.end_lineno]
        if own.strip().startswith("post:"):  # PEP 316: one condition per line
            info["rules"] = RULE_TAG.findall(own.partition("#")[2])
            info["bounds"] = "; ".join(ln.strip() for ln in body if ln.strip().startswith("pre:"))
        else:  # a lemma: one condition, every assert's tags; its first assert is the bounds
            info["rules"] = sorted(
                {r for ln in body for r in RULE_TAG.findall(ln.partition("#")[2])}, key=lambda r: int(r[1:])
            )
            first = next((n for n in node.body if isinstance(n, ast.Assert)), None)
            info["bounds"] = ast.unparse(first.test) if first is not None else ""
    return info


def check_crosshair(
    per_condition: float, listing: list[str], *, require_all: bool = True
) -> tuple[bool, str, dict[str, object]]:
    """`require_all`: the row passes only when every condition is confirmed over all paths (the
    full job's bar, issue 12); `--quick` budgets confirm less and only need no counterexample."""
    start = time.monotonic()
    contracts, raw = run_crosshair(CROSSHAIR_TARGETS, per_condition)
    if not contracts:
        return False, "CrossHair reported nothing: " + raw.strip()[-300:], {}
    counts = {s: sum(c.status == s for c in contracts) for s in ("confirmed", "unconfirmed", "unexplored", "refuted")}
    for c in contracts:
        listing.append(f"  {c.status:<11} {_condition_text(c.where)}")
        if c.status in ("refuted", "unexplored"):
            listing.append(f"              {c.message}")
    detail = (
        f"{len(contracts)} conditions: {counts['confirmed']} confirmed over all paths, {counts['unconfirmed']} "
        f"explored {per_condition:g} s each without counterexample, {counts['unexplored']} unexplored, "
        f"{counts['refuted']} refuted"
    )
    figures: dict[str, object] = {
        "crosshair": {
            "conditions": len(contracts),
            "confirmed": counts["confirmed"],
            "unconfirmed": counts["unconfirmed"],
            "unexplored": counts["unexplored"],
            "refuted": counts["refuted"],
            "per_condition_s": per_condition,
            "seconds": round(time.monotonic() - start, 1),
            "each": [{**describe_condition(c.where), "status": c.status, "message": c.message} for c in contracts],
        }
    }
    complete = counts["confirmed"] == len(contracts) or not require_all
    return counts["refuted"] == 0 and counts["unexplored"] == 0 and complete, detail, figures


def _condition_text(where: str) -> str:
    """`model/fill.py:22  post: ...`: the condition as written, so the listing reads alone."""
    info = describe_condition(where)
    if "file" not in info:
        return where
    return f"{info['file']}:{info['line']}  {info.get('text', '')}"


_PYTEST_TAIL = re.compile(r"(\d+) (passed|failed|error|errors|xfailed|skipped|xpassed)")


def check_pytest(
    files: Sequence[str], stats_dir: Path, ignore: Sequence[str] = (), extra_env: dict[str, str] | None = None
) -> tuple[bool, str]:
    expanded = [str(p.relative_to(ROOT)) for f in files for p in sorted(ROOT.glob(f))]
    if files and not expanded:
        return False, f"no test file matches {', '.join(files)}"
    args = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *expanded]
    args += [f"--ignore={i}" for pattern in ignore for i in sorted(str(p) for p in ROOT.glob(pattern))]
    env = {**os.environ, "IOHANDLER_STATS_DIR": str(stats_dir), **(extra_env or {})}
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1].strip("= ") if lines else "no output"
    counts = ", ".join(f"{n} {w}" for n, w in _PYTEST_TAIL.findall(summary))
    if proc.returncode != 0:
        failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:5]
        return False, "; ".join([counts or summary, *failures])
    return True, counts or summary


def check_vectors(driver: str) -> tuple[bool, str]:
    outcomes = run_conformance(driver, [bundled_vectors_dir()])
    passed = sum(o.passed for o in outcomes)
    failed = [o.name for o in outcomes if not o.passed]
    detail = f"{passed}/{len(outcomes)} vectors"
    if failed:
        detail += ": failed " + ", ".join(failed[:5])
    return not failed and bool(outcomes), detail


def check_regen() -> tuple[bool, str]:
    proc = subprocess.run([PY, "-m", "iohandler.model.regen", "--check"], cwd=ROOT, capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, text[-1] if text else "no output"


def _stats_note(name: str, stats_dir: Path) -> str:
    """Figures the test files left behind, e.g. examples and steps of the lockstep machine."""
    notes = []
    stems = {
        "lockstep": "lockstep",
        "exhaustive": "exhaustive",
        "model bug": "model-bugs",
        "catalogue": "catalogue",
        "reliability": "reliability",
    }
    stem = next((v for k, v in stems.items() if name.startswith(k) or k in name), None)
    if stem is None:
        return ""
    for f in sorted(stats_dir.glob(f"{stem}*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            flat = ", ".join(f"{k} {v}" for k, v in data.items() if isinstance(v, int | float | str | bool))
            if flat:
                notes.append(f"{f.stem}: {flat}")
    return ("; " + "; ".join(notes)) if notes else ""


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def exploration_figures(stats_dir: Path) -> dict[str, object]:
    """`exploration-<name>.json` (one per closed exploration) and `model-bugs.json`, as written
    by tests/test_exhaustive.py and tests/test_model_bugs.py; absent files give no entry."""
    keys = ("name", "closed", "states", "transitions", "diameter", "seconds", "invariants")
    explorations = []
    for f in sorted(stats_dir.glob("exploration-*.json")):
        data = _read_json(f)
        if isinstance(data, dict):
            explorations.append({k: data.get(k) for k in keys})
    figures: dict[str, object] = {"exploration": explorations}
    bugs = _read_json(stats_dir / "model-bugs.json")
    if isinstance(bugs, dict):
        figures["model_bugs"] = {k: bugs.get(k) for k in ("bugs", "refuted", "by_bug")}
    return figures


def catalogue_figures(stats_dir: Path) -> dict[str, object]:
    """`catalogue.json` (tests/test_catalogue.py): per planted loop bug, the check that killed it,
    the examples and the seconds the lockstep hunt took to the first failing example and from
    there to the minimised counterexample (the time to red)."""
    data = _read_json(stats_dir / "catalogue.json")
    if not isinstance(data, dict):
        return {}
    keys = ("bug", "check", "examples", "steps", "seconds_to_failure", "seconds_to_red")
    return {"catalogue": {n: {k: v.get(k) for k in keys} for n, v in data.items() if isinstance(v, dict)}}


def rule_map() -> dict[str, dict[str, list[str]]]:
    """Per rule: the bundled vectors that name it (as the SPEC.md table built by
    iohandler.model.regen) and, in a checkout, the test files that name it."""
    spec = bundled_vectors_dir().parent / "SPEC.md"
    rules = re.findall(r"^### (R\d+)\b", spec.read_text(encoding="utf-8"), re.MULTILINE) if spec.exists() else []
    out: dict[str, dict[str, list[str]]] = {r: {"vectors": [], "tests": []} for r in rules}
    for path in vector_files([bundled_vectors_dir()]):
        vector = load_vector(path)
        for r in vector.rules:
            out.setdefault(r, {"vectors": [], "tests": []})["vectors"].append(f"{path.parent.name}/{path.name}")
    tests = sorted((ROOT / "tests").glob("*.py")) if in_checkout() else []
    for t in tests:
        text = t.read_text(encoding="utf-8")
        for r in out:
            if re.search(rf"\b{r}\b", text):
                out[r]["tests"].append(f"tests/{t.name}")
    return out


Check = Callable[[], "tuple[bool, str] | tuple[bool, str, dict[str, object]]"]


def run_verify(
    quick: bool = False, json_path: Path | None = None, proofs_path: Path | None = None, only: Sequence[str] = ()
) -> int:
    """Run every check that can run here (or those whose name contains one of `only`); print the
    table; write the JSON and the proof table."""
    # Budget per condition: enough for the largest lemma to exhaust its paths on a busy 2-core
    # machine; conditions that exhaust sooner stop sooner.
    per_condition = 2.0 if quick else 120.0
    checkout = in_checkout()
    listing: list[str] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="iohandler-stats-") as tmp:
        stats = Path(tmp)
        vector_checks: list[tuple[str, Check]] = [
            ("vectors vs model", lambda: check_vectors(f"{PY} -m iohandler.model.driver")),
            ("vectors vs impl (epoll)", lambda: check_vectors(f"{PY} -m iohandler.impl.driver --poller epoll")),
            ("vectors vs impl (poll)", lambda: check_vectors(f"{PY} -m iohandler.impl.driver --poller poll")),
        ]
        checks: list[tuple[str, Check]] = vector_checks
        if checkout:
            checks = [
                ("mypy --strict", check_mypy),
                ("ruff", check_ruff),
                ("CrossHair (model/, impl/)", lambda: check_crosshair(per_condition, listing, require_all=not quick)),
                *vector_checks,
                ("committed traces = model", check_regen),
                (
                    "unit and conformance tests",
                    # CrossHair, mypy and ruff have their own rows above; the rest of tests/ is this row.
                    lambda: check_pytest(
                        [],
                        stats,
                        ignore=[
                            *(f for fs in SUITES.values() for f in fs),
                            "tests/test_contracts.py",
                            "tests/test_lint.py",
                        ],
                    ),
                ),
            ]
            for name, files in SUITES.items():
                checks.append((name, functools.partial(check_pytest, files, stats, extra_env=SUITE_ENV.get(name))))
        else:
            print(NEEDS_CHECKOUT, file=sys.stderr)
        if only:
            checks = [(name, fn) for name, fn in checks if any(o.lower() in name.lower() for o in only)]
            if not checks:
                raise SystemExit(f"--only: no check matches {', '.join(only)}")
        for name, fn in checks:
            print(f"... {name}", file=sys.stderr, flush=True)
            start = time.monotonic()
            figures: dict[str, object] = {}
            try:
                result = fn()
                passed, detail = result[0], result[1]
                if len(result) == 3:
                    figures = result[2]
            except Exception as e:  # a check that cannot run is a failed check, not a crash
                passed, detail = False, f"could not run: {type(e).__name__}: {e}"
            if name == "exhaustive exploration":
                figures = exploration_figures(stats)
            elif name == "model bug catalogue":
                figures = {k: v for k, v in exploration_figures(stats).items() if k == "model_bugs"}
            elif name == "bug catalogue":
                figures = catalogue_figures(stats)
            rows.append(Row(name, passed, detail + _stats_note(name, stats), time.monotonic() - start, figures))

    width = max(len(r.name) for r in rows)
    print(f"\n{'check':<{width}}  result  {'time':>7}  detail")
    print(f"{'-' * width}  ------  {'-' * 7}  ------")
    for r in rows:
        print(f"{r.name:<{width}}  {'PASS' if r.passed else 'FAIL':<6}  {r.seconds:6.1f}s  {r.detail}")
    if listing:
        print("\nCrossHair, each condition:")
        print("\n".join(listing))
    n_passed = sum(r.passed for r in rows)
    print(f"\n{n_passed} passed, {len(rows) - n_passed} failed")
    if not checkout:
        print(NEEDS_CHECKOUT)

    report = build_report(rows, quick=quick or bool(only), checkout=checkout)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {json_path}")
    target = proofs_path or (PROOFS if checkout and not quick and not only else None)
    if target is not None:
        target.write_text(proof_table(report), encoding="utf-8")
        print(f"wrote {target}")
    return 0 if n_passed == len(rows) else 1


def build_report(rows: Sequence[Row], quick: bool, checkout: bool) -> dict[str, object]:
    report: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "checkout": checkout,
        "passed": sum(r.passed for r in rows),
        "failed": sum(not r.passed for r in rows),
        "rows": [
            {"name": r.name, "passed": r.passed, "seconds": round(r.seconds, 1), "detail": r.detail, **r.figures}
            for r in rows
        ],
        "rules": rule_map(),
    }
    for r in rows:  # the headline figures, also at the top level
        for key in ("crosshair", "exploration", "model_bugs", "catalogue"):
            if key in r.figures:
                report[key] = r.figures[key]
    return report


def rows_of(report: dict[str, object]) -> list[dict[str, object]]:
    rows = report.get("rows")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _row(report: dict[str, object], name: str) -> dict[str, object] | None:
    found = [r for r in rows_of(report) if r.get("name") == name]
    return found[0] if found else None


def _status(row: dict[str, object] | None) -> str:
    if row is None:
        return "not run"
    return f"{'PASS' if row.get('passed') else 'FAIL'}, {row.get('seconds')} s"


def proof_table(report: dict[str, object]) -> str:
    """specs/PROOFS.md from a verify report (the JSON of `iohandler verify --json`)."""
    raw_rules = report.get("rules")
    rules: dict[str, dict[str, list[str]]] = raw_rules if isinstance(raw_rules, dict) else {}
    ch = report.get("crosshair")
    conditions = [c for c in ch.get("each", []) if isinstance(c, dict)] if isinstance(ch, dict) else []
    raw_expl = report.get("exploration")
    explorations = [e for e in raw_expl if isinstance(e, dict)] if isinstance(raw_expl, list) else []
    ch_row = _row(report, "CrossHair (model/, impl/)")
    ex_row = _row(report, "exhaustive exploration")
    lines = [
        "# What is proven, and under which bounds",
        "",
        "<!-- generated by `iohandler verify` from its JSON report; do not edit. Regenerate: "
        "`iohandler verify --json F` (a full run), or `iohandler verify --proofs-from F`. -->",
        "",
        f"Last run: {report.get('date')}, {'a partial or quick run' if report.get('quick') else 'the full job'}: "
        f"{report.get('passed')} rows passed, {report.get('failed')} failed"
        f" ({', '.join(str(r.get('name')) for r in rows_of(report))}).",
        "",
    ]
    if isinstance(ch, dict):
        lines.append(
            f"CrossHair ({_status(ch_row)}): {ch.get('conditions')} conditions, {ch.get('confirmed')} confirmed over "
            f"all paths, {ch.get('unconfirmed')} explored without counterexample, {ch.get('refuted')} refuted; "
            f"budget {ch.get('per_condition_s')} s per condition, {ch.get('seconds')} s in all. A condition is "
            "*confirmed* when CrossHair exhausts its paths: every input within its bounds was covered."
        )
    else:
        lines.append("CrossHair: not run.")
    if explorations:
        lines.append("")
        lines.append(f"Closed state-space exploration ({_status(ex_row)}):")
        for e in explorations:
            lines.append(
                f"- `{e.get('name')}`: closed {e.get('closed')}, {e.get('states')} states, {e.get('transitions')} "
                f"transitions, diameter {e.get('diameter')}, {e.get('seconds')} s"
            )
    else:
        lines.append("")
        why = "the row did not run" if ex_row is None else f"the row: {_status(ex_row)}, but no exploration stats"
        lines.append(f"Closed state-space exploration: no figures ({why}).")
    bugs = report.get("model_bugs")
    if isinstance(bugs, dict):
        lines.append(f"Model bug catalogue: {bugs.get('refuted')} of {bugs.get('bugs')} planted bugs refuted.")
    lines += [
        "",
        "| rule | last run | CrossHair conditions | closure invariants | vectors | tests that name it |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    vector_rows = [r for r in rows_of(report) if str(r.get("name", "")).startswith("vectors vs")]
    # The rows that run the test files a rule's "tests that name it" column lists (R30 on have no
    # CrossHair condition, invariant or vector: they are tested, not proven).
    test_rows = [r for r in rows_of(report) if str(r.get("name", "")) in TEST_ROWS]
    for rule in sorted(rules, key=lambda r: int(r[1:])):
        mine = [c for c in conditions if rule in (c.get("rules") or [])]
        if mine:
            by_status: dict[str, int] = {}
            for c in mine:
                by_status[str(c.get("status"))] = by_status.get(str(c.get("status")), 0) + 1
            names = sorted({f"`{c.get('function')}`" for c in mine})
            crosshair = f"{len(mine)}: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
            crosshair += " (" + ", ".join(names) + ")"
        else:
            crosshair = "-"
        inv = []
        for e in explorations:
            invariants = e.get("invariants")
            if isinstance(invariants, dict) and rule in invariants:
                inv.append(f"{invariants[rule]} (`{e.get('name')}`, {e.get('states')} states)")
        vectors = rules[rule].get("vectors", [])
        tests = rules[rule].get("tests", [])
        status = []
        if mine:
            proven = all(c.get("status") == "confirmed" for c in mine)
            status.append("proven in bounds" if proven else "not all confirmed")
        if inv:
            status.append("closed" if ex_row is not None and ex_row.get("passed") else "closure failed")
        if vectors and vector_rows:
            status.append("vectors pass" if all(r.get("passed") for r in vector_rows) else "vectors FAIL")
        if tests and test_rows:
            status.append("tested" if all(r.get("passed") for r in test_rows) else "a test suite FAILED")
        lines.append(
            f"| {rule} | {', '.join(status) or 'not run here'} | {crosshair} | {'; '.join(inv) or '-'} | "
            f"{len(vectors) or '-'} | "
            f"{', '.join(t.removeprefix('tests/') for t in tests) or '-'} |"
        )
    catalogue = report.get("catalogue")
    if isinstance(catalogue, dict) and catalogue:
        lines += [
            "",
            "## Time to red: each planted loop bug (tests/catalogue.py) under the lockstep hunt",
            "",
            "The hunt generates without Hypothesis' shrinker, then minimises with the project's own "
            "`minimise` (tests/harness); seconds on the machine of the run above. The fd-number-reuse "
            "variant is killed by its fixed scenario (8 examples, no hunt).",
            "",
            "| variant | check | examples | steps | s to first failure | s from it to red |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for n, v in catalogue.items():
            if isinstance(v, dict):
                cols = [v.get(k) for k in ("check", "examples", "steps", "seconds_to_failure", "seconds_to_red")]
                lines.append(f"| {n} | " + " | ".join("-" if c is None else str(c) for c in cols) + " |")
    rel = _row(report, "reliability")
    figures = str(rel.get("detail", "")).partition("reliability: ")[2] if rel is not None else ""
    if figures:
        lines += [
            "",
            "## Reliability figures of the run above (tests/test_reliability_*.py, profile as run)",
            "",
            "What the reliability tests measured and counted (R30-R65): bad calls tried, faults injected, "
            "interrupt points, CPU shares of the seed's spins, thread and soak counts. Counts vary with the "
            "machine's load.",
            "",
            "| figure | value |",
            "| --- | --- |",
        ]
        for pair in figures.split(", "):
            key, _, value = pair.rpartition(" ")
            if key:
                lines.append(f"| {key} | {value} |")
    lines += [
        "",
        "## Bounds of each CrossHair condition",
        "",
        "| condition | rules | status | bounds | over |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in conditions:
        label = f"`{c.get('file', c.get('where'))}:{c.get('line')}` {c.get('function', '')}"
        bounds = str(c.get("bounds") or "-").replace("|", "\\|")
        over = str(c.get("states") or "-").replace("|", "\\|") if "lemma_" in str(c.get("function")) else "-"
        lines.append(f"| {label} | {' '.join(c.get('rules') or []) or '-'} | {c.get('status')} | `{bounds}` | {over} |")
    lines += [
        "",
        "The lemmas (model/contracts.py) pick fds, scripts and gates from fixed tuples by the bounded ints "
        "above. The step lemmas state the rules on one step of the walk and of fill at a record, with or "
        "without a record passed and one ahead, over every combination in bounds of its handlers, gate, "
        "deleted flag, poll slot and revents and of the registrations its callback or gate makes; the fold "
        "lemmas prove the model's `dispatch` and `fill` equal the fold of that step over 0-2 records. Rules "
        "with no CrossHair condition rest on the closure, the vectors and the tests in their row.",
        "",
        (
            "Exhaustive conformance (`iohandler conform --exhaustive`, SPEC.md) replays walks that take every "
            "transition of the CI-sized configurations' closures (`fds`, `gate-scripts`, `small`), each with the "
            "model's trace. A port that passes it has, within those configurations' bounds (their fds, gates, "
            "scripts and steps; a state and its mirror image under the fds' symmetry counted once), the model's "
            "trace on every reachable transition, reached by at least one path. It proves nothing of the port "
            "beyond those bounds, nor of rules R30 on; of the model, the closure rows above prove the invariants."
        ),
        "",
    ]
    return "\n".join(lines)


def proofs_from(json_path: Path, proofs_path: Path | None = None) -> int:
    """Rewrite the proof table from a saved report; run nothing."""
    report = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        raise SystemExit(f"--proofs-from: {json_path} is not a verify report")
    # Which vectors and tests name each rule is read from the tree as it is now (nothing runs for
    # it), so a report rewritten after a test or vector was added stays current.
    report["rules"] = rule_map()
    target = proofs_path or PROOFS
    target.write_text(proof_table(report), encoding="utf-8")
    print(f"wrote {target}")
    return 0
