"""`iohandler`: the porter's command line.

    iohandler conform --driver CMD [PATH ...]   replay vectors (default: the bundled ones)
    iohandler verify [--json F] [--proofs P]     the main job: every check, one summary table
    iohandler verify --proofs-from F             rewrite specs/PROOFS.md from a saved report
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from iohandler.specs.runner import Outcome, run_conformance
from iohandler.specs.vector import bundled_vectors_dir


def _conform(args: argparse.Namespace) -> int:
    paths = args.paths or [bundled_vectors_dir()]

    def report(o: Outcome) -> None:
        if o.passed:
            if args.verbose:
                print(f"PASS {o.name}")
        else:
            print(f"FAIL {o.name} ({o.path})\n  {o.detail}", flush=True)

    outcomes = run_conformance(args.driver, paths, timeout=args.timeout, report=report)
    passed = sum(o.passed for o in outcomes)
    failed = len(outcomes) - passed
    if not outcomes:
        print("no vectors found", file=sys.stderr)
        return 2
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iohandler", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    conform = sub.add_parser("conform", help="replay conformance vectors against a driver")
    conform.add_argument("--driver", required=True, help='driver command, e.g. "python -m iohandler.model.driver"')
    conform.add_argument("paths", nargs="*", help="vector files or folders (default: the bundled vectors)")
    conform.add_argument("--timeout", type=float, default=10.0, help="seconds a driver may take per vector")
    conform.add_argument("-v", "--verbose", action="store_true", help="also list passing vectors")
    conform.set_defaults(func=_conform)

    verify = sub.add_parser("verify", help="the main job: mypy, ruff, CrossHair, tests, vectors; one summary")
    verify.add_argument("--quick", action="store_true", help="smaller budgets (for a first look)")
    verify.add_argument("--json", type=Path, metavar="FILE", help="write every row and its figures as JSON")
    verify.add_argument("--proofs", type=Path, metavar="PATH", help="write the proof table here (default in a "
                        "checkout: specs/PROOFS.md, on full runs)")
    verify.add_argument("--only", action="append", default=[], metavar="NAME", help="run only the checks whose "
                        "name contains NAME (repeatable); the proof table is then written only with --proofs")
    verify.add_argument("--proofs-from", type=Path, metavar="FILE", help="only rewrite the proof table from a "
                        "saved --json report")
    verify.set_defaults(func=_verify)

    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


def _verify(args: argparse.Namespace) -> int:
    from iohandler.specs.verify import proofs_from, run_verify  # the dev tools; conform needs none

    if args.proofs_from is not None:
        return proofs_from(args.proofs_from, args.proofs)
    return run_verify(quick=args.quick, json_path=args.json, proofs_path=args.proofs, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
