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


def test_icount_child_runs_every_candidate() -> None:
    """bench.icount's measured body (valgrind itself is not needed for this)."""
    from bench import icount
    from bench.candidates import have_uvloop

    for name in icount.CANDIDATES:
        if name == "uvloop" and not have_uvloop():
            continue
        icount.child(name, 2, 10)


def test_icount_parses_what_callgrind_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import icount

    counts = {10: 1_000_000, 30: 1_500_000}

    def fake_run(cmd: list[str], **_: object) -> object:
        events = int(cmd[-1])
        return type("Done", (), {"returncode": 0, "stderr": f"==1== Collected : {counts[events]}\n"})()

    monkeypatch.setattr("subprocess.run", fake_run)
    assert icount.per_event("impl/epoll", 1, 10, 30) == 25_000


@pytest.mark.parametrize("name", ["bare-epoll-checked", "minimal-checked"])
def test_the_checked_floors_confirm_every_ready_fd(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The checked floors make exactly impl/epoll's identity-check system call per event, and run every
    event's handler."""
    from bench.candidates import BareEpoll, Ring, make

    cand, ring = make(name), Ring(3)
    assert isinstance(cand, BareEpoll)
    real = cand._ep
    confirmed: list[int] = []

    class Spy:
        poll = real.poll

        def modify(self, fd: int, events: int) -> None:
            confirmed.append(fd)
            real.modify(fd, events)

    try:
        cand.attach(ring)
        monkeypatch.setattr(cand, "_ep", Spy())
        ring.left[0] = 30
        cand.run()
        assert sorted(confirmed) == sorted(ring.read_fds * 10)
    finally:
        monkeypatch.undo()
        cand.detach(ring)
        ring.close()
        real.close()
