"""Summarise a mutmut run: score per file and the list of survivors (name, then `run.sh show`).

    python .ci/mutation/summary.py WORKDIR [WORKDIR ...] [--json OUT]

Several workdirs (runs over different patterns, e.g. `model.*` and `impl.*`, or a targeted
re-run first and the full run after it) are merged: the first workdir holding a file defines
its mutants (so list the newest code first), and a mutant's verdict is the one from the first
workdir that checked it; files no workdir checked are left out. A survivor that recheck.py saw
killed (WORKDIR/rechecked.json) counts as killed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 37}  # test failure, pytest internal error (a crash), caught by the type checker
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


MESSAGE = re.compile(
    r'"XX|XX"|(Error|Exception|Vector|Action)\(None|add_note|\.add_argument|ArgumentParser|'
    r'f"[^"]*\{type\(None\)|"[A-Z][A-Z ,;:()\'=_.-]{6,}"'
)


def classify(workdir: Path, name: str) -> tuple[str, str]:
    """Rough classes for the report: a mutant that only changes a message (error text, CLI
    help) or one to read by hand."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=workdir, capture_output=True, text=True)
    plus = [ln[1:].strip() for ln in out.stdout.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    line = plus[0] if plus else "?"
    return ("message" if MESSAGE.search(line) else "behaviour"), line[:140]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdirs", type=Path, nargs="+")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--classify", action="store_true", help="run `mutmut show` on each survivor and sort them into rough classes"
    )
    args = parser.parse_args()
    merged: dict[str, dict[str, int | None]] = {}  # file -> mutant -> exit code
    where: dict[str, Path] = {}  # mutant -> the workdir whose verdict counts (for `show`)
    rechecked: set[str] = set()  # counted as killed: recheck.py saw a test that forks kill them
    for workdir in args.workdirs:
        killed_in_recheck: set[str] = set()
        if (workdir / "rechecked.json").is_file():
            codes_ = json.loads((workdir / "rechecked.json").read_text())["exit_codes"]
            killed_in_recheck = {name for name, code in codes_.items() if code in KILLED}
        for meta in sorted((workdir / "mutants").rglob("*.py.meta")):
            codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
            path = str(meta.relative_to(workdir / "mutants"))[: -len(".meta")]
            first = path not in merged
            book = merged.setdefault(path, {})
            for name, code in codes.items():
                if not first and name not in book:
                    continue  # the first workdir with this file defines its mutants (its code)
                if book.get(name) is None:
                    if code in SURVIVED | NO_TESTS and name in killed_in_recheck:
                        code = 1
                        rechecked.add(name)
                    book[name] = code
                    where[name] = workdir
    if not merged:
        print(f"no mutmut results under {[str(w / 'mutants') for w in args.workdirs]}", file=sys.stderr)
        return 1
    rows: list[tuple[str, Counter[str]]] = []
    survivors: list[str] = []
    total: Counter[str] = Counter()
    for path, codes in sorted(merged.items()):
        if all(code is None for code in codes.values()):
            continue  # no run checked this file
        c: Counter[str] = Counter()
        for name, code in codes.items():
            kind = (
                "killed"
                if code in KILLED
                else "timeout"
                if code in TIMEOUT
                else "survived"
                if code in SURVIVED
                else "no tests"
                if code in NO_TESTS
                else "not checked"
                if code is None
                else f"other({code})"
            )
            c[kind] += 1
            if kind in ("survived", "no tests"):
                survivors.append(f"{name}  [{kind}]")
        rows.append((path, c))
        total.update(c)
    print(f"{'file':34} {'mutants':>8} {'killed':>7} {'timeout':>8} {'survived':>9} {'no tests':>9} {'score':>7}")
    for name, c in [*rows, ("TOTAL", total)]:
        n = sum(c.values())
        dead = c["killed"] + c["timeout"]
        print(
            f"{name:34} {n:8} {c['killed']:7} {c['timeout']:8} {c['survived']:9} {c['no tests']:9} "
            f"{100.0 * dead / n if n else 0:6.1f}%"
        )
    if rechecked:
        print(
            f"\n{len(rechecked)} counted as killed: survivors of the run that a test which forks kills "
            "(recheck.py; mutmut cannot map a test to code only its forked child runs):"
        )
        for name in sorted(rechecked):
            print("  " + name)
    print(f"\n{len(survivors)} survivors (`.ci/mutation/run.sh show NAME` for the diff):")
    classes: Counter[str] = Counter()
    for s in survivors:
        if args.classify:
            kind, line = classify(where[s.split()[0]], s.split()[0])
            classes[kind] += 1
            print(f"  {s}  {kind}: {line}")
        else:
            print("  " + s)
    if classes:
        print("\nclasses: " + ", ".join(f"{k} {n}" for k, n in classes.most_common()))
    if args.json:
        n = sum(total.values())
        args.json.write_text(json.dumps({"mutants": n, **total, "survivors": survivors}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
