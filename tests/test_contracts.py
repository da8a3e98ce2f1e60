"""CrossHair over the contracts: the bounded lemmas of model/contracts.py and the event-name
mappings of model/state.py and impl/pollers.py.

CI runs every condition with a small per-condition budget (no condition may be refuted; the cheap
ones are confirmed over all paths here too) and plants one bug per lemma family in a copy of the
package, which CrossHair must refute. `iohandler verify` runs the same conditions with a budget
that confirms every one (specs/PROOFS.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from iohandler.specs import verify
from iohandler.specs.verify import (
    CROSSHAIR_TARGETS,
    ROOT,
    describe_condition,
    in_checkout,
    parse_crosshair,
    proof_table,
    run_crosshair,
)

pytestmark = pytest.mark.slow

# Confirmed over all paths within the CI budget (6 s per condition) even on a busy machine; the
# folds and the walk step need 12-70 s each there (verify's budget confirms them; PROOFS.md).
CHEAP = (
    "lemma_register_new",
    "lemma_register_existing",
    "lemma_register_delete",
    "lemma_live_records",
    "lemma_readiness",
    "lemma_no_walk",
    "lemma_signal_fd",
)


def test_no_contract_is_refuted() -> None:
    contracts, raw = run_crosshair(CROSSHAIR_TARGETS, per_condition=6.0)
    assert contracts, raw[-2000:]
    bad = [c for c in contracts if c.status in ("refuted", "unexplored")]
    assert bad == [], "\n".join(f"{c.where}: {c.message}" for c in bad)
    # Every module with contracts was reached: the set is not silently shrinking.
    modules = {c.where.split(":")[0].rsplit("/", 1)[-1] for c in contracts}
    assert {"contracts.py", "state.py", "pollers.py"} <= modules, modules
    assert len(contracts) >= 19, raw[-2000:]
    text = (ROOT / "model" / "contracts.py").read_text().splitlines()
    confirmed = {text[int(c.where.rsplit(":", 1)[1]) - 1] for c in contracts if c.status == "confirmed"}
    missing = [name for name in CHEAP if not any(f"def {name}(" in line for line in confirmed)]
    assert missing == [], f"not confirmed over all paths: {missing}"


# (file, the good text, the planted bug, the condition that must refute it)
BUGS = {
    # registration: a new record goes to the tail (R2).
    "model-inserts-at-tail": (
        "model/registry.py",
        "(fresh, *loop.records)",
        "(*loop.records, fresh)",
        "iohandler.model.contracts.lemma_register_new",
    ),
    # registration: a notify lost (R7).
    "model-registration-does-not-notify": (
        "model/registry.py",
        "Loop(records, wakeup=True)",
        "Loop(records, wakeup=loop.wakeup)",
        "iohandler.model.contracts.lemma_register_existing",
    ),
    # registration: a revived record moves to the head (R5).
    "model-revival-to-head": (
        "model/registry.py",
        "if i == -1 else _put(loop.records, i, fresh)",
        "if i == -1 else (fresh, *loop.records[:i], *loop.records[i + 1 :]) "
        "if loop.records[i].deleted else _put(loop.records, i, fresh)",
        "iohandler.model.contracts.lemma_register_existing",
    ),
    # fill: a gate's change to its own record ignored; the write handler read before the gate (R22).
    "model-fill-ignores-gate-change": (
        "model/fill.py",
        "record = _record(world, fd)  # the gate may",
        "# the gate may",
        "iohandler.model.contracts.lemma_fill_is_fold",
    ),
    # fill step: the write handler read before the gate ran (R22).
    "step-fill-ignores-gate-change": (
        "model/contracts.py",
        "            events.extend(out)\n            record = world.loop.records[index_of(world.loop.records, fd)]\n",
        "            events.extend(out)\n",
        "iohandler.model.contracts.lemma_fill_step",
    ),
    # walk: the deleted check before the write handler removed (R17).
    "model-walk-calls-deleted-writer": (
        "model/dispatch.py",
        "if not record.deleted and record.write is not None",
        "if record.write is not None",
        "iohandler.model.contracts.lemma_walk_is_fold",
    ),
    # walk step: the write check with the handler from before the read handler ran (R18).
    "step-write-check-old-handler": (
        "model/contracts.py",
        "    record = world.loop.records[index_of(world.loop.records, fd)]\n    if not record.deleted and record.write",
        "    if not record.deleted and record.write",
        "iohandler.model.contracts.lemma_walk_step",
    ),
    # BH walk: `scheduled` cleared after the callback, so a self-schedule is lost (R43).
    "model-bh-cleared-after-callback": (
        "model/bh.py",
        "        world = world.with_ctx(_put(world.ctx, replace(bh, scheduled=False, idle=False)))\n"
        "        events.append(BhEvent(bh.name, bh.script))\n"
        "        world, out = call(world, bh.script)\n",
        "        events.append(BhEvent(bh.name, bh.script))\n"
        "        world, out = call(world, bh.script)\n"
        "        world = world.with_ctx(_put(world.ctx, replace(_by_ident(world.ctx, ident), "
        "scheduled=False, idle=False)))\n",
        "iohandler.model.contracts.lemma_bh_walk_is_fold",
    ),
    # BH walk: a nested walk frees deleted BHs under the outer one (R44).
    "model-bh-nested-walk-frees": (
        "model/bh.py",
        "    if ctx.walking_bh == 0:\n        ctx = free_deleted(ctx)",
        "    if ctx.walking_bh <= 1:\n        ctx = free_deleted(ctx)",
        "iohandler.model.contracts.lemma_bh_walk_is_fold",
    ),
    # BH list: a new BH at the tail (R42).
    "model-bh-new-at-tail": (
        "model/bh.py",
        "bhs=(bh, *rest)",
        "bhs=(*rest, bh)",
        "iohandler.model.contracts.lemma_bh_step",
    ),
    # context handlers: a delete inside a walk unlinks at once (R48).
    "model-ctx-delete-unlinks-in-walk": (
        "model/aio.py",
        "            if ctx.walking_handlers:\n",
        "            if False:\n",
        "iohandler.model.contracts.lemma_ctx_walk_step",
    ),
    # context handlers: a deleted node revived by a new registration (R48).
    "model-ctx-revives-deleted": (
        "model/aio.py",
        "n.fd == fd and not n.deleted",
        "n.fd == fd",
        "iohandler.model.contracts.lemma_ctx_walk_step",
    ),
    # context walk: the notifier's node not read, the wakeup left pending (R49).
    "model-ctx-notifier-not-consumed": (
        "model/aio.py",
        "    if world.ctx.notifier_revents & READ_EVENTS:\n",
        "    if False:\n",
        "iohandler.model.contracts.lemma_ctx_walk_is_fold",
    ),
    # impl/: flag names in the wrong order; the trace format fixes IN, OUT, HUP, ERR (R21).
    "impl-flag-order": (
        "impl/pollers.py",
        "for bit, name in _FLAG_NAMES if",
        "for bit, name in reversed(_FLAG_NAMES) if",
        "iohandler.impl.pollers.flag_names",
    ),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_a_planted_bug_is_refuted(tmp_path: Path, bug: str) -> None:
    """The bug goes into a copy; CrossHair must find a counterexample to a condition there."""
    path, good, bad, target = BUGS[bug]
    # The copy is the package iohandler.<pkg> from tmp_path, which CrossHair's cwd puts first on
    # sys.path, ahead of the installed one.
    for pkg in ("model", "specs", "impl"):
        shutil.copytree(ROOT / pkg, tmp_path / "iohandler" / pkg)
    source = tmp_path / "iohandler" / path
    text = source.read_text()
    assert text.count(good) == 1, good
    source.write_text(text.replace(good, bad))
    contracts, raw = run_crosshair([target], per_condition=20, cwd=tmp_path)
    function = target.rsplit(".", 1)[1]
    assert any(c.status == "refuted" and function in c.message for c in contracts), raw[-2000:]


def test_parse_crosshair_statuses() -> None:
    out = (
        "/x/model/a.py:3: info: Confirmed over all paths.\n"
        "/x/model/a.py:4: info: Not confirmed.\n"
        "/x/model/a.py:5: error: false when calling f(1)\n"
        "/x/model/a.py:6: info: Unable to meet precondition\n"
    )
    assert [c.status for c in parse_crosshair(out)] == ["confirmed", "unconfirmed", "refuted", "unexplored"]


def test_conditions_are_described_from_their_source() -> None:
    """The proof table's rule tags and bounds come from the source: a lemma's asserts, a
    docstring's post: line."""
    lemma = ROOT / "model" / "contracts.py"
    line = next(i for i, ln in enumerate(lemma.read_text().splitlines(), 1) if ln.startswith("def lemma_walk_step("))
    info = describe_condition(f"{lemma}:{line}")
    assert info["function"] == "lemma_walk_step"
    assert {"R15", "R16", "R17", "R18", "R19"} <= set(str(r) for r in info["rules"])  # type: ignore[attr-defined]
    assert str(info["bounds"]).startswith("0 <= h <= 2")
    pollers = ROOT / "impl" / "pollers.py"
    post = next(i for i, ln in enumerate(pollers.read_text().splitlines(), 1) if "post: set(__return__)" in ln)
    info = describe_condition(f"{pollers}:{post}")
    assert info["rules"] == ["R21"] and info["bounds"] == "pre: 0 <= events < 64"


def test_proof_table_from_a_report() -> None:
    report: dict[str, object] = {
        "date": "2026-01-01 00:00 UTC",
        "quick": False,
        "passed": 2,
        "failed": 0,
        "rows": [
            {"name": "CrossHair (model/, impl/)", "passed": True, "seconds": 9.0},
            {"name": "exhaustive exploration", "passed": True, "seconds": 5.0},
        ],
        "crosshair": {
            "conditions": 1,
            "confirmed": 1,
            "unconfirmed": 0,
            "refuted": 0,
            "per_condition_s": 9,
            "seconds": 9.0,
            "each": [
                {
                    "where": "x:1",
                    "file": "model/contracts.py",
                    "line": 1,
                    "function": "lemma_x",
                    "rules": ["R17"],
                    "bounds": "0 <= a <= 1",
                    "status": "confirmed",
                }
            ],
        },
        "exploration": [
            {
                "name": "large",
                "closed": True,
                "states": 10,
                "transitions": 20,
                "diameter": 3,
                "seconds": 1.0,
                "invariants": {"R1": "at most one record per fd"},
            }
        ],
        "rules": {
            "R1": {"vectors": ["rules/a.json"], "tests": ["tests/test_x.py"]},
            "R17": {"vectors": [], "tests": []},
        },
    }
    table = proof_table(report)
    assert "| R1 | closed | - | at most one record per fd (`large`, 10 states) | 1 | test_x.py |" in table
    assert "| R17 | proven in bounds | 1: 1 confirmed (`lemma_x`) | - | - | - |" in table
    assert "`0 <= a <= 1`" in table


def test_outside_a_checkout_only_the_vectors_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not in_checkout(tmp_path) and in_checkout(ROOT)
    monkeypatch.setattr(verify, "in_checkout", lambda root=ROOT: False)
    ran: list[str] = []

    def fake_vectors(driver: str) -> tuple[bool, str]:
        ran.append(driver)
        return True, "1/1 vectors"

    monkeypatch.setattr(verify, "check_vectors", fake_vectors)
    report = tmp_path / "report.json"
    assert verify.run_verify(json_path=report) == 0
    out = capsys.readouterr().out
    assert verify.NEEDS_CHECKOUT in out and "3 passed, 0 failed" in out
    assert [d.split(" -m ")[1] for d in ran] == [
        "iohandler.model.driver",
        "iohandler.impl.driver --poller epoll",
        "iohandler.impl.driver --poller poll",
    ]
    assert not (tmp_path / "PROOFS.md").exists()
    assert json.loads(report.read_text())["checkout"] is False
