"""`iohandler verify`: the main job. Every check, one summary table, `N passed, M failed`.

Each check is a row; a row passes or fails as a whole. Checks that need the dev tools (mypy,
ruff, CrossHair, pytest) run them as subprocesses of this interpreter, so the job sees exactly
the venv it was started from. The test files write their figures (examples, steps, states) as
JSON into IOHANDLER_STATS_DIR, which this job sets and reads for the detail column.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iohandler.specs.runner import run_conformance
from iohandler.specs.vector import bundled_vectors_dir

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# Rows run as their own pytest session; "unit" is everything else under tests/.
SUITES: dict[str, list[str]] = {
    "lockstep (model vs real loop)": ["tests/test_lockstep.py"],
    "exhaustive exploration": ["tests/test_exhaustive.py"],
    "bug catalogue": ["tests/test_catalogue.py"],
    "reliability": ["tests/test_reliability*.py"],
}


@dataclass(frozen=True)
class Row:
    name: str
    passed: bool
    detail: str
    seconds: float


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
        [PY, "-m", "crosshair", "check", "--analysis_kind=PEP316,asserts", "--report_all",
         f"--per_condition_timeout={per_condition}", *targets],
        cwd=cwd, capture_output=True, text=True, timeout=3600,
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

    return _tool([PY, "-m", "ruff", "check", "."], ok)


def check_crosshair(per_condition: float, listing: list[str]) -> tuple[bool, str]:
    contracts, raw = run_crosshair(CROSSHAIR_TARGETS, per_condition)
    if not contracts:
        return False, "CrossHair reported nothing: " + raw.strip()[-300:]
    counts = {s: sum(c.status == s for c in contracts) for s in ("confirmed", "unconfirmed", "unexplored", "refuted")}
    for c in contracts:
        listing.append(f"  {c.status:<11} {_condition_text(c.where)}")
        if c.status in ("refuted", "unexplored"):
            listing.append(f"              {c.message}")
    detail = (
        f"{len(contracts)} conditions: {counts['confirmed']} confirmed, {counts['unconfirmed']} explored "
        f"{per_condition:g} s each without counterexample, {counts['unexplored']} unexplored, "
        f"{counts['refuted']} refuted"
    )
    return counts["refuted"] == 0 and counts["unexplored"] == 0, detail


def _condition_text(where: str) -> str:
    """`model/fill.py:22  post: ...`: the condition as written, so the listing reads alone."""
    path, _, line = where.rpartition(":")
    try:
        text = Path(path).read_text(encoding="utf-8").splitlines()[int(line) - 1].strip()
        rel = Path(path).resolve().relative_to(ROOT)
    except (OSError, ValueError, IndexError):
        return where
    return f"{rel}:{line}  {text}"


_PYTEST_TAIL = re.compile(r"(\d+) (passed|failed|error|errors|xfailed|skipped|xpassed)")


def check_pytest(files: Sequence[str], stats_dir: Path, ignore: Sequence[str] = ()) -> tuple[bool, str]:
    expanded = [str(p.relative_to(ROOT)) for f in files for p in sorted(ROOT.glob(f))]
    if files and not expanded:
        return False, f"no test file matches {', '.join(files)}"
    args = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *expanded]
    args += [f"--ignore={i}" for pattern in ignore for i in sorted(str(p) for p in ROOT.glob(pattern))]
    env = {**os.environ, "IOHANDLER_STATS_DIR": str(stats_dir)}
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
    stems = {"lockstep": "lockstep", "exhaustive": "exhaustive", "catalogue": "catalogue", "reliability": "reliability"}
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


def run_verify(quick: bool = False) -> int:
    per_condition = 2.0 if quick else 5.0
    listing: list[str] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="iohandler-stats-") as tmp:
        stats = Path(tmp)
        checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
            ("mypy --strict", check_mypy),
            ("ruff", check_ruff),
            ("CrossHair (model/, impl/)", lambda: check_crosshair(per_condition, listing)),
            ("vectors vs model", lambda: check_vectors(f"{PY} -m iohandler.model.driver")),
            ("vectors vs impl (epoll)", lambda: check_vectors(f"{PY} -m iohandler.impl.driver --poller epoll")),
            ("vectors vs impl (poll)", lambda: check_vectors(f"{PY} -m iohandler.impl.driver --poller poll")),
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
            checks.append((name, functools.partial(check_pytest, files, stats)))
        for name, fn in checks:
            print(f"... {name}", file=sys.stderr, flush=True)
            start = time.monotonic()
            try:
                passed, detail = fn()
            except Exception as e:  # a check that cannot run is a failed check, not a crash
                passed, detail = False, f"could not run: {type(e).__name__}: {e}"
            rows.append(Row(name, passed, detail + _stats_note(name, stats), time.monotonic() - start))

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
    return 0 if n_passed == len(rows) else 1
