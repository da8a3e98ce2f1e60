"""`iohandler fuzz`: planted bugs are caught, shrunk, saved and replayed; correct drivers pass.

Each planted-bug driver (tests/fuzz_drivers/planted.py) is the model's driver breaking one rule.
The fuzzer must find it within the bound, save a short vector (`MAX_STEPS` steps at most, size
reported in $IOHANDLER_STATS_DIR/fuzz.json), and `iohandler conform` must fail the driver on the
saved vector while the model's driver passes it (its `expect` is the model's trace).
"""

from __future__ import annotations

import builtins
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iohandler.specs.cli import main
from iohandler.specs.fuzz import MISSING_HYPOTHESIS, FuzzResult, FuzzUnavailable, fuzz, probe_vector
from iohandler.specs.runner import run_conformance
from iohandler.specs.scenarios import vectors
from iohandler.specs.vector import bundled_vectors_dir, dump_vector, load_vector, parse_vector, vector_to_json
from tests.harness.config import budget, model_trace, write_stats

PLANTED = Path(__file__).parent / "fuzz_drivers" / "planted.py"
MODEL = f"{sys.executable} -m iohandler.model.driver"
MAX_STEPS = 5  # a shrunk counterexample longer than this is a shrinking regression
RESULTS: dict[str, dict[str, object]] = {}


def planted(bug: str) -> str:
    return f"{sys.executable} {PLANTED} {bug}"


HOSTILE = Path(__file__).parent / "fuzz_drivers" / "hostile.py"  # misbehaviours other than rule bugs


def hostile(mode: str) -> str:
    return f"{sys.executable} {HOSTILE} {mode}"


# (bug, seed): a seed that finds it within the bound; any seed finds each with enough examples.
BUGS = [("R2", 1), ("R9", 1), ("R13", 1), ("R15", 1), ("R17", 1), ("R18", 2)]


SUMMARY = re.compile(
    r"^fuzz: (\d+) examples, (\d+) steps, 1 mismatch; .*\n  shrunk in (\d+) runs to (\d+) steps "
    r"\((\d+) bytes\): saved (.+)$",
    re.MULTILINE,
)


@pytest.mark.parametrize(("bug", "seed"), BUGS, ids=[b for b, _ in BUGS])
def test_planted_bug_is_caught_shrunk_saved_and_replayed(
    bug: str, seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    driver = planted(bug)
    assert main(["fuzz", "--driver", driver, "--examples", "1000", "--seed", str(seed), "--save", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("MISMATCH fuzz-") and "first difference at event" in out
    assert '"format": "iohandler-vector/1"' in out  # the vector itself, printed
    m = SUMMARY.search(out)
    assert m is not None, out[-2000:]
    examples, _, shrink_runs, steps, size = map(int, m.groups()[:5])
    RESULTS[bug] = {"examples": examples, "shrink_runs": shrink_runs, "steps": steps, "bytes": size}
    write_stats("fuzz", RESULTS)
    assert 1 <= steps <= MAX_STEPS, out
    saved = Path(m.group(6))
    assert saved.parent == tmp_path and [p.name for p in tmp_path.iterdir()] == [saved.name]
    vector = load_vector(saved)
    assert len(vector.steps) == steps and len(saved.read_bytes()) == size
    assert main(["conform", "--driver", driver, str(tmp_path)]) == 1
    assert [o.passed for o in run_conformance(MODEL, [tmp_path])] == [True]


@pytest.mark.parametrize(
    "driver",
    [MODEL, f"{sys.executable} -m iohandler.impl.driver --poller epoll"],
    ids=["model", "impl-epoll"],
)
def test_correct_drivers_pass(driver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = budget(dev=100, ci=150, thorough=2000)
    assert main(["fuzz", "--driver", driver, "--examples", str(n), "--seed", "7", "--save", str(tmp_path)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f"fuzz: {n} examples, ") and " 0 mismatches; gate scripts on (probed); seed 7" in summary
    steps = int(summary.split(", ")[1].split()[0])
    assert steps > 2 * n  # vectors of some length, not a run of empty ones
    assert not any(tmp_path.iterdir())


def test_a_seed_repeats_a_run(tmp_path: Path) -> None:
    def run(seed: int) -> tuple[int, int, int]:
        r = fuzz(MODEL, examples=30, seed=seed, save=tmp_path, report=lambda _: None)
        return r.examples, r.steps, r.seed

    assert run(5) == run(5) == (30, run(5)[1], 5)
    assert run(5)[1] != run(6)[1]  # and another seed is another run


def test_gate_scripts_are_probed_or_switched_off(tmp_path: Path) -> None:
    """A driver without the optional gate_scripts field passes once the probe switches them off;
    --no-gate-scripts switches them off without asking."""

    def run(driver: str, examples: int, gate_scripts: bool | None = None) -> FuzzResult:
        return fuzz(driver, examples=examples, seed=3, save=tmp_path, gate_scripts=gate_scripts, report=lambda _: None)

    probed = run(planted("none"), 150)
    assert (probed.gate_scripts, probed.gate_scripts_how.split(":")[0], probed.mismatches) == (False, "probed", [])
    told = run(MODEL, 20, gate_scripts=False)
    assert (told.gate_scripts, told.gate_scripts_how) == (False, "as told")
    # The probe tells them apart: the model runs the gate's script, the planted driver does not.
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "probe.json").write_text(dump_vector(replace(probe_vector(), expect=tuple(model_trace(probe_vector())))))
    assert [o.passed for o in run_conformance(MODEL, [probe])] == [True]
    assert [o.passed for o in run_conformance(planted("none"), [probe])] == [False]


def test_missing_hypothesis_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_hypothesis(name: str, *args: object, **kwargs: object) -> object:
        if name == "hypothesis" or name.startswith("hypothesis."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_hypothesis)
    with pytest.raises(FuzzUnavailable, match=r"pip install 'iohandler\[fuzz\]'"):
        fuzz(MODEL, examples=1)
    assert main(["fuzz", "--driver", MODEL]) == 2
    assert MISSING_HYPOTHESIS in capsys.readouterr().err


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="examples"):
        fuzz(MODEL, examples=0)
    with pytest.raises(SystemExit):
        main(["fuzz", "--driver", MODEL, "--examples", "0"])
    assert "--examples: must be at least 1" in capsys.readouterr().err
    assert main(["fuzz", "--driver", "/nonexistent/driver", "--examples", "1"]) == 2
    assert "cannot start driver" in capsys.readouterr().err


def test_a_folding_poller_is_fuzzed_against_the_folded_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """impl on selectors folds HUP/ERR (R36): against the plain model it mismatches on a hangup,
    against the folded model (--fold-hup-err) it passes."""
    driver = f"{sys.executable} -m iohandler.impl.driver --poller selectors"
    args = ["fuzz", "--driver", driver, "--seed", "2", "--save", str(tmp_path)]
    assert main([*args, "--examples", "300"]) == 1
    out = capsys.readouterr().out
    assert '"HUP"' in out or '"ERR"' in out  # the folded flags are what differed
    n = budget(dev=100, ci=150, thorough=2000)
    assert main([*args, "--examples", str(n), "--fold-hup-err"]) == 0
    assert "0 mismatches; gate scripts on (probed); HUP/ERR folded (R36); seed 2" in capsys.readouterr().out


_SCHEMA = jsonschema.Draft202012Validator(json.loads((bundled_vectors_dir().parent / "vector.schema.json").read_text()))


@settings(max_examples=budget(dev=200, ci=300, thorough=3000))
@given(data=st.data(), gate_scripts=st.booleans())
def test_generated_vectors_are_valid(data: st.DataObject, gate_scripts: bool) -> None:
    """Every generated vector passes the schema and the parser, and the model runs it without
    InvalidAction (which would propagate and fail this test)."""
    vector = data.draw(vectors(gate_scripts=gate_scripts))
    doc = vector_to_json(vector)
    assert list(_SCHEMA.iter_errors(doc)) == []
    parsed = parse_vector(json.loads(json.dumps(doc)), require_expect=False)
    assert replace(parsed, expect=None) == vector  # vector_to_json writes a missing expect as []
    model_trace(vector)
    model_trace(vector, fold=True)


def test_an_unusable_save_path_still_prints_the_mismatch_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 16 of issue 20: the shrunk mismatch is the point of the run; a --save that cannot be
    written must not hide it behind a traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    save = blocker / "failures"  # under a regular file: mkdir fails
    assert (
        main(["fuzz", "--driver", hostile("refuse-hangup"), "--examples", "200", "--seed", "1", "--save", str(save)])
        == 1
    )
    out, err = capsys.readouterr()
    assert out.startswith("MISMATCH fuzz-") and '"format": "iohandler-vector/1"' in out
    assert f"not saved: cannot write {save}" in out
    assert f"iohandler fuzz: cannot save the vector: cannot write {save}" in err


def test_the_gate_scripts_probe_reports_its_result_and_reason(tmp_path: Path) -> None:
    """Issue 23, item 4: only a driver that ignores gate_scripts or refuses v2 makes the probe
    switch them off, and the summary says which; any other wrong answer is a failure."""

    def run(driver: str, **kw: object) -> FuzzResult:
        return fuzz(driver, examples=20, seed=3, save=tmp_path, report=lambda _: None, **kw)  # type: ignore[arg-type]

    ignores = run(planted("none"))
    assert (ignores.gate_scripts, ignores.mismatches) == (False, [])
    assert ignores.gate_scripts_how == "probed: the driver ignores gate_scripts (its trace is the one without them)"
    refuses = run(hostile("refuse-v2"))
    assert (refuses.gate_scripts, refuses.mismatches) == (False, [])
    assert refuses.gate_scripts_how == (
        "probed: the driver refused the v2 probe (fuzz-probe-gate-scripts: this driver reads format v1 only)"
    )
    wrong = run(hostile("drop-last"))
    assert wrong.gate_scripts_how.startswith("probed: a wrong answer") and wrong.examples == 0
    (m,) = wrong.mismatches
    assert m.vector.gate_scripts and "first difference at event" in m.detail and m.path is not None
    assert "gate scripts probe" in wrong.summary()


def test_gate_scripts_on_off_probe_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fuzz", "--examples", "30", "--seed", "3", "--save", str(tmp_path)]
    # Forced on, a driver that ignores gate_scripts is caught (probed, it would be let off).
    assert main([*args, "--examples", "150", "--driver", planted("none"), "--gate-scripts", "on"]) == 1
    assert "gate scripts on (as told)" in capsys.readouterr().out
    assert main([*args, "--driver", planted("none"), "--gate-scripts", "off"]) == 0
    assert "gate scripts off (as told)" in capsys.readouterr().out
    assert main([*args, "--driver", planted("none"), "--gate-scripts", "probe"]) == 0
    assert "gate scripts off (probed: the driver ignores" in capsys.readouterr().out
    assert main([*args, "--driver", planted("none"), "--no-gate-scripts"]) == 0  # the older spelling
    assert "gate scripts off (as told)" in capsys.readouterr().out


def test_a_saved_vector_says_whether_the_driver_erred_or_differed(tmp_path: Path) -> None:
    erred = fuzz(hostile("refuse-hangup"), examples=200, seed=1, save=tmp_path / "e", report=lambda _: None)
    (m,) = erred.mismatches
    assert m.path is not None
    text = load_vector(m.path).description
    assert "the driver erred on it (driver could not run it: " in text and "hangup is not supported" in text
    assert "differs" not in text
    differed = fuzz(hostile("drop-last"), examples=10, seed=1, save=tmp_path / "d", report=lambda _: None)
    (m,) = differed.mismatches
    assert m.path is not None
    text = load_vector(m.path).description
    assert "its trace differs from the model's" in text and "erred" not in text


def test_the_shrinker_drops_repeated_identical_actions(tmp_path: Path) -> None:
    """Issue 23, item 4: what Hypothesis leaves is finished by hand, scripts included: a run of
    identical actions the failure does not need is dropped, in steps and in script bodies."""
    from iohandler.specs.fuzz import _prune, _Session

    sets = [{"do": "set", "fd": f, "read": "s"} for f in ("a", "b")]
    vector = parse_vector(
        {
            "format": "iohandler-vector/1",
            "name": "repeats",
            "description": "",
            "rules": [],
            "fds": {"a": "socket", "b": "socket"},
            "gates": {},
            "scripts": {"s": [{"do": "snapshot"}, {"do": "snapshot"}, {"do": "notify"}, {"do": "notify"}]},
            # R2 (new records at the tail) shows in the first poll set: two sets and one iterate.
            "steps": [*sets, {"do": "notify"}, {"do": "notify"}, {"do": "iterate"}, {"do": "iterate"}],
        },
        require_expect=False,
    )
    session = _Session(planted("R2"), 5.0)
    try:
        assert session.mismatch(vector) is not None
        smaller = _prune(session, vector)
    finally:
        session.close()
    assert [type(a).__name__ for a in smaller.steps] == ["Set", "Set", "Iterate"]
    assert all(len(body) <= 1 for body in smaller.scripts.values()), smaller.scripts


def test_fuzz_keeps_hypothesis_files_out_of_the_current_folder_unless_told(tmp_path: Path) -> None:
    """Issue 23, item 4: a porter's checkout must not gain a `.hypothesis` folder; `--db DIR`
    keeps the run's files where asked, and a failure found there is tried first next time."""
    here = tmp_path / "here"
    here.mkdir()

    def run(driver: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "iohandler.specs.cli",
                "fuzz",
                "--driver",
                driver,
                "--seed",
                "1",
                "--save",
                str(tmp_path / "saved"),
                *extra,
            ],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run(MODEL, "--examples", "5").returncode == 0
    assert list(here.iterdir()) == []
    db = tmp_path / "db"
    first = run(hostile("refuse-hangup"), "--examples", "200", "--db", str(db))
    assert first.returncode == 1 and list(here.iterdir()) == []
    (kept,) = (db / "found").iterdir()
    again = run(hostile("refuse-hangup"), "--examples", "1", "--db", str(db))
    assert again.returncode == 1 and f"MISMATCH {kept.stem}" in again.stdout
    assert "fuzz: 0 examples, 0 steps, 1 mismatch; 1 found earlier replayed first;" in again.stdout
    assert run(MODEL, "--examples", "1", "--db", str(db)).returncode == 0  # a correct driver passes it
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = run(MODEL, "--db", str(blocker / "db"))
    assert bad.returncode == 2 and "iohandler fuzz: db: cannot make the folder" in bad.stderr


def test_a_driver_that_misbehaves_at_end_of_input_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review II, item 10: VECTORS.md says a driver exits 0 at end of input; fuzz said nothing of
    one that exits 3 (or never exits) and exited 0."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\nfrom iohandler.model.driver import run\nfrom iohandler.specs.protocol import serve\n"
        "serve(run)\nsys.exit(3)\n"
    )
    argv = ["fuzz", "--driver", f"{sys.executable} {driver}", "--examples", "3", "--seed", "1", "--save", str(tmp_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "0 mismatches" in out and "driver ended with exit code 3 at end of input" in out, out
