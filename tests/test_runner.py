"""`iohandler conform`: passes the model, names what is wrong, survives bad drivers."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from iohandler.specs.cli import main
from iohandler.specs.runner import run_conformance
from iohandler.specs.vector import bundled_vectors_dir, vector_files

MODEL = f"{sys.executable} -m iohandler.model.driver"
ONE = bundled_vectors_dir() / "rules" / "r05-revive-in-place.json"


def test_model_driver_passes_every_bundled_vector(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--driver", MODEL]) == 0
    n = len(vector_files([bundled_vectors_dir()]))
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{n} passed, 0 failed"


def test_a_wrong_trace_fails_with_the_first_difference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(ONE.read_text())
    # Plant a wrong expectation: revival at the head instead of in place.
    handlers = next(e for e in doc["expect"] if e["event"] == "handlers")
    handlers["list"].reverse()
    (tmp_path / "planted.json").write_text(json.dumps(doc))
    assert main(["conform", "--driver", MODEL, str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL r05-revive-in-place" in out
    assert "first difference at event" in out and '"event": "handlers"' in out
    assert out.strip().splitlines()[-1] == "0 passed, 1 failed"


def test_malformed_vector_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a-bad.json").write_text('{"format": "iohandler-vector/1", "name": "a-bad"}')
    shutil.copy(ONE, tmp_path / "b-good.json")
    outcomes = run_conformance(MODEL, [tmp_path])
    assert [(o.path.name, o.passed) for o in outcomes] == [("a-bad.json", False), ("b-good.json", True)]
    assert "a-bad.json" in outcomes[0].detail and "missing field(s)" in outcomes[0].detail


def _script_driver(tmp_path: Path, body: str) -> str:
    script = tmp_path / "driver.py"
    script.write_text(body)
    return f"{sys.executable} {script}"


def test_crashing_driver_is_reported_and_replaced(tmp_path: Path) -> None:
    # Crashes on its first vector only (a marker file remembers), then behaves as the model.
    marker = tmp_path / "crashed"
    driver = _script_driver(
        tmp_path,
        "import sys, pathlib\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    sys.stdin.readline(); m.write_text('x'); print('boom', file=sys.stderr); sys.exit(3)\n"
        "from iohandler.model.driver import run\nfrom iohandler.specs.protocol import serve\nsys.exit(serve(run))\n",
    )
    files = [ONE, bundled_vectors_dir() / "rules" / "r16-read-then-write.json"]
    outcomes = run_conformance(driver, files)
    assert [o.passed for o in outcomes] == [False, True]
    assert "exited without answering" in outcomes[0].detail and "boom" in outcomes[0].detail


def test_hanging_driver_times_out(tmp_path: Path) -> None:
    driver = _script_driver(tmp_path, "import time, sys\nsys.stdin.readline()\ntime.sleep(60)\n")
    outcomes = run_conformance(driver, [ONE], timeout=0.5)
    assert len(outcomes) == 1 and not outcomes[0].passed
    assert "no answer within 0.5 s: does the driver flush stdout after each line?" in outcomes[0].detail


def test_unflushed_answer_is_named_as_such(tmp_path: Path) -> None:
    # What a C driver without fflush looks like from here: the answer sits in its buffer (and a
    # partial line, if any, is counted).
    driver = _script_driver(
        tmp_path,
        "import time, sys\nsys.stdin.readline()\nsys.stdout.write('{\"tr'); sys.stdout.flush()\ntime.sleep(60)\n",
    )
    detail = run_conformance(driver, [ONE], timeout=0.5)[0].detail
    assert "it wrote 4 bytes but no newline" in detail and "fflush" in detail


def test_a_crash_names_the_signal(tmp_path: Path) -> None:
    driver = _script_driver(tmp_path, "import os, sys\nsys.stdin.readline()\nos.abort()\n")
    detail = run_conformance(driver, [ONE])[0].detail
    assert "exited without answering (killed by SIGABRT)" in detail, detail
    exits = _script_driver(tmp_path, "import sys\nsys.stdin.readline()\nsys.exit(3)\n")
    assert "(exit code 3)" in run_conformance(exits, [ONE])[0].detail


def _planted(tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    """r05 with a wrong handlers order and its last event dropped: the driver then has one more."""
    doc = json.loads(ONE.read_text())
    handlers = next(e for e in doc["expect"] if e["event"] == "handlers")
    handlers["list"].reverse()
    dropped = doc["expect"].pop()
    f = tmp_path / "planted.json"
    f.write_text(json.dumps(doc))
    return f, [dropped]


def test_difference_shows_both_sides_aligned_and_the_drivers_extra_events(tmp_path: Path) -> None:
    f, (dropped,) = _planted(tmp_path)
    (outcome,) = run_conformance(MODEL, [f])
    lines = outcome.detail.splitlines()
    first = next(line for line in lines if line.lstrip().startswith(">>"))
    expected_side, driver_side = first.split(" | ")
    assert '"handlers"' in expected_side and '"handlers"' in driver_side and expected_side != driver_side
    # The columns line up: every row's separator at the same place.
    rows = [line for line in lines if " | " in line]
    assert len({line.index(" | ") for line in rows}) == 1
    # The driver's event that the expectation lacks is shown, marked, against "(no event)".
    extra = next(line for line in lines if json.dumps(dropped) in line)
    assert extra.lstrip().startswith("!=") and "(no event)" in extra
    # Matching context rows say so instead of repeating the event.
    assert any(line.rstrip().endswith("| (same)") for line in rows)


def test_full_prints_both_whole_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f, _ = _planted(tmp_path)
    n = len(json.loads(f.read_text())["expect"])
    short = run_conformance(MODEL, [f])[0].detail
    assert main(["conform", "--full", "--driver", MODEL, str(f)]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if " | " in line and "expected" not in line]
    assert len(rows) == n + 1  # every expected event, plus the driver's extra one
    assert len(rows) > len([line for line in short.splitlines() if " | " in line and "expected" not in line])


def test_a_driver_declaring_format_1_skips_format_2_vectors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v2 = [p for p in vector_files([bundled_vectors_dir()]) if '"iohandler-vector/2"' in p.read_text()]
    assert v2, "the bundled gate_scripts vectors are format 2"
    # A v1-only driver that dies if it is ever sent a v2 vector.
    v1_only = _script_driver(
        tmp_path,
        "import sys\nfrom iohandler.model.driver import run\nfrom iohandler.specs.protocol import answer_for\n"
        "import json\nfor line in sys.stdin:\n"
        "    if 'iohandler-vector/2' in line: sys.exit(5)\n"
        "    print(json.dumps(answer_for(line, run)), flush=True)\n",
    )
    outcomes = run_conformance(v1_only, [*v2[:2], ONE], driver_format=1)
    assert [(o.passed, o.skipped) for o in outcomes] == [(False, True), (False, True), (True, False)]
    assert "format iohandler-vector/2" in outcomes[0].detail
    assert main(["conform", "--format", "1", "--driver", MODEL]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    files = vector_files([bundled_vectors_dir()])
    newer = [p for p in files if '"iohandler-vector/1"' not in p.read_text()]  # v2 and v3
    assert last.startswith(f"{len(files) - len(newer)} passed, 0 failed, {len(newer)} skipped")


def test_driver_garbage_and_errors_are_failures(tmp_path: Path) -> None:
    garbage = _script_driver(tmp_path, "import sys\nfor l in sys.stdin: print('hello', flush=True)\n")
    assert "not JSON" in run_conformance(garbage, [ONE])[0].detail
    refuse = _script_driver(tmp_path, 'import sys\nfor l in sys.stdin: print(\'{"error": "nope"}\', flush=True)\n')
    assert "driver could not run it: nope" in run_conformance(refuse, [ONE])[0].detail
    bad_trace = _script_driver(
        tmp_path, 'import sys\nfor l in sys.stdin: print(\'{"trace": [{"event": "zap"}]}\', flush=True)\n'
    )
    assert "driver trace is malformed" in run_conformance(bad_trace, [ONE])[0].detail


def test_missing_driver_and_missing_path(tmp_path: Path) -> None:
    assert "cannot start driver" in run_conformance("/nonexistent/driver", [ONE])[0].detail
    assert "no such file or folder" in run_conformance(MODEL, [tmp_path / "nope"])[0].detail


def test_a_v1_driver_refusing_a_v2_vector_is_pointed_at_format_1(tmp_path: Path) -> None:
    refuse = _script_driver(tmp_path, 'import sys\nfor l in sys.stdin: print(\'{"error": "v1 only"}\', flush=True)\n')
    v2 = bundled_vectors_dir() / "gate-scripts" / "r22-gate-adds-record.json"
    (outcome,) = run_conformance(refuse, [v2])
    assert not outcome.passed and not outcome.skipped
    assert (
        "v1 only (it is iohandler-vector/2; a driver that reads only iohandler-vector/1 runs with --format 1)"
        in outcome.detail
    )
    assert "--format" not in run_conformance(refuse, [ONE])[0].detail


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"iohandler {importlib.metadata.version('iohandler')}"
