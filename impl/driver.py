"""The loop's conformance driver: `python -m iohandler.impl.driver [--poller epoll|poll|selectors]`.

Reads vectors (one compact JSON per line) on stdin and answers traces (VECTORS.md, "The driver
protocol"). Each vector gets fresh fds and a fresh MainLoop. Trace events come from the loop's
tracer hooks; the `during_wait` actions of an `iterate` run from the `poll` hook, after the poll
set is built and before the kernel samples readiness.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from iohandler.impl.loop import MainLoop
from iohandler.impl.pollers import POLLERS, default_poller_name, flag_names
from iohandler.impl.tracing import Handler, Tracer
from iohandler.specs.protocol import InvalidVector, serve
from iohandler.specs.vector import (
    Drain,
    Event,
    GateEvent,
    HandlersEvent,
    Hangup,
    Iterate,
    Notify,
    PollEvent,
    ReadEvent,
    ReadyEvent,
    ScriptAction,
    Send,
    Set,
    SetGate,
    Snapshot,
    Vector,
    WriteEvent,
)


class _Script:
    """A handler: runs the script's actions. Its trace event comes from the tracer hook."""

    def __init__(self, run: _Run, name: str) -> None:
        self.run = run
        self.name = name

    def __call__(self, opaque: Any) -> None:
        for action in self.run.vector.scripts[self.name]:
            self.run.act(action)

    def __repr__(self) -> str:
        return f"<script {self.name}>"


class _Gate:
    """A can-read gate. With the optional vector field `gate_scripts` (SPEC R22) it also runs a
    script when consulted, then answers its (possibly changed) value."""

    def __init__(self, run: _Run, name: str, value: bool, script: str | None) -> None:
        self.run = run
        self.name = name
        self.value = value
        self.script = script

    def __call__(self, opaque: Any) -> bool:
        if self.script is not None:
            for action in self.run.vector.scripts[self.script]:
                self.run.act(action)
        return self.value

    def __repr__(self) -> str:
        return f"<gate {self.name}>"


def _name(callback: object) -> str | None:
    """The name of a handler or gate the driver registered (a _Script or a _Gate), or None."""
    if callback is None:
        return None
    assert isinstance(callback, _Script | _Gate), callback  # the driver registers no others
    return callback.name


class RealFd:
    """One symbolic fd realised on real fds (VECTORS.md, fd kinds): `fd` is the loop's end,
    `peer_fd` the driver's. Both are non-blocking, so the driver never hangs on an fd. Also what
    the lockstep tests use, so both drive fds the same way."""

    def __init__(self, kind: str) -> None:
        if kind == "socket":
            a, b = socket.socketpair()  # AF_UNIX, SOCK_STREAM
            ends = a.detach(), b.detach()
        else:
            r, w = os.pipe()
            ends = (r, w) if kind == "pipe-read" else (w, r)
        self.fd, self.peer_fd = ends
        for end in ends:
            os.set_blocking(end, False)
        self.hung = False

    def send(self) -> None:
        os.write(self.peer_fd, b"x")  # one byte per send (VECTORS.md)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass

    def hangup(self) -> None:
        if self.hung:
            return
        self.hung = True
        os.close(self.peer_fd)

    def close(self) -> None:
        self.hangup()
        os.close(self.fd)


class _Tracer(Tracer):
    def __init__(self, run: _Run) -> None:
        self.run = run

    def gate(self, fd: int, gate: Handler) -> None:
        name = _name(gate)
        assert name is not None
        self.run.events.append(GateEvent(self.run.names[fd], name))

    def poll(self, entries: list[tuple[int, int]]) -> None:
        run = self.run
        run.events.append(PollEvent(tuple((run.names[fd], flag_names(ev)) for fd, ev in entries)))
        during, run.during = run.during, ()
        for action in during:
            run.act(action)

    def ready(self, entries: list[tuple[int, int]], walk: bool) -> None:
        names = self.run.names
        self.run.events.append(
            ReadyEvent(tuple((names[fd], flag_names(ev)) for fd, ev in entries), walk)
        )

    def read(self, fd: int, callback: Handler) -> None:
        self.run.events.append(ReadEvent(self.run.names[fd], str(_name(callback))))

    def write(self, fd: int, callback: Handler) -> None:
        self.run.events.append(WriteEvent(self.run.names[fd], str(_name(callback))))


class _Run:
    during: tuple[ScriptAction, ...] = ()
    """The current iterate's `during_wait` actions, until the tracer's poll hook takes them."""

    def __init__(self, vector: Vector, poller: str | None) -> None:
        self.vector = vector
        self.events: list[Event] = []
        self.scripts = {name: _Script(self, name) for name in vector.scripts}
        runs = _gate_scripts(vector)
        self.gates = {name: _Gate(self, name, value, runs.get(name)) for name, value in vector.gates.items()}
        self.fds: dict[str, RealFd] = {}
        self.loop: MainLoop | None = None
        try:
            for name, kind in vector.fds.items():
                self.fds[name] = RealFd(kind)
            self.names = {f.fd: name for name, f in self.fds.items()}
            self.loop = MainLoop(poller, tracer=_Tracer(self))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
        for f in self.fds.values():
            f.close()

    def act(self, action: ScriptAction | Iterate) -> None:
        loop = self.loop
        assert loop is not None
        match action:
            case Set(fd, read, write, gate):
                loop.set_fd_handler(
                    self.fds[fd].fd,
                    self.scripts[read] if read is not None else None,
                    self.scripts[write] if write is not None else None,
                    can_read=self.gates[gate] if gate is not None else None,
                )
            case Send(fd):
                if self.fds[fd].hung:
                    raise InvalidVector(f"send on {fd!r} after its hangup")
                self.fds[fd].send()
            case Drain(fd):
                self.fds[fd].drain()
            case Hangup(fd):
                self.fds[fd].hangup()
            case SetGate(gate, value):
                self.gates[gate].value = value
            case Notify():
                loop.notify()
            case Snapshot():
                self.events.append(
                    HandlersEvent(
                        tuple(
                            (self.names[r.fd], _name(r.read), _name(r.write), _name(r.can_read))
                            for r in loop.records()
                        )
                    )
                )
            case Iterate(during_wait):
                self.during = during_wait
                loop.main_loop_wait(nonblocking=True)


def _gate_scripts(vector: Vector) -> dict[str, str]:
    raw = vector.extra.get("gate_scripts", {})
    if not isinstance(raw, dict) or not all(
        isinstance(g, str) and g in vector.gates and isinstance(s, str) and s in vector.scripts for g, s in raw.items()
    ):
        raise InvalidVector(f"gate_scripts must map declared gates to declared scripts, got {raw!r}")
    return raw


def run_vector(vector: Vector, poller: str | None = None) -> list[Event]:
    """Run one vector on fresh fds and a fresh loop; the trace."""
    run = _Run(vector, poller)
    try:
        for step in vector.steps:
            run.act(step)
    finally:
        run.close()
    return run.events


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iohandler.impl.driver", description=__doc__)
    parser.add_argument(
        "--poller",
        choices=sorted(POLLERS),
        default=default_poller_name(),
        help="the loop's poller (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    poller: str = args.poller
    return serve(lambda vector: run_vector(vector, poller))


if __name__ == "__main__":
    sys.exit(main())
