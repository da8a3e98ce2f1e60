"""The loop's conformance driver: `python -m iohandler.impl.driver [--poller epoll|poll|selectors]`.

Reads vectors (one compact JSON per line) on stdin and answers traces (VECTORS.md, "The driver
protocol"). Each vector gets fresh fds and a fresh MainLoop (`VectorSession`, which the lockstep
tests reuse). Trace events come from the loop's tracer hooks; the `during_wait` actions of an
`iterate` run from the `poll` hook, after the poll set is built and before the kernel samples
readiness. Format v3 (the AioContext, SPEC R42 on) drives `loop.context`: BHs by name, context
handlers, `context.poll()`, `context.compute_timeout()`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from iohandler.impl.context import BottomHalf
from iohandler.impl.loop import MainLoop
from iohandler.impl.pollers import POLLERS, default_poller_name, flag_names
from iohandler.impl.signals import open_signalfd
from iohandler.impl.tracing import Handler, Tracer
from iohandler.specs.protocol import InvalidVector, serve
from iohandler.specs.vector import (
    Action,
    BhCancel,
    BhDelete,
    BhEvent,
    BhNew,
    BhSchedule,
    BhScheduleIdle,
    CtxPoll,
    CtxPollEvent,
    CtxProgressEvent,
    CtxReadEvent,
    CtxSet,
    CtxWriteEvent,
    Drain,
    Event,
    FdKind,
    GateEvent,
    HandlersEvent,
    Hangup,
    Iterate,
    Notify,
    PollEvent,
    Raise,
    ReadEvent,
    ReadyEvent,
    ScriptAction,
    Send,
    Set,
    SetGate,
    Snapshot,
    Timeout,
    TimeoutEvent,
    Vector,
    WriteEvent,
)


class _Script:
    """A handler: runs the script's actions. Its trace event comes from the tracer hook."""

    def __init__(self, session: VectorSession, name: str) -> None:
        self.session = session
        self.name = name

    def __call__(self, opaque: Any) -> None:
        self.session.on_call(str(opaque), self.name)
        for action in self.session.scripts_of[self.name]:
            self.session.act(action)

    def __repr__(self) -> str:
        return f"<script {self.name}>"


class _BhScript:
    """A BH's callback: runs the script's actions (its `bh` event comes from the tracer hook)."""

    def __init__(self, session: VectorSession, name: str) -> None:
        self.session = session
        self.name = name

    def __call__(self, opaque: Any) -> None:
        for action in self.session.scripts_of[self.name]:
            self.session.act(action)

    def __repr__(self) -> str:
        return f"<bh script {self.name}>"


class _Gate:
    """A can-read gate. With the optional vector field `gate_scripts` (SPEC R22) it also runs a
    script when consulted, then answers its (possibly changed) value."""

    def __init__(self, session: VectorSession, name: str, value: bool, script: str | None) -> None:
        self.session = session
        self.name = name
        self.value = value
        self.script = script

    def __call__(self, opaque: Any) -> bool:
        if self.script is not None:
            for action in self.session.scripts_of[self.script]:
                self.session.act(action)
        return self.value

    def __repr__(self) -> str:
        return f"<gate {self.name}>"


def callback_name(callback: object) -> str | None:
    """The script or gate name of a callback the session registered (None for None). A loop
    that calls something else shows up under that thing's repr."""
    return None if callback is None else str(getattr(callback, "name", callback))


# The `signal` kind's signals: real-time ones well above what programs commonly use.
_SIGNAL_POOL = (signal.SIGRTMIN + 8, signal.SIGRTMAX - 4)
_signals_in_use: set[int] = set()


class RealFd:
    """One symbolic fd realised on real fds (VECTORS.md, fd kinds): `fd` is the loop's end,
    `peer_fd` the driver's. Both are non-blocking, so the driver never hangs on an fd. Also what
    the lockstep tests use, so both drive fds the same way."""

    def __init__(self, kind: str) -> None:
        self.hung = False
        self.signo = 0
        if kind == "signal":
            self._open_signal()
            return
        if kind == "socket":
            a, b = socket.socketpair()  # AF_UNIX, SOCK_STREAM
            ends = a.detach(), b.detach()
        else:
            r, w = os.pipe()
            ends = (r, w) if kind == "pipe-read" else (w, r)
        self.fd, self.peer_fd = ends
        for end in ends:
            os.set_blocking(end, False)

    def _open_signal(self) -> None:
        """A signalfd for a real-time signal of its own, blocked in this (the loop's) thread;
        `raise_` sends it to this thread, so no other thread of the process can take it."""
        signo = next(s for s in range(_SIGNAL_POOL[0], _SIGNAL_POOL[1]) if s not in _signals_in_use)
        _signals_in_use.add(signo)
        self.signo, self.thread = signo, threading.get_ident()
        self.was_blocked = signo in signal.pthread_sigmask(signal.SIG_BLOCK, {signo})
        try:
            self.fd = open_signalfd({signo})
        except BaseException:
            self._release_signal()
            raise
        self.peer_fd = -1

    def raise_(self) -> None:
        signal.pthread_kill(self.thread, self.signo)

    def _release_signal(self) -> None:
        while signal.sigtimedwait({self.signo}, 0) is not None:  # none left for the old mask
            pass
        if not self.was_blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {self.signo})
        _signals_in_use.discard(self.signo)

    def send(self) -> None:
        # One byte per send (VECTORS.md). A full kernel buffer (a socketpair takes a few hundred
        # one-byte sends, a pipe 64 KiB) drops the byte: the fd already has bytes pending, and
        # only whether it has any shows (VECTORS.md, "Notes"), so readiness is unchanged.
        with contextlib.suppress(BlockingIOError):
            os.write(self.peer_fd, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass

    def hangup(self) -> None:
        if self.hung or self.signo:
            return
        self.hung = True
        os.close(self.peer_fd)

    def close(self) -> None:
        self.hangup()
        os.close(self.fd)
        if self.signo:
            self._release_signal()


class _Tracer(Tracer):
    def __init__(self, session: VectorSession) -> None:
        self.s = session

    def gate(self, fd: int, gate: Handler) -> None:
        self.s.events.append(GateEvent(self.s.names[fd], str(callback_name(gate))))

    def poll(self, entries: list[tuple[int, int]]) -> None:
        s = self.s
        s.events.append(PollEvent(tuple((s.names[fd], flag_names(ev)) for fd, ev in entries)))
        s.ctx_poll_at = len(s.events)  # the context's set, when the loop reports it, goes here
        s.on_poll(entries)
        during, s.during = s.during, ()
        for action in during:
            s.act(action)

    def aio_poll_set(self, entries: list[tuple[int, int]]) -> None:
        # The main wait's context fds, computed before the wait, are reported after the `poll`
        # hook ran the during_wait actions: the event goes right after `poll` (VECTORS.md, v3).
        # A context.poll() of its own (a ctx-poll action) reports its set too: not an event.
        s = self.s
        if s.ctx_poll_at is not None:
            event = CtxPollEvent(tuple((s.names[fd], flag_names(ev)) for fd, ev in entries))
            s.events.insert(s.ctx_poll_at, event)
            s.ctx_poll_at = None

    def ready(self, entries: list[tuple[int, int]], walk: bool) -> None:
        names = self.s.names
        self.s.ctx_poll_at = None
        self.s.events.append(ReadyEvent(tuple((names[fd], flag_names(ev)) for fd, ev in entries), walk))

    def bh(self, handle: Any, callback: Handler) -> None:
        self.s.events.append(BhEvent(self.s.bh_names[handle], str(callback_name(callback))))

    def aio_read(self, fd: int, callback: Handler) -> None:
        self.s.events.append(CtxReadEvent(self.s.names[fd], str(callback_name(callback))))

    def aio_write(self, fd: int, callback: Handler) -> None:
        self.s.events.append(CtxWriteEvent(self.s.names[fd], str(callback_name(callback))))

    def read(self, fd: int, callback: Handler) -> None:
        self.s.on_dispatch(self.s.names[fd], 0, callback)
        self.s.events.append(ReadEvent(self.s.names[fd], str(callback_name(callback))))

    def write(self, fd: int, callback: Handler) -> None:
        self.s.on_dispatch(self.s.names[fd], 1, callback)
        self.s.events.append(WriteEvent(self.s.names[fd], str(callback_name(callback))))


LoopFactory = Callable[..., MainLoop]
"""Makes the loop: called as `make_loop(poller, tracer=...)` (MainLoop, or a variant of it)."""


class VectorSession:
    """One vector's world on real fds and a real loop, run one action at a time: `act(action)`
    (or `run(action)`, which returns the events it emitted), the trace so far in `events`,
    `close()`. Handlers and gates are the vector's scripts; each registration's opaque is the
    fd's name. The `on_*` hooks do nothing here: a subclass (the lockstep harness) overrides
    them to check what a trace cannot show."""

    during: tuple[ScriptAction, ...] = ()
    """The current iterate's `during_wait` actions, until the tracer's poll hook takes them."""
    ctx_poll_at: int | None = None
    """Where the main wait's `ctx-poll` event goes (after `poll`), until the loop reports it."""

    def __init__(
        self,
        fds: Mapping[str, FdKind],
        scripts: Mapping[str, tuple[ScriptAction, ...]],
        gates: Mapping[str, bool],
        gate_runs: Mapping[str, str] | None = None,
        *,
        poller: str | None = None,
        make_loop: LoopFactory = MainLoop,
    ) -> None:
        runs = dict(gate_runs or {})
        if not all(g in gates and s in scripts for g, s in runs.items()):
            raise InvalidVector(f"gate_scripts must map declared gates to declared scripts, got {runs!r}")
        self.scripts_of = dict(scripts)
        self.events: list[Event] = []
        self.scripts = {name: _Script(self, name) for name in scripts}
        self.bh_scripts = {name: _BhScript(self, name) for name in scripts}
        self.bhs: dict[str, BottomHalf] = {}  # a vector's BH name -> the BH it names now
        self.bh_names: dict[BottomHalf, str] = {}  # every BH created -> the name it was created under
        self.gates = {name: _Gate(self, name, value, runs.get(name)) for name, value in gates.items()}
        self.fds: dict[str, RealFd] = {}
        self.loop: MainLoop | None = None
        try:
            for name, kind in fds.items():
                self.fds[name] = RealFd(kind)
            self.names: dict[int, str] = {f.fd: name for name, f in self.fds.items()}
            self.loop = make_loop(poller, tracer=_Tracer(self))
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_vector(cls, vector: Vector, poller: str | None = None, make_loop: LoopFactory = MainLoop) -> VectorSession:
        return cls(vector.fds, vector.scripts, vector.gates, vector.gate_scripts, poller=poller, make_loop=make_loop)

    def close(self) -> None:
        """Close the loop, then every fd (both ends). Safe to call twice."""
        if self.loop is not None:
            self.loop.close()
            self.loop = None
        for f in self.fds.values():
            f.close()
        self.fds = {}

    # -- hooks (no-ops): called while the loop runs

    def on_call(self, fd: str, script: str) -> None:
        """Handler `script` is running, for the record of `fd` (from the opaque)."""

    def on_dispatch(self, fd: str, role: int, callback: Handler) -> None:
        """The loop is about to call `callback` as the read (role 0) or write (1) handler of `fd`."""

    def on_poll(self, entries: list[tuple[int, int]]) -> None:
        """The poll set is built, the kernel not yet asked (before the during_wait actions)."""

    def on_set(self, action: Set) -> None:
        """A registration (or delete) was just made."""

    # -- actions

    def live_rows(self) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
        """What a `snapshot` shows: the live records in list order, by name."""
        assert self.loop is not None
        return tuple(
            (self.names[r.fd], callback_name(r.read), callback_name(r.write), callback_name(r.can_read))
            for r in self.loop.records()
        )

    def run(self, action: Action) -> list[Event]:
        """`act(action)`; the events it emitted."""
        start = len(self.events)
        self.act(action)
        return self.events[start:]

    def act(self, action: ScriptAction | Iterate) -> None:
        loop = self.loop
        if loop is None:
            raise RuntimeError("the session is closed")
        match action:
            case Set(fd, read, write, gate):
                loop.set_fd_handler(
                    self.fds[fd].fd,
                    self.scripts[read] if read is not None else None,
                    self.scripts[write] if write is not None else None,
                    can_read=self.gates[gate] if gate is not None else None,
                    opaque=fd,
                )
                self.on_set(action)
            case Send(fd):
                if self.fds[fd].hung:
                    raise InvalidVector(f"send on {fd!r} after its hangup")
                self.fds[fd].send()
            case Drain(fd):
                self.fds[fd].drain()
            case Hangup(fd):
                self.fds[fd].hangup()
            case Raise(fd):
                self.fds[fd].raise_()
            case SetGate(gate, value):
                self.gates[gate].value = value
            case Notify():
                loop.notify()
            case Snapshot():
                self.events.append(HandlersEvent(self.live_rows()))
            case BhNew(name, script):
                bh = loop.bh_new(self.bh_scripts[script], name)
                self.bhs[name] = bh
                self.bh_names[bh] = name
            case BhSchedule(name):
                self._bh(name).schedule()
            case BhScheduleIdle(name):
                self._bh(name).schedule_idle()
            case BhCancel(name):
                self._bh(name).cancel()
            case BhDelete(name):
                self._bh(name).delete()
            case CtxSet(fd, read, write):
                loop.context.set_fd_handler(
                    self.fds[fd].fd,
                    self.scripts[read] if read is not None else None,
                    self.scripts[write] if write is not None else None,
                    opaque=fd,
                )
            case CtxPoll():
                self.events.append(CtxProgressEvent(loop.context.poll(blocking=False)))
            case Timeout():
                seconds = loop.context.compute_timeout()
                self.events.append(TimeoutEvent(None if seconds is None else round(seconds * 1000)))
            case Iterate(during_wait):
                self.during = during_wait
                try:
                    loop.main_loop_wait(nonblocking=True)
                finally:
                    self.during = ()

    def _bh(self, name: str) -> BottomHalf:
        try:
            return self.bhs[name]
        except KeyError:
            raise InvalidVector(f"bh {name!r} used before its bh-new") from None


def run_vector(vector: Vector, poller: str | None = None) -> list[Event]:
    """Run one vector on fresh fds and a fresh loop; the trace."""
    session = VectorSession.for_vector(vector, poller)
    try:
        for step in vector.steps:
            session.act(step)
    finally:
        session.close()
    return session.events


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
