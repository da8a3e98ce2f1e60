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
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from iohandler.specs.vector import (
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
    detail: str = ""  # for a failure: what differed, or what went wrong


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
                raise DriverFailure(f"driver gave no answer within {self.timeout:g} s (hung?)")
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
        return f" (exit code {code})"

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


def first_difference(expected: Sequence[Event], actual: Sequence[Event], context: int = 3) -> str:
    """The first differing event, with the events around it, as readable text."""
    n = next(
        (i for i, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a),
        min(len(expected), len(actual)),
    )
    lines = [f"first difference at event {n} (expected {len(expected)} events, got {len(actual)}):"]

    def show(i: int, e: Event | None, mark: str) -> str:
        return f"  {mark} [{i}] {json.dumps(event_to_json(e)) if e is not None else '(no event)'}"

    for i in range(max(0, n - context), n):
        lines.append(show(i, expected[i], " "))
    lines.append(show(n, expected[n] if n < len(expected) else None, "-"))
    lines.append(show(n, actual[n] if n < len(actual) else None, "+"))
    for i in range(n + 1, min(len(expected), n + 1 + context)):
        lines.append(show(i, expected[i], " "))
    lines.append("  (- expected, + driver)")
    return "\n".join(lines)


def run_conformance(
    driver_command: str,
    paths: Sequence[str | Path],
    *,
    timeout: float = 10.0,
    report: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Replay every vector found under `paths` against the driver. Never raises for a bad vector
    or a bad driver: each problem becomes a failed Outcome naming the file."""
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
            record(_judge(path, vector, answer, driver))
    finally:
        if driver is not None:
            code = driver.close()
            if code not in (0, None) and outcomes:
                last = outcomes[-1]
                outcomes[-1] = Outcome(
                    last.path, last.name, False, (last.detail + "\n" if last.detail else "") +
                    f"driver exited with code {code} at end of input (the protocol asks for 0)"
                )
    return outcomes


def _judge(path: Path, vector: Vector, answer: dict[str, object], driver: Driver) -> Outcome:
    expected = vector.expect or ()
    if "error" in answer:
        return Outcome(path, vector.name, False, f"driver could not run it: {answer['error']}")
    try:
        actual = parse_trace(answer["trace"], "driver trace")
    except VectorError as e:
        return Outcome(path, vector.name, False, f"driver trace is malformed: {e}")
    if tuple(actual) == tuple(expected):
        return Outcome(path, vector.name, True)
    detail = first_difference(expected, actual)
    stderr = driver.stderr_text()
    if stderr.strip():
        detail += f"\n  driver stderr (so far):\n{_indent(stderr)}"
    return Outcome(path, vector.name, False, detail)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
