"""`iohandler conform` against hostile vectors and drivers (issue 20, items 13-19; issue 23, item 4).

The runner promises never to raise for a bad vector or a bad driver: each problem is one failed
vector with a clear message, the other vectors still run, no process outlives the run, and a
driver's output cannot make the runner block or grow without bound. Each hostile driver is a
small script the test writes to tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from iohandler.specs.cli import main
from iohandler.specs.runner import run_conformance
from iohandler.specs.vector import bundled_vectors_dir, parse_vector, vector_to_json
from tests.harness.config import model_trace

MODEL = f"{sys.executable} -m iohandler.model.driver"
IMPL = f"{sys.executable} -m iohandler.impl.driver"
ONE = bundled_vectors_dir() / "rules" / "r05-revive-in-place.json"
TWO = bundled_vectors_dir() / "rules" / "r16-read-then-write.json"
HUGE_INT = "1" + "0" * 5000  # past Python's 4 300-digit limit for int <-> str


def _driver(tmp_path: Path, body: str, name: str = "driver.py") -> str:
    script = tmp_path / name
    script.write_text(body)
    return f"{sys.executable} {script}"


def _answers(tmp_path: Path, line: str) -> str:
    """A driver that answers every vector with `line` (read from a file: it may be huge)."""
    (tmp_path / "answer.txt").write_text(line)
    return _driver(
        tmp_path,
        f"import sys\nanswer = open({str(tmp_path / 'answer.txt')!r}).read()\n"
        "for _ in sys.stdin:\n    sys.stdout.write(answer + '\\n'); sys.stdout.flush()\n",
    )


# ------------------------------------------------------------------ item 13: hostile JSON


def test_deeply_nested_and_huge_int_vectors_fail_alone(tmp_path: Path) -> None:
    head = '{"format": "iohandler-vector/1", "name": "x", "description": "", "rules": [], "fds": {}, '
    (tmp_path / "a-deep.json").write_text(
        head + '"scripts": {}, "gates": {}, "steps": ' + "[" * 100_000 + "]" * 100_000 + ', "expect": []}'
    )
    (tmp_path / "b-bigint.json").write_text(
        head + f'"scripts": {{}}, "gates": {{"g": {HUGE_INT}}}, "steps": [], "expect": []}}'
    )
    shutil.copy(ONE, tmp_path / "c-good.json")
    outcomes = run_conformance(MODEL, [tmp_path])
    assert [(o.path.name, o.passed) for o in outcomes] == [
        ("a-deep.json", False),
        ("b-bigint.json", False),
        ("c-good.json", True),
    ]
    assert "nested too deeply" in outcomes[0].detail and "a-deep.json" in outcomes[0].detail
    assert "integer with too many digits" in outcomes[1].detail and "b-bigint.json" in outcomes[1].detail
    assert all(len(o.detail) < 1000 for o in outcomes)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"trace": [{"event": "read", "fd": ' + HUGE_INT + ', "script": "s"}]}', "integer with too many digits"),
        ('{"trace": [{"event": "read", "fd": ' + HUGE_INT[:4000] + ', "script": "s"}]}', "expected a string"),
        ('{"error": "' + "e" * 100_000 + '"}', "driver could not run it: eee"),
    ],
    ids=["deep", "huge-int", "long-int", "long-error"],
)
def test_hostile_answers_fail_their_vector_and_the_run_goes_on(tmp_path: Path, line: str, says: str) -> None:
    outcomes = run_conformance(_answers(tmp_path, line), [ONE, TWO], timeout=5)
    assert [o.passed for o in outcomes] == [False, False]
    for o in outcomes:
        assert says in o.detail, o.detail[:500]
        assert len(o.detail) < 5000  # a huge answer is quoted, not copied whole


# ------------------------------------------------------------------ item 14: a driver that does not read


def test_a_driver_that_does_not_read_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    doc = json.loads(ONE.read_text())
    doc["padding"] = "x" * 300_000  # an unknown top-level field: kept, and sent (VECTORS.md)
    (tmp_path / "big.json").write_text(json.dumps(doc))
    deaf = _driver(tmp_path, "import time\ntime.sleep(30)\n")
    start = time.monotonic()
    (outcome,) = run_conformance(deaf, [tmp_path / "big.json"], timeout=0.5)
    assert time.monotonic() - start < 10  # not the driver's 30 s (or for ever)
    assert not outcome.passed and "did not read the vector within 0.5 s" in outcome.detail, outcome.detail


# ------------------------------------------------------------------ item 15: no orphans


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    """A folder where hung drivers write their pids; any still alive afterwards is killed."""
    folder = tmp_path / "pids"
    folder.mkdir()
    yield folder
    for f in folder.iterdir():
        pid = int(f.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_wrapper_drivers_hung_child_is_killed_with_it(tmp_path: Path, pids: Path) -> None:
    real = tmp_path / "real.py"
    real.write_text(
        "import os, sys, time, pathlib\nsys.stdin.readline()\n"
        f"pathlib.Path({str(pids)!r}, str(os.getpid())).write_text(str(os.getpid()))\ntime.sleep(30)\n"
    )
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f"#!/bin/sh\n{sys.executable} {real}\n")  # no exec: the shell stays the parent
    wrapper.chmod(0o755)
    # The timeout leaves the hung driver time to start and write its pid even on a loaded machine.
    outcomes = run_conformance(str(wrapper), [ONE, TWO], timeout=1.5)
    assert [o.passed for o in outcomes] == [False, False]
    hung = [int(f.read_text()) for f in pids.iterdir()]
    assert len(hung) == 2
    deadline = time.monotonic() + 2
    while any(map(_alive, hung)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in hung if _alive(p)], "orphans outlived conform"


def test_a_driver_that_exits_leaving_a_child_behind_leaves_no_orphan(tmp_path: Path, pids: Path) -> None:
    # A well-behaved driver that started a helper process and forgot it at exit.
    driver = _driver(
        tmp_path,
        "import subprocess, sys, pathlib\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        f"pathlib.Path({str(pids)!r}, 'child').write_text(str(p.pid))\n"
        "from iohandler.model.driver import run\nfrom iohandler.specs.protocol import serve\nsys.exit(serve(run))\n",
    )
    assert [o.passed for o in run_conformance(driver, [ONE], timeout=5)] == [True]
    child = int((pids / "child").read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


# ------------------------------------------------------------------ item 17: bad options


@pytest.mark.parametrize("command", ["conform", "fuzz"])
@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--timeout", "nan", "--timeout: must be a number of seconds"),
        ("--timeout", "inf", "--timeout: must be a number of seconds"),
        ("--timeout", "1e300", "--timeout: must be a number of seconds"),
        ("--timeout", "0", "--timeout: must be a number of seconds"),
        ("--driver", "", "--driver: empty command"),
        ("--driver", '"x', "--driver: cannot split"),
    ],
)
def test_bad_timeout_and_driver_values_exit_2_with_a_message(
    command: str, option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {"--driver": MODEL, "--timeout": "1", option: value}
    argv = [command, *[x for kv in args.items() for x in kv], *([str(ONE)] if command == "conform" else [])]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0.0, -1.0, 1e300])
def test_run_conformance_names_a_bad_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        run_conformance(MODEL, [ONE], timeout=timeout)


@pytest.mark.parametrize(("command", "says"), [("", "empty command"), ('"x', "cannot split")])
def test_run_conformance_names_a_bad_driver_command(command: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"driver_command.*{says}"):
        run_conformance(command, [ONE])


# ------------------------------------------------------------------ item 18: huge stderr


def test_a_huge_stderr_costs_bounded_memory_and_shows_its_tail(tmp_path: Path) -> None:
    driver = _driver(
        tmp_path,
        "import sys\nchunk = 'e' * 65535 + '\\n'\n"
        "for _ in sys.stdin:\n"
        "    for _ in range(800): sys.stderr.write(chunk)\n"  # 50 MiB per vector
        "    sys.stderr.write('the last words\\n'); sys.stderr.flush()\n"
        "    print('not json', flush=True)\n",
    )
    tracemalloc.start()
    try:
        outcomes = run_conformance(driver, [ONE, TWO], timeout=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [o.passed for o in outcomes] == [False, False]
    assert all("the last words" in o.detail and "not JSON" in o.detail for o in outcomes)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ------------------------------------------------------------------ item 19: many sends


def test_many_sends_on_one_fd_pass_on_the_loops_driver(tmp_path: Path) -> None:
    """VECTORS.md: only whether bytes are pending matters, never how many; the loop's driver keeps
    the count when the kernel buffer is full (a socketpair holds a few hundred one-byte sends, a
    pipe 64 KiB)."""
    # The socket also has a write handler: a full receive queue toward the loop's end leaves
    # that end writable (OUT always, VECTORS.md fd kinds).
    steps: list[dict[str, str]] = [
        {"do": "set", "fd": "s", "read": "r", "write": "r"},
        {"do": "set", "fd": "p", "read": "r"},
    ]
    steps += [{"do": "send", "fd": "s"}] * 1000 + [{"do": "send", "fd": "p"}] * 66_000
    steps += [{"do": "iterate"}, {"do": "drain", "fd": "s"}, {"do": "drain", "fd": "p"}, {"do": "iterate"}]
    doc = {
        "format": "iohandler-vector/1",
        "name": "many-sends",
        "description": "",
        "rules": [],
        "fds": {"s": "socket", "p": "pipe-read"},
        "scripts": {"r": []},
        "gates": {},
        "steps": steps,
    }
    vector = parse_vector(doc, require_expect=False)
    (tmp_path / "many.json").write_text(json.dumps(vector_to_json(replace(vector, expect=tuple(model_trace(vector))))))
    outcomes = run_conformance(IMPL, [tmp_path / "many.json"], timeout=20)
    assert [o.passed for o in outcomes] == [True], outcomes[0].detail


# ------------------------------------------------------------------ issue 23, item 4


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ('{"error": "nope"}', "driver could not run it: nope"),
        ('{"trace": [{"event": "zap"}]}', "driver trace is malformed"),
    ],
    ids=["error", "malformed"],
)
def test_the_drivers_stderr_is_shown_for_an_error_answer_and_a_malformed_trace(
    tmp_path: Path, answer: str, says: str
) -> None:
    driver = _driver(
        tmp_path,
        "import sys\nfor n, _ in enumerate(sys.stdin):\n"
        "    print(f'why {n}: no sockets here', file=sys.stderr, flush=True)\n"
        f"    print({answer!r}, flush=True)\n",
    )
    first, second = run_conformance(driver, [ONE, TWO])
    assert says in first.detail and "driver stderr:\n    why 0: no sockets here" in first.detail
    assert "why 1" in second.detail and "why 0" not in second.detail  # each vector its own stderr


def test_a_driver_that_cannot_start_is_reported_once_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such-driver")
    assert main(["conform", "--driver", missing, str(ONE), str(TWO)]) == 2
    out, err = capsys.readouterr()
    assert err.count("cannot start driver") == 1 and "No such file" in err
    assert "FAIL" not in out and "passed" not in out
    (outcome,) = run_conformance(missing, [ONE, TWO])
    assert outcome.fatal and not outcome.passed and "cannot start driver" in outcome.detail
    # A missing vector path is the same kind of problem: nothing can run.
    assert main(["conform", "--driver", MODEL, str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_fold_hup_err_compares_a_folding_poller_with_the_folded_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """R36: the selectors poller folds HUP/ERR, so it can only differ from the bundled traces;
    with --fold-hup-err, conform compares it with the model over the folded view (as fuzz does)."""
    selectors = f"{IMPL} --poller selectors"
    assert main(["conform", "--driver", selectors]) == 1
    capsys.readouterr()
    assert main(["conform", "--fold-hup-err", "--driver", selectors]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("failed; HUP/ERR folded (R36)")
    assert main(["conform", "--fold-hup-err", "--driver", MODEL]) == 1  # the unfolded model differs
    capsys.readouterr()
    # A vector whose expect the model does not produce cannot be folded: said, not guessed.
    doc = json.loads(ONE.read_text())
    doc["expect"].pop()
    (tmp_path / "wrong.json").write_text(json.dumps(doc))
    (outcome,) = run_conformance(selectors, [tmp_path / "wrong.json"], fold=True)
    assert not outcome.passed and "the model's own trace differs from this vector's expect" in outcome.detail


def test_a_runner_bug_on_one_vector_is_reported_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import iohandler.specs.fuzz as fuzz

    def broken(vector: object, *, fold: bool = False) -> object:
        raise RuntimeError("planted")

    monkeypatch.setattr(fuzz, "model_trace", broken)
    outcomes = run_conformance(MODEL, [ONE, TWO], fold=True)
    assert [o.passed for o in outcomes] == [False, False]
    assert all(
        "the runner failed on this vector (a bug in iohandler" in o.detail and "planted" in o.detail for o in outcomes
    )


def test_an_interrupt_kills_the_driver_at_once(tmp_path: Path, pids: Path) -> None:
    """The driver has its own process group, so Ctrl-C reaches only the runner: the runner must
    then kill it at once, not wait out its timeout for an exit at end of input."""
    driver = _driver(
        tmp_path,
        "import os, sys, time, pathlib\n"
        f"pathlib.Path({str(pids)!r}, 'driver').write_text(str(os.getpid()))\n"
        "from iohandler.model.driver import run\nfrom iohandler.specs.protocol import serve\n"
        "serve(run)\ntime.sleep(30)\n",  # lingers after end of input
    )

    def interrupt(_: object) -> None:
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_conformance(driver, [ONE], timeout=8, report=interrupt)
    assert time.monotonic() - start < 5
    assert not _alive(int((pids / "driver").read_text()))


def test_a_driver_that_closes_stdout_but_runs_on_is_not_said_to_have_exited(tmp_path: Path) -> None:
    driver = _driver(tmp_path, "import os, sys, time\nsys.stdin.readline()\nos.close(1)\ntime.sleep(30)\n")
    (outcome,) = run_conformance(driver, [ONE], timeout=5)
    assert "driver closed its stdout without answering (it still runs)" in outcome.detail, outcome.detail


# ------------------------------------------------------------------ second adversarial review of the runner


def _sh(tmp_path: Path, body: str, name: str = "driver.sh") -> str:
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("body", ["exec 1>&-; read x; sleep 30", "exec 0<&-; sleep 30"], ids=["stdout", "stdin"])
def test_a_driver_that_closes_its_stdout_or_stdin_fails_its_vectors(tmp_path: Path, body: str) -> None:
    """Review II, item 1: while the vector was written, the runner read every registered fd,
    the driver's stdin (a write end) included: EBADF ended the run."""
    outcomes = run_conformance(_sh(tmp_path, body), [ONE, TWO], timeout=1)
    assert [o.passed for o in outcomes] == [False, False]
    assert all("driver" in o.detail for o in outcomes)


def _cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`iohandler ARGS` in a child whose stdout and stderr encode strictly (PYTHONIOENCODING=utf-8):
    text a vector or a driver supplies must still print."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "iohandler.specs.cli", *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


SURROGATE_ERROR = 'import sys\nfor _ in sys.stdin:\n    print(\'{"error": "bad \\\\ud800 thing"}\', flush=True)\n'


def test_lone_surrogates_from_a_vector_file_print_escaped(tmp_path: Path) -> None:
    """Review II, item 2a: the loader's message quoting a key "\\ud800" could not be printed."""
    doc = json.loads(ONE.read_text())
    doc["fds"] = {"\ud800": "bogus"}
    (tmp_path / "a.json").write_text(json.dumps(doc))  # json.dumps writes the escape, so the file is UTF-8
    shutil.copy(TWO, tmp_path / "b.json")
    run = _cli("conform", "--driver", MODEL, str(tmp_path))
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1 and "\\ud800" in run.stdout and run.stdout.rstrip().endswith("1 passed, 1 failed")


def test_lone_surrogates_from_a_driver_print_escaped_and_count_once(tmp_path: Path) -> None:
    """Review II, item 2b/2c: an {"error": ...} holding "\\ud800" counted each vector twice in
    conform (the report's exception was recorded as a second outcome) and ended fuzz with exit 2."""
    driver = _driver(tmp_path, SURROGATE_ERROR)
    run = _cli("conform", "--driver", driver, str(ONE), str(TWO))
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1 and run.stdout.count("bad \\ud800 thing") == 2
    assert run.stdout.rstrip().endswith("0 passed, 2 failed")
    run = _cli("fuzz", "--driver", driver, "--examples", "2", "--save", str(tmp_path / "saved"), cwd=tmp_path)
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1 and "MISMATCH" in run.stdout and "bad \\ud800 thing" in run.stdout
    assert len(list((tmp_path / "saved").iterdir())) == 1


def test_a_file_name_that_is_not_utf8_prints_escaped(tmp_path: Path) -> None:
    """Review II, item 2d."""
    name = os.fsencode(tmp_path) + b"/\xffname.json"
    with open(name, "wb") as f:
        f.write(b"not json")
    run = _cli("conform", "--driver", MODEL, os.fsdecode(name))
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 1 and "\\udcffname.json" in run.stdout and "not JSON" in run.stdout


def test_a_driver_that_writes_while_the_vector_is_sent_costs_bounded_memory(tmp_path: Path) -> None:
    """Review II, item 3: while a long vector was written, the answer limit was never checked, so
    `yes` as the driver grew the runner by hundreds of MB (a line before the whole vector is read
    cannot be its answer: it is a protocol error at once)."""
    doc = json.loads(ONE.read_text())
    doc["description"] = "d" * 300_000
    (tmp_path / "big.json").write_text(json.dumps(doc))
    tracemalloc.start()
    try:
        start = time.monotonic()
        (outcome,) = run_conformance("yes", [tmp_path / "big.json"], timeout=3)
        took = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not outcome.passed, outcome.detail
    assert "before it had read the whole vector" in outcome.detail or "before it was sent any vector" in outcome.detail
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert took < 3  # at once, not at the timeout


TWICE = """import json, sys, time
from iohandler.model.iterate import run_vector
from iohandler.specs.vector import event_to_json, parse_vector
for n, line in enumerate(sys.stdin):
    good = json.dumps({"trace": [event_to_json(e) for e in run_vector(parse_vector(json.loads(line)))]})
    if n == 0:
        print(good, flush=True)
        time.sleep(DELAY)
        print(good, flush=True)  # a second answer to the same vector
    else:
        print('{"trace": []}', flush=True)  # every later answer is wrong
"""


@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["together", "later"])
def test_an_extra_answer_line_is_a_protocol_error(tmp_path: Path, delay: float) -> None:
    """Review II, item 4: a driver answering the first vector twice and every later one wrongly
    passed both vectors of the same trace (the extra line was taken as the next answer)."""
    for name in ("a.json", "b.json"):
        shutil.copy(ONE, tmp_path / name)
    driver = _driver(tmp_path, TWICE.replace("DELAY", repr(delay)))
    outcomes = run_conformance(driver, [tmp_path / "a.json", tmp_path / "b.json"], timeout=5)
    assert not all(o.passed for o in outcomes)
    assert any("after its answer" in o.detail for o in outcomes), [o.detail for o in outcomes]


def test_output_after_the_last_answer_fails_the_last_vector(tmp_path: Path) -> None:
    driver = _driver(tmp_path, TWICE.replace("DELAY", "0.3"))
    (outcome,) = run_conformance(driver, [ONE], timeout=5)
    assert not outcome.passed and "after its answer" in outcome.detail, outcome.detail


ESCAPING = """import os, subprocess, sys, time, pathlib
pids = pathlib.Path(PIDS)
# A child in a session of its own (setsid), so outside the driver's process group.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
(pids / f"session-{os.getpid()}").write_text(str(child.pid))
# A daemon: forked twice, its parent gone, so no longer below the driver in the process tree.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        (pids / f"daemon-{os.getpid()}").write_text(str(os.getpid()))
        time.sleep(30)
    os._exit(0)
os.wait()
sys.stdin.readline()
time.sleep(30)  # hangs: the runner gives up on it after the timeout
"""


def test_descendants_that_leave_the_process_group_are_killed_too(tmp_path: Path, pids: Path) -> None:
    """Review II, item 5: a driver's descendant in a new session or process group (setsid, a
    daemon's double fork) escaped the kill of the driver's process group."""
    driver = _driver(tmp_path, ESCAPING.replace("PIDS", repr(str(pids))))
    outcomes = run_conformance(driver, [ONE, TWO], timeout=2)
    assert [o.passed for o in outcomes] == [False, False]
    escaped = [int(f.read_text()) for f in pids.iterdir()]
    assert len(escaped) == 4, sorted(f.name for f in pids.iterdir())
    deadline = time.monotonic() + 2
    while any(map(_alive, escaped)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in escaped if _alive(p)], "descendants outlived conform"


@pytest.mark.parametrize("when", ["answer", "exit"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_a_signal_to_the_runner_kills_the_driver_and_exits_128_plus_n(
    tmp_path: Path, pids: Path, signum: int, when: str
) -> None:
    """Review II, items 5 and 11: SIGTERM or SIGHUP left the driver's group running (cleanup ran only
    on an exception), and SIGINT printed a traceback. The runner is waiting for an answer, or for
    the driver to exit at end of input."""
    serve = "from iohandler.model.driver import run\nfrom iohandler.specs.protocol import serve\nserve(run)\n"
    driver = _driver(
        tmp_path,
        "import os, sys, time, pathlib\n"
        + (serve if when == "exit" else "")
        + f"pathlib.Path({str(pids)!r}, 'driver').write_text(str(os.getpid()))\ntime.sleep(30)\n",
    )
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "iohandler.specs.cli", "conform", "--timeout", "20", "--driver", driver, str(ONE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 15
    while not (pids / "driver").exists() or not (pids / "driver").read_text():
        assert time.monotonic() < deadline and runner.poll() is None
        time.sleep(0.05)
    runner.send_signal(signum)
    _, err = runner.communicate(timeout=10)
    assert runner.returncode == 128 + signum, err
    assert "Traceback" not in err and err.strip().count("\n") == 0 and signal.Signals(signum).name in err, err
    pid = int((pids / "driver").read_text())
    deadline = time.monotonic() + 2
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_a_vector_path_that_is_not_a_regular_file_fails_alone(tmp_path: Path) -> None:
    """Review II, item 6: a FIFO as a vector path hung conform; /dev/zero grew it past 1.6 GB."""
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    with open(tmp_path / "huge.json", "wb") as f:
        f.truncate(17 * 2**20)  # sparse: its size alone is refused
    shutil.copy(ONE, tmp_path / "one.json")
    paths = [str(tmp_path / n) for n in ("fifo.json", "zero.json", "huge.json", "one.json")]
    run = _cli("conform", "--driver", MODEL, *paths, timeout=60)
    assert run.returncode == 1 and run.stdout.rstrip().endswith("1 passed, 3 failed"), run.stdout + run.stderr
    assert "fifo.json: not a regular file (a FIFO)" in run.stdout
    assert "zero.json: not a regular file (a character device)" in run.stdout
    assert "huge.json: larger than 16 MiB" in run.stdout


def test_fuzz_db_passes_over_a_found_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    found = tmp_path / "db" / "found"
    found.mkdir(parents=True)
    os.mkfifo(found / "a.json")
    (found / "b.json").symlink_to("/dev/zero")
    run = _cli(
        "fuzz",
        "--driver",
        MODEL,
        "--examples",
        "3",
        "--seed",
        "1",
        "--db",
        str(tmp_path / "db"),
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 0 and "0 mismatches" in run.stdout, run.stdout + run.stderr


def test_an_answer_of_millions_of_tiny_values_is_refused_before_it_is_built(tmp_path: Path) -> None:
    """Review II, item 7: an answer line under the 64 MiB cap made of tiny values ([] 21 million
    times) cost ~1.5 GB once parsed: the bytes were bounded, the objects not."""
    driver = _driver(
        tmp_path,
        "import sys\nline = '{\"trace\": [' + '[],' * 3_000_000 + '[]]}\\n'\n"
        "for _ in sys.stdin:\n    sys.stdout.write(line); sys.stdout.flush()\n",
    )
    tracemalloc.start()
    try:
        (outcome,) = run_conformance(driver, [ONE], timeout=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not outcome.passed and "more than 1000000 values" in outcome.detail, outcome.detail[:300]
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_a_vector_file_of_millions_of_tiny_values_fails_alone(tmp_path: Path) -> None:
    doc = json.loads(ONE.read_text())
    doc["padding"] = [[]] * 1_000_001
    (tmp_path / "a.json").write_text(json.dumps(doc))
    shutil.copy(TWO, tmp_path / "b.json")
    outcomes = run_conformance(MODEL, [tmp_path])
    assert [o.passed for o in outcomes] == [False, True]
    assert "more than 1000000 values" in outcomes[0].detail and "a.json" in outcomes[0].detail


@pytest.mark.parametrize("body", ["read x; exec 1>&-; sleep 30", "exec 0<&-; sleep 30"], ids=["stdout", "epipe"])
def test_the_timeout_bounds_a_driver_that_closes_a_pipe_and_runs_on(tmp_path: Path, body: str) -> None:
    """Review II, item 8: after the driver closed its stdout (or its stdin: EPIPE), the runner
    waited a fixed 2 s for it to exit, whatever --timeout said."""
    doc = json.loads(ONE.read_text())
    doc["description"] = "d" * 300_000  # more than a pipe holds: the write meets the closed stdin
    for name in ("a.json", "b.json", "c.json"):
        (tmp_path / name).write_text(json.dumps(doc))
    driver = _sh(tmp_path, body)
    start = time.monotonic()
    outcomes = run_conformance(driver, [tmp_path], timeout=0.3)
    took = time.monotonic() - start
    assert [o.passed for o in outcomes] == [False] * 3
    assert took < 4, f"{took:.1f} s for 3 vectors at --timeout 0.3"  # was over 6 s


@pytest.mark.parametrize(
    ("value", "says"),
    [("NaN", "NaN is not JSON"), ("-Infinity", "-Infinity is not JSON"), ("1e400", "1e400 is not a finite number")],
)
def test_nan_and_infinity_in_a_vector_file_fail_it(tmp_path: Path, value: str, says: str) -> None:
    """Review II, item 9: NaN was accepted in a vector file (in a field the runner keeps) and sent
    on to the driver as "x":NaN, which is not JSON."""
    text = ONE.read_text().rstrip().removesuffix("}") + f', "x": {value}}}'
    (tmp_path / "a.json").write_text(text)
    (outcome,) = run_conformance(MODEL, [tmp_path / "a.json"])
    assert not outcome.passed and says in outcome.detail and "a.json" in outcome.detail, outcome.detail


def test_duplicate_keys_fail_a_vector_file_and_an_answer(tmp_path: Path) -> None:
    """Review II, item 11: a duplicate key silently kept its last value."""
    text = ONE.read_text().replace('"fds": {', '"fds": {"a": "socket", ', 1)
    (tmp_path / "a.json").write_text(text)
    (outcome,) = run_conformance(MODEL, [tmp_path / "a.json"])
    assert not outcome.passed and 'the key "a" twice' in outcome.detail and "a.json" in outcome.detail, outcome.detail
    (outcome,) = run_conformance(_answers(tmp_path, '{"trace": [{"event": "poll", "set": []}], "trace": []}'), [ONE])
    assert not outcome.passed and 'the key "trace" twice' in outcome.detail, outcome.detail


def test_a_driver_that_does_not_exit_at_end_of_input_fails_the_last_vector(tmp_path: Path) -> None:
    """Review II, item 10: VECTORS.md says a driver exits 0 at end of input; one that ran on was
    killed after the timeout, and every vector passed."""
    driver = _driver(
        tmp_path,
        "import time\nfrom iohandler.model.driver import run\n"
        "from iohandler.specs.protocol import serve\nserve(run)\ntime.sleep(30)\n",
    )
    start = time.monotonic()
    first, last = run_conformance(driver, [ONE, TWO], timeout=1)
    assert time.monotonic() - start < 10
    assert first.passed and not last.passed
    assert "driver did not exit within 1 s at end of input" in last.detail, last.detail


def test_a_dangling_link_or_fifo_in_a_folder_is_reported_not_skipped(tmp_path: Path) -> None:
    """Review II, item 11: a folder's dangling symlink or FIFO named *.json was passed over silently."""
    (tmp_path / "a-dangling.json").symlink_to(tmp_path / "nowhere.json")
    os.mkfifo(tmp_path / "b-fifo.json")
    shutil.copy(ONE, tmp_path / "c-good.json")
    outcomes = run_conformance(MODEL, [tmp_path])
    assert [(o.path.name, o.passed) for o in outcomes] == [
        ("a-dangling.json", False),
        ("b-fifo.json", False),
        ("c-good.json", True),
    ]
    assert "cannot read: No such file" in outcomes[0].detail and "not a regular file (a FIFO)" in outcomes[1].detail


def test_a_run_that_checked_nothing_does_not_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review II, item 11: --format 1 on a folder of v2 vectors printed "0 passed, N skipped" and
    exited 0, though nothing was checked (decided: exit 2, as for no vectors found)."""
    v2 = bundled_vectors_dir() / "gate-scripts"
    assert main(["conform", "--format", "1", "--driver", "no-such-driver-anywhere", str(v2)]) == 2
    out, err = capsys.readouterr()
    assert "0 passed, 0 failed" in out and "nothing was checked" in err


def test_a_closed_stdout_ends_conform_quietly(tmp_path: Path, pids: Path) -> None:
    """Review II, item 11: `iohandler conform ... | head -1` ended in a BrokenPipeError traceback."""
    wrong = _driver(tmp_path, "import sys\nfor _ in sys.stdin:\n    print('{\"trace\": []}', flush=True)\n")
    runner = subprocess.Popen(
        [sys.executable, "-m", "iohandler.specs.cli", "conform", "--driver", wrong],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert runner.stdout is not None and runner.stderr is not None
    assert runner.stdout.readline().startswith(b"FAIL ")
    runner.stdout.close()  # as `head -1` does
    err = runner.stderr.read().decode()
    assert runner.wait(timeout=30) == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_the_command_also_kills_a_daemon_that_dropped_the_environment_mark(tmp_path: Path, pids: Path) -> None:
    """Review II, item 5: as a command the runner is a subreaper (VECTORS.md notes), so a daemon
    whose parent exited, started with an empty environment, re-parents to it and is killed too."""
    driver = _driver(
        tmp_path,
        f"""import os, sys, time, pathlib
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        pathlib.Path({str(pids)!r}, str(os.getpid())).write_text(str(os.getpid()))
        os.execve(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)"], {{}})
    os._exit(0)
os.wait()
time.sleep(1)
sys.stdin.readline()
time.sleep(30)
""",
    )
    run = _cli("conform", "--timeout", "3", "--driver", driver, str(ONE))
    assert run.returncode == 1, run.stdout + run.stderr
    (daemon,) = [int(f.read_text()) for f in pids.iterdir()]
    deadline = time.monotonic() + 2
    while _alive(daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(daemon)


def test_a_failure_found_at_end_of_input_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review II, item 10: the last vector's failure found at end of input (no exit, a non-zero
    exit, stray output) was counted in the summary but never printed."""
    driver = _driver(
        tmp_path,
        "import sys\nfrom iohandler.model.driver import run\n"
        "from iohandler.specs.protocol import serve\nserve(run)\nsys.exit(3)\n",
    )
    assert main(["conform", "--timeout", "5", "--driver", driver, str(ONE)]) == 1
    out = capsys.readouterr().out
    assert "FAIL r05-revive-in-place" in out and "driver ended with exit code 3 at end of input" in out, out


def test_a_driver_that_closes_stdout_between_vectors_is_said_to_at_once(tmp_path: Path) -> None:
    """Review II, item 4 follow-up: the check for stray output before a vector is sent also meets
    the end of stdout of a driver that closed it after its answer (and runs on, reading); that
    must still be said, at once, not be a timeout."""
    from iohandler.specs.runner import Driver, DriverFailure
    from iohandler.specs.vector import load_vector

    command = _driver(
        tmp_path,
        "import sys\nfrom iohandler.model.driver import run\n"
        "from iohandler.specs.protocol import answer_for\nimport json\n"
        "print(json.dumps(answer_for(sys.stdin.readline(), run)), flush=True)\nimport os, time\n"
        "os.close(1)\nsys.stdin.readline()\ntime.sleep(30)\n",
    )
    driver = Driver(command, timeout=20)
    try:
        assert "trace" in driver.ask(load_vector(ONE))
        time.sleep(0.5)  # its stdout is at its end before the next vector is sent
        start = time.monotonic()
        with pytest.raises(DriverFailure, match="closed its stdout without answering"):
            driver.ask(load_vector(TWO))
        assert time.monotonic() - start < 10
    finally:
        driver.kill()
