"""Lemmas CrossHair exhausts: the model's rules over bounded, finite domains.

Style: plain `assert`s, checked with `crosshair check --analysis_kind=asserts`: a lemma's leading
asserts are its preconditions and bound every argument; the later asserts are what it proves. Each
lemma is one CrossHair condition; the rules it states are tagged on its asserts (`# R15 R17`), and
`specs/PROOFS.md` is generated from those tags.

Domain: arguments are bounded ints and bools that pick fds, scripts and gates from the fixed
tuples below, so CrossHair runs out of paths ("Confirmed over all paths"); symbolic strings never
do. The model compares names only for equality, so fixed names lose nothing: a state in bounds is
fixed, up to renaming, by positions and flags. The bounds are in each lemma's first assert.

fill and the walk are loops. `fill_step` and `walk_step` restate one iteration of their bodies as
pure functions; the step lemmas prove the rules for one step at a record (with or without one
passed, one ahead) over all in-bounds handlers, gate, deleted flag, poll slot, revents and the
registrations its gate or callback makes (data); the fold lemmas prove the model's `fill` and
`dispatch` equal the fold of the step over their domain, so the rules are proven of the model.

Run: `crosshair check --analysis_kind=asserts iohandler.model.contracts`.
"""

from __future__ import annotations

from dataclasses import replace

from iohandler.model.dispatch import dispatch
from iohandler.model.env import drain, poll, raise_signal, readiness
from iohandler.model.fill import Gate, fill
from iohandler.model.registry import live_records, set_fd_handler
from iohandler.model.state import (
    ERR,
    HUP,
    IN,
    OUT,
    READ_EVENTS,
    WRITE_EVENTS,
    Fd,
    FdState,
    GateName,
    Loop,
    PollSet,
    Record,
    ScriptName,
    Table,
    World,
    fds_unique,
    index_of,
)
from iohandler.specs.vector import Event, GateEvent, ReadEvent, WriteEvent

FDS: tuple[Fd, ...] = ("a", "b", "c")
NEW: Fd = "n"  # an fd with no record
R: ScriptName = "r"
W: ScriptName = "w"
OPEN: GateName = "g"
SHUT: GateName = "h"
GATES = Table((("g", True), ("h", False)))
HANDLERS: tuple[tuple[ScriptName | None, ScriptName | None], ...] = ((R, None), (None, W), (R, W))
KINDS = ("socket", "pipe-read", "pipe-write")

Registration = tuple[Fd, ScriptName | None, ScriptName | None, GateName | None]
Call = tuple[Fd, ScriptName, bool]  # a handler called for fd; was its record flagged deleted then?


def _pick(x: int, bound: int) -> int:
    """`x` (0 <= x < bound) as a plain int: one path per value, everything after it concrete.
    CrossHair otherwise carries a symbolic int into bit tests and indexing, whose paths it does
    not exhaust."""
    for i in range(bound):
        if x == i:
            return i
    raise AssertionError(f"{x} out of range({bound})")


def _flag(x: bool) -> bool:
    """`x` as a plain bool, one path each."""
    return True if x else False  # noqa: SIM210


def _records(n: int, deleted_at: int = -1) -> tuple[Record, ...]:
    """Records a, b, c (head first), each with both handlers, a gate and its own poll slot."""
    return tuple(Record(FDS[i], R, W, OPEN, i, i == deleted_at) for i in range(n))


def _apply(loop: Loop, body: tuple[Registration, ...]) -> Loop:
    for fd, read, write, gate in body:
        loop = set_fd_handler(loop, fd, read, write, gate)
    return loop


# ---------------------------------------------------------------- registration, R1-R7


def lemma_register_new(n: int, k: int, wakeup: bool) -> None:
    """A handler for an fd with no record, over a list of 0-3 records."""
    assert 0 <= n <= 3 and 0 <= k <= 2
    loop = Loop(_records(n), wakeup)
    read, write = HANDLERS[k]
    out = set_fd_handler(loop, NEW, read, write, OPEN)
    assert fds_unique(out.records)  # R1
    assert out.records[0] == Record(NEW, read, write, OPEN, -1, False)  # R2 R6
    assert out.records[1:] == loop.records  # R2
    assert out.wakeup  # R7


def lemma_register_existing(n: int, t: int, deleted: bool, k: int) -> None:
    """A handler for the fd of record `t` (live, or deleted and not yet reaped)."""
    assert 1 <= n <= 3 and 0 <= t < n and 0 <= k <= 2
    loop = Loop(_records(n, t if deleted else -1))
    read, write = HANDLERS[k]
    out = set_fd_handler(loop, FDS[t], read, write, None)
    assert fds_unique(out.records) and len(out.records) == n  # R1
    assert out.records[t] == Record(FDS[t], read, write, None, -1, False)  # R3 R5 R6
    assert all(out.records[i] == loop.records[i] for i in range(n) if i != t)  # R3 R5
    assert out.wakeup  # R7


def lemma_register_delete(n: int, t: int, deleted: bool, wakeup: bool) -> None:
    """Both handlers None for fd `t` (t >= n: an fd with no record)."""
    assert 0 <= n <= 3 and 0 <= t <= 3
    loop = Loop(_records(n, t if deleted else -1), wakeup)
    fd = (*FDS, NEW)[t]
    out = set_fd_handler(loop, fd, None, None, SHUT)
    if t >= n:
        assert out == loop  # R4
    else:
        assert out.records == tuple(replace(r, deleted=True) if i == t else r for i, r in enumerate(loop.records))  # R4
    assert out.wakeup == wakeup  # R7


def lemma_live_records(n: int, mask: int) -> None:
    """The snapshot shows the records not flagged deleted, in list order."""
    assert 0 <= n <= 3 and 0 <= mask <= 7
    loop = Loop(tuple(Record(FDS[i], R, None, None, -1, bool(mask >> i & 1)) for i in range(n)))
    assert live_records(loop) == tuple(r for r in loop.records if not r.deleted)  # R4 R21


def lemma_table_set(mask: int, key: int, value: bool) -> None:
    """The tables of fds and gates: sorted, unique keys; `set` answers the value set."""
    assert 0 <= mask <= 7 and 0 <= key <= 3
    table = Table(tuple((FDS[i], False) for i in range(3) if mask >> i & 1))
    name = (*FDS, NEW)[key]
    out = table.set(name, value)
    keys = [k for k, _ in out.pairs]
    assert out[name] is value and keys == sorted(set(keys))
    assert all(out[k] == table[k] for k, _ in table.pairs if k != name)


# ---------------------------------------------------------------- the environment, R11-R13


def lemma_readiness(kind: int, pending: bool, hung_up: bool) -> None:
    """The readiness table of VECTORS.md for each fd kind."""
    assert 0 <= kind <= 2
    ready = readiness(FdState(KINDS[kind], pending, hung_up))
    assert bool(ready & OUT) == (kind != 1)  # R12
    assert bool(ready & IN) == (kind != 2 and (pending or (kind == 0 and hung_up)))  # R12
    assert bool(ready & HUP) == (kind != 2 and hung_up)  # R12
    assert bool(ready & ERR) == (kind == 2 and hung_up)  # R12


def lemma_poll(kind: int, pending: bool, hung_up: bool, asked: int, wakeup: bool) -> None:
    """One poll-set entry (and the wakeup notifier): what poll reports and returns."""
    assert 0 <= kind <= 2 and 0 <= asked <= 2
    events = (READ_EVENTS, WRITE_EVENTS, READ_EVENTS | WRITE_EVENTS)[asked]
    state = FdState(KINDS[kind], pending, hung_up)
    revents, ret = poll(Table((("a", state),)), (("a", events),), wakeup)
    assert len(revents) == 1
    assert revents[0] == readiness(state) & (events | HUP | ERR)  # R11
    assert ret == (1 if revents[0] else 0) + (1 if wakeup else 0)  # R13


def lemma_signal_fd(pending: bool, raises: int, drained: bool) -> None:
    """A `signal` fd (format v3): IN while its signal is pending, nothing else, ever; raises
    coalesce into one pending signal; a drain reads it."""
    assert 0 <= raises <= 2
    state = FdState("signal", pending)
    for _ in range(_pick(raises, 3)):
        state = raise_signal("x", state)
    if drained:
        state = drain("x", state)
    pending_now = (pending or raises > 0) and not drained
    assert readiness(state) == (IN if pending_now else 0)  # R60
    assert state == FdState("signal", pending_now)  # R61


# ---------------------------------------------------------------- fill, R8-R10, R22


def scripted_gate(action: int) -> Gate:
    """Gate g runs FILL_ACTIONS[action] (registrations, data) when consulted; every gate then
    answers its current value. (The action is picked at the call: no choice before it matters.)"""

    def consult(world: World, fd: Fd, gate: GateName) -> tuple[World, bool, tuple[Event, ...]]:
        if gate == OPEN:
            world = world.with_loop(_apply(world.loop, FILL_ACTIONS[_pick(action, len(FILL_ACTIONS))]))
        return world, world.gates[gate], ()

    return consult


def fill_step(world: World, fd: Fd, consult: Gate, polled: PollSet) -> tuple[World, PollSet, tuple[Event, ...]]:
    """One iteration of fill's walk, at the record of `fd`."""
    record = world.loop.records[index_of(world.loop.records, fd)]
    if record.deleted:
        return world, polled, ()
    asked = 0
    events: list[Event] = []
    if record.read is not None:
        is_open = True
        if record.gate is not None:
            events.append(GateEvent(fd, record.gate))
            world, is_open, out = consult(world, fd, record.gate)
            events.extend(out)
            record = world.loop.records[index_of(world.loop.records, fd)]
        if is_open:
            asked |= READ_EVENTS
    if record.write is not None:
        asked |= WRITE_EVENTS
    slot = len(polled) if asked else -1
    if asked:
        polled = (*polled, (fd, asked))
    records = tuple(replace(record, poll_index=slot) if r.fd == fd else r for r in world.loop.records)
    return world.with_loop(replace(world.loop, records=records)), polled, tuple(events)


def fill_fold(world: World, consult: Gate) -> tuple[World, PollSet, tuple[Event, ...]]:
    """fill as the fold of `fill_step` over the records present when it starts."""
    polled: PollSet = ()
    events: tuple[Event, ...] = ()
    for fd in [r.fd for r in world.loop.records]:
        world, polled, out = fill_step(world, fd, consult, polled)
        events += out
    return world, polled, events


# What a gate does when consulted: registrations on its own record "b", on "c" (not yet filled), a
# new fd.
FILL_ACTIONS: tuple[tuple[Registration, ...], ...] = (
    (),
    (("b", None, None, None),),
    (("b", R, W, OPEN),),
    (("b", R, None, OPEN),),
    (("c", None, None, None),),
    ((NEW, R, W, None),),
)


def lemma_fill_step(h: int, deleted: bool, is_open: bool, action: int, passed: bool, ahead: bool) -> None:
    """fill at record b, with a record a already filled and a record c not yet, or not (b at the
    head, the tail, alone); b's handlers and gate by `h`, its gate runs FILL_ACTIONS[action]."""
    assert 0 <= h <= 7 and 0 <= action <= 5
    h, deleted, is_open = _pick(h, 8), _flag(deleted), _flag(is_open)
    passed, ahead = _flag(passed), _flag(ahead)
    b = Record("b", R if h & 1 else None, W if h & 2 else None, OPEN if h & 4 else None, 7, deleted)
    a = Record("a", R, None, None, 0)
    c = Record("c", R, None, None, 5)
    world = World(Loop((*[a] * passed, b, *[c] * ahead)), Table(), Table((("g", is_open),)))
    before: PollSet = (("a", READ_EVENTS),) * passed
    out, polled, events = fill_step(world, "b", scripted_gate(action), before)
    consulted = not deleted and b.read is not None and b.gate is not None
    assert events == ((GateEvent("b", OPEN),) if consulted else ())  # R9
    added = consulted and _pick(action, 6) == 5
    assert [r.fd for r in out.loop.records] == [NEW] * added + ["a"] * passed + ["b"] + ["c"] * ahead  # R22
    assert out.loop.records[added : added + passed] == (a,) * passed  # R22
    if deleted:
        assert out == world and polled == before  # R8
        return
    left = _apply(world.loop, FILL_ACTIONS[_pick(action, 6)]).records if consulted else world.loop.records
    gate_left = left[index_of(left, "b")]  # b as its gate left it
    asked = (READ_EVENTS if b.read is not None and (b.gate is None or is_open) else 0) | (
        WRITE_EVENTS if gate_left.write is not None else 0
    )  # R8 R22: the write handler as the gate left it
    assert polled == ((*before, ("b", asked)) if asked else before)  # R8 R10
    now = out.loop.records[index_of(out.loop.records, "b")]
    assert now == replace(gate_left, poll_index=len(before) if asked else -1)  # R8 R10 R22
    assert not ahead or out.loop.records[-1].poll_index == 5  # R22: c not filled yet


FILL_RECORDS = (
    (R, None, None, False),
    (None, W, None, False),
    (R, None, OPEN, False),
    (R, None, SHUT, False),
    (R, W, OPEN, True),
)


def lemma_fill_is_fold(n: int, k0: int, k1: int, action: int) -> None:
    """The model's fill is the fold of `fill_step`, for 0-2 records of FILL_RECORDS and an open
    gate running any of FILL_ACTIONS."""
    assert 0 <= n <= 2 and 0 <= k0 <= 4 and 0 <= k1 <= 4 and 0 <= action <= 5
    records = tuple(
        Record(fd, read, write, gate, -1, deleted)
        for fd, (read, write, gate, deleted) in zip(("b", "c"), [FILL_RECORDS[_pick(k, 5)] for k in (k0, k1)[: _pick(n, 3)]], strict=False)
    )
    world = World(Loop(records), Table(), GATES)
    consult = scripted_gate(action)
    assert fill(world, consult) == fill_fold(world, consult)  # R8 R9 R10 R22


# ---------------------------------------------------------------- the walk, R14-R19


class Scripts:
    """Handlers as data: read handler r runs WALK_ACTIONS[action] (picked at the call), write
    handler w runs `write`; every call is logged."""

    def __init__(self, action: int, write: tuple[Registration, ...], actions: tuple[int, ...] = ()) -> None:
        self.action = action
        self.actions = actions or tuple(range(len(WALK_ACTIONS)))  # the actions `action` indexes
        self.write = write
        self.calls: list[Call] = []

    def __call__(self, world: World, fd: Fd, name: ScriptName) -> tuple[World, tuple[Event, ...]]:
        self.calls.append((fd, name, world.loop.records[index_of(world.loop.records, fd)].deleted))
        body = WALK_ACTIONS[self.actions[_pick(self.action, len(self.actions))]] if name == R else self.write
        return world.with_loop(_apply(world.loop, body)), ()


def walk_step(world: World, fd: Fd, revents: tuple[int, ...], call: Scripts) -> tuple[World, tuple[Event, ...]]:
    """One iteration of the dispatch walk, at the record of `fd`."""
    events: list[Event] = []
    record = world.loop.records[index_of(world.loop.records, fd)]
    ready = revents[record.poll_index] if not record.deleted and record.poll_index != -1 else 0
    if not record.deleted and record.read is not None and ready & READ_EVENTS:
        events.append(ReadEvent(fd, record.read))
        world, out = call(world, fd, record.read)
        events.extend(out)
    record = world.loop.records[index_of(world.loop.records, fd)]
    if not record.deleted and record.write is not None and ready & WRITE_EVENTS:
        events.append(WriteEvent(fd, record.write))
        world, out = call(world, fd, record.write)
        events.extend(out)
    if world.loop.records[index_of(world.loop.records, fd)].deleted:
        world = world.with_loop(replace(world.loop, records=tuple(r for r in world.loop.records if r.fd != fd)))
    return world, tuple(events)


def walk_fold(world: World, revents: tuple[int, ...], ret: int, call: Scripts) -> tuple[World, tuple[Event, ...]]:
    """dispatch as the fold of `walk_step` over the records present when the walk starts."""
    if ret <= 0:
        return world, ()
    events: tuple[Event, ...] = ()
    for fd in [r.fd for r in world.loop.records]:
        world, out = walk_step(world, fd, revents, call)
        events += out
    return world, events


# What the read handler of b does: registrations on b itself, on a (passed), on c (ahead), a new fd.
WALK_ACTIONS: tuple[tuple[Registration, ...], ...] = (
    (),
    (("b", None, None, None),),
    (("b", R, W, None),),
    (("b", R, None, None),),
    (("a", None, None, None),),
    (("c", None, None, None),),
    ((NEW, R, W, None),),
)
REVENTS = (0, IN, OUT, HUP, ERR, IN | OUT)
FOLD_ACTIONS = (0, 1, 2, 5, 6)  # of WALK_ACTIONS: the fold lemma's smaller domain
FOLD_REVENTS = (IN, OUT, IN | OUT)


def lemma_walk_step(h: int, deleted: bool, slotted: bool, v: int, action: int, passed: bool, ahead: bool) -> None:
    """The walk at record b, with a record a already passed and a record c ahead of it, or not (b
    at the head, the tail, alone). b's handlers by `h`, its revents REVENTS[v]; its read handler
    runs WALK_ACTIONS[action] (on a or c: nothing if absent), its write handler deletes b."""
    assert 0 <= h <= 2 and 0 <= v <= 5 and 0 <= action <= 6
    h, deleted, slotted = _pick(h, 3), _flag(deleted), _flag(slotted)
    passed, ahead = _flag(passed), _flag(ahead)
    v = _pick(v, 6) if slotted and not deleted else 0
    read, write = HANDLERS[h]
    b = Record("b", read, write, None, 0 if slotted else -1, deleted)
    a = Record("a", R, W, None, 1)
    c = Record("c", R, W, None, 2)
    world = World(Loop((*[a] * passed, b, *[c] * ahead)), Table(), Table())
    call = Scripts(action, (("b", None, None, None),))
    out, events = walk_step(world, "b", (REVENTS[v], IN, IN), call)
    ready = REVENTS[v] if slotted and not deleted else 0  # R18: read once, before the read handler
    assert all(not was_deleted for _, _, was_deleted in call.calls)  # R17
    read_called = not deleted and read is not None and bool(ready & READ_EVENTS)
    assert (call.calls[:1] == [("b", R, False)]) == read_called  # R16
    assert any(name == R for _, name, _ in call.calls) == read_called  # R16 R17
    after = _apply(world.loop, WALK_ACTIONS[_pick(action, 7)]).records if read_called else world.loop.records
    after_read = after[index_of(after, "b")]
    write_called = not after_read.deleted and after_read.write is not None and bool(ready & WRITE_EVENTS)
    assert any(name == W for _, name, _ in call.calls) == write_called  # R16 R17 R18
    added = read_called and _pick(action, 7) == 6
    reaped = deleted or (read_called and _pick(action, 7) == 1) or write_called
    fds = [NEW] * added + ["a"] * passed + ["b"] * (not reaped) + ["c"] * ahead
    assert [r.fd for r in out.loop.records] == fds  # R15 R19
    if ahead:
        assert out.loop.records[-1] == replace(c, deleted=read_called and _pick(action, 7) == 5)  # R15
    assert fds_unique(out.loop.records)  # R1
    assert [(e.fd, e.script) for e in events if isinstance(e, ReadEvent | WriteEvent)] == [(fd, s) for fd, s, _ in call.calls]  # R16
    assert len(events) == len(call.calls)  # R15 R16


WALK_RECORDS = (
    (R, W, True, False),
    (R, None, True, False),
    (None, W, False, False),
    (R, W, True, True),
)


def lemma_walk_is_fold(n: int, k0: int, k1: int, v: int, action: int) -> None:
    """The model's dispatch is the fold of `walk_step`, for 0-2 records of WALK_RECORDS (slotted
    ones at their position), the head's revents from FOLD_REVENTS, and a read handler running
    WALK_ACTIONS[FOLD_ACTIONS[action]]."""
    assert 0 <= n <= 2 and 0 <= k0 <= 3 and 0 <= k1 <= 3 and 0 <= v <= 2 and 0 <= action <= 4
    records = tuple(
        Record(fd, read, write, None, i if slotted else -1, deleted)
        for i, (fd, (read, write, slotted, deleted)) in enumerate(
            zip(("b", "c"), [WALK_RECORDS[_pick(k, 4)] for k in (k0, k1)[: _pick(n, 3)]], strict=False)
        )
    )
    world = World(Loop(records), Table(), Table())
    revents = (FOLD_REVENTS[_pick(v, 3)] if any(r.poll_index == 0 for r in records) else 0, IN | OUT)
    model_call, fold_call = Scripts(action, (), FOLD_ACTIONS), Scripts(action, (), FOLD_ACTIONS)
    assert dispatch(world, revents, 1, model_call) == walk_fold(world, revents, 1, fold_call)  # R15 R16 R17 R18 R19
    assert model_call.calls == fold_call.calls  # R16 R17


def lemma_no_walk(n: int, deleted_at: int, ret: int) -> None:
    """poll returned 0 (timeout) or -1 (EINTR): no handler runs, nothing is reaped."""
    assert 0 <= n <= 3 and -1 <= deleted_at <= 2 and -1 <= ret <= 0
    world = World(Loop(_records(n, deleted_at)), Table(), Table())
    call = Scripts(0, ())
    assert dispatch(world, (IN | OUT,) * 3, ret, call) == (world, ())  # R14
    assert call.calls == []  # R14
