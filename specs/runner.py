"""The conformance runner, runner side: feed vectors to a driver, compare traces, report.

A driver is any command that speaks the protocol (VECTORS.md). The runner starts it once and
keeps it for the whole run; a driver that crashes, hangs past the timeout or answers garbage is
reported against that vector, killed, and replaced by a fresh one for the next vector.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from iohandler.specs.vector import (
    FORMATS,
    Event,
    Vector,
    VectorError,
    event_to_json,
    load_vector,
    parse_trace,
    vector_files,
    vector_to_json,
)


@dataclass(frozen=True)
class Outcome:
    path: Path
    name: str
    passed: bool
    detail: str = ""  # for a failure: what differed, or what went wrong; for a skip: why
    skipped: bool = False  # not run: the vector's format is newer than the driver declared


class DriverFailure(Exception):
    """The driver crashed, hung, or broke the protocol (the message says which)."""


class Driver:
    """One running driver process. `ask(vector)` returns its answer object."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        # Closed in close(); a file, not a pipe, so a chatty driver can never block on stderr.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                shlex.split(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
            )
        except OSError as e:
            raise DriverFailure(f"cannot start driver {command!r}: {e}") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._stdout = self._proc.stdout
        os.set_blocking(self._stdout.fileno(), False)
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)

    def ask(self, vector: Vector) -> dict[str, object]:
        line = json.dumps(vector_to_json(vector), separators=(",", ":")) + "\n"
        try:
            self._stdin.write(line.encode())
            self._stdin.flush()
        except (BrokenPipeError, OSError):
            raise DriverFailure(f"driver exited before reading the vector{self._exit_note()}") from None
        raw = self._read_line()
        try:
            answer = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DriverFailure(f"driver answered a line that is not JSON ({e.msg}): {raw[:200]!r}") from None
        if not isinstance(answer, dict) or not ({"trace", "error"} & set(answer)):
            raise DriverFailure(f'driver answer is not {{"trace": [...]}} or {{"error": "..."}}: {raw[:200]!r}')
        return answer

    def _read_line(self) -> str:
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                partial = f" (it wrote {len(self._buffer)} bytes but no newline)" if self._buffer else ""
                raise DriverFailure(
                    f"driver gave no answer within {self.timeout:g} s{partial}: does the driver flush stdout "
                    "after each line? (the protocol needs one line per vector, flushed; a C driver "
                    "writing to a pipe is block-buffered unless it calls fflush or setvbuf)"
                )
            if not self._selector.select(left):
                continue
            chunk = self._stdout.read(65536)
            if chunk == b"":
                raise DriverFailure(f"driver exited without answering{self._exit_note()}")
            if chunk is not None:
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n")
        return raw.decode(errors="replace")

    def _exit_note(self) -> str:
        try:
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return ""
        return f" ({describe_exit(code)})"

    def stderr_text(self, limit: int = 4000) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return text[-limit:]

    def close(self) -> int | None:
        """End of input: a well-behaved driver exits 0."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            code = self._proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            code = None
        self._selector.close()
        self._stdout.close()
        self._stderr.close()
        return code

    def kill(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self.close()


def describe_exit(code: int) -> str:
    """`exit code 3`, or `killed by SIGABRT` for a process a signal ended (Popen's negative code)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def first_difference(
    expected: Sequence[Event], actual: Sequence[Event], context: int = 3, *, full: bool = False
) -> str:
    """Both traces side by side around the first differing event (all of them with `full`):
    `>>` marks the first difference, `!=` every later row that differs."""
    n = next(
        (i for i, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a),
        min(len(expected), len(actual)),
    )
    longest = max(len(expected), len(actual))
    lo, hi = (0, longest) if full else (max(0, n - context), min(longest, n + 1 + context))

    def text(trace: Sequence[Event], i: int) -> str:
        return json.dumps(event_to_json(trace[i])) if i < len(trace) else "(no event)"

    rows = [(i, text(expected, i), text(actual, i)) for i in range(lo, hi)]
    width = max(len("expected"), *(len(e) for _, e, _ in rows))
    digits = len(str(max(hi - 1, 0)))
    lines = [
        f"first difference at event {n} (expected {len(expected)} events, got {len(actual)}):",
        f"     {'#':>{digits}}  {'expected':<{width}} | driver",
    ]
    for i, e, a in rows:
        mark = ">>" if i == n else ("!=" if e != a else "  ")
        lines.append(f"  {mark} {i:>{digits}}  {e:<{width}} | {'(same)' if e == a else a}")
    more_e, more_a = max(0, len(expected) - hi), max(0, len(actual) - hi)
    if more_e or more_a:
        lines.append(f"  ... {more_e} more expected, {more_a} more from the driver (--full shows both traces)")
    return "\n".join(lines)


def run_conformance(
    driver_command: str,
    paths: Sequence[str | Path],
    *,
    timeout: float = 10.0,
    report: Callable[[Outcome], None] | None = None,
    driver_format: int = len(FORMATS),
    full: bool = False,
    signals: bool = True,
) -> list[Outcome]:
    """Replay every vector found under `paths` against the driver. Never raises for a bad vector
    or a bad driver: each problem becomes a failed Outcome naming the file. A vector in a format
    newer than `driver_format` (the newest the driver reads) is a skipped Outcome, never a pass;
    so is a vector with a `signal` fd when the driver cannot raise signals (`signals=False`)."""
    if not 1 <= driver_format <= len(FORMATS):
        raise ValueError(f"driver_format must be 1 to {len(FORMATS)}, got {driver_format!r}")
    outcomes: list[Outcome] = []

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if report is not None:
            report(outcome)

    try:
        files = vector_files(paths)
    except VectorError as e:
        record(Outcome(Path(str(e).split(":")[0]), "(path)", False, str(e)))
        return outcomes
    driver: Driver | None = None
    try:
        for path in files:
            try:
                vector = load_vector(path)
            except VectorError as e:
                record(Outcome(path, path.stem, False, f"malformed vector: {e}"))
                continue
            if FORMATS.index(vector.format) + 1 > driver_format:
                record(Outcome(path, vector.name, False, f"format {vector.format} (driver reads up to "
                               f"{FORMATS[driver_format - 1]})", skipped=True))
                continue
            if vector.uses_signals and not signals:
                record(Outcome(path, vector.name, False, "a signal fd: the driver cannot raise signals "
                               "(--no-signals)", skipped=True))
                continue
            if driver is None:
                try:
                    driver = Driver(driver_command, timeout)
                except DriverFailure as e:
                    record(Outcome(path, vector.name, False, str(e)))
                    continue
            try:
                answer = driver.ask(vector)
            except DriverFailure as e:
                stderr = driver.stderr_text()
                driver.kill()
                driver = None  # a fresh driver for the next vector
                detail = str(e) + (f"\n  driver stderr:\n{_indent(stderr)}" if stderr.strip() else "")
                record(Outcome(path, vector.name, False, detail))
                continue
            record(_judge(path, vector, answer, driver, full))
    finally:
        if driver is not None:
            code = driver.close()
            ran = [i for i, o in enumerate(outcomes) if not o.skipped]
            if code not in (0, None) and ran:
                last = outcomes[ran[-1]]
                outcomes[ran[-1]] = Outcome(
                    last.path, last.name, False, (last.detail + "\n" if last.detail else "") +
                    f"driver ended with {describe_exit(code)} at end of input (the protocol asks for exit code 0)"
                )
    return outcomes


def _judge(path: Path, vector: Vector, answer: dict[str, object], driver: Driver, full: bool) -> Outcome:
    expected = vector.expect or ()
    if "error" in answer:
        hint = ""
        n = FORMATS.index(vector.format)
        if n:
            hint = f" (it is {vector.format}; a driver that reads only {FORMATS[n - 1]} runs with --format {n})"
        return Outcome(path, vector.name, False, f"driver could not run it: {answer['error']}{hint}")
    try:
        actual = parse_trace(answer["trace"], "driver trace")
    except VectorError as e:
        return Outcome(path, vector.name, False, f"driver trace is malformed: {e}")
    if tuple(actual) == tuple(expected):
        return Outcome(path, vector.name, True)
    detail = first_difference(expected, actual, full=full)
    stderr = driver.stderr_text()
    if stderr.strip():
        detail += f"\n  driver stderr (so far):\n{_indent(stderr)}"
    return Outcome(path, vector.name, False, detail)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
