"""Each bug of tests/model_bugs.py, planted in a copy of the model, is refuted by the closure
itself: the CI-scope explorer (tests/exploration.py) stops on an invariant violation naming the
rule the bug breaks. Stats: $IOHANDLER_STATS_DIR/model-bugs.json
{"bugs": N, "refuted": N, "by_bug": {name: "refuted by R.. (<invariant>) at depth d"}}."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exploration import INVARIANTS
from tests.harness import write_stats
from tests.model_bugs import CATALOGUE, Bug, plant, refute

_BY_BUG: dict[str, str] = {}


def test_catalogue_is_large_and_distinct() -> None:
    assert len(CATALOGUE) >= 10
    assert len({b.name for b in CATALOGUE}) == len(CATALOGUE)
    assert len({(b.file, b.edits) for b in CATALOGUE}) == len(CATALOGUE)


def test_a_drifted_bug_fails_loudly(tmp_path: Path) -> None:
    drifted = Bug("drifted", "registry.py", (("text the model does not contain", "x"),), ("R1",))
    with pytest.raises(AssertionError, match=r"drifted.*not in model/registry\.py"):
        plant(drifted, tmp_path)


@pytest.mark.parametrize("bug", CATALOGUE, ids=[b.name for b in CATALOGUE])
def test_planted_model_bug_is_refuted_by_the_closure(bug: Bug, tmp_path: Path) -> None:
    r = refute(bug, tmp_path)
    assert r.rule is not None, f"{bug.name}: {r.message}"
    assert r.rule in bug.rules, f"{bug.name}: refuted by {r.rule}, expected {bug.rules}:\n{r.message}"
    assert r.rule in INVARIANTS
    what = r.message.splitlines()[0].split(": ", 1)[1]  # the violated check, in its own words
    _BY_BUG[bug.name] = f"refuted by {r.rule} ({what}) at depth {r.depth}"
    write_stats(
        "model-bugs", {"bugs": len(CATALOGUE), "refuted": len(_BY_BUG), "by_bug": dict(sorted(_BY_BUG.items()))}
    )


def test_the_unplanted_copy_closes(tmp_path: Path) -> None:
    """The control: the same harness on an unchanged copy of the model finds no violation and
    closes, so a refutation above is the planted bug's, not the harness's."""
    r = refute(Bug("control", "registry.py", (), ()), tmp_path)
    assert r.rule is None and "'closed': true" in r.message.lower(), r.message
