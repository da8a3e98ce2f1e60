"""The conformance runner, runner side: feed vectors to a driver, compare traces, report.

A driver is any command that speaks the protocol (VECTORS.md). The runner starts it once and
keeps it for the whole run; a driver that crashes, hangs past the timeout or answers garbage is
reported against that vector, killed (its whole process group), and replaced by a fresh one for
the next vector. Nothing a vector file or a driver does makes the runner raise, block past the
timeout or hold more than a bounded part of the driver's output.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iohandler.specs.vector import (
    FORMATS,
    Event,
    Vector,
    VectorError,
    decode_json,
    event_to_json,
    load_vector,
    parse_trace,
    show,
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
    fatal: bool = False  # the run stopped here (the driver cannot start, a path is missing): no vector's result


DETAIL_LIMIT = 2000  # characters of a vector's error or a driver's message quoted in a report
STDERR_KEEP = 65536  # bytes of a driver's stderr kept (its tail) for the report
MAX_TIMEOUT = 86400.0  # a day: longer is a typo, and select() cannot wait 1e300 s
ANSWER_LIMIT = 64 * 2**20  # bytes in one answer line; a longer one is a failure, not a memory hog
EXIT_GRACE = 2.0  # s to wait for a driver that closed its stdout to exit (a crash's status, to report)
STRAY_KEEP = 4096  # bytes kept, to quote, of what a driver writes to stdout outside an answer


class DriverFailure(Exception):
    """The driver crashed, hung, or broke the protocol (the message says which)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the runner (`on_termination`): it ends the run as Ctrl-C does,
    the driver killed on the way out. A KeyboardInterrupt, so nothing on the way (Hypothesis
    included) takes it for a test failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def on_termination() -> None:
    """In a runner that is the process's command: SIGTERM and SIGHUP raise `Terminated`, so the
    driver is killed as on Ctrl-C; and the runner becomes its descendants' subreaper (Linux
    PR_SET_CHILD_SUBREAPER), so a driver's daemon whose parent exits is re-parented to it, not
    to init, where `Driver` finds and kills it too (even one that dropped the environment mark).
    Only for a process whose every child is a driver's: never in a library caller's process."""

    def raise_terminated(signum: int, _: object) -> None:
        raise Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, raise_terminated)
    global _SUBREAPER
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the environment mark still works
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _SUBREAPER = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


_SUBREAPER = False  # this process adopts its orphaned descendants (on_termination)
MARK = "IOHANDLER_CONFORM_DRIVER"  # in every driver's environment: what the runner kills at the end


class Driver:
    """One running driver process. `ask(vector)` returns its answer object.

    Its stdout and stderr are pipes the runner reads whenever it waits on the driver (a driver
    that writes between vectors waits at most until the next one); of stderr only the last
    STDERR_KEEP bytes are kept (a driver may write gigabytes there), and an answer line longer
    than ANSWER_LIMIT is a failure. It runs in a process group of its own, killed whole."""

    def __init__(self, command: str, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        # Inherited by every process the driver starts, even one that leaves its process group
        # and its process tree: the runner finds them all by it when it kills the driver.
        self._mark = f"{MARK}={os.getpid()}.{uuid.uuid4().hex}".encode()
        try:
            self._proc = subprocess.Popen(
                split_command(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                # Its own session and process group, so a kill reaches what a wrapper (a shell
                # script without exec, a launcher) started too: no orphan outlives the run.
                start_new_session=True,
                env={**os.environ, MARK: self._mark.decode().split("=", 1)[1]},
            )
        except (OSError, ValueError) as e:
            raise DriverFailure(f"cannot start driver {command!r}: {e}") from None
        assert self._proc.stdin is not None and self._proc.stdout is not None and self._proc.stderr is not None
        self._stdin, self._stdout, self._stderr = self._proc.stdin, self._proc.stdout, self._proc.stderr
        for pipe in (self._stdin, self._stdout, self._stderr):
            os.set_blocking(pipe.fileno(), False)
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no newline
        self._dropped = 0  # bytes of stdout after an answer not kept (only STRAY_KEEP are)
        self.stray = ""  # after close(): what the driver wrote after its last answer, described
        self._tail = bytearray()  # the last STDERR_KEEP bytes of stderr since forget_stderr()
        self._closed = False
        self._answered = False  # it has answered a vector (so stray output follows an answer)
        self._stdout_eof = False  # _pump read the end of its stdout
        self._deadline = 0.0  # of the vector being exchanged (time.monotonic())
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._selector.register(self._stderr, selectors.EVENT_READ)

    def ask(self, vector: Vector) -> dict[str, object]:
        line = (json.dumps(vector_to_json(vector), separators=(",", ":")) + "\n").encode()
        raw = self._exchange(line)
        try:
            answer = decode_json(raw)
        except VectorError as e:  # not JSON, nested too deep, an integer too long
            raise DriverFailure(f"driver answer line cannot be taken: {e}: {clip(raw, 200)!r}") from None
        if not isinstance(answer, dict) or not ({"trace", "error"} & set(answer)):
            raise DriverFailure(f'driver answer is not {{"trace": [...]}} or {{"error": "..."}}: {clip(raw, 200)!r}')
        return answer

    def _exchange(self, line: bytes) -> str:
        """Write `line`, read one answer line; both within one timeout. The write and the read
        share one wait, so a driver that does not read (or writes before it has read all of a
        long vector) cannot block the runner past the timeout."""
        self._deadline = deadline = time.monotonic() + self.timeout
        sent = 0
        stdin = self._stdin.fileno()
        self._pump(0)
        if self._buffer:  # one answer line per vector: a second line would be taken as this one's answer
            after = "after its answer to the previous one" if self._answered else "before it was sent any vector"
            raise DriverFailure(
                f"before this vector was sent, the driver wrote {self._stray_size()} {after}: "
                f"{clip(self._stray_text(), 200)!r}"
            )
        if self._stdout_eof:  # seen by that read: no answer can come
            raise self._eof()
        self._selector.register(stdin, selectors.EVENT_WRITE)
        try:
            while sent < len(line) or (end := self._newline()) < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._late(sent, len(line))
                for key, _ in self._selector.select(left):
                    if key.fd != stdin:
                        self._read(key.fd)
                        if sent < len(line) and self._newline() >= 0:
                            raise DriverFailure(
                                f"driver wrote a line before it had read the whole vector (it took {sent} of its "
                                f"{len(line)} bytes): {clip(self._stray_text(), 200)!r}"
                            )
                        continue
                    try:
                        sent += os.write(stdin, line[sent : sent + 65536])
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: it exited (or closed its stdin)
                        raise DriverFailure(f"driver exited before reading the vector{self._exit_note()}") from None
                    if sent == len(line):
                        self._selector.unregister(stdin)
        finally:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(stdin)
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        self._answered = True
        if self._buffer:
            raise DriverFailure(
                f"driver wrote {self._stray_size()} after its answer line (one answer line per "
                f"vector): {clip(self._stray_text(), 200)!r}"
            )
        return raw.decode(errors="replace")

    def _stray_size(self) -> str:
        return f"{len(self._buffer) + self._dropped} bytes"

    def _stray_text(self) -> str:
        return bytes(self._buffer[:STRAY_KEEP]).decode(errors="replace")

    def _newline(self) -> int:
        """Where the first answer line ends in what the driver wrote, or -1 (each byte scanned
        once, so a long answer costs linear time)."""
        end = self._buffer.find(b"\n", self._scanned)
        self._scanned = len(self._buffer) if end < 0 else end
        return end

    def _read(self, fd: int) -> None:
        """Read what is there on stdout (kept: the answer) or stderr (its tail kept)."""
        if fd == self._stderr.fileno():
            self._read_stderr()
            return
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk == b"":
            raise self._eof()
        self._buffer += chunk
        if len(self._buffer) > ANSWER_LIMIT and self._buffer.find(b"\n", self._scanned) < 0:
            # Checked on every read, the vector's write included: the buffer never outgrows it.
            raise DriverFailure(f"driver answer line is longer than {ANSWER_LIMIT} bytes (the runner's limit)")

    def _eof(self) -> DriverFailure:
        """The driver's stdout is at its end: it exited, or closed it."""
        code = self._exit_code(self._left())
        if code is None:
            return DriverFailure("driver closed its stdout without answering (it still runs)")
        return DriverFailure(f"driver exited without answering ({describe_exit(code)})")

    def _read_stderr(self) -> bool:
        """One read of stderr into the tail; False when nothing more is there now."""
        if self._closed or self._stderr.fileno() not in self._selector.get_map():
            return False
        try:
            chunk = os.read(self._stderr.fileno(), 65536)
        except BlockingIOError:
            return False
        if chunk == b"":
            self._selector.unregister(self._stderr.fileno())
            return False
        self._tail += chunk
        del self._tail[:-STDERR_KEEP]
        return True

    def _pump(self, wait: float) -> None:
        """Wait up to `wait` s for output and read it; of stdout (between answers: stray output, a
        protocol error) only the first STRAY_KEEP bytes are kept, the rest counted."""
        for key, _ in self._selector.select(wait):
            if key.fd == self._stderr.fileno():
                self._read_stderr()
                continue
            if key.fd != self._stdout.fileno():  # the driver's stdin, while a vector is written
                continue
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(key.fd, 65536)
                if chunk == b"":
                    self._selector.unregister(key.fd)
                    self._stdout_eof = True
                keep = max(0, STRAY_KEEP - len(self._buffer))
                self._buffer += chunk[:keep]
                self._dropped += len(chunk) - len(chunk[:keep])

    def _late(self, sent: int, size: int) -> DriverFailure:
        if sent < size:
            return DriverFailure(
                f"driver did not read the vector within {self.timeout:g} s (it took {sent} of its {size} "
                "bytes): does it read its stdin one line at a time?"
            )
        partial = f" (it wrote {len(self._buffer)} bytes but no newline)" if self._buffer else ""
        return DriverFailure(
            f"driver gave no answer within {self.timeout:g} s{partial}: does the driver flush stdout "
            "after each line? (the protocol needs one line per vector, flushed; a C driver "
            "writing to a pipe is block-buffered unless it calls fflush or setvbuf)"
        )

    def _left(self) -> float:
        """How long to wait for the exit status of a driver that closed a pipe: what is left of
        this vector's timeout (the wait counts against it), at most EXIT_GRACE."""
        return max(0.0, min(EXIT_GRACE, self._deadline - time.monotonic()))

    def _exit_note(self) -> str:
        code = self._exit_code(self._left())
        return "" if code is None else f" ({describe_exit(code)})"

    def _exit_code(self, timeout: float) -> int | None:
        """The driver's exit status once it has exited (Popen's convention: -N for signal N),
        waiting up to `timeout` while reading its output (so it cannot block writing it); None if
        it still runs. The process is left unreaped (a zombie), so its process group id cannot be
        reused before `_end` kills the group."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # already reaped (by Popen): its code is known
                return self._proc.returncode
            if info is not None:
                return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._pump(min(left, 0.01))

    def _end(self) -> None:
        """Kill the driver's whole process group (the leader may be gone, its children not) and
        every other process it started (`_family`), then reap the leader. The family is stopped
        first, round after round until no new member shows, so none can fork past the kill."""
        stopped: set[int] = set()
        for _ in range(100):  # bounded: a fork bomb is stopped a round at a time
            new = self._family() - stopped
            if not new:
                break
            for pid in new:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGSTOP)
            stopped |= new
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._proc.wait()
        for pid in stopped - {self._proc.pid}:  # those re-parented to this process (a subreaper)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _family(self) -> set[int]:
        """Every live process the driver started: below its leader in the process tree, or
        carrying its mark in its environment (a daemon re-parented to init, or to this process as
        subreaper). Linux /proc; elsewhere the process group kill alone."""
        children: dict[int, list[int]] = {}
        family: set[int] = set()
        me = os.getpid()
        try:
            entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
        except OSError:
            return family
        for pid in entries:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone, or not ours to read
            children.setdefault(ppid, []).append(pid)
            if pid != me:
                with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as f:
                    if self._mark in f.read().split(b"\0"):
                        family.add(pid)
        # As subreaper (on_termination, the runner as a command) every child of this process but
        # the drivers is an orphan a driver left, whatever its environment.
        if _SUBREAPER:
            family.update(children.get(me, []))
        todo = [self._proc.pid, *family]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in family and child != me:
                    family.add(child)
                    todo.append(child)
        family.add(self._proc.pid)
        return family

    def stderr_text(self, limit: int = 4000) -> str:
        """The last `limit` characters the driver wrote to stderr since `forget_stderr()`,
        including what is waiting in the pipe now."""
        for _ in range(2 * STDERR_KEEP // 65536 + 1):  # bounded: a driver may never stop writing
            if not self._read_stderr():
                break
        return self._tail.decode(errors="replace")[-limit:]

    def forget_stderr(self) -> None:
        """Start a new vector's stderr."""
        self.stderr_text()
        del self._tail[:]

    def close(self) -> int | None:
        """End of input: a well-behaved driver exits 0 (None: it did not exit within the timeout).
        Whatever it leaves in its process group is killed."""
        if self._proc.returncode is not None:
            return self._proc.returncode
        try:
            with contextlib.suppress(OSError):
                self._stdin.close()
            code = self._exit_code(self.timeout)
        finally:  # an interrupt while it is waited for kills it all the same
            self._end()
        with contextlib.suppress(OSError):
            self._pump(0)  # what it wrote after its last answer and before it ended
        if self._buffer:
            self.stray = (
                f"driver wrote {self._stray_size()} after its answer to the last vector (one answer line "
                f"per vector): {clip(self._stray_text(), 200)!r}"
            )
        self.stderr_text()  # what it wrote last, for a report after close
        self._closed = True
        self._selector.close()
        self._stdout.close()
        self._stderr.close()
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self.close()


def check_timeout(seconds: float) -> float:
    """A per-vector timeout: a finite number of seconds, > 0 and at most MAX_TIMEOUT."""
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise ValueError(f"must be a number of seconds > 0 and at most {MAX_TIMEOUT:g}, got {seconds!r}")
    return float(seconds)


def split_command(command: str) -> list[str]:
    """A driver command as the words of a program and its arguments (shell quoting, no shell);
    ValueError saying why for an empty or unbalanced one."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise ValueError(f"cannot split {command!r} into words: {e}") from None
    if not argv:
        raise ValueError(f"empty command {command!r}: give the program that runs the driver")
    return argv


def check_arguments(driver_command: str, timeout: float) -> None:
    """ValueError naming `driver_command` or `timeout` when it cannot be used."""
    for name, check in (
        ("driver_command", lambda: split_command(driver_command)),
        ("timeout", lambda: check_timeout(timeout)),
    ):
        try:
            check()
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{name}: {e}") from None


def clip(text: str, limit: int = DETAIL_LIMIT) -> str:
    """At most `limit` characters: a hostile vector or driver can make any message huge."""
    return text if len(text) <= limit else text[: limit - 40] + f"... ({len(text) - limit + 40} more characters)"


def printable(text: str) -> str:
    """`text` with what UTF-8 cannot encode (a lone surrogate a driver or a file name supplied) as
    backslash escapes, so it can be written to a file."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    fold: bool = False,
    signals: bool = True,
) -> list[Outcome]:
    """Replay every vector found under `paths` against the driver. Never raises for a bad vector
    or a bad driver: each problem becomes a failed Outcome naming the file. A vector in a format
    newer than `driver_format` (the newest the driver reads) is a skipped Outcome, never a pass;
    so is a vector with a `signal` fd when the driver cannot raise signals (`signals=False`).
    A driver that cannot start, or a path that does not exist, ends the run with one `fatal`
    Outcome. ValueError for an unusable `driver_command`, `timeout` or `driver_format`.
    `report` gets each Outcome as it is known; the last vector's again, failed, when the driver
    then misbehaves at end of input (no exit, a non-zero exit, output after its last answer).
    `fold`: the driver's poller folds HUP/ERR (R36); each vector's expected trace is then the
    model's over `folded_poll`, once the model is seen to produce the vector's own `expect`."""
    if not 1 <= driver_format <= len(FORMATS):
        raise ValueError(f"driver_format must be 1 to {len(FORMATS)}, got {driver_format!r}")
    check_arguments(driver_command, timeout)
    outcomes: list[Outcome] = []

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if report is not None:
            report(outcome)

    try:
        files = vector_files(paths)
    except VectorError as e:
        record(Outcome(Path(str(e).split(":")[0]), "(path)", False, str(e), fatal=True))
        return outcomes
    driver: Driver | None = None
    try:
        for path in files:
            try:
                vector = load_vector(path)
            except VectorError as e:
                record(Outcome(path, path.stem, False, f"malformed vector: {clip(str(e))}"))
                continue
            if FORMATS.index(vector.format) + 1 > driver_format:
                record(
                    Outcome(
                        path,
                        vector.name,
                        False,
                        f"format {vector.format} (driver reads up to {FORMATS[driver_format - 1]})",
                        skipped=True,
                    )
                )
                continue
            if vector.uses_signals and not signals:
                record(
                    Outcome(
                        path,
                        vector.name,
                        False,
                        "a signal fd: the driver cannot raise signals (--no-signals)",
                        skipped=True,
                    )
                )
                continue
            if driver is None:
                try:
                    driver = Driver(driver_command, timeout)
                except DriverFailure as e:  # the same for every vector: said once, the run stops
                    record(Outcome(path, "(driver)", False, str(e), fatal=True))
                    return outcomes
            try:
                answer = driver.ask(vector)
            except (ValueError, RecursionError) as e:  # the vector cannot even be written as JSON
                record(Outcome(path, vector.name, False, f"cannot send this vector: {clip(str(e))}"))
                continue
            except DriverFailure as e:
                detail = str(e) + stderr_note(driver)
                driver.kill()
                driver = None  # a fresh driver for the next vector
                record(Outcome(path, vector.name, False, detail))
                continue
            try:
                outcome = _judge(path, vector, answer, driver, full, fold)
            except Exception as e:  # a runner or model bug must not end the run
                outcome = Outcome(
                    path,
                    vector.name,
                    False,
                    "the runner failed on this vector (a bug in iohandler: "
                    f"please report it): {type(e).__name__}: {clip(str(e))}",
                )
            record(outcome)  # outside the try: a failing report callback is not a second outcome
            driver.forget_stderr()  # each vector's report shows what the driver wrote for it
    except BaseException:
        # An interrupt (Ctrl-C reaches the runner only: the driver has its own process group),
        # or a report callback's exception: kill the driver now rather than wait out its timeout.
        if driver is not None:
            driver.kill()
            driver = None
        raise
    finally:
        if driver is not None:
            problems = end_of_input(driver)
            ran = [i for i, o in enumerate(outcomes) if not o.skipped]
            if problems and ran:
                last = outcomes[ran[-1]]
                outcomes[ran[-1]] = Outcome(
                    last.path,
                    last.name,
                    False,
                    "\n".join(([last.detail] if last.detail else []) + problems) + stderr_note(driver),
                )
                if report is not None:  # reported again: its failure is found only now
                    report(outcomes[ran[-1]])
    return outcomes


def end_of_input(driver: Driver) -> list[str]:
    """Close `driver` (end of input) and say what it did wrong then: output after its last
    answer, no exit within the timeout, a non-zero exit (VECTORS.md: it exits 0)."""
    code = driver.close()
    problems = [driver.stray] if driver.stray else []
    if code is None:
        problems.append(
            f"driver did not exit within {driver.timeout:g} s at end of input (the protocol asks it "
            "to exit 0 when its stdin ends); it was killed"
        )
    elif code != 0:
        problems.append(f"driver ended with {describe_exit(code)} at end of input (the protocol asks for exit code 0)")
    return problems


def _judge(
    path: Path, vector: Vector, answer: dict[str, object], driver: Driver, full: bool, fold: bool = False
) -> Outcome:
    expected: Sequence[Event] = vector.expect or ()
    if fold:
        from iohandler.specs.fuzz import folded_expect  # the model as the oracle, as in fuzz

        folded = folded_expect(vector)
        if isinstance(folded, str):
            return Outcome(path, vector.name, False, folded)
        expected = folded
    if "error" in answer:
        hint = ""
        n = FORMATS.index(vector.format)
        if n:
            hint = f" (it is {vector.format}; a driver that reads only {FORMATS[n - 1]} runs with --format {n})"
        detail = f"driver could not run it: {answer_error(answer)}{hint}"
        return Outcome(path, vector.name, False, detail + stderr_note(driver))
    try:
        actual = parse_trace(answer["trace"], "driver trace")
    except VectorError as e:
        return Outcome(path, vector.name, False, f"driver trace is malformed: {clip(str(e))}" + stderr_note(driver))
    if tuple(actual) == tuple(expected):
        return Outcome(path, vector.name, True)
    detail = first_difference(expected, actual, full=full)
    return Outcome(path, vector.name, False, detail + stderr_note(driver))


def answer_error(answer: dict[str, object]) -> str:
    """The message of an `{"error": ...}` answer, clipped (a driver may send any JSON value)."""
    error = answer["error"]
    return clip(error if isinstance(error, str) else show(error, DETAIL_LIMIT))


def stderr_note(driver: Driver) -> str:
    """What the driver wrote to stderr for this vector (its tail), as a report's last lines."""
    stderr = driver.stderr_text()
    return f"\n  driver stderr:\n{_indent(stderr)}" if stderr.strip() else ""


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
