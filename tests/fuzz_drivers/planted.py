"""The model's driver with one planted bug: `python tests/fuzz_drivers/planted.py BUG`.

tests/test_fuzz.py proves `iohandler fuzz` catches each one. BUG is a rule the driver breaks:

    R2   a new record goes to the tail of the list, not the head
    R9   the gate is consulted again at dispatch (a gate closed after fill stops the read)
    R13  the notifier is consumed after the walk, so a notify from a handler is lost
    R15  the walk goes in kernel order (by fd name), not list order
    R17  a record deleted before its turn in the walk is still called
    R18  the write check uses the write handler from before the read handler ran
    none no bug (a control), but gate_scripts are ignored (a port without R22's field)

and two wrong readings of the spec a port made (issue 23), which pass every bundled vector
older than the ones written for them:

    m1   a delete clears the record's handlers (R4, R22), so a gate that deletes its own record
         no longer gets OUT|ERR asked for the record's write handler
    m8   a registration's notify (R7) made while the loop holds its lock sets R35's "notified"
         flag, read at the top of the next iteration instead of after fill: a registration made
         by a gate during fill no longer makes this iteration's poll return (and makes the next
         one's return)

Each is a format v2 port: it refuses v3 vectors, so the fuzzer's probe leaves the context's
actions out and the seeds below draw the vectors they drew before v3 existed.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import iohandler.model.iterate as model_iterate
from iohandler.model.dispatch import Callback
from iohandler.model.driver import run
from iohandler.model.state import READ_EVENTS, WRITE_EVENTS, Fd, Loop, Record, ScriptName, World, index_of
from iohandler.specs.protocol import InvalidVector, serve
from iohandler.specs.vector import FORMAT_V3, Event, ReadEvent, Vector, WriteEvent

BUGS = ("R2", "R9", "R13", "R15", "R17", "R18", "m1", "m8", "none")


def _record(world: World, fd: Fd) -> Record:
    return world.loop.records[index_of(world.loop.records, fd)]


def planted_dispatch(bug: str) -> object:
    """model.dispatch.dispatch, with `bug` planted (R9, R15, R17 or R18)."""

    def dispatch(world: World, revents: tuple[int, ...], ret: int, call: Callback) -> tuple[World, tuple[Event, ...]]:
        if ret <= 0:
            return world, ()
        events: list[Event] = []
        order = [r.fd for r in world.loop.records]
        if bug == "R15":
            order.sort()
        for fd in order:
            record = _record(world, fd)
            alive = bug == "R17" or not record.deleted
            ready = revents[record.poll_index] if alive and record.poll_index != -1 else 0
            gate_open = bug != "R9" or record.gate is None or world.gates[record.gate]
            if alive and record.read is not None and ready & READ_EVENTS and gate_open:
                events.append(ReadEvent(fd, record.read))
                world, out = call(world, fd, record.read)
                events.extend(out)
            if bug != "R18":
                record = _record(world, fd)
            alive = bug == "R17" or not _record(world, fd).deleted
            if alive and record.write is not None and ready & WRITE_EVENTS:
                events.append(WriteEvent(fd, record.write))
                world, out = call(world, fd, record.write)
                events.extend(out)
            if _record(world, fd).deleted:
                world = world.with_loop(replace(world.loop, records=tuple(r for r in world.loop.records if r.fd != fd)))
        return world, tuple(events)

    return dispatch


def plant(bug: str) -> None:
    names = vars(model_iterate)
    real_set = names["set_fd_handler"]
    real_dispatch = names["dispatch"]
    real_fill = names["fill"]
    if bug == "R2":

        def set_at_tail(
            loop: Loop, fd: Fd, read: ScriptName | None, write: ScriptName | None, gate: str | None
        ) -> Loop:
            out: Loop = real_set(loop, fd, read, write, gate)
            if index_of(loop.records, fd) == -1 and index_of(out.records, fd) == 0:
                return replace(out, records=(*out.records[1:], out.records[0]))
            return out

        names["set_fd_handler"] = set_at_tail
    elif bug == "R13":

        def dispatch_then_consume(
            world: World, revents: tuple[int, ...], ret: int, call: Callback
        ) -> tuple[World, tuple[Event, ...]]:
            world, events = real_dispatch(world, revents, ret, call)
            return world.with_loop(Loop(world.loop.records, wakeup=False)), events

        names["dispatch"] = dispatch_then_consume
    elif bug == "m1":

        def delete_clears_handlers(
            loop: Loop, fd: Fd, read: ScriptName | None, write: ScriptName | None, gate: str | None
        ) -> Loop:
            out: Loop = real_set(loop, fd, read, write, gate)
            i = index_of(out.records, fd)
            if read is None and write is None and i != -1:
                cleared = replace(out.records[i], read=None, write=None)
                return replace(out, records=(*out.records[:i], cleared, *out.records[i + 1 :]))
            return out

        names["set_fd_handler"] = delete_clears_handlers
    elif bug == "m8":
        flag = {"in_fill": False, "notified": False}

        def register_sets_flag(
            loop: Loop, fd: Fd, read: ScriptName | None, write: ScriptName | None, gate: str | None
        ) -> Loop:
            out: Loop = real_set(loop, fd, read, write, gate)
            if flag["in_fill"] and (read is not None or write is not None):
                flag["notified"] = True  # the flag, not the notifier: this poll does not see it
                return Loop(out.records, wakeup=loop.wakeup)
            return out

        def fill_with_flag(world: World, consult: object) -> object:
            flag["in_fill"], flag["notified"] = True, False
            try:
                return real_fill(world, consult)
            finally:
                flag["in_fill"] = False

        def dispatch_then_flag(
            world: World, revents: tuple[int, ...], ret: int, call: Callback
        ) -> tuple[World, tuple[Event, ...]]:
            if flag["notified"]:  # read at the top of the next iteration: its poll returns at once
                flag["notified"] = False
                world = world.with_loop(Loop(world.loop.records, wakeup=True))
            out: tuple[World, tuple[Event, ...]] = real_dispatch(world, revents, ret, call)
            return out

        names["set_fd_handler"] = register_sets_flag
        names["fill"] = fill_with_flag
        names["dispatch"] = dispatch_then_flag
    elif bug in ("R9", "R15", "R17", "R18"):
        names["dispatch"] = planted_dispatch(bug)
    elif bug == "none":

        def no_gate_scripts(vector: Vector) -> dict[str, str]:
            return {}

        names["gate_scripts"] = no_gate_scripts
    else:
        raise SystemExit(f"planted.py: BUG must be one of {', '.join(BUGS)}, got {bug!r}")


def run_v2(vector: Vector) -> tuple[Event, ...]:
    if vector.format == FORMAT_V3:
        raise InvalidVector("a format v2 port: no AioContext")
    return tuple(run(vector))


if __name__ == "__main__":
    plant(sys.argv[1] if len(sys.argv) > 1 else "")
    sys.exit(serve(run_v2))
