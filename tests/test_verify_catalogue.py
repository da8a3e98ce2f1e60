"""The time-to-red table: `iohandler verify` carries the catalogue's hunt times from
catalogue.json (tests/test_catalogue.py) into its report and PROOFS.md."""

from __future__ import annotations

import json
from pathlib import Path

from iohandler.specs import verify


def test_catalogue_times_reach_the_proof_table(tmp_path: Path) -> None:
    data = {
        "calls-deleted-handler": {
            "bug": "R17",
            "killed": True,
            "check": "R17",
            "examples": 13,
            "steps": 3,
            "seconds_to_failure": 0.3,
            "seconds_to_red": 0.1,
            "counterexample": ["x"],
        },
    }
    (tmp_path / "catalogue.json").write_text(json.dumps(data))
    figures = verify.catalogue_figures(tmp_path)
    row = verify.Row("bug catalogue", True, "ok", 1.0, figures)
    table = verify.proof_table(verify.build_report([row], quick=False, checkout=True))
    assert "## Time to red" in table
    assert "| calls-deleted-handler | R17 | 13 | 3 | 0.3 | 0.1 |" in table
    assert verify.catalogue_figures(tmp_path / "nothing-here") == {}


def test_reliability_figures_reach_the_proof_table() -> None:
    row = verify.Row("reliability", True, "3 passed; reliability: bad_calls_total 2865, soak_events 1000000", 1.0)
    table = verify.proof_table(verify.build_report([row], quick=False, checkout=True))
    assert "| bad_calls_total | 2865 |" in table and "| soak_events | 1000000 |" in table
