"""Profile one candidate's ping-pong under pyinstrument: `python -m bench.profile impl/epoll -k 1`.

Prints the call tree (and writes it to bench/results/profile-<candidate>-k<K>[-n<N>].txt), so an
optimisation starts from where the time goes, not from a guess.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.candidates import Ring
from bench.workloads import IdleFds, PingPong, _timed_run

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    from pyinstrument import Profiler

    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("candidate", help="e.g. impl/epoll, bare-epoll, asyncio")
    ap.add_argument("-k", type=int, default=1, help="socketpairs in the ring (default 1)")
    ap.add_argument("-n", "--idle", type=int, default=0, help="idle registered fds (default 0)")
    ap.add_argument("--gated", action="store_true", help="give the idle fds an always-open can_read gate")
    ap.add_argument("--events", type=int, default=300_000)
    args = ap.parse_args(argv)
    idle = IdleFds(args.idle) if args.idle else None
    pp = PingPong(args.candidate, idle, gated=args.gated)
    ring = Ring(args.k)
    try:
        pp.cand.attach(ring)
        _timed_run(pp.cand, ring, 1000)
        profiler = Profiler(interval=0.0001)
        profiler.start()
        ns, done = _timed_run(pp.cand, ring, args.events)
        profiler.stop()
        pp.cand.detach(ring)
    finally:
        ring.close()
        pp.close()
        if idle is not None:
            idle.close()
    text = profiler.output_text(unicode=True, color=False, show_all=True)
    header = f"{args.candidate} K={args.k} N={args.idle}: {ns / done:.0f} ns/event under the profiler\n"
    print(header + text)
    RESULTS.mkdir(exist_ok=True)
    name = args.candidate.replace("/", "-") + f"-k{args.k}" + (f"-n{args.idle}" if args.idle else "")
    (RESULTS / f"profile-{name}.txt").write_text(header + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
