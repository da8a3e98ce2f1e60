"""`iohandler`: the porter's command line.

iohandler conform --driver CMD [PATH ...]   replay vectors (default: the bundled ones)
    [--format N] [--no-signals] [--full] [--timeout S] [--fold-hup-err] [-v]
iohandler conform --exhaustive --driver CMD [--config NAME ...] [--save DIR]
                                             every transition of the model's closed state
                                             space, in covering walks (SPEC.md)
iohandler fuzz --driver CMD [--examples N] [--seed S] [--save DIR]
    [--gate-scripts on|off|probe] [--fold-hup-err] [--timeout S] [--db DIR]
                                             generated scenarios, the model as the oracle
iohandler verify [--json F] [--proofs P]     the main job: every check, one summary table
iohandler verify --proofs-from F             rewrite specs/PROOFS.md from a saved report
iohandler --version                          the installed distribution's version
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from iohandler.specs.runner import (
    MAX_TIMEOUT,
    Outcome,
    Terminated,
    check_timeout,
    on_termination,
    run_conformance,
    split_command,
)
from iohandler.specs.vector import FORMATS, bundled_vectors_dir, dump_vector


def _conform(args: argparse.Namespace) -> int:
    if args.exhaustive:
        return _exhaustive(args)
    if args.config or args.save is not None:
        print("iohandler conform: --config and --save go with --exhaustive", file=sys.stderr)
        return 2
    paths = args.paths or [bundled_vectors_dir()]

    def report(o: Outcome) -> None:
        if o.fatal:
            print(f"iohandler conform: {o.detail}", file=sys.stderr)
        elif o.skipped:
            if args.verbose:
                print(f"SKIP {o.name}: {o.detail}")
        elif o.passed:
            if args.verbose:
                print(f"PASS {o.name}")
        else:
            print(f"FAIL {o.name} ({o.path})\n  {o.detail}", flush=True)

    outcomes = run_conformance(
        args.driver,
        paths,
        timeout=args.timeout,
        report=report,
        driver_format=args.format,
        full=args.full,
        fold=args.fold_hup_err,
        signals=not args.no_signals,
    )
    if any(o.fatal for o in outcomes):
        return 2  # nothing could run: not a verdict on the driver
    passed = sum(o.passed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    failed = len(outcomes) - passed - skipped
    if not outcomes:
        print("no vectors found", file=sys.stderr)
        return 2
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped (format newer than --format {args.format}"
        summary += ", or signal fds with --no-signals" if args.no_signals else ""
        summary += ": not conformance to it)"
    if args.fold_hup_err:
        summary += "; HUP/ERR folded (R36)"
    print(summary)
    if not passed and not failed:  # every vector skipped: no verdict, as when none is found
        why = f"in a format newer than --format {args.format}"
        if args.no_signals:
            why += " or has a signal fd (--no-signals)"
        print(f"iohandler conform: nothing was checked: every vector is {why}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _config_names(large: bool) -> list[str]:
    from iohandler.specs.exhaustive import scopes

    return [s.name for s in scopes(large)]


def _exhaustive(args: argparse.Namespace) -> int:
    from iohandler.specs.exhaustive import run_exhaustive

    if args.paths:
        print("iohandler conform: --exhaustive generates its vectors; give no PATH", file=sys.stderr)
        return 2
    if args.save is not None and args.save.exists() and not args.save.is_dir():
        print(f"iohandler conform: --save: {args.save} is not a folder", file=sys.stderr)
        return 2
    try:
        configs = list(dict.fromkeys(args.config)) or None  # a repeated name counts once
        results = run_exhaustive(
            args.driver,
            configs,
            timeout=args.timeout,
            driver_format=args.format,
            full=args.full,
            save=args.save,
            report=lambda text: print(text, flush=True),
            fold=args.fold_hup_err,
        )
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
    if any(o.fatal for o in outcomes):  # the driver did not start: said once above, as conform does
        return 2
    if not passed and not failed:  # every walk skipped: no verdict, as conform says
        print(
            f"iohandler conform: nothing was checked: every walk is in a format newer than --format {args.format}",
            file=sys.stderr,
        )
        return 2
    return 1 if failed or not outcomes else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iohandler", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    conform = sub.add_parser(
        "conform",
        help="replay conformance vectors against a driver",
        epilog="exit status: 0 every vector passed; 1 a vector failed; 2 a usage error, a missing path, a "
        "driver command that cannot start (reported once) or nothing checked (every vector skipped); 128+N "
        "signal N (SIGINT, SIGTERM, SIGHUP; the driver is killed); 141 stdout closed",
    )
    conform.add_argument("--driver", required=True, type=_driver, help=DRIVER_HELP)
    conform.add_argument("paths", nargs="*", help="vector files or folders (default: the bundled vectors)")
    conform.add_argument("--timeout", type=_timeout, default=10.0, help=TIMEOUT_HELP)
    conform.add_argument("-v", "--verbose", action="store_true", help="also list passing and skipped vectors")
    conform.add_argument(
        "--format",
        type=int,
        choices=range(1, len(FORMATS) + 1),
        default=len(FORMATS),
        metavar="N",
        help=f"newest vector format the driver reads (default {len(FORMATS)}); newer vectors are skipped, never passed",
    )
    conform.add_argument("--full", action="store_true", help="on a difference, print both whole traces")
    conform.add_argument(
        "--fold-hup-err", action="store_true", help=FOLD_HELP + "; only for vectors whose expect the model produces"
    )
    conform.add_argument(
        "--no-signals",
        action="store_true",
        help="the driver cannot raise signals: vectors with a signal fd are skipped, never passed",
    )
    conform.add_argument(
        "--exhaustive",
        action="store_true",
        help="instead of vector files: walks that take every transition of the model's closed "
        "state space (every state reached x every step enabled in it), the expected traces "
        "the model's; a failure is cut down to the shortest vector that shows it",
    )
    conform.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME",
        help="with --exhaustive: a configuration to cover (repeatable; default: "
        f"{', '.join(_config_names(False))}; larger: {', '.join(_config_names(True))})",
    )
    conform.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --exhaustive: write the shortest failing vector into DIR",
    )
    conform.set_defaults(func=_conform)

    verify = sub.add_parser("verify", help="the main job: mypy, ruff, CrossHair, tests, vectors; one summary")
    verify.add_argument("--quick", action="store_true", help="smaller budgets (for a first look)")
    verify.add_argument("--json", type=Path, metavar="FILE", help="write every row and its figures as JSON")
    verify.add_argument(
        "--proofs",
        type=Path,
        metavar="PATH",
        help="write the proof table here (default in a checkout: specs/PROOFS.md, on full runs)",
    )
    verify.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only the checks whose "
        "name contains NAME (repeatable); the proof table is then written only with --proofs",
    )
    verify.add_argument(
        "--proofs-from", type=Path, metavar="FILE", help="only rewrite the proof table from a saved --json report"
    )
    verify.set_defaults(func=_verify)

    fuzz = sub.add_parser(
        "fuzz",
        help="generated vectors against a driver, the model as the oracle",
        epilog="exit status: 0 no mismatch; 1 a mismatch (printed, and saved unless the save failed: then "
        "also an error on stderr), or the driver did not exit 0 at end of input; 2 a usage error or a driver "
        "command that cannot start; 128+N signal N "
        "(SIGINT, SIGTERM, SIGHUP; the driver is killed); 141 stdout closed",
    )
    fuzz.add_argument("--driver", required=True, type=_driver, help=DRIVER_HELP)
    fuzz.add_argument("--examples", type=_positive, default=200, help="vectors to try (default: %(default)s)")
    fuzz.add_argument("--seed", type=int, default=None, help="repeat a run exactly (default: a random seed, printed)")
    fuzz.add_argument("--save", default="fuzz-failures", help="folder for a mismatch's vector (default: %(default)s)")
    fuzz.add_argument("--max-steps", type=_positive, default=20, help="steps per vector at most (default: %(default)s)")
    fuzz.add_argument(
        "--gate-scripts",
        choices=("on", "off", "probe"),
        default="probe",
        help="generate v2 gate_scripts (R22): on, off, or probe the driver once (default): off "
        "only if it refuses the probe or ignores the field; any other wrong answer is a failure",
    )
    fuzz.add_argument(
        "--no-gate-scripts",
        action="store_const",
        const="off",
        dest="gate_scripts",
        help="the same as --gate-scripts off",
    )
    fuzz.add_argument("--fold-hup-err", action="store_true", help=FOLD_HELP)
    fuzz.add_argument("--timeout", type=_timeout, default=10.0, help=TIMEOUT_HELP)
    fuzz.add_argument(
        "--db",
        type=Path,
        metavar="DIR",
        help="keep the run's files here: Hypothesis's, and each "
        "shrunk vector found, tried first by the next run with this DIR (default: Hypothesis's go to a "
        "temporary folder, never the current one)",
    )
    fuzz.set_defaults(func=_fuzz)

    _escape_unprintable()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if argv is None and args.command in ("conform", "fuzz"):
        on_termination()  # this process is the command: SIGTERM/SIGHUP end it as Ctrl-C does
    try:
        return func(args)
    except KeyboardInterrupt as e:  # the driver is already killed (run_conformance, fuzz)
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        print(f"iohandler {args.command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `iohandler conform | head -1`: the reader is gone; the driver is killed
        # Nothing more can be printed: point stdout at /dev/null so the exit's flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _escape_unprintable() -> None:
    """Print what stdout and stderr cannot encode as backslash escapes: vector files, file names
    and drivers supply text (a lone surrogate such as "\\ud800", a file name that is not UTF-8),
    and a report must never fail on it."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # a TextIOWrapper; a test's capture may not be
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


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


FOLD_HELP = (
    "the driver's poller folds HUP/ERR into readable/writable (SPEC R36, like Python's selectors): "
    "compare with the model over that folded view"
)
DRIVER_HELP = (
    'driver command, split into words as a shell would (no shell runs it), e.g. "python -m '
    'iohandler.model.driver"; it runs in its own process group, killed whole on a hang'
)
TIMEOUT_HELP = (
    f"seconds a driver may take per vector, to read it and answer (default: %(default)s; at most {MAX_TIMEOUT:g})"
)


def _driver(text: str) -> str:
    try:
        split_command(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _timeout(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e) if "seconds" in str(e) else f"not a number: {text!r}") from None


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
            gate_scripts={"on": True, "off": False, "probe": None}[args.gate_scripts],
            fold=args.fold_hup_err,
            max_steps=args.max_steps,
            timeout=args.timeout,
            report=lambda text: print(text, flush=True),
            db=args.db,
        )
    except (FuzzUnavailable, DriverFailure, ValueError) as e:  # ValueError: an argument it cannot use
        print(f"iohandler fuzz: {e}", file=sys.stderr)
        return 2
    for m in result.mismatches:
        if m.save_error is not None:
            print(f"iohandler fuzz: cannot save the vector: {m.save_error} (it is printed above)", file=sys.stderr)
    return 1 if result.mismatches or result.end_of_input else 0


if __name__ == "__main__":
    sys.exit(main())
