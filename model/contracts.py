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

from iohandler.model import aio, bh
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
    Bh,
    Context,
    CtxNode,
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
from iohandler.specs.vector import BhEvent, CtxReadEvent, CtxWriteEvent, Event, GateEvent, ReadEvent, WriteEvent

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
        for fd, (read, write, gate, deleted) in zip(
            ("b", "c"), [FILL_RECORDS[_pick(k, 5)] for k in (k0, k1)[: _pick(n, 3)]], strict=False
        )
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
    assert [(e.fd, e.script) for e in events if isinstance(e, ReadEvent | WriteEvent)] == [
        (fd, s) for fd, s, _ in call.calls
    ]  # R16
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


# ------------------------------------------------------- the context's walks, R42-R49
#
# The BH walk (aio_bh_poll) and the handler walk (aio_dispatch) are loops too. `bh_step` restates
# one iteration of aio_bh_poll's body; the model's `aio.walk_step` is the handler walk's. The
# step lemmas prove the rules at a BH (a node) b with one passed and one ahead of it, or not, over
# every in-bounds flag set and what its callback does (data); the fold lemmas prove `bh.bh_poll`
# and `aio.handler_walk` the folds of their steps, nested walks (a walking counter above 0)
# included.

# What b's BH callback does: nothing; schedule itself; cancel c (ahead); delete c; delete
# itself; create n and schedule it; schedule a (passed); schedule itself idle.
BH_ACTIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("schedule", "b"),),
    (("cancel", "c"),),
    (("delete", "c"),),
    (("delete", "b"),),
    (("new", "n"), ("schedule", "n")),
    (("schedule", "a"),),
    (("idle", "b"),),
)
BH_FLAGS = ((False, False, False), (True, False, False), (True, True, False), (True, False, True), (False, False, True))


def _bh_apply(ctx: Context, body: tuple[tuple[str, str], ...]) -> Context:
    for what, name in body:
        if what != "new" and name not in {k for k, _ in ctx.names.pairs}:
            continue  # a or c absent: nothing
        if what == "new":
            ctx = bh.bh_new(ctx, name, R)
        elif what == "schedule":
            ctx = bh.schedule(ctx, name)[0]
        elif what == "idle":
            ctx = bh.schedule_idle(ctx, name)
        elif what == "cancel":
            ctx = bh.cancel(ctx, name)
        else:
            ctx = bh.delete(ctx, name)
    return ctx


class BhScripts:
    """BH callbacks as data: b's runs BH_ACTIONS[action], the others nothing; every call is
    logged with whether b was scheduled when its callback started."""

    def __init__(self, action: int, actions: tuple[int, ...] = ()) -> None:
        self.action = action
        self.actions = actions or tuple(range(len(BH_ACTIONS)))
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, world: World, script: ScriptName) -> tuple[World, tuple[Event, ...]]:
        self.calls.append((script, bh.find(world.ctx, "b").scheduled if script == W else False))
        if script != W:
            return world, ()
        return world.with_ctx(_bh_apply(world.ctx, BH_ACTIONS[self.actions[_pick(self.action, len(self.actions))]])), ()


def bh_step(world: World, ident: int, call: BhScripts) -> tuple[World, bool, tuple[Event, ...]]:
    """One iteration of aio_bh_poll's walk, at the BH `ident`: its callback runs if the BH is
    scheduled and not deleted, `scheduled` (and idle) cleared first; True if it ran busy."""
    found = [x for x in world.ctx.bhs if x.ident == ident]
    this = found[0]
    if this.deleted or not this.scheduled:
        return world, False, ()
    ctx = replace(
        world.ctx, bhs=tuple(replace(x, scheduled=False, idle=False) if x.ident == ident else x for x in world.ctx.bhs)
    )
    world, out = call(world.with_ctx(ctx), this.script)
    return world, not this.idle, (BhEvent(this.name, this.script), *out)


def bh_fold(world: World, call: BhScripts) -> tuple[World, bool, tuple[Event, ...]]:
    """bh_poll as the fold of `bh_step` over the BHs of the list at walk start, then the free."""
    world = world.with_ctx(replace(world.ctx, walking_bh=world.ctx.walking_bh + 1))
    busy, events = False, tuple[Event, ...]()
    for ident in [x.ident for x in world.ctx.bhs]:
        world, ran, out = bh_step(world, ident, call)
        busy, events = busy or ran, events + out
    ctx = replace(world.ctx, walking_bh=world.ctx.walking_bh - 1)
    return world.with_ctx(bh.free_deleted(ctx) if ctx.walking_bh == 0 else ctx), busy, events


def _bh_world(flags: tuple[tuple[bool, bool, bool], ...], names: tuple[str, ...], walking: int) -> World:
    """BHs named `names`, head first, with (scheduled, idle, deleted) `flags`; b's script is W."""
    bhs = tuple(
        Bh(len(names) - 1 - i, name, W if name == "b" else R, s, i_ and s, d)
        for i, (name, (s, i_, d)) in enumerate(zip(names, flags, strict=True))
    )
    names_table = Table(tuple(sorted((x.name, x.ident) for x in bhs)))
    return World(
        Loop(), Table(), Table(), Context(bhs=bhs, names=names_table, walking_bh=walking, next_ident=len(names))
    )


def lemma_bh_step(f: int, action: int, passed: bool, ahead: bool) -> None:
    """The BH walk at b, with a BH a already passed (nearer the head) and a BH c ahead, or not.
    b's flags from BH_FLAGS, its callback runs BH_ACTIONS[action]; a is unscheduled, c busy."""
    assert 0 <= f <= 4 and 0 <= action <= 7
    f, action, passed, ahead = _pick(f, 5), _pick(action, 8), _flag(passed), _flag(ahead)
    names = ("a",) * passed + ("b",) + ("c",) * ahead
    flags = ((False, False, False),) * passed + (BH_FLAGS[f],) + ((True, False, False),) * ahead
    world = _bh_world(flags, names, 1)
    b = bh.find(world.ctx, "b")
    call = BhScripts(action)
    out, busy, events = bh_step(world, b.ident, call)
    called = b.scheduled and not b.deleted
    assert (call.calls == [(W, False)]) == called and len(call.calls) <= 1  # R43 R44
    assert busy == (called and not b.idle)  # R43
    assert events == ((BhEvent("b", W),) if called else ())  # R43
    body = BH_ACTIONS[action] if called else ()
    if ahead:
        assert bh.find(out.ctx, "c") == replace(
            bh.find(world.ctx, "c"), scheduled=action not in (2, 3) or not called, deleted=action == 3 and called
        )  # R42 R44
    after = bh.find(out.ctx, "b")
    assert after.scheduled == (called and action in (1, 7)) or (not called and b.scheduled)  # R43
    assert after.deleted == (b.deleted or (called and action == 4))  # R44
    kept = [x.ident for x in out.ctx.bhs if x.ident < len(names)]
    assert kept == [x.ident for x in world.ctx.bhs]  # R44: nothing unlinked during a walk
    added = [x.name for x in out.ctx.bhs if x.ident >= len(names)]
    assert added == ["n"] * (called and action == 5)  # R42
    assert out.ctx.bhs[: len(added)] == tuple(x for x in out.ctx.bhs if x.ident >= len(names))  # R42: at the head
    if passed:
        assert bh.find(out.ctx, "a").scheduled == (("schedule", "a") in body)  # R42: a passed BH waits


def lemma_bh_walk_is_fold(n: int, f0: int, f1: int, action: int, walking: int) -> None:
    """The model's bh_poll is the fold of `bh_step` over 1-2 BHs (b, then c behind it) with
    flags from BH_FLAGS, b's callback running BH_ACTIONS[action], inside 0 or 1 outer walk."""
    assert 1 <= n <= 2 and 0 <= f0 <= 4 and 0 <= f1 <= 4 and 0 <= action <= 7 and 0 <= walking <= 1
    n, walking = _pick(n, 3), _pick(walking, 2)
    names = ("b", "c")[:n]
    flags = tuple(BH_FLAGS[_pick(x, 5)] for x in (f0, f1)[:n])
    world = _bh_world(flags, names, walking)
    model_call, fold_call = BhScripts(action), BhScripts(action)
    assert bh.bh_poll(world, model_call) == bh_fold(world, fold_call)  # R43 R44
    assert model_call.calls == fold_call.calls  # R43
    out = bh.bh_poll(world, BhScripts(action))[0]
    assert out.ctx.walking_bh == walking  # R44
    if walking:
        assert not any(x.freed for x in out.ctx.bhs)  # R44: a nested walk frees nothing
    else:
        assert all(x.freed for x in out.ctx.bhs if x.deleted)  # R44: the outermost walk frees


# What node b's read handler does: nothing; delete b; b read-only; delete b and add it again;
# delete c (ahead); update c; delete a (passed); add a new fd.
CtxRegistration = tuple[Fd, ScriptName | None, ScriptName | None]
CTX_ACTIONS: tuple[tuple[CtxRegistration, ...], ...] = (
    (),
    (("b", None, None),),
    (("b", R, None),),
    (("b", None, None), ("b", R, W)),
    (("c", None, None),),
    (("c", None, W),),
    (("a", None, None),),
    ((NEW, R, W),),
)


class CtxScripts:
    """Context handlers as data: read handler R runs CTX_ACTIONS[action], write handler W
    deletes b; every call is logged with the fd of the node it was called for."""

    def __init__(self, action: int, actions: tuple[int, ...] = ()) -> None:
        self.action = action
        self.actions = actions or tuple(range(len(CTX_ACTIONS)))
        self.calls: list[tuple[ScriptName, int]] = []

    def __call__(self, world: World, script: ScriptName) -> tuple[World, tuple[Event, ...]]:
        self.calls.append((script, world.ctx.walking_handlers))
        body = CTX_ACTIONS[self.actions[_pick(self.action, len(self.actions))]] if script == R else (("b", None, None),)
        for fd, read, write in body:
            world = aio.set_fd_handler(world, fd, read, write)
        return world, ()


def _ctx_world(nodes: tuple[CtxNode, ...], walking: int) -> World:
    return World(
        Loop(), Table(), Table(), Context(nodes=nodes, walking_handlers=walking, next_ident=3, dispatching=True)
    )


def lemma_ctx_walk_step(h: int, deleted: bool, v: int, action: int, passed: bool, ahead: bool) -> None:
    """The outermost handler walk at node b, with a node a passed and a node c ahead, or not.
    b's handlers by `h`, its revents REVENTS[v]; its read handler runs CTX_ACTIONS[action], its
    write handler deletes b."""
    assert 0 <= h <= 2 and 0 <= v <= 5 and 0 <= action <= 7
    _ctx_step_holds(h, deleted, v, action, passed, ahead, 0)  # R48 R49


def lemma_ctx_walk_step_nested(h: int, deleted: bool, v: int, action: int, passed: bool, ahead: bool) -> None:
    """The same inside an outer handler walk (a nested aio_poll from a context handler)."""
    assert 0 <= h <= 2 and 0 <= v <= 5 and 0 <= action <= 7
    _ctx_step_holds(h, deleted, v, action, passed, ahead, 1)  # R46 R48 R49


def _ctx_step_holds(h: int, deleted: bool, v: int, action: int, passed: bool, ahead: bool, walking: int) -> None:
    """The step lemmas' body (not a condition itself: its first statement is no assert)."""
    h = _pick(h, 3)
    deleted, passed, ahead = _flag(deleted), _flag(passed), _flag(ahead)
    v = _pick(v, 6) if not deleted else 0  # a deleted node's revents were cleared (R48)
    read, write = HANDLERS[h]
    b = CtxNode(1, "b", read, write, 0 if deleted else REVENTS[v], deleted)
    a, c = CtxNode(0, "a", R, W, IN), CtxNode(2, "c", R, W, IN)
    world = _ctx_world((*[a] * passed, b, *[c] * ahead), walking)
    call = CtxScripts(action)
    out, called, events = aio.walk_step(world, 1, call)
    ready = b.revents & aio.events_of(b)  # R49: masked by the node's events, read before the calls
    read_called = not deleted and read is not None and bool(ready & READ_EVENTS)
    action = _pick(action, 8) if read_called else 0  # what the read handler does matters only if called
    assert (call.calls[:1] == [(R, walking + 1)]) == read_called  # R49: inside the walk
    after = world
    if read_called:
        for fd, rd, wr in CTX_ACTIONS[action]:
            after = aio.set_fd_handler(replace(after, ctx=replace(after.ctx, walking_handlers=walking + 1)), fd, rd, wr)
    b_after = next(n for n in after.ctx.nodes if n.ident == 1)
    write_called = not b_after.deleted and b_after.write is not None and bool(ready & WRITE_EVENTS)
    assert (W in [s for s, _ in call.calls]) == write_called  # R49: the current handler and flag
    assert called == (read_called or write_called)  # R49: every call is progress
    assert [e.fd for e in events if isinstance(e, CtxReadEvent | CtxWriteEvent)] == ["b"] * len(call.calls)  # R49
    assert out.ctx.walking_handlers == walking  # R49
    kept = [n for n in out.ctx.nodes if n.ident == 1]
    gone = b_after.deleted or write_called
    assert (kept == []) == (gone and walking == 0)  # R48 R49: unlinked after its calls, outermost only
    assert all(n.revents == 0 for n in kept)  # R49: revents cleared
    if ahead:
        c_after = [n for n in out.ctx.nodes if n.ident == 2]
        assert c_after == [
            replace(
                c,
                deleted=read_called and action == 4,
                write=W,
                read=None if read_called and action == 5 else R,
                revents=0 if read_called and action == 4 else IN,
            )
        ]  # R48: flagged, not unlinked
    new = [n.fd for n in out.ctx.nodes if n.ident >= 3]
    assert out.ctx.nodes[: len(new)] == tuple(n for n in out.ctx.nodes if n.ident >= 3)  # R48: at the head
    added = {3: ["b"], 7: [NEW], 5: [] if ahead else ["c"]}.get(action, []) if read_called else []
    assert new == added  # R48: a deleted node is not revived; an absent fd gets a new node


CTX_NODES = (
    (R, W, IN | OUT, False),
    (R, None, IN, False),
    (None, W, OUT, False),
    (R, W, IN, True),
)


def ctx_fold(world: World, call: CtxScripts) -> tuple[World, bool, tuple[Event, ...]]:
    """handler_walk as the fold of `aio.walk_step` over the nodes at walk start, then the
    notifier's node (the oldest): a readable notifier is consumed, not progress."""
    progress, events = False, tuple[Event, ...]()
    for ident in [n.ident for n in world.ctx.nodes]:
        world, called, out = aio.walk_step(world, ident, call)
        progress, events = progress or called, events + out
    if world.ctx.notifier_revents & IN:
        world = world.with_loop(Loop(world.loop.records, False))
    return world.with_ctx(replace(world.ctx, notifier_revents=0)), progress, events


CTX_FOLD_ACTIONS = (0, 3, 4, 7)  # of CTX_ACTIONS: the fold lemma's smaller domain (3 deletes b too)


def lemma_ctx_walk_is_fold(n: int, k0: int, k1: int, action: int, walking: int, notifier: bool) -> None:
    """The model's handler walk is the fold of its step over 0-2 nodes of CTX_NODES (b, then c),
    the read handler running CTX_ACTIONS[CTX_FOLD_ACTIONS[action]], inside 0 or 1 outer walk,
    with or without the notifier readable; the notifier never counts as progress."""
    assert 0 <= n <= 2 and 0 <= k0 <= 3 and 0 <= k1 <= 3 and 0 <= action <= 3 and 0 <= walking <= 1
    n, walking, notifier = _pick(n, 3), _pick(walking, 2), _flag(notifier)
    nodes = tuple(
        CtxNode(i, fd, read, write, revents, deleted)
        for i, (fd, (read, write, revents, deleted)) in enumerate(
            zip(("b", "c"), [CTX_NODES[_pick(k, 4)] for k in (k0, k1)[:n]], strict=False)
        )
    )
    world = _ctx_world(nodes, walking)
    world = replace(world, loop=Loop((), notifier), ctx=replace(world.ctx, notifier_revents=IN if notifier else 0))
    model_call, fold_call = CtxScripts(action, CTX_FOLD_ACTIONS), CtxScripts(action, CTX_FOLD_ACTIONS)
    got = aio.handler_walk(world, model_call)
    assert got == ctx_fold(world, fold_call)  # R48 R49
    assert model_call.calls == fold_call.calls  # R49
    assert not got[0].loop.wakeup  # R49: the notifier's node consumes it
    assert got[1] == bool(model_call.calls)  # R49: progress is a handler call, never the notifier
