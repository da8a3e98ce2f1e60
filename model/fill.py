"""`qemu_iohandler_fill`: build the poll set, consulting gates. Rules R8-R10, R22.

Read beside the seed:

    QLIST_FOREACH(ioh, &io_handlers, next) {          /* a plain walk: gates run user code */
        int events = 0;
        if (ioh->deleted) continue;
        if (ioh->fd_read && (!ioh->fd_read_poll || ioh->fd_read_poll(ioh->opaque) != 0))
            events |= G_IO_IN | G_IO_HUP | G_IO_ERR;
        if (ioh->fd_write) events |= G_IO_OUT | G_IO_ERR;     /* read after the gate ran */
        if (events) { ioh->pollfds_idx = pollfds->len; append {fd, events}; }
        else ioh->pollfds_idx = -1;
    }
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from iohandler.model.state import READ_EVENTS, WRITE_EVENTS, Fd, GateName, PollSet, Record, World, index_of
from iohandler.specs.vector import Event, GateEvent

# A gate: consulted for fd, it may act on the world (R22) and answers open (True) or closed.
Gate = Callable[[World, Fd, GateName], tuple[World, bool, tuple[Event, ...]]]


def answer_only(world: World, fd: Fd, gate: GateName) -> tuple[World, bool, tuple[Event, ...]]:
    """A gate that only answers (every gate of format v1): its current value, no actions."""
    return world, world.gates[gate], ()


def fill(world: World, consult: Gate = answer_only) -> tuple[World, PollSet, tuple[Event, ...]]:
    """Walk the list head to tail; give each live record its poll slot (or -1).

    R8  a read handler whose gate is open (or absent) asks IN|HUP|ERR; a write handler asks
        OUT|ERR; a record that asks nothing is not polled; deleted records are skipped.
    R9  a gate is consulted here and only here, once per iteration, for live records with a
        read handler, in list order; each consultation is a `gate` event.
    R10 a closed gate with no write handler leaves the fd out of the poll set entirely.
    R22 a gate that changes the registry: nothing is unlinked during fill, so the walk visits
        the records present when it started; a record added is at the head, behind the walk,
        and not polled; the write handler is read after the gate ran, and the slot assigned
        after it, so a gate's change to its *own* record is polled and dispatched as changed.

    Contracts: model/contracts.py proves them of one step (lemma_fill_step, gates' actions as
    data) and proves this function the fold of that step (lemma_fill_is_fold).
    """
    poll_set: list[tuple[Fd, int]] = []
    events: list[Event] = []
    for fd in [r.fd for r in world.loop.records]:
        record = _record(world, fd)
        if record.deleted:
            continue
        asked = 0
        if record.read is not None:
            is_open = True
            if record.gate is not None:
                events.append(GateEvent(fd, record.gate))
                world, is_open, out = consult(world, fd, record.gate)
                events.extend(out)
                record = _record(world, fd)  # the gate may have changed its own record
            if is_open:
                asked |= READ_EVENTS
        if record.write is not None:
            asked |= WRITE_EVENTS
        slot = len(poll_set) if asked else -1
        if asked:
            poll_set.append((fd, asked))
        world = world.with_loop(
            replace(world.loop, records=_put(world.loop.records, fd, replace(record, poll_index=slot)))
        )
    return world, tuple(poll_set), tuple(events)


def _record(world: World, fd: Fd) -> Record:
    # Only the dispatch walk unlinks, so every record present when fill started is still there.
    return world.loop.records[index_of(world.loop.records, fd)]


def _put(records: tuple[Record, ...], fd: Fd, record: Record) -> tuple[Record, ...]:
    return tuple(record if r.fd == fd else r for r in records)
