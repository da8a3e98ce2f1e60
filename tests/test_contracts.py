"""CrossHair over the PEP 316 contracts of the model and of impl/'s pure helpers, with a small
budget so CI stays quick.

`iohandler verify` runs the same check with a larger budget and lists every condition.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iohandler.specs.verify import CROSSHAIR_TARGETS, ROOT, parse_crosshair, run_crosshair

pytestmark = pytest.mark.slow


def test_no_contract_of_the_model_is_refuted() -> None:
    contracts, raw = run_crosshair(CROSSHAIR_TARGETS, per_condition=1.5)
    assert contracts, raw[-2000:]
    refuted = [c for c in contracts if c.status in ("refuted", "unexplored")]
    assert refuted == [], "\n".join(f"{c.where}: {c.message}" for c in refuted)
    # Every module with contracts was reached: the set is not silently shrinking.
    modules = {c.where.split(":")[0].rsplit("/", 1)[-1] for c in contracts}
    assert {"registry.py", "env.py", "contracts.py", "state.py", "pollers.py"} <= modules, modules


@pytest.mark.parametrize(
    ("packages", "path", "good", "bad", "function"),
    [
        # model/: new records go to the tail (R2).
        (("model", "specs"), "model/registry.py", "(fresh, *loop.records)", "(*loop.records, fresh)", "set_fd_handler"),
        # impl/: flag names in the wrong order; the trace format fixes IN, OUT, HUP, ERR.
        (("impl",), "impl/pollers.py", "for bit, name in _FLAG_NAMES if",
         "for bit, name in reversed(_FLAG_NAMES) if", "flag_names"),
    ],
    ids=["model-inserts-at-tail", "impl-flag-order"],
)
def test_a_planted_bug_is_refuted(
    tmp_path: Path, packages: tuple[str, ...], path: str, good: str, bad: str, function: str
) -> None:
    """The bug goes into a copy; CrossHair must find a counterexample to a contract there."""
    # The copy is the package iohandler.<pkg> from tmp_path, which CrossHair's cwd puts first on
    # sys.path, ahead of the installed one.
    for pkg in packages:
        shutil.copytree(ROOT / pkg, tmp_path / "iohandler" / pkg)
    source = tmp_path / "iohandler" / path
    text = source.read_text()
    assert good in text
    source.write_text(text.replace(good, bad))
    module = "iohandler." + path.removesuffix(".py").replace("/", ".")
    contracts, raw = run_crosshair([module], per_condition=3, cwd=tmp_path)
    assert any(c.status == "refuted" and function in c.message for c in contracts), raw[-2000:]


def test_parse_crosshair_statuses() -> None:
    out = (
        "/x/model/a.py:3: info: Confirmed over all paths.\n"
        "/x/model/a.py:4: info: Not confirmed.\n"
        "/x/model/a.py:5: error: false when calling f(1)\n"
        "/x/model/a.py:6: info: Unable to meet precondition\n"
    )
    assert [c.status for c in parse_crosshair(out)] == ["confirmed", "unconfirmed", "refuted", "unexplored"]
