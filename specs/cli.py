"""`iohandler`: the porter's command line.

    iohandler conform --driver CMD [PATH ...]   replay vectors (default: the bundled ones)
        [--format N] [--full] [--timeout S] [-v]
    iohandler conform --exhaustive --driver CMD [--config NAME ...] [--save DIR]
                                                 every transition of the model's closed state
                                                 space, in covering walks (SPEC.md)
    iohandler fuzz --driver CMD [--examples N] [--seed S] [--save DIR]
                                                 generated scenarios, the model as the oracle
    iohandler verify [--json F] [--proofs P]     the main job: every check, one summary table
    iohandler verify --proofs-from F             rewrite specs/PROOFS.md from a saved report
    iohandler --version                          the installed distribution's version
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from iohandler.specs.runner import Outcome, run_conformance
from iohandler.specs.vector import FORMATS, bundled_vectors_dir, dump_vector


def _conform(args: argparse.Namespace) -> int:
    if args.exhaustive:
        return _exhaustive(args)
    if args.config or args.save is not None:
        print("iohandler conform: --config and --save go with --exhaustive", file=sys.stderr)
        return 2
    paths = args.paths or [bundled_vectors_dir()]

    def report(o: Outcome) -> None:
        if o.skipped:
            if args.verbose:
                print(f"SKIP {o.name}: {o.detail}")
        elif o.passed:
            if args.verbose:
                print(f"PASS {o.name}")
        else:
            print(f"FAIL {o.name} ({o.path})\n  {o.detail}", flush=True)

    outcomes = run_conformance(
        args.driver, paths, timeout=args.timeout, report=report, driver_format=args.format, full=args.full
    )
    passed = sum(o.passed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    failed = len(outcomes) - passed - skipped
    if not outcomes:
        print("no vectors found", file=sys.stderr)
        return 2
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped (format newer than --format {args.format}: not conformance to it)"
    print(summary)
    return 1 if failed else 0


def _config_names(large: bool) -> list[str]:
    from iohandler.specs.exhaustive import scopes

    return [s.name for s in scopes(large)]


def _exhaustive(args: argparse.Namespace) -> int:
    from iohandler.specs.exhaustive import run_exhaustive

    if args.paths:
        print("iohandler conform: --exhaustive generates its vectors; give no PATH", file=sys.stderr)
        return 2
    try:
        results = run_exhaustive(args.driver, args.config or None, timeout=args.timeout, driver_format=args.format,
                                 full=args.full, save=args.save, report=lambda text: print(text, flush=True))
    except ValueError as e:  # an unknown --config
        print(f"iohandler conform: {e}", file=sys.stderr)
        return 2
    outcomes = [o for r in results for o in r.outcomes]
    for r in results:
        if r.shortest is not None:
            print(f"\nSHORTEST {r.scope.name}: {r.shortest.description}\n  {r.shortest_detail}\n\nvector:")
            print(dump_vector(r.shortest))
            if r.saved is not None:
                print(f"saved {r.saved}")
    passed = sum(o.passed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    failed = len(outcomes) - passed - skipped
    print(f"transitions covered {sum(r.covered for r in results)} of {sum(r.transitions for r in results)}")
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped (format newer than --format {args.format}: not conformance to it)"
    print(summary)
    return 1 if failed or not outcomes else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iohandler", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    conform = sub.add_parser("conform", help="replay conformance vectors against a driver")
    conform.add_argument("--driver", required=True, help='driver command, e.g. "python -m iohandler.model.driver"')
    conform.add_argument("paths", nargs="*", help="vector files or folders (default: the bundled vectors)")
    conform.add_argument("--timeout", type=float, default=10.0, help="seconds a driver may take per vector")
    conform.add_argument("-v", "--verbose", action="store_true", help="also list passing and skipped vectors")
    conform.add_argument(
        "--format", type=int, choices=range(1, len(FORMATS) + 1), default=len(FORMATS), metavar="N",
        help=f"newest vector format the driver reads (default {len(FORMATS)}); newer vectors are skipped, "
        "never passed",
    )
    conform.add_argument("--full", action="store_true", help="on a difference, print both whole traces")
    conform.add_argument("--exhaustive", action="store_true",
                         help="instead of vector files: walks that take every transition of the model's closed "
                         "state space (every state reached x every step enabled in it), the expected traces "
                         "the model's; a failure is cut down to the shortest vector that shows it")
    conform.add_argument("--config", action="append", default=[], metavar="NAME",
                         help="with --exhaustive: a configuration to cover (repeatable; default: "
                         f"{', '.join(_config_names(False))}; larger: {', '.join(_config_names(True))})")
    conform.add_argument("--save", type=Path, default=None, metavar="DIR",
                         help="with --exhaustive: write the shortest failing vector into DIR")
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

    fuzz = sub.add_parser("fuzz", help="generated vectors against a driver, the model as the oracle")
    fuzz.add_argument("--driver", required=True, help='driver command, e.g. "python -m iohandler.model.driver"')
    fuzz.add_argument("--examples", type=_positive, default=200, help="vectors to try (default: %(default)s)")
    fuzz.add_argument("--seed", type=int, default=None, help="repeat a run exactly (default: a random seed, printed)")
    fuzz.add_argument("--save", default="fuzz-failures", help="folder for a mismatch's vector (default: %(default)s)")
    fuzz.add_argument("--max-steps", type=_positive, default=20, help="steps per vector at most (default: %(default)s)")
    fuzz.add_argument("--no-gate-scripts", action="store_true",
                      help="never generate gate_scripts (default: probe the driver once)")
    fuzz.add_argument("--fold-hup-err", action="store_true",
                      help="the driver's poller folds HUP/ERR into readable/writable (SPEC R36, like Python's "
                      "selectors): compare with the model over that folded view")
    fuzz.add_argument("--timeout", type=float, default=10.0, help="seconds a driver may take per vector")
    fuzz.set_defaults(func=_fuzz)

    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


def _version() -> str:
    # From the installed metadata, so it is the version pip installed (the checkout has no copy).
    try:
        return importlib.metadata.version("iohandler")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _verify(args: argparse.Namespace) -> int:
    from iohandler.specs.verify import proofs_from, run_verify  # the dev tools; conform needs none

    if args.proofs_from is not None:
        return proofs_from(args.proofs_from, args.proofs)
    return run_verify(quick=args.quick, json_path=args.json, proofs_path=args.proofs, only=args.only)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fuzz(args: argparse.Namespace) -> int:
    from pathlib import Path

    from iohandler.specs.fuzz import FuzzUnavailable, fuzz  # Hypothesis is needed only here
    from iohandler.specs.runner import DriverFailure

    try:
        result = fuzz(
            args.driver,
            examples=args.examples,
            seed=args.seed,
            save=Path(args.save),
            gate_scripts=False if args.no_gate_scripts else None,
            fold=args.fold_hup_err,
            max_steps=args.max_steps,
            timeout=args.timeout,
            report=lambda text: print(text, flush=True),
        )
    except (FuzzUnavailable, DriverFailure) as e:
        print(f"iohandler fuzz: {e}", file=sys.stderr)
        return 2
    return 1 if result.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
