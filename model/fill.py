"""`qemu_iohandler_fill`: build the poll set, consulting gates. Rules R8-R10."""

from __future__ import annotations

from dataclasses import replace

from model.state import READ_EVENTS, WRITE_EVENTS, Fd, GateName, Gates, Loop, PollSet, Record


def fill(loop: Loop, gates: Gates) -> tuple[Loop, PollSet, tuple[tuple[Fd, GateName], ...]]:
    """Walk the list head to tail; give each live record its poll slot (or -1).

    R8  a read handler whose gate is open (or absent) asks IN|HUP|ERR; a write handler asks
        OUT|ERR; a record that asks nothing is not polled; deleted records are skipped.
    R9  a gate is consulted here and only here, once per iteration, for live records with a
        read handler, in list order. Returns the consultations as (fd, gate), for the trace.
    R10 a closed gate with no write handler leaves the fd out of the poll set entirely.

    pre: len(loop.records) <= 3
    pre: len({r.fd for r in loop.records}) == len(loop.records)
    pre: all(r.gate is None or r.gate in [g for g, _ in gates.pairs] for r in loop.records)
    post: [r.fd for r in __return__[0].records] == [r.fd for r in loop.records]
    post: [fd for fd, _ in __return__[1]] == [r.fd for r in __return__[0].records if r.poll_index != -1 and not r.deleted]
    post: all(__return__[1][r.poll_index][0] == r.fd for r in __return__[0].records if r.poll_index != -1 and not r.deleted)
    post: all(events != 0 for _, events in __return__[1])
    post: [fd for fd, _ in __return__[2]] == [r.fd for r in loop.records if not r.deleted and r.read is not None and r.gate is not None]
    post: __return__[0].wakeup == loop.wakeup
    """
    records: list[Record] = []
    poll_set: list[tuple[Fd, int]] = []
    consulted: list[tuple[Fd, GateName]] = []
    for record in loop.records:
        if record.deleted:
            records.append(record)
            continue
        events = 0
        if record.read is not None:
            if record.gate is not None:
                consulted.append((record.fd, record.gate))
            if record.gate is None or gates[record.gate]:
                events |= READ_EVENTS
        if record.write is not None:
            events |= WRITE_EVENTS
        if events:
            records.append(replace(record, poll_index=len(poll_set)))
            poll_set.append((record.fd, events))
        else:
            records.append(replace(record, poll_index=-1))
    return replace(loop, records=tuple(records)), tuple(poll_set), tuple(consulted)
