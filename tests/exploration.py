"""The test suite's closures: the search of specs/exhaustive.py, every step checked.

The search itself (scopes, state encoding, symmetry, breadth-first closure over one or two
processes) is specs/exhaustive.py's, the one `iohandler conform --exhaustive` walks; what is the
tests' own is here:

* the invariants: named functions tagged with their rule (`INVARIANTS`: rule -> what is
  checked); a violation raises `Violation` whose message starts with the rule id;
* the checked step (`step_checked`): one model step watched by a `Checker` (the model's
  `Observer`) and checked by the invariants, the step function the search is given (`explore`,
  `successors`);
* which scopes the suite closes (`scopes`) and their lockstep configuration (`lockstep_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import iohandler.model.iterate as model_iterate
from iohandler.model import bh as model_bh
from iohandler.model import env as model_env
from iohandler.model.state import (
    ERR,
    HUP,
    READ_EVENTS,
    WRITE_EVENTS,
    FdState,
    Loop,
    PollSet,
    Record,
    World,
    flag_mask,
)
from iohandler.specs import exhaustive
from iohandler.specs.exhaustive import Closure, Edge, RecordT, Scope, State
from iohandler.specs.scenarios import Config
from iohandler.specs.vector import (
    Action,
    BhCancel,
    BhDelete,
    BhEvent,
    BhSchedule,
    BhScheduleIdle,
    CtxPoll,
    CtxReadEvent,
    CtxSet,
    CtxWriteEvent,
    Drain,
    Event,
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
    WriteEvent,
)

# ------------------------------------------------------------------------------ invariants


class Violation(AssertionError):
    pass


INVARIANTS: dict[str, str] = {}
_F = TypeVar("_F", bound=Callable[..., None])


def invariant(rule: str, text: str) -> Callable[[_F], _F]:
    """Tag a check with its rule; INVARIANTS lists what the closure checked, for the stats."""

    def tag(fn: _F) -> _F:
        INVARIANTS[rule] = f"{INVARIANTS[rule]}; {text}" if rule in INVARIANTS else text
        return fn

    return tag


def fail(rule: str, message: str) -> Violation:
    return Violation(f"{rule}: {message}")


def _fds(records: Iterable[Record]) -> list[str]:
    return [r.fd for r in records]


def _rec(w: World, fd: str) -> Record | None:
    return next((r for r in w.loop.records if r.fd == fd), None)


@invariant("R1", "at most one record per fd, deleted ones included (every state)")
def check_unique(w: World) -> None:
    if len(set(_fds(w.loop.records))) != len(w.loop.records):
        raise fail("R1", f"two records for one fd: {_fds(w.loop.records)}")


@invariant("R2", "a registration of an fd without a record puts it at the head, the rest unchanged")
@invariant("R3", "an update keeps the record's position and the others unchanged")
@invariant("R5", "registering a deleted, unreaped record revives it in place")
@invariant("R6", "a registration leaves the record with poll slot -1")
@invariant("R4", "a delete only flags the record: same list, same order, nothing unlinked")
@invariant("R7", "add/update leave the wakeup pending; a delete leaves it as it was")
def check_set(before: Loop, a: Set, after: Loop) -> None:
    old = before.records
    i = next((k for k, r in enumerate(old) if r.fd == a.fd), -1)
    fresh = Record(a.fd, a.read, a.write, a.gate)
    if a.read is None and a.write is None:
        want = old if i == -1 else (*old[:i], Record(*_fields(old[i])[:5], True), *old[i + 1 :])
        if after.records != want:
            raise fail("R4", f"delete of {a.fd}: {old} became {after.records}")
        if after.wakeup != before.wakeup:
            raise fail("R7", f"delete of {a.fd} changed the wakeup")
        return
    if not after.wakeup:
        raise fail("R7", f"registration of {a.fd} left no wakeup pending")
    if i == -1:
        if after.records[1:] != old or after.records[0].fd != a.fd:
            raise fail("R2", f"add of {a.fd}: {_fds(old)} became {_fds(after.records)}")
        if after.records[0] != fresh:
            rule = "R6" if after.records[0].poll_index != -1 else "R2"
            raise fail(rule, f"new record {after.records[0]}, not {fresh}")
        return
    j = next((k for k, r in enumerate(after.records) if r.fd == a.fd), -1)
    rule = "R5" if old[i].deleted else "R3"
    if j != i or len(after.records) != len(old):
        raise fail(rule, f"registration of {a.fd} moved it: {_fds(old)} became {_fds(after.records)}")
    if after.records[i] != fresh:
        got = after.records[i]
        raise fail("R6" if got.poll_index != -1 else rule, f"registration of {a.fd} left {got}, not {fresh}")
    if (*after.records[:i], *after.records[i + 1 :]) != (*old[:i], *old[i + 1 :]):
        raise fail(rule, f"registration of {a.fd} changed other records")


def _fields(r: Record) -> RecordT:
    return (r.fd, r.read, r.write, r.gate, r.poll_index, r.deleted)


@invariant("R12", "send/drain/hangup change only that fd's pending/hung-up state; the loop is untouched")
@invariant("R60", "raise makes only that signal fd's signal pending; the loop is untouched")
@invariant("R13", "notify makes the notifier readable and changes nothing else")
@invariant("R21", "a snapshot changes nothing and shows the live records in list order")
def check_other(before: World, a: Action, after: World, events: tuple[Event, ...]) -> None:
    if isinstance(a, Notify):
        if after != replace(before, loop=Loop(before.loop.records, True)):
            raise fail("R13", "notify changed more than the wakeup")
        return
    if isinstance(a, Snapshot):
        rows = tuple((r.fd, r.read, r.write, r.gate) for r in before.loop.records if not r.deleted)
        if after != before or events != (HandlersEvent(rows),):
            raise fail("R21", f"snapshot gave {events}, want the live records {rows}")
        return
    if isinstance(a, SetGate):
        if after != replace(before, gates=before.gates.set(a.gate, a.value)):
            raise fail("R9", "setting a gate changed more than its value")
        return
    assert isinstance(a, Send | Drain | Hangup | Raise)
    old = before.env[a.fd]
    new = {
        Send: FdState(old.kind, True, old.hung_up),
        Drain: FdState(old.kind, False, old.hung_up),
        Hangup: FdState(old.kind, old.pending, True),
        Raise: FdState(old.kind, True, old.hung_up),
    }[type(a)]
    if (after.loop, after.gates, after.ctx) != (before.loop, before.gates, before.ctx) or after.env != before.env.set(
        a.fd, new
    ):
        raise fail("R60" if isinstance(a, Raise) else "R12", f"{a} changed more than {a.fd}'s state")


# ----------------------------------------------------------- the context (format v3, R42 on)


@invariant("R44", "between steps no walk is in progress: both walking counters are 0")
@invariant("R46", "between steps the context is not dispatching (aio_poll restores the flag)")
@invariant("R49", "between steps no node holds revents and the notifier's node none either")
def check_context_rests(w: World) -> None:
    c = w.ctx
    if c.walking_bh or c.walking_handlers:
        raise fail("R44", f"walking counters left at {c.walking_bh}, {c.walking_handlers}")
    if c.dispatching:
        raise fail("R46", "the context is still dispatching after the step")
    if c.notifier_revents or any(n.revents for n in c.nodes):
        raise fail("R49", "revents left in the context's nodes after the step")


@invariant(
    "R42",
    "schedule of a scheduled BH changes nothing; else it marks it busy and notifies; "
    "schedule_idle marks it idle, never notifies; cancel unschedules only",
)
@invariant("R44", "delete unschedules and flags; nothing is unlinked outside a walk")
def check_bh_action(before: World, a: BhSchedule | BhScheduleIdle | BhCancel | BhDelete, after: World) -> None:
    bh = model_bh.find(before.ctx, a.bh)
    others = [x for x in before.ctx.bhs if x.ident != bh.ident]
    if [x for x in after.ctx.bhs if x.ident != bh.ident] != others or len(after.ctx.bhs) != len(before.ctx.bhs):
        raise fail("R44" if isinstance(a, BhDelete) else "R42", f"{a} changed other BHs or the list")
    got = model_bh.find(after.ctx, a.bh)
    rest = (after.loop.records, after.env, after.gates) == (before.loop.records, before.env, before.gates)
    if isinstance(a, BhSchedule | BhScheduleIdle) and bh.scheduled:
        if after != before:
            raise fail("R42", f"{a} of a scheduled BH changed something")
        return
    if isinstance(a, BhSchedule):
        want, wakeup = replace(bh, scheduled=True, idle=False), True
    elif isinstance(a, BhScheduleIdle):
        want, wakeup = replace(bh, scheduled=True, idle=True), before.loop.wakeup
    elif isinstance(a, BhCancel):
        want, wakeup = replace(bh, scheduled=False), before.loop.wakeup
    else:
        want, wakeup = replace(bh, scheduled=False, deleted=True), before.loop.wakeup
    if got != want or not rest:
        raise fail("R44" if isinstance(a, BhDelete) else "R42", f"{a}: {bh} became {got}, not {want}")
    if after.loop.wakeup != wakeup:
        raise fail("R45", f"{a} left the notifier {'readable' if after.loop.wakeup else 'clear'}")


@invariant(
    "R48",
    "a context delete outside a walk unlinks the fd's live node at once; an add goes to the "
    "head, an update keeps the position; every call notifies",
)
def check_ctx_set(before: World, a: CtxSet, after: World) -> None:
    old = before.ctx.nodes
    live = [n for n in old if n.fd == a.fd and not n.deleted]
    new = after.ctx.nodes
    if not after.loop.wakeup:
        raise fail("R45", f"{a} from a step left no wakeup pending")
    if a.read is None and a.write is None:
        want = tuple(n for n in old if not (n.fd == a.fd and not n.deleted))
        if new != want:
            raise fail("R48", f"delete of {a.fd} outside a walk: {old} became {new}")
        return
    if live:
        i = old.index(live[0])
        if new != (*old[:i], replace(live[0], read=a.read, write=a.write), *old[i + 1 :]):
            raise fail("R48", f"update of {a.fd} moved or changed more: {old} became {new}")
    elif new[1:] != old or (new[0].fd, new[0].read, new[0].write, new[0].deleted) != (a.fd, a.read, a.write, False):
        raise fail("R48", f"add of {a.fd}: {old} became {new}, not a new node at the head")


@invariant("R45", "after a ctx-poll step the notifier is clear: aio_poll reads it, and a notify inside is skipped")
@invariant("R46", "a ctx-poll step runs callbacks only for the context: no fd handler is called")
def check_ctx_poll(before: World, after: World, events: tuple[Event, ...]) -> None:
    if after.loop.wakeup:
        raise fail("R45", "the notifier is readable after aio_poll")
    if any(isinstance(e, ReadEvent | WriteEvent | PollEvent | ReadyEvent) for e in events):
        raise fail("R46", "aio_poll ran the main loop's phases")


@invariant("R47", "in an iteration the context's events come after ready and before the fd-handler walk's")
def check_context_order(events: tuple[Event, ...]) -> None:
    phased = ReadyEvent | BhEvent | CtxReadEvent | CtxWriteEvent | ReadEvent | WriteEvent
    kinds = [
        0 if isinstance(e, ReadyEvent) else 1 if isinstance(e, BhEvent | CtxReadEvent | CtxWriteEvent) else 2
        for e in events
        if isinstance(e, phased)
    ]
    # Events nested in a main handler's ctx-poll follow that handler's `read`/`write`: only the
    # outermost ones are ordered, i.e. the run of context events straight after `ready`.
    first_main = next((i for i, k in enumerate(kinds) if k == 2), len(kinds))
    if kinds[:1] != [0] or any(k == 0 for k in kinds[1:]) or any(k != 1 for k in kinds[1:first_main]):
        raise fail("R47", f"events out of phase order: {kinds}")


def expected_fill(w: World) -> tuple[PollSet, list[tuple[str, str]]]:
    """R8-R10 for gates that only answer: the poll set and the consultations, from the state."""
    poll_set: list[tuple[str, int]] = []
    consulted: list[tuple[str, str]] = []
    for r in w.loop.records:
        if r.deleted:
            continue
        asked = 0
        if r.read is not None:
            if r.gate is not None:
                consulted.append((r.fd, r.gate))
            if r.gate is None or w.gates[r.gate]:
                asked |= READ_EVENTS
        if r.write is not None:
            asked |= WRITE_EVENTS
        if asked:
            poll_set.append((r.fd, asked))
    return tuple(poll_set), consulted


def _strip(records: Iterable[Record]) -> tuple[tuple[object, ...], ...]:
    return tuple((r.fd, r.read, r.write, r.gate, r.deleted) for r in records)


@invariant("R8", "each entry asks IN|HUP|ERR for an open-gated reader, OUT|ERR for a writer; slots match entries")
@invariant("R9", "gates are consulted at fill only, once per live gated reader, in list order")
@invariant("R10", "a closed-gated record with no writer is not polled")
@invariant("R22", "fill visits only the records present when it started: one added by a gate is not polled")
def check_fill(before: World, after: World, poll_set: PollSet, events: Sequence[Event]) -> None:
    start = _fds(before.loop.records)
    gates = [(e.fd, e.gate) for e in events if isinstance(e, GateEvent)]
    quiet = (
        _strip(after.loop.records) == _strip(before.loop.records)
        and after.gates == before.gates
        and after.env == before.env
    )
    if quiet:  # no gate script changed anything: the poll set is a function of the state
        want, consulted = expected_fill(before)
        if poll_set != want:
            extra = {f for f, _ in poll_set} - {f for f, _ in want}
            closed = {
                r.fd
                for r in before.loop.records
                if not r.deleted
                and r.write is None
                and r.gate is not None
                and r.read is not None
                and not before.gates[r.gate]
            }
            rule = "R10" if extra and extra <= closed else "R8"
            raise fail(rule, f"poll set {poll_set}, want {want}")
        if gates != consulted:
            raise fail("R9", f"gates consulted {gates}, want {consulted}")
    for fd, mask in poll_set:
        if mask not in (READ_EVENTS, WRITE_EVENTS, READ_EVENTS | WRITE_EVENTS):
            raise fail("R8", f"{fd} polled for {mask:#x}")
        if fd not in start:
            raise fail("R22", f"{fd}, added during fill, is polled")
    polled = [fd for fd, _ in poll_set]
    if polled != [fd for fd in start if fd in polled] or len(set(polled)) != len(polled):
        raise fail("R8", f"poll set {polled} is not in list order {start}")
    if [fd for fd, _ in gates] != [fd for fd in start if fd in {f for f, _ in gates}] or len(gates) != len(set(gates)):
        raise fail("R9", f"gates consulted {gates}: not once each in list order {start}")
    for r in after.loop.records:
        if r.fd not in start and r.poll_index != -1:
            raise fail("R22", f"{r.fd}, added during fill, has slot {r.poll_index}")
        was = _rec(before, r.fd)
        if was is not None and not was.deleted and r.fd not in polled and r.poll_index != -1:
            raise fail("R8", f"{r.fd} is not polled yet has slot {r.poll_index}")
    for k, fd in enumerate(polled):
        now = _rec(after, fd)
        if now is not None and now.poll_index not in (k, -1):
            raise fail("R8", f"{fd} is entry {k} of the poll set, its slot says {now.poll_index}")


@dataclass
class Checker:
    """The model's Observer for one step: what the step did, seen from inside."""

    scripts: Mapping[str, tuple[ScriptAction, ...]] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)  # fds registered since the last fill (R6)
    fill_regs: dict[str, tuple[str | None, str | None, str | None]] = field(default_factory=dict)  # by gates
    fill_registered: bool = False
    fills: list[tuple[World, World, PollSet]] = field(default_factory=list)
    calls: list[tuple[World, str, str, World]] = field(default_factory=list)
    walks: list[tuple[World, World, tuple[int, ...], int]] = field(default_factory=list)

    def observer(self) -> model_iterate.Observer:
        return model_iterate.Observer(
            on_fill=self.on_fill, on_register=self.on_register, on_call=self.on_call, on_walk=self.on_walk
        )

    def on_fill(self, before: World, after: World, poll_set: PollSet) -> None:
        check_fill_keeps(self, after)
        self.fill_registered = bool(self.registered)
        self.registered.clear()  # R22: a gate's registrations are part of this fill
        self.fills.append((before, after, poll_set))

    def on_register(self, fd: str, read: str | None, write: str | None, gate: str | None) -> None:
        if read is not None or write is not None:
            self.registered.append(fd)
        if not self.fills:
            self.fill_regs[fd] = (read, write, gate)

    def on_call(self, before: World, fd: str, script: str, after: World) -> None:
        check_call(self, before, fd, script)
        self.calls.append((before, fd, script, after))

    def on_walk(self, before: World, after: World, revents: tuple[int, ...], ret: int) -> None:
        self.walks.append((before, after, revents, ret))


@invariant("R17", "a handler runs only for a live record")
@invariant("R18", "a handler runs only while its record has it")
@invariant("R6", "a record registered after the fill is not called in that iteration's walk")
@invariant("R22", "what a gate script registers during fill is what the filled list holds")
def check_fill_keeps(c: Checker, after: World) -> None:
    for fd, (read, write, gate) in c.fill_regs.items():
        rec = _rec(after, fd)
        if (
            rec is None
            or (read is None and write is None) != rec.deleted
            or (not rec.deleted and (rec.read, rec.write, rec.gate) != (read, write, gate))
        ):
            raise fail("R22", f"a gate script registered {fd} as {read}/{write}/{gate}; after fill it is {rec}")


def check_call(c: Checker, w: World, fd: str, script: str) -> None:
    if not c.fills:
        raise fail("R15", f"{script} ran for {fd} outside an iteration")
    rec = _rec(w, fd)
    if rec is None or rec.deleted:
        raise fail("R17", f"{script} ran for {fd}, whose record is deleted")
    if script not in (rec.read, rec.write):
        raise fail("R18", f"{script} ran for {fd}, whose handlers are {rec.read}/{rec.write}")
    # on_call comes after the call: leave out the registrations the script itself made
    own = sum(1 for x in c.scripts[script] if isinstance(x, Set) and (x.read or x.write))
    if fd in c.registered[: len(c.registered) - own] and fd not in {f for _, f, _, _ in c.calls}:
        raise fail("R6", f"{fd} was registered after the fill, yet called in this walk")


@invariant("R11", "ready fds are polled fds, in poll-set order, reporting at most the request plus HUP/ERR")
@invariant(
    "R13",
    "the notifier is consumed before the walk, a notify from the walk stays pending; a pending "
    "notify makes poll return > 0",
)
@invariant("R14", "no walk unless poll returned > 0: nothing called, nothing reaped")
@invariant("R15", "the walk calls in list order of the records present at its start; added records are at the head")
@invariant("R16", "the calls are exactly those the revents give each record as it is at its turn")
@invariant("R18", "a read call shows the record's read handler, a write call its current write handler")
@invariant("R19", "a walk unlinks only flagged records it has passed; survivors keep their order")
@invariant("R20", "the poll event is the poll set fill built, whatever during_wait did")
@invariant("R21", "one poll event then one ready event; callbacks only after the ready event")
def check_iteration(c: Checker, before: World, a: Iterate, after: World, events: tuple[Event, ...]) -> None:
    polls = [i for i, e in enumerate(events) if isinstance(e, PollEvent)]
    readies = [i for i, e in enumerate(events) if isinstance(e, ReadyEvent)]
    if len(polls) != 1 or len(readies) != 1 or polls[0] > readies[0] or len(c.fills) != 1 or len(c.walks) != 1:
        raise fail("R21", "one fill, one poll event, then one ready event, one walk")
    poll, ready = events[polls[0]], events[readies[0]]
    assert isinstance(poll, PollEvent) and isinstance(ready, ReadyEvent)
    f_before, f_after, poll_set = c.fills[0]
    check_fill(f_before, f_after, poll_set, events[: polls[0]])
    if poll.entries != tuple((fd, _names(m)) for fd, m in poll_set):
        raise fail("R20", f"poll event {poll.entries} is not the poll set {poll_set}")
    asked = dict(poll_set)
    got = [fd for fd, _ in ready.fds]
    if got != [fd for fd, _ in poll_set if fd in got]:
        raise fail("R11", "ready fds are not in poll-set order")
    for fd, flags in ready.fds:
        if fd not in asked or flag_mask(flags) & ~(asked[fd] | HUP | ERR):
            raise fail("R11", f"{fd} reported {flags}, more than requested plus HUP/ERR")
    w_before, w_after, revents, ret = c.walks[0]
    if w_before.loop.wakeup:
        raise fail("R13", "the notifier was still readable when the walk started")
    if any(call_after.loop.wakeup for *_, call_after in c.calls) and not after.loop.wakeup:
        raise fail("R13", "a notify from the walk was consumed before the next iteration")
    notified = (
        before.loop.wakeup
        or any(isinstance(x, Notify) or (isinstance(x, Set) and (x.read or x.write)) for x in a.during_wait)
        or c.fill_registered
    )
    if (notified or ready.fds) and not ready.walk:
        raise fail("R13", "a pending notify or a ready fd, yet no walk")
    if ready.walk != (ret > 0):
        raise fail("R21", "the ready event's walk flag is not poll's return > 0")
    calls = [e for e in events if isinstance(e, ReadEvent | WriteEvent)]
    if any(i < readies[0] for i, e in enumerate(events) if isinstance(e, ReadEvent | WriteEvent)):
        raise fail("R21", "a callback before the ready event")
    if ret <= 0:
        if calls or c.calls or w_after.loop.records != w_before.loop.records:
            raise fail("R14", "a walk ran (or reaped) although poll returned 0")
        return
    if len(calls) != len(c.calls):
        raise fail("R21", f"{len(calls)} call events for {len(c.calls)} calls")
    start = w_before.loop.records
    order = _fds(start)
    # R15: calls in list order, over the start records only.
    positions = [order.index(fd) if fd in order else -1 for _, fd, _, _ in c.calls]
    if -1 in positions or positions != sorted(positions):
        raise fail("R15", f"calls {[fd for _, fd, _, _ in c.calls]} not in list order {order}")
    # R16-R18: the walk replayed from the revents and the worlds the calls left: at each start
    # record's turn, the handlers its record has then and the revents read once before them.
    cur, n = w_before, 0
    for fd in order:
        rec = _rec(cur, fd)
        live = rec is not None and not rec.deleted
        rev = revents[rec.poll_index] if rec is not None and live and rec.poll_index != -1 else 0
        for kind, bits in (("read", READ_EVENTS), ("write", WRITE_EVENTS)):
            rec = _rec(cur, fd)
            handler = None if rec is None or rec.deleted else rec.read if kind == "read" else rec.write
            if handler is None or not rev & bits:
                continue
            if n >= len(c.calls) or (calls[n].fd, calls[n].script, type(calls[n])) != (fd, handler, _EV[kind]):
                seen_call = calls[n] if n < len(calls) else "no call"
                rule = "R18" if kind == "write" and n > 0 and c.calls[n - 1][1] == fd else "R16"
                raise fail(rule, f"at {fd}'s turn (revents {rev:#x}) want {kind} {handler}, got {seen_call}")
            cur, n = c.calls[n][3], n + 1
    if n != len(c.calls):
        raise fail("R16", f"calls beyond what the revents ask: {calls[n:]}")
    # R19: the walk unlinks a record only when it has passed it.
    for w, fd, _, _ in c.calls:
        early = [x for x in order if _rec(w, x) is None and order.index(x) >= order.index(fd)]
        if early:
            raise fail("R19", f"{early} unlinked before the walk reached them (at {fd}'s call)")
    # R19: unlinked records were deleted when passed; deleted start records that stay were
    # deleted after the walk passed them, by a later record's callback. After the walk the
    # list is the records callbacks added (at the head, R15) then the survivors in start order.
    final = w_after.loop.records
    k = next(k for k in range(len(final) + 1) if _subsequence(_fds(final[k:]), order))
    touched = {fd for w, _, _, w2 in c.calls for fd in _fds(w2.loop.records) if _rec(w, fd) != _rec(w2, fd)}
    if not set(_fds(final[:k])) <= touched:
        raise fail("R15", f"the walk turned {order} into {_fds(final)}: records reordered, or added not at the head")
    survivors = {r.fd: r for r in final[k:]}
    for fd in order:
        r = survivors.get(fd)
        if (
            r is None
            and not start[order.index(fd)].deleted
            and not any((x := _rec(w2, fd)) is not None and x.deleted for _, _, _, w2 in c.calls)
        ):
            raise fail("R19", f"{fd} was unlinked, yet never flagged deleted")
        if r is not None and r.deleted and not any(order.index(cfd) > order.index(fd) for _, cfd, _, _ in c.calls):
            raise fail("R19", f"{fd} stays flagged deleted, but no later record's callback ran")


def _subsequence(xs: list[str], ys: list[str]) -> bool:
    it = iter(ys)
    return all(x in it for x in xs)


_EV = {"read": ReadEvent, "write": WriteEvent}


def _names(mask: int) -> tuple[str, ...]:
    from iohandler.model.state import flag_names

    return flag_names(mask)


# ---------------------------------------------------------------------- the checked step


def step_checked(scope: Scope, world: World, action: Action) -> World | None:
    """One checked step; None for a step the vector format forbids (a send after a hangup)."""
    c = Checker(scope.scripts)
    try:
        after, events = model_iterate.step(world, action, scope.scripts, scope.gate_runs, observer=c.observer())
    except model_env.InvalidAction:
        return None
    check_unique(after)
    check_context_rests(after)
    if isinstance(action, Set):
        check_set(world.loop, action, after.loop)
    elif isinstance(action, Iterate):
        check_iteration(c, world, action, after, events)
        check_context_order(events)
    elif isinstance(action, BhSchedule | BhScheduleIdle | BhCancel | BhDelete):
        check_bh_action(world, action, after)
    elif isinstance(action, CtxSet):
        check_ctx_set(world, action, after)
    elif isinstance(action, CtxPoll):
        check_ctx_poll(world, after, events)
    else:
        check_other(world, action, after, events)
    return after


def explore(scope: Scope, *, workers: int | None = None, max_depth: int | None = None) -> Closure:
    """specs/exhaustive.py's search with every step checked: a violation is re-raised as a
    `Violation`, the rule first, then its depth and shortest action path. The stats name what
    the steps checked (INVARIANTS). The forked workers run `step_checked` too: the pool is made
    in `exhaustive.explore`, after this module (and its INVARIANTS) is loaded."""
    c = exhaustive.explore(scope, step=step_checked, workers=workers, max_depth=max_depth)
    c.invariants = INVARIANTS
    return c


def successors(scope: Scope, state: State) -> list[Edge]:
    """A state's checked transitions (specs/exhaustive.py's `successors` with `step_checked`)."""
    return exhaustive.successors(scope, state, step_checked)


# ------------------------------------------------------------------------------- the scopes


def scopes(large: bool) -> list[Scope]:
    """The closures the suite runs (tests/test_exhaustive.py; `large` for `make verify`): the
    fd-handler scopes and the signal fd's (R60, R61, R63: its handler drains it or, deleting
    itself, raises it again). The context's (`exhaustive.context_scopes`) has its own test
    (tests/test_exhaustive_context.py)."""
    return [*exhaustive.fd_scopes(large), exhaustive.signal_scope(large)]


def lockstep_config(scope: Scope) -> Config:
    """The scope as the lockstep harness's Config, to replay closure paths on the real loop."""
    return Config(
        fds=dict(scope.fds),  # type: ignore[arg-type]
        gates=dict(scope.gates),
        scripts=dict(scope.scripts),
        gate_runs=dict(scope.gate_runs),
    )
