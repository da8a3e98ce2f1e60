"""`qemu_set_fd_handler2`: add, update, delete, revive. Rules R1-R7 (specs/SPEC.md).

Contracts: the lemmas `lemma_register_*` and `lemma_live_records` of model/contracts.py, over
bounded domains CrossHair exhausts (specs/PROOFS.md).
"""

from __future__ import annotations

from dataclasses import replace

from iohandler.model.state import Fd, GateName, Loop, Record, ScriptName, index_of


def set_fd_handler(
    loop: Loop, fd: Fd, read: ScriptName | None, write: ScriptName | None, gate: GateName | None
) -> Loop:
    """Register, update or (both handlers None) delete the handlers of `fd`.

    R4  delete only flags the record: nothing is unlinked, no wakeup; an unknown fd is a no-op.
    R2  a new record goes to the head of the list (newest first).
    R3  an update keeps the record's position; R5 so does reviving a deleted, unreaped record.
    R6  add and update reset the poll slot: no callback from the poll set already built.
    R7  add and update notify; delete does not.
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
    """The records a `snapshot` shows: not deleted, in list order."""
    return tuple(r for r in loop.records if not r.deleted)


def _put(records: tuple[Record, ...], i: int, record: Record) -> tuple[Record, ...]:
    return (*records[:i], record, *records[i + 1 :])
