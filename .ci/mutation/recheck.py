"""Run a mutmut run's survivors once more against the tests that fork, and record the verdicts.

    python .ci/mutation/recheck.py WORKDIR [TEST ...]

mutmut runs a mutant only against the tests that called the mutated function, and it learns
which those are from calls made in the test's own process. Code that only a forked child runs
(the fork hook, the errors a child's inherited loop raises: R41) is called in the child, which
mutmut never sees, so such a mutant "survived" (or had "no tests") without its killing test
ever having run. This runs each of those against TEST (default: the lifecycle tests, the only
selected tests that fork), selected the way mutmut selects it (MUTANT_UNDER_TEST, inherited by
the child), after a control run with no mutant that must pass. The verdicts go to
WORKDIR/rechecked.json, which summary.py reads: a survivor that fails there is counted as
killed and listed as rechecked. About 8 s per survivor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FORKING_TESTS = ["tests/test_reliability_lifecycle.py"]


def survivors(workdir: Path) -> list[str]:
    names = []
    for meta in sorted((workdir / "mutants").rglob("*.py.meta")):
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        names += [name for name, code in codes.items() if code in (0, 5, 33)]  # survived, no tests
    return names


def run(workdir: Path, mutant: str, tests: list[str]) -> int:
    env = dict(os.environ, MUTANT_UNDER_TEST=mutant, HYPOTHESIS_PROFILE="dev", IOHANDLER_BUDGET="mutation")
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--rootdir=.", "--timeout=45", *tests]
    return subprocess.run(cmd, cwd=workdir / "mutants", env=env, capture_output=True, timeout=600).returncode


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    workdir = Path(sys.argv[1])
    tests = sys.argv[2:] or FORKING_TESTS
    control = run(workdir, "", tests)
    if control != 0:
        print(f"the control run (no mutant) of {tests} failed ({control}): nothing rechecked", file=sys.stderr)
        return 1
    verdicts: dict[str, int] = {}
    names = survivors(workdir)
    for i, name in enumerate(names, 1):
        verdicts[name] = run(workdir, name, tests)
        print(f"[{i}/{len(names)}] {name}: {'killed' if verdicts[name] else 'survived'}", flush=True)
    (workdir / "rechecked.json").write_text(json.dumps({"tests": tests, "exit_codes": verdicts}, indent=1) + "\n")
    print(f"{sum(1 for c in verdicts.values() if c)} of {len(names)} survivors killed by {tests}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
