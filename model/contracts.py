"""Contract harnesses: model functions whose arguments CrossHair cannot make on its own.

`dispatch` takes a callback. CrossHair would invent callbacks that unlink records, which no
callback can do (only the walk unlinks), so the walk's contracts are stated here with callbacks
as data: each script is a sequence of registrations (`set_fd_handler` calls, the only actions
that change the list; a registration with no handlers is a delete).
Run: `crosshair check --analysis_kind=PEP316 model/`.
"""

from __future__ import annotations

from iohandler.model.dispatch import dispatch
from iohandler.model.fill import answer_only, fill
from iohandler.model.registry import set_fd_handler
from iohandler.model.state import (
    Fd,
    GateName,
    Gates,
    Loop,
    PollSet,
    Record,
    ScriptName,
    Table,
    World,
    fds_unique,
    implies,
    index_of,
)
from iohandler.specs.vector import Event, GateEvent

CONTRACT_NAMES = (fds_unique, implies)  # the PEP 316 contracts below name these

Registration = tuple[Fd, ScriptName | None, ScriptName | None, GateName | None]
Scripts = tuple[tuple[ScriptName, tuple[Registration, ...]], ...]
Call = tuple[Fd, bool]  # a callback was called for fd; was its record flagged deleted then?


def dispatch_registrations(
    records: tuple[Record, ...], revents: tuple[int, ...], ret: int, scripts: Scripts
) -> tuple[tuple[Record, ...], tuple[Event, ...], tuple[Call, ...]]:
    """The walk over `records`, whose handlers run `scripts`.

    pre: len(records) <= 3 and len(revents) <= 3 and len(scripts) <= 2
    pre: all(len(body) <= 2 for _, body in scripts)
    pre: fds_unique(records)
    pre: all(-1 <= r.poll_index < len(revents) for r in records)
    pre: all(s in dict(scripts) for r in records for s in (r.read, r.write) if s is not None)
    pre: all(s in dict(scripts) for _, b in scripts for (_, rd, wr, _) in b for s in (rd, wr) if s is not None)
    post: implies(ret <= 0, __return__[0] == records and __return__[1] == ())  # R14
    post: fds_unique(__return__[0])  # R1
    post: all(not deleted for _, deleted in __return__[2])  # R17
    post: all(fd in [r.fd for r in records] for fd, _ in __return__[2])  # R15
    post: implies(ret > 0 and not any(rd is None and wr is None for _, b in scripts for (_, rd, wr, _) in b), all(not r.deleted for r in __return__[0]))  # R19
    """
    bodies = dict(scripts)
    calls: list[Call] = []

    def call(world: World, fd: Fd, name: ScriptName) -> tuple[World, tuple[Event, ...]]:
        calls.append((fd, world.loop.records[index_of(world.loop.records, fd)].deleted))
        loop = world.loop
        for target, read, write, gate in bodies[name]:
            loop = set_fd_handler(loop, target, read, write, gate)
        return world.with_loop(loop), ()

    out, events = dispatch(World(Loop(records), Table(), Table()), revents, ret, call)
    return out.loop.records, events, tuple(calls)


def fill_gates(loop: Loop, gates: Gates) -> tuple[Loop, PollSet, tuple[tuple[Fd, GateName], ...]]:
    """Fill with gates that only answer (format v1); returns the consultations as (fd, gate).

    pre: len(loop.records) <= 3
    pre: fds_unique(loop.records)
    pre: all(r.gate is None or r.gate in [g for g, _ in gates.pairs] for r in loop.records)
    post: [r.fd for r in __return__[0].records] == [r.fd for r in loop.records]  # R8: nothing moves
    post: [fd for fd, _ in __return__[1]] == [r.fd for r in __return__[0].records if r.poll_index != -1 and not r.deleted]
    post: all(__return__[1][r.poll_index][0] == r.fd for r in __return__[0].records if r.poll_index != -1 and not r.deleted)
    post: all(events != 0 for _, events in __return__[1])  # R8: nothing asked, not polled
    post: [fd for fd, _ in __return__[2]] == [r.fd for r in loop.records if not r.deleted and r.read is not None and r.gate is not None]  # R9
    post: __return__[0].wakeup == loop.wakeup
    """
    world, poll_set, events = fill(World(loop, Table(), gates), answer_only)
    return world.loop, poll_set, tuple((e.fd, e.gate) for e in events if isinstance(e, GateEvent))
