"""The benchmark suite runs: every body once, tiny sizes, no timing assertions (bench/)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from bench import report
from bench.run import SMOKE, candidates, run


def test_every_benchmark_body_runs_once(tmp_path: Path) -> None:
    results = run(SMOKE, log=lambda _msg: None)
    cells = results["cells"]
    assert isinstance(cells, list)
    seen = {(c["section"], c["candidate"]) for c in cells}
    for section in SMOKE.sections:
        for name in candidates(section):
            assert (section, name) in seen, (section, name)
    for c in cells:
        assert len(c["samples"]) == SMOKE.rounds
        assert all(s > 0 for s in c["samples"])
    md = report.markdown(results, "python -m bench --smoke")
    assert "## 1. Dispatch" in md and "## Targets" in md
    png = tmp_path / "results.png"
    report.plot(results, png)
    assert png.stat().st_size > 10_000
