"""Planting a KeyboardInterrupt at a named signal point of impl/ (attack on R35).

`tests/test_reliability_interrupts.Injector` plants at the n-th point; the reproducers here name
the point instead (a function of impl/ and a piece of its source line), so that they survive
unrelated edits: `point_index` counts the points of a run and returns the n of the first one
that matches. `EntryInjector` adds the points the opcode trace never reports: a function's entry
(RESUME, where CPython also runs signal handlers); on 3.11 the opcode trace starts after it.

The tool's "after a call" points include returns from Python functions, where CPython 3.11 does
not run signal handlers (only after C calls, at RESUME and at backward jumps). Every reproducer
here plants at a point CPython really checks: after a C call, or at a function's entry.
"""

from __future__ import annotations

import linecache
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from tests.test_reliability_interrupts import Injector, run_with

__all__ = ["EntryInjector", "Injector", "Recorder", "point_index", "run_case", "run_with"]


class EntryInjector(Injector):
    """Injector that also counts (and plants at) each entry of an impl/ function."""

    def __init__(self, at: int | None) -> None:
        super().__init__(at, entries=True)


class Recorder(Injector):
    """Plants nothing; records each point as (function, source line, is_entry)."""

    def __init__(self, entries: bool) -> None:
        super().__init__(None, entries=entries)
        self.seen: list[tuple[str, str, bool]] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        before = self.count
        out = super().__call__(frame, event, arg)
        if self.count != before:
            self.seen.append((frame.f_code.co_name, "", True))
        return out

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        before = self.count
        out = super()._local(frame, event, arg)
        if self.count != before:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            self.seen.append((frame.f_code.co_name, line, False))
        return out


def point_index(
    call: Callable[[], object], func: str, text: str = "", *, entry: bool = False, nth: int = 1
) -> tuple[int, bool]:
    """The n (1-based) of the `nth` (-1: the last) point in `func` whose source line contains
    `text` (or, with `entry`, of `func`'s entry) in a run of `call()`, and whether the count
    included entries (the injector to use then is EntryInjector)."""
    rec = Recorder(entries=entry)
    run_with(rec, None, lambda _: call())  # type: ignore[arg-type]
    hits = [
        i
        for i, (name, line, is_entry) in enumerate(rec.seen, 1)
        if name == func and is_entry == entry and (entry or text in line)
    ]
    if len(hits) < max(nth, 1):
        raise AssertionError(f"no point in {func} at {text!r}: {rec.seen}")
    return hits[nth - 1 if nth > 0 else nth], entry


def run_case(module: str, case: str, mech: str) -> None:
    """Run `python -m tests.interrupts_api.<module> CASE MECHANISM` in a fresh interpreter (a
    defect can change the process's signal state for good); it exits 0 when all is well."""
    out = subprocess.run(
        [sys.executable, "-m", f"tests.interrupts_api.{module}", case, mech],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{case}/{mech}: {out.stdout.strip()} {out.stderr.strip()[-600:]}"
