"""`qemu_iohandler_poll`: the dispatch walk and the reap. Rules R14-R19.

Read beside the seed:

    QLIST_FOREACH_SAFE(ioh, &io_handlers, next, pioh) {
        int revents = 0;
        if (!ioh->deleted && ioh->pollfds_idx != -1) revents = pollfds[ioh->pollfds_idx].revents;
        if (!ioh->deleted && ioh->fd_read  && (revents & (G_IO_IN | G_IO_HUP | G_IO_ERR))) ioh->fd_read(ioh->opaque);
        if (!ioh->deleted && ioh->fd_write && (revents & (G_IO_OUT | G_IO_ERR)))           ioh->fd_write(ioh->opaque);
        if (ioh->deleted) { QLIST_REMOVE(ioh, next); g_free(ioh); }
    }

Callbacks may add records (at the head, behind the walk), flag records deleted, update or
revive them; only the walk unlinks, and only the record it stands on. So the walk visits
exactly the records of the list at walk start, in order, and by R1 the fd names each of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from iohandler.model.state import READ_EVENTS, WRITE_EVENTS, Fd, Record, ScriptName, World, index_of
from iohandler.specs.vector import Event, ReadEvent, WriteEvent

# A callback: handler `name` called for `fd` runs against the world and returns the world it
# leaves and the events its actions emitted. The model's handlers are scripts (data).
Callback = Callable[[World, Fd, ScriptName], tuple[World, tuple[Event, ...]]]


def dispatch(world: World, revents: tuple[int, ...], ret: int, call: Callback) -> tuple[World, tuple[Event, ...]]:
    """Walk the list head to tail (newest first), calling handlers and reaping as it passes.
    `revents[i]` belongs to the record whose poll_index is i (the fill set it).

    R14 no walk unless poll returned > 0: then nothing is called and nothing is reaped.
    R15 the walk visits the records present when it starts, in list order; records added by
        callbacks are at the head, behind it, and are not visited.
    R16 read on IN|HUP|ERR, write on OUT|ERR (ERR reaches both).
    R17 a record flagged deleted before its turn (or by its own read handler) is not called.
    R18 revents are read once, before the read handler; the write check then uses the
        record's *current* write handler (a read handler may have updated or revived it).
    R19 a deleted record is unlinked when the walk passes it, after its handlers.

    Contracts: model/contracts.py proves them of one step (lemma_walk_step, callbacks as data)
    and proves this function the fold of that step (lemma_walk_is_fold, lemma_no_walk).
    """
    if ret <= 0:
        return world, ()
    events: list[Event] = []
    for fd in [r.fd for r in world.loop.records]:  # FOREACH_SAFE: next is fixed before the body
        record = _record(world, fd)
        ready = 0
        if not record.deleted and record.poll_index != -1:
            ready = revents[record.poll_index]
        if not record.deleted and record.read is not None and ready & READ_EVENTS:
            events.append(ReadEvent(fd, record.read))
            world, out = call(world, fd, record.read)
            events.extend(out)
        record = _record(world, fd)
        if not record.deleted and record.write is not None and ready & WRITE_EVENTS:
            events.append(WriteEvent(fd, record.write))
            world, out = call(world, fd, record.write)
            events.extend(out)
        record = _record(world, fd)
        if record.deleted:
            world = world.with_loop(replace(world.loop, records=_unlink(world.loop.records, fd)))
    return world, tuple(events)


def _record(world: World, fd: Fd) -> Record:
    # Only the walk unlinks, so a record the walk has not passed is still in the list.
    return world.loop.records[index_of(world.loop.records, fd)]


def _unlink(records: tuple[Record, ...], fd: Fd) -> tuple[Record, ...]:
    return tuple(r for r in records if r.fd != fd)
