"""Instructions per event under callgrind: `python -m bench.icount [--quick]`.

Wall-clock ratios move with the machine: where system calls are slow (a VM, mitigations) the
floor is largely kernel time and every loop looks close to it; where they are cheap the Python
cost shows. Callgrind counts the user-space instructions a run executes, the same count on every
run of the same code whatever else the machine does, so this table is the one to compare
before and after a change to the loop. It does not see kernel time: a candidate that makes an
extra system call per event (impl/epoll's R33/R34 check) pays more than its count says.

Each candidate runs the dispatch ping-pong (bench/workloads.py, section 1) twice in a child
process under `valgrind --tool=callgrind`, with N1 and N2 events; (I(N2) - I(N1)) / (N2 - N1)
cancels start-up, imports and set-up, leaving the instructions of one event. Needs valgrind
(a Debian package). Output: a table on stdout and bench/results/icount.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.candidates import have_uvloop
from bench.workloads import PingPong

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = (
    "bare-epoll",
    "bare-epoll-checked",
    "minimal-checked",
    "bare-selectors",
    "asyncio",
    "uvloop",
    "impl/epoll",
    "impl/epoll-trusted",
    "impl/poll",
    "impl/selectors",
)
_COLLECTED = re.compile(r"Collected : (\d+)")


def child(name: str, k: int, events: int) -> None:
    """The measured process: one dispatch sample (section 1's own body: attach, warm up, run
    `events` events of the K-ring, detach)."""
    pp = PingPong(name)
    try:
        pp.sample(k, events)
    finally:
        pp.close()


def instructions(name: str, k: int, events: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/out",
            sys.executable,
            "-m",
            "bench.icount",
            "--child",
            name,
            str(k),
            str(events),
        ]
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent.parent
        )
    m = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or m is None:
        raise RuntimeError(f"{name} K={k} under callgrind failed:\n{done.stderr[-2000:]}")
    return int(m.group(1))


def per_event(name: str, k: int, n1: int, n2: int) -> float:
    return (instructions(name, k, n2) - instructions(name, k, n1)) / (n2 - n1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.icount", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="K=1 only, fewer events")
    ap.add_argument("--child", nargs=3, metavar=("NAME", "K", "EVENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    ks = (1,) if args.quick else (1, 64)
    n1, n2 = (2_000, 8_000) if args.quick else (3_200, 16_000)
    names = [c for c in CANDIDATES if c != "uvloop" or have_uvloop()]
    table: dict[tuple[str, int], float] = {}
    for k in ks:
        for name in names:
            table[name, k] = per_event(name, k, n1, n2)
            print(f"  {name} K={k}: {table[name, k]:,.0f}", file=sys.stderr)
    head = "| candidate | " + " | ".join(f"K={k} instr/event | K={k} × floor" for k in ks) + " |"
    lines = [
        f"Callgrind, user-space instructions per event (Python {sys.version.split()[0]}, "
        f"{os.uname().machine}); floor = bare-epoll.",
        "",
        head,
        "|---|" + "---:|---:|" * len(ks),
    ]
    for name in names:
        cells = [f"{table[name, k]:,.0f} | {table[name, k] / table['bare-epoll', k]:.2f}" for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "icount.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
