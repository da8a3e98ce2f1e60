"""`iohandler conform --exhaustive`: every transition of a closed configuration, replayed.

Each planted driver (tests/fuzz_drivers/planted.py: the six rule bugs, the port without gate
scripts, and m1, m8, the two wrong readings of issue 23 that pass every older bundled vector) is
caught, and cut down to a short vector that the planted driver fails and the model passes; the
correct drivers pass with every transition covered.

The test suite replays the configuration `small` whole (about 11 000 steps, seconds per driver):
it is the smallest bundled one that catches each planted driver. The CI-sized default (`fds`,
`gate-scripts`, `small`: about 430 000 steps) takes minutes per driver; README.md gives its
measured time.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from iohandler.impl import POLLERS
from iohandler.model.iterate import initial_world, step
from iohandler.specs.cli import main
from iohandler.specs.exhaustive import (
    Closure,
    Scope,
    canonical,
    closure_for,
    covering_walks,
    encode,
    initial_state,
    scope_named,
    scopes,
    vector_of,
)
from iohandler.specs.runner import run_conformance
from iohandler.specs.vector import Iterate, Send, Set, load_vector

PLANTED = Path(__file__).parent / "fuzz_drivers" / "planted.py"
MODEL = f"{sys.executable} -m iohandler.model.driver"
SMALL = "small"
COVERED = re.compile(r"^transitions covered (\d+) of (\d+)$", re.MULTILINE)
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)


def planted(bug: str) -> str:
    return f"{sys.executable} {PLANTED} {bug}"


def _small() -> Closure:
    return closure_for(scope_named(SMALL))


@pytest.mark.parametrize("bug", ["R2", "R9", "R13", "R15", "R17", "R18", "m1", "m8", "none"])
def test_planted_driver_is_caught(bug: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    driver = planted(bug)
    code = main(["conform", "--exhaustive", "--config", SMALL, "--driver", driver, "--save", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1, out[-3000:]
    covered = COVERED.search(out)
    summary = SUMMARY.search(out)
    assert covered is not None and summary is not None, out[-3000:]
    assert int(covered[1]) < int(covered[2]) and int(summary[2]) >= 1
    assert f"SHORTEST {SMALL}: " in out and "first difference at event" in out
    [saved] = tmp_path.iterdir()
    vector = load_vector(saved)
    assert len(vector.steps) <= 8, vector.steps  # the closure's shortest path plus one step
    # The saved vector shows it on its own: the planted driver fails it, the model passes it.
    assert [o.passed for o in run_conformance(driver, [saved])] == [False]
    assert [o.passed for o in run_conformance(MODEL, [saved])] == [True]


def test_m1_and_m8_pass_the_older_bundled_vectors() -> None:
    """Why --exhaustive is needed: before issue 23's vectors, both passed every bundled vector."""
    from iohandler.specs.vector import bundled_vectors_dir

    new = {"r22-gate-deletes-own-record-keeps-writer", "r22-gate-registration-wakes-this-poll"}
    older = [p for p in sorted(bundled_vectors_dir().rglob("*.json")) if p.stem not in new]
    for bug in ("m1", "m8"):
        outcomes = run_conformance(planted(bug), older, driver_format=2)  # a v2 port: the v3 vectors skipped
        assert outcomes and all(o.passed or o.skipped for o in outcomes), [o.name for o in outcomes if not o.passed]
        assert sum(o.passed for o in outcomes) >= 58
        failed = run_conformance(
            planted(bug), [p for p in bundled_vectors_dir().rglob("*.json") if p.stem in new], driver_format=2
        )
        assert len(failed) == 2 and [o.passed for o in failed].count(False) == 1, [(o.name, o.passed) for o in failed]


@pytest.mark.parametrize(
    "driver",
    [MODEL, *(f"{sys.executable} -m iohandler.impl.driver --poller {p}" for p in ("epoll", "poll") if p in POLLERS)],
    ids=lambda d: d.split()[-1] if "impl" in d else "model",
)
def test_correct_drivers_pass_with_full_coverage(driver: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--exhaustive", "--config", SMALL, "--driver", driver]) == 0
    out = capsys.readouterr().out
    c = _small()
    assert f"transitions covered {c.transitions} of {c.transitions}" in out
    walks = covering_walks(c)
    assert f"{len(walks)} passed, 0 failed" in out
    assert "FAIL" not in out and "SHORTEST" not in out


def _covers_every_transition(c: Closure) -> None:
    walks = covering_walks(c, max_steps=50)
    taken = {t for w in walks for t in w.transitions}
    every = {(s, i) for s, edges in c.edges.items() for i, _, _ in edges}
    assert taken == every and len(every) == c.transitions
    for w in walks:  # each walk, replayed on the model from the start, is where it says it is
        assert len(w.steps) == len(w.transitions) and w.transitions[0][0] == initial_state(c.scope)
        world = initial_world(vector_of(c.scope, (), "x", "x"))
        for action, (state, _) in zip(w.steps, w.transitions, strict=True):
            assert canonical(c.scope, encode(world))[0] == state
            world, _ = step(world, action, c.scope.scripts, c.scope.gate_runs)


def test_walks_cover_every_transition() -> None:
    _covers_every_transition(_small())


def test_walks_cover_every_transition_under_a_symmetry() -> None:
    """With the fds' symmetry, a walk that comes to a state's mirror image takes the mirrored step."""
    scope = Scope(
        "sym",
        {"s": "socket", "t": "socket"},
        {},
        {"n": (), "ks": (Set("t", None, None, None),), "kt": (Set("s", None, None, None),)},
        (
            Set("s", "ks", None, None),
            Set("t", "kt", None, None),
            Set("s", None, None, None),
            Set("t", None, None, None),
            Send("s"),
            Send("t"),
            Iterate(),
        ),
        swap_fds={"s": "t", "t": "s"},
        swap_scripts={"ks": "kt", "kt": "ks"},
    )
    c = closure_for(scope)
    assert c.states < closure_for(scope, symmetric=False).states  # the symmetry is used
    _covers_every_transition(c)


def test_walks_are_deterministic() -> None:
    c = _small()
    first = [w.steps for w in covering_walks(c)]
    assert first == [w.steps for w in covering_walks(_small())]


def test_the_default_configurations_are_the_ci_sized_ones() -> None:
    assert [s.name for s in scopes(False)] == ["fds", "gate-scripts", SMALL]
    assert all(s.name.endswith("-large") for s in scopes(True))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exhaustive", "--config", "nope"], "config must be one of"),
        (["--exhaustive", "some/path"], "give no PATH"),
        (["--config", SMALL], "go with --exhaustive"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--driver", MODEL, *args]) == 2
    assert message in capsys.readouterr().err


def test_covering_walks_refuse_an_open_closure() -> None:
    from iohandler.specs.exhaustive import explore

    with pytest.raises(ValueError, match="closed closure"):
        covering_walks(explore(scope_named(SMALL), workers=1, max_depth=2, keep_edges=True))
    with pytest.raises(ValueError, match="max_steps"):
        covering_walks(_small(), max_steps=0)


def test_a_driver_that_cannot_start_is_said_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "no-such-driver")
    assert main(["conform", "--exhaustive", "--config", SMALL, "--driver", missing]) == 2
    out = capsys.readouterr().out
    assert out.count("cannot start driver") == 1 and "SHORTEST" not in out
    assert f"transitions covered 0 of {_small().transitions}" in out


def test_fold_hup_err_reaches_every_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """conform --exhaustive --fold-hup-err compares a folding poller (R36) with the model's folded
    view, as plain conform does: the flag reaches the runner for the walks and the cut-down ones."""
    import iohandler.specs.exhaustive as exhaustive

    seen: list[object] = []
    real = exhaustive.run_conformance  # type: ignore[attr-defined]  # the module's own import, spied on

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("fold"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(exhaustive, "run_conformance", spy)
    exhaustive.run_exhaustive(planted("R2"), [SMALL], fold=True)
    assert seen and all(f is True for f in seen), seen
    assert len(seen) > 1  # the cut-down replays too


def test_nothing_checked_repeated_config_and_bad_save_are_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format 1 checks nothing (every walk is v2): exit 2, not a green run; a repeated --config
    counts once; --save at a file is refused before the run."""
    assert main(["conform", "--exhaustive", "--config", SMALL, "--format", "1", "--driver", MODEL]) == 2
    assert "nothing was checked" in capsys.readouterr().err
    assert main(["conform", "--exhaustive", "--config", SMALL, "--config", SMALL, "--driver", MODEL]) == 0
    total = _small().transitions
    assert f"transitions covered {total} of {total}" in capsys.readouterr().out
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert main(["conform", "--exhaustive", "--config", SMALL, "--save", str(not_a_folder), "--driver", MODEL]) == 2


def test_pool_workers_end_on_sigterm_under_the_command_handlers() -> None:
    """The command turns SIGTERM into an exception (runner.on_termination); the exploration's
    forked pool workers must still end on the pool's terminate() (a hang or a traceback per
    worker before): run the command as a process, as a porter's CI does."""
    import subprocess

    for _ in range(3):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "iohandler.specs.cli",
                "conform",
                "--exhaustive",
                "--config",
                SMALL,
                "--driver",
                MODEL,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stdout[-500:] + out.stderr[-2000:]
        assert "Traceback" not in out.stderr and "Terminated" not in out.stderr, out.stderr[-2000:]
