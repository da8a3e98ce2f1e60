"""`qemu_set_fd_handler2`: add, update, delete, revive. Rules R1-R7 (specs/SPEC.md).

Contracts are PEP 316 docstrings that `crosshair check --analysis_kind=PEP316` explores.
"""

from __future__ import annotations

from dataclasses import replace

from iohandler.model.state import Fd, GateName, Loop, Record, ScriptName, fds_unique, implies, index_of

CONTRACT_NAMES = (fds_unique, implies)  # the PEP 316 contracts below name these


def set_fd_handler(
    loop: Loop, fd: Fd, read: ScriptName | None, write: ScriptName | None, gate: GateName | None
) -> Loop:
    """Register, update or (both handlers None) delete the handlers of `fd`.

    R4  delete only flags the record: nothing is unlinked, no wakeup; an unknown fd is a no-op.
    R2  a new record goes to the head of the list (newest first).
    R3  an update keeps the record's position; R5 so does reviving a deleted, unreaped record.
    R6  add and update reset the poll slot: no callback from the poll set already built.
    R7  add and update notify; delete does not.

    pre: len(loop.records) <= 3
    pre: fds_unique(loop.records)
    post: fds_unique(__return__.records)
    post: len(__return__.records) - len(loop.records) in (0, 1)
    post: [r.fd for r in __return__.records if r.fd != fd] == [r.fd for r in loop.records if r.fd != fd]
    post: implies(read is None and write is None, __return__.wakeup == loop.wakeup)
    post: implies(read is not None or write is not None, __return__.wakeup)
    post: implies(read is not None or write is not None, __return__.records[index_of(__return__.records, fd)] == Record(fd, read, write, gate))
    post: implies((read is not None or write is not None) and index_of(loop.records, fd) == -1, __return__.records[0].fd == fd)
    post: implies(read is None and write is None, [(r.fd, r.read, r.write, r.gate, r.poll_index) for r in __return__.records] == [(r.fd, r.read, r.write, r.gate, r.poll_index) for r in loop.records])
    """
    i = index_of(loop.records, fd)
    if read is None and write is None:
        if i == -1:
            return loop
        return replace(loop, records=_put(loop.records, i, replace(loop.records[i], deleted=True)))
    fresh = Record(fd, read, write, gate, poll_index=-1, deleted=False)
    records = (fresh, *loop.records) if i == -1 else _put(loop.records, i, fresh)
    return Loop(records, wakeup=True)


def live_records(loop: Loop) -> tuple[Record, ...]:
    """The records a `snapshot` shows: not deleted, in list order.

    pre: len(loop.records) <= 3
    post: all(not r.deleted for r in __return__)
    post: [r for r in loop.records if not r.deleted] == list(__return__)
    """
    return tuple(r for r in loop.records if not r.deleted)


def _put(records: tuple[Record, ...], i: int, record: Record) -> tuple[Record, ...]:
    return (*records[:i], record, *records[i + 1 :])
