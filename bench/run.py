"""Run the benchmark suite: `python -m bench [--quick] [--publish]`.

All candidates of a section are set up side by side in one process, then sampled round-robin:
every round takes one sample of every (parameter, candidate) cell, starting one cell further
along each round, so slow drift (CPU frequency, other load) spreads over all cells alike.
A cell's figure is its fastest round, with the median and the slowest; a ratio is one of
fastest rounds (bench/report.py, `typical`, says why).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import report
from bench.candidates import have_uvloop
from bench.workloads import ChurnFds, IdleFds, PingPong, churn, cpu_count, cpu_info, deferred_calls

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

FLOOR = "bare-epoll"


@dataclass
class Cell:
    section: str
    param: int  # K, N or G (churn: 0 API only, 1 settled)
    candidate: str
    unit: str
    samples: list[float] = field(default_factory=list)


@dataclass
class Config:
    rounds: int
    sample_s: float  # target length of one timed sample
    dispatch_k: tuple[int, ...] = (1, 64)
    idle_n: tuple[int, ...] = (10, 1_000, 10_000)
    gated_g: tuple[int, ...] = (0, 100, 1_000)
    sections: tuple[str, ...] = ("dispatch", "idle", "churn", "gated", "bh")
    units: int = 0  # > 0: this many events/cycles per sample, no calibration (smoke test)


QUICK = Config(rounds=3, sample_s=0.03)
FULL = Config(rounds=11, sample_s=0.15)
SMOKE = Config(rounds=1, sample_s=0.0, dispatch_k=(1, 4), idle_n=(4, 16), gated_g=(0, 4), units=16)


def candidates(section: str) -> list[str]:
    uv = ["uvloop"] if have_uvloop() else []
    impls = ["impl/epoll", "impl/poll", "impl/selectors"]
    if section == "dispatch":
        return [
            "bare-epoll",
            "bare-epoll-checked",
            "minimal-checked",
            "bare-selectors",
            "asyncio",
            *uv,
            *impls,
            "impl/epoll-trusted",
        ]
    if section == "idle":
        return ["bare-epoll", "bare-selectors", "asyncio", *uv, *impls, "impl/epoll-trusted", "seed"]
    if section == "gated":
        return ["bare-epoll", *impls, "seed"]
    if section == "churn":
        return ["bare-selectors", "asyncio", *uv, *impls]
    if section == "bh":
        return ["asyncio", *uv, *impls]
    raise ValueError(section)


def _round_robin(
    cells: Sequence[Cell], sample: Callable[[Cell], float], rounds: int, log: Callable[[str], None]
) -> None:
    n = len(cells)
    for r in range(rounds):
        t0 = time.monotonic()
        for j in range(n):
            cell = cells[(r + j) % n]
            cell.samples.append(sample(cell))
        log(f"  round {r + 1}/{rounds} ({time.monotonic() - t0:.1f} s)")


def _calibrate(probe: Callable[[int], float], seconds: float, lo: int = 8, hi: int = 2_000_000, fixed: int = 0) -> int:
    """Units for one sample of about `seconds`: probe with doubling sizes until one takes 2 ms."""
    if fixed > 0:
        return fixed
    n = lo
    while True:
        per = probe(n)
        if per * n >= 2e6 or n >= hi:
            return max(lo, min(hi, int(seconds * 1e9 / max(per, 1.0))))
        n *= 2


def _probe_pingpong(pp: PingPong, k: int, n: int) -> float:
    return pp.sample(k, n)


def _probe_churn(name: str, fds: list[int], settle: bool, n: int) -> float:
    return churn(name, fds, n, settle) / n


def run_pingpong_section(section: str, cfg: Config, log: Callable[[str], None]) -> list[Cell]:
    """dispatch (param K, no idle fds), idle (param N, K=1), gated (param G, K=1)."""
    params = {"dispatch": cfg.dispatch_k, "idle": cfg.idle_n, "gated": cfg.gated_g}[section]
    unit = "ns/iteration" if section == "gated" else "ns/event"
    idle_sets: dict[int, IdleFds] = {}
    setups: dict[tuple[int, str], PingPong] = {}
    counts: dict[tuple[int, str], int] = {}
    cells: list[Cell] = []
    try:
        for p in params:
            idle = None
            if section != "dispatch" and p > 0:
                idle = idle_sets[p] = IdleFds(p)
            k = p if section == "dispatch" else 1
            for name in candidates(section):
                pp = setups[p, name] = PingPong(name, idle, gated=section == "gated")
                counts[p, name] = _calibrate(functools.partial(_probe_pingpong, pp, k), cfg.sample_s, fixed=cfg.units)
                cells.append(Cell(section, p, name, unit))
        log(f"{section}: {len(cells)} cells set up and calibrated")

        def sample(cell: Cell) -> float:
            k = cell.param if section == "dispatch" else 1
            return setups[cell.param, cell.candidate].sample(k, counts[cell.param, cell.candidate])

        _round_robin(cells, sample, cfg.rounds, log)
    finally:
        for pp in setups.values():
            pp.close()
        for idle in idle_sets.values():
            idle.close()
    return cells


def run_churn_section(cfg: Config, log: Callable[[str], None]) -> list[Cell]:
    fds = ChurnFds()
    try:
        rows = [(0, name) for name in candidates("churn")]
        rows += [(1, name) for name in ("bare-selectors", "impl/epoll")]
        counts = {
            row: _calibrate(
                functools.partial(_probe_churn, row[1], fds.fds, bool(row[0])), cfg.sample_s, fixed=cfg.units
            )
            for row in rows
        }
        cells = [Cell("churn", p, name, "ns/cycle") for p, name in rows]
        log(f"churn: {len(cells)} cells calibrated")

        def sample(cell: Cell) -> float:
            n = counts[cell.param, cell.candidate]
            return churn(cell.candidate, fds.fds, n, bool(cell.param)) / n

        _round_robin(cells, sample, cfg.rounds, log)
    finally:
        fds.close()
    return cells


def _probe_bh(name: str, param: int, n: int) -> float:
    return deferred_calls(name, param, n) / n


def run_bh_section(cfg: Config, log: Callable[[str], None]) -> list[Cell]:
    """Deferred calls: param 0 on the loop's thread, 1 from another thread, 2 from another thread
    one at a time (bench.workloads)."""
    rows = [(p, name) for p in (0, 1, 2) for name in candidates("bh")]
    counts = {
        row: _calibrate(functools.partial(_probe_bh, row[1], row[0]), cfg.sample_s, lo=64, fixed=cfg.units)
        for row in rows
    }
    cells = [Cell("bh", p, name, "ns/call") for p, name in rows]
    log(f"bh: {len(cells)} cells calibrated")

    def sample(cell: Cell) -> float:
        n = counts[cell.param, cell.candidate]
        return deferred_calls(cell.candidate, cell.param, n) / n

    _round_robin(cells, sample, cfg.rounds, log)
    return cells


def run(cfg: Config, log: Callable[[str], None] = print) -> dict[str, object]:
    t0 = time.monotonic()
    cells: list[Cell] = []
    for section in cfg.sections:
        if section == "churn":
            cells += run_churn_section(cfg, log)
        elif section == "bh":
            cells += run_bh_section(cfg, log)
        else:
            cells += run_pingpong_section(section, cfg, log)
    return {
        "meta": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu": cpu_info(),
            "cpus": cpu_count(),
            "rounds": cfg.rounds,
            "sample_s": cfg.sample_s,
            "elapsed_s": round(time.monotonic() - t0, 1),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
        "cells": [asdict(c) for c in cells],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about 20 s)")
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--sections", help="comma-separated subset of dispatch,idle,churn,gated,bh")
    ap.add_argument("--out", type=Path, default=RESULTS, help="output directory (default bench/results)")
    ap.add_argument(
        "--publish",
        action="store_true",
        help="also copy the table and plot to bench/RESULTS.md and "
        "bench/results.png (the committed copies the README shows)",
    )
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.rounds:
        cfg = Config(**{**asdict(cfg), "rounds": args.rounds})
    if args.sections:
        cfg = Config(**{**asdict(cfg), "sections": tuple(args.sections.split(","))})
    results = run(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    command = "python -m bench" + (" --quick" if args.quick else "")
    md = report.markdown(results, command)
    (args.out / "RESULTS.md").write_text(md)
    png = args.out / "results.png"
    report.plot(results, png)
    print(md)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'RESULTS.md'}, {png}")
    if args.publish:
        shutil.copyfile(args.out / "RESULTS.md", HERE / "RESULTS.md")
        shutil.copyfile(png, HERE / "results.png")
        print(f"published {HERE / 'RESULTS.md'}, {HERE / 'results.png'}")
    return 0
