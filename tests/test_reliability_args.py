"""R30 on real fds, on every poller: bad arguments are refused with an exception naming the
argument, and change nothing (records live and unreaped, poll slots, kernel registrations as the
kernel itself reports them, pending wakeup, timers). Hypothesis interleaves bad calls with good
ones (adds, updates, deletes, sends, iterations, notifies) and compares the whole state before
and after each bad call. Also: what "opaque misuse" means (R30: opaque is never inspected).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from iohandler.impl import ClosedFdError, MainLoop, UnpollableFdError
from tests.support import NAMES, add_stats, drain, pairs, snapshot


def _closed_fd_number() -> int:
    """A number that is not open now (and stays so: the tests open nothing in between)."""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r


class _Fileno:
    def __init__(self, value: Any) -> None:
        self.value = value

    def fileno(self) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __repr__(self) -> str:
        return f"_Fileno({self.value!r})"


def _closed_socket() -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.close()  # fileno() is now -1
    return s


def _closed_file() -> Any:
    f = open(os.devnull, "rb")  # noqa: SIM115
    f.close()  # fileno() raises ValueError
    return f


def _cb(_: Any) -> None:
    pass


@dataclass(frozen=True)
class Bad:
    """One argument value and the refusal it must get: exception type and message pattern."""

    label: str
    make: Callable[[], Any]
    exc: type[BaseException]
    match: str


BAD_FDS: list[Bad] = [
    Bad("negative", lambda: -1, ValueError, r"fd must be >= 0, got -1"),
    Bad("very negative", lambda: -(2**40), ValueError, r"fd must be >= 0"),
    Bad("True", lambda: True, TypeError, r"fd must be .*got bool"),
    Bad("False", lambda: False, TypeError, r"fd must be .*got bool"),
    Bad("2**31", lambda: 2**31, ValueError, r"fd must be < 2\*\*31"),
    Bad("2**64", lambda: 2**64, ValueError, r"fd must be < 2\*\*31"),
    Bad("float", lambda: 3.0, TypeError, r"fd must be an int or have fileno\(\), got float"),
    Bad("str", lambda: "3", TypeError, r"fd must be an int or have fileno\(\), got str"),
    Bad("None", lambda: None, TypeError, r"fd must be an int or have fileno\(\), got NoneType"),
    Bad("object", object, TypeError, r"fd must be an int or have fileno\(\), got object"),
    Bad("fileno str", lambda: _Fileno("3"), TypeError, r"fd\.fileno\(\) must return an int, got str"),
    Bad("fileno bool", lambda: _Fileno(True), TypeError, r"fd\.fileno\(\) must return an int, got bool"),
    Bad("fileno -1", lambda: _Fileno(-1), ValueError, r"fd must be >= 0, got -1"),
    Bad("fileno huge", lambda: _Fileno(2**31), ValueError, r"fd must be < 2\*\*31"),
    Bad("fileno raises", lambda: _Fileno(OSError(9, "gone")), ValueError, r"fd\.fileno\(\) failed"),
    Bad("closed socket", _closed_socket, ValueError, r"fd must be >= 0, got -1"),
    Bad("closed file", _closed_file, ValueError, r"fd\.fileno\(\) failed: ValueError: I/O operation on closed file"),
]
"""fd values refused whatever the call (add, update or delete): checked first."""

BAD_CALLABLES: list[Bad] = [
    Bad("int", lambda: 1, TypeError, "must be callable or None, got int"),
    Bad("str", lambda: "cb", TypeError, "must be callable or None, got str"),
    Bad("bool", lambda: True, TypeError, "must be callable or None, got bool"),
    Bad("object", object, TypeError, "must be callable or None, got object"),
]
"""read / write / can_read values refused (checked after fd, in that order, deletes included)."""


def _busy_loop(loop: MainLoop, socks: list[socket.socket]) -> None:
    """Put the loop in an interesting state: live, gated, unreaped-deleted records, stale poll
    slots, a pending wakeup, a timer."""
    a, b, c = socks
    loop.set_fd_handler(a, _cb, _cb, opaque=a)
    loop.set_fd_handler(b, _cb, can_read=lambda _: True)
    loop.set_fd_handler(c, _cb)
    loop.main_loop_wait(nonblocking=True)
    loop.set_fd_handler(c, None, None)  # flagged, not reaped (no walk since)
    loop.set_fd_handler(b, None, _cb)  # stale slot, dirty, wakeup pending
    loop.call_later(3600, _cb, None)


@pytest.mark.parametrize("bad", BAD_FDS, ids=lambda b: b.label)
def test_r30_bad_fd_refused_and_nothing_changes(loop: MainLoop, bad: Bad) -> None:
    """R30: every bad fd value, on an add and on a delete, raises the documented exception
    naming `fd`, and the whole state (records, kernel registrations, wakeup) is unchanged."""
    with pairs() as p:
        socks = [p.pair()[0] for _ in range(3)]
        _busy_loop(loop, socks)
        for read, write in ((_cb, None), (None, _cb), (None, None)):
            before = snapshot(loop)
            with pytest.raises(bad.exc, match=bad.match):
                loop.set_fd_handler(bad.make(), read, write)
            assert snapshot(loop) == before
    add_stats(bad_calls_total=3)


@pytest.mark.parametrize("bad", BAD_CALLABLES, ids=lambda b: b.label)
@pytest.mark.parametrize("role", ["read", "write", "can_read"])
def test_r30_bad_callable_refused_and_nothing_changes(loop: MainLoop, bad: Bad, role: str) -> None:
    """R30: a read, write or can_read that is neither callable nor None is a TypeError naming
    the argument, on a new fd, an update and a delete (a delete ignores a *valid* gate, R4,
    but a non-callable one is still a caller's bug)."""
    with pairs() as p:
        socks = [p.pair()[0] for _ in range(3)]
        fresh = p.pair()[0]
        _busy_loop(loop, socks)
        tried = 0
        for target in (fresh, socks[0], socks[2]):  # new, live (update), flagged deleted
            for other in ((_cb, None), (None, _cb), (None, None)):
                kwargs: dict[str, Any] = {"read": other[0], "write": other[1], "can_read": None}
                kwargs[role] = bad.make()
                before = snapshot(loop)
                with pytest.raises(bad.exc, match=f"^{role} {bad.match}"):
                    loop.set_fd_handler(target, **kwargs)
                assert snapshot(loop) == before
                tried += 1
    add_stats(bad_calls_total=tried)


def test_r30_fd_not_open_refused_on_add_and_update_delete_is_fine(loop: MainLoop) -> None:
    """R30: adding or updating an fd that is not open is ClosedFdError naming the fd (.fd too)
    and changes nothing; deleting it is allowed (close-then-delete must work): a no-op for an
    unknown number."""
    with pairs() as p:
        socks = [p.pair()[0] for _ in range(3)]
        _busy_loop(loop, socks)
        n = _closed_fd_number()
        for read, write, gate in ((_cb, None, None), (None, _cb, None), (_cb, _cb, _cb)):
            before = snapshot(loop)
            with pytest.raises(ClosedFdError, match=f"fd {n} is not open") as info:
                loop.set_fd_handler(n, read, write, can_read=gate)
            assert info.value.fd == n
            assert snapshot(loop) == before
        before = snapshot(loop)
        loop.set_fd_handler(n, None, None)
        assert snapshot(loop) == before
    add_stats(bad_calls_total=4)


def test_r30_unpollable_files(loop: MainLoop) -> None:
    """R30: a regular file or a directory on a poller that cannot poll it (epoll, selectors) is
    UnpollableFdError naming the fd, and nothing changes. The poll poller takes them (always
    ready, as poll(2) says)."""
    with pairs() as p, tempfile.TemporaryDirectory() as d, open(__file__, "rb") as f:
        socks = [p.pair()[0] for _ in range(3)]
        _busy_loop(loop, socks)
        dfd = os.open(d, os.O_RDONLY)
        try:
            for target in (f.fileno(), dfd):
                before = snapshot(loop)
                if loop.poller_name == "poll":
                    loop.set_fd_handler(target, _cb)
                    loop.set_fd_handler(target, None, None)
                    continue
                with pytest.raises(UnpollableFdError, match=f"fd {target} is a regular file or directory") as info:
                    loop.set_fd_handler(target, _cb)
                assert info.value.fd == target
                assert snapshot(loop) == before
        finally:
            os.close(dfd)
    add_stats(bad_calls_total=2)


def test_r30_unpollable_device_is_reported_at_fill_without_spinning(loop: MainLoop) -> None:
    """R30/R33: a character device epoll refuses (/dev/null: EPERM) passes the argument check
    (fstat cannot tell) and is refused by the kernel at the next fill: the record is removed and
    UnpollableFdError names the fd at the end of that iteration; later iterations are quiet. On
    poll it is simply always readable."""
    with open(os.devnull, "rb") as f:
        calls: list[Any] = []
        loop.set_fd_handler(f, calls.append, opaque=f)
        if loop.poller_name == "poll":
            assert loop.main_loop_wait(nonblocking=True) >= 1 and calls == [f]
            return
        with pytest.raises(UnpollableFdError, match=f"fd {f.fileno()}") as info:
            loop.main_loop_wait(nonblocking=True)
        assert info.value.fd == f.fileno()
        assert loop.records() == [] and calls == []
        for _ in range(3):
            assert loop.main_loop_wait(nonblocking=True) == 0
    add_stats(faults_injected_total=1)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda lp: lp.main_loop_wait(timeout=-1), ValueError, "timeout must be finite and >= 0"),
        (lambda lp: lp.main_loop_wait(timeout=float("nan")), ValueError, "timeout must be"),
        (lambda lp: lp.main_loop_wait(timeout=float("inf")), ValueError, "timeout must be"),
        (lambda lp: lp.main_loop_wait(timeout="1"), TypeError, "timeout must be a number"),
        (lambda lp: lp.call_later(-1, _cb, None), ValueError, "delay must be finite and >= 0"),
        (lambda lp: lp.call_later(True, _cb, None), TypeError, "delay must be a number"),
        (lambda lp: lp.call_later(1, 5), TypeError, "callback must be callable"),
        (lambda lp: lp.call_every(0, _cb, None), ValueError, "interval must be > 0"),
        (lambda lp: lp.call_every(float("nan"), _cb, None), ValueError, "interval must be"),
    ],
)
def test_r30_bad_wait_and_timer_arguments_change_nothing(
    loop: MainLoop, call: Callable[[MainLoop], object], exc: type[BaseException], match: str
) -> None:
    """R30 (R37): the other entry points check their arguments before touching anything too."""
    with pairs() as p:
        socks = [p.pair()[0] for _ in range(3)]
        _busy_loop(loop, socks)
        before = snapshot(loop)
        with pytest.raises(exc, match=match):
            call(loop)
        assert snapshot(loop) == before
    add_stats(bad_calls_total=1)


# -------------------------------------------------------------------------------- opaque


class Opaque:
    """An opaque that objects to being looked at: the loop must not hash, compare, copy,
    stringify or call it (R30: opaque is the caller's, passed as-is)."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("opaque compared")

    def __hash__(self) -> int:
        raise AssertionError("opaque hashed")

    def __bool__(self) -> bool:
        raise AssertionError("opaque truth-tested")

    def __repr__(self) -> str:
        raise AssertionError("opaque repr'd")

    def __copy__(self) -> Opaque:
        raise AssertionError("opaque copied")


def test_r30_opaque_is_passed_as_is_and_never_inspected(loop: MainLoop) -> None:
    """R30, "opaque misuse": any object (None, unhashable, hostile, the loop itself) is passed
    by identity to the gate, the read and the write handler; an update replaces it; a delete's
    opaque argument is ignored (the record's opaque is not touched, and a revival takes the new
    one)."""
    with pairs() as p:
        a, pa = p.pair()
        seen: list[tuple[str, int]] = []

        def rec(name: str) -> Callable[[Any], object]:
            def cb(o: Any) -> bool:
                seen.append((name, id(o)))
                return True

            return cb

        opaques: list[Any] = [None, Opaque(), [1, 2], loop, {"k": []}]
        for opaque in opaques:
            seen.clear()
            loop.set_fd_handler(a, rec("read"), rec("write"), can_read=rec("gate"), opaque=opaque)
            pa.send(b"x")
            loop.main_loop_wait(nonblocking=True)
            drain(a)
            assert seen == [("gate", id(opaque)), ("read", id(opaque)), ("write", id(opaque))]
            assert loop.records()[0].opaque is opaque
        hostile = Opaque()
        loop.set_fd_handler(a, rec("read"), opaque=hostile)
        loop.main_loop_wait(nonblocking=True)
        before = snapshot(loop)
        loop.set_fd_handler(a, None, None, can_read=_cb, opaque=Opaque())  # delete: flag only
        after = snapshot(loop)
        assert after[0][0][11] == before[0][0][11] == id(hostile)  # the record's opaque kept
        other = Opaque()
        loop.set_fd_handler(a, rec("read"), opaque=other)  # revival takes the new opaque
        assert loop.records()[0].opaque is other


# ----------------------------------------------------------------------- property test


_POOL = 3


@dataclass
class _Counts:
    bad: int = 0
    good: int = 0
    per_kind: dict[str, int] = field(default_factory=dict)


COUNTS = _Counts()

bad_fd_st = st.sampled_from(BAD_FDS)
bad_cb_st = st.sampled_from(BAD_CALLABLES)


class BadCallsMachine(RuleBasedStateMachine):
    """R30 as a property: any sequence of good calls (add, update, delete, revive, send, drain,
    iterate, notify) with bad calls in between; each bad call raises what its first bad argument
    (checked in the order fd, read, write, can_read, then "is it open / pollable") calls for, and
    the snapshot (see tests.support.snapshot) is equal before and after."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: MainLoop | None = None
        self.socks: list[tuple[socket.socket, socket.socket]] = []
        self.closed_fd = -1

    @initialize(poller=st.sampled_from(NAMES))
    def start(self, poller: str) -> None:
        self.loop = MainLoop(poller)
        self.socks = [socket.socketpair() for _ in range(_POOL)]
        for a, b in self.socks:
            a.setblocking(False)
            b.setblocking(False)
        self.closed_fd = _closed_fd_number()
        note(f"poller={poller}")

    def teardown(self) -> None:
        if self.loop is not None:
            self.loop.close()
        for a, b in self.socks:
            a.close()
            b.close()

    @property
    def lp(self) -> MainLoop:
        assert self.loop is not None
        return self.loop

    # ---------------------------------------------------------------- good calls

    @rule(i=st.integers(0, _POOL - 1), read=st.booleans(), write=st.booleans(), gate=st.sampled_from([None, 0, 1]))
    def set_handler(self, i: int, read: bool, write: bool, gate: int | None) -> None:
        a = self.socks[i][0]
        g = None if gate is None else (lambda _: True) if gate else (lambda _: False)
        self.lp.set_fd_handler(
            a, (lambda s: drain(s)) if read else None, (lambda _: None) if write else None, can_read=g, opaque=a
        )
        COUNTS.good += 1

    @rule(i=st.integers(0, _POOL - 1))
    def send(self, i: int) -> None:
        with contextlib.suppress(BlockingIOError):
            self.socks[i][1].send(b"x")

    @rule()
    def iterate(self) -> None:
        self.lp.main_loop_wait(nonblocking=True)
        COUNTS.good += 1

    @rule()
    def notify(self) -> None:
        self.lp.notify()

    @rule()
    def delete_unknown(self) -> None:
        """Deleting a number with no record (peers, a closed number) is a no-op (R4)."""
        before = snapshot(self.lp)
        self.lp.set_fd_handler(self.socks[0][1], None, None)
        self.lp.set_fd_handler(self.closed_fd, None, None)
        assert snapshot(self.lp) == before
        COUNTS.good += 2

    # ----------------------------------------------------------------- bad calls

    def _refused(self, kind: str, exc: type[BaseException], match: str, call: Callable[[], object]) -> None:
        before = snapshot(self.lp)
        with pytest.raises(exc, match=match):
            call()
        assert snapshot(self.lp) == before
        COUNTS.bad += 1
        COUNTS.per_kind[kind] = COUNTS.per_kind.get(kind, 0) + 1

    @rule(bad=bad_fd_st, read=st.booleans(), write=st.booleans(), cb=st.none() | bad_cb_st)
    def bad_fd(self, bad: Bad, read: bool, write: bool, cb: Bad | None) -> None:
        """A bad fd wins over anything else wrong with the call."""
        r: Any = _cb if read else None
        w: Any = cb.make() if cb is not None else (_cb if write else None)
        self._refused(f"fd:{bad.label}", bad.exc, bad.match, lambda: self.lp.set_fd_handler(bad.make(), r, w))

    @rule(
        i=st.integers(0, _POOL - 1),
        role=st.sampled_from(["read", "write", "can_read"]),
        bad=bad_cb_st,
        other_read=st.booleans(),
        other_write=st.booleans(),
    )
    def bad_callable(self, i: int, role: str, bad: Bad, other_read: bool, other_write: bool) -> None:
        kwargs: dict[str, Any] = {
            "read": _cb if other_read else None,
            "write": _cb if other_write else None,
            "can_read": None,
        }
        kwargs[role] = bad.make()
        order = ["read", "write", "can_read"]
        # the first bad one in check order is named; here only `role` is bad
        first = next(r for r in order if kwargs[r] is not None and not callable(kwargs[r]))
        assert first == role
        a = self.socks[i][0]
        self._refused(
            f"{role}:{bad.label}", bad.exc, f"^{role} {bad.match}", lambda: self.lp.set_fd_handler(a, **kwargs)
        )

    @rule(read=st.booleans(), gate=st.booleans())
    def not_open(self, read: bool, gate: bool) -> None:
        n = self.closed_fd
        self._refused(
            "not-open",
            ClosedFdError,
            f"fd {n} is not open",
            lambda: self.lp.set_fd_handler(
                n, _cb if read else None, None if read else _cb, can_read=_cb if gate else None
            ),
        )

    @precondition(lambda self: self.loop is not None and self.loop.poller_name != "poll")
    @rule()
    def regular_file(self) -> None:
        with open(__file__, "rb") as f:
            self._refused("regular-file", UnpollableFdError, "regular file", lambda: self.lp.set_fd_handler(f, _cb))

    @rule(timeout=st.sampled_from([-1.0, float("nan"), float("inf"), -1e-9]))
    def bad_timeout(self, timeout: float) -> None:
        self._refused("timeout", ValueError, "timeout", lambda: self.lp.main_loop_wait(timeout=timeout))

    @invariant()
    def records_are_consistent(self) -> None:
        if self.loop is None:
            return
        lp = self.loop
        snap = lp.snapshot()
        fds = [r.fd for r in snap.records]
        assert len(fds) == len(set(fds))  # R1
        assert [r.fd for r in snap.records if not r.deleted] == [r.fd for r in lp.records()]
        snapshot(lp)  # checks the poller's book against the kernel's epoll set


TestBadCalls = BadCallsMachine.TestCase


@given(fd=st.integers(min_value=2**31, max_value=2**80) | st.integers(max_value=-1))
def test_r30_out_of_range_ints(fd: int) -> None:
    """R30: every int outside 0 <= fd < 2**31 is a ValueError naming fd, add or delete."""
    with MainLoop() as lp:
        for read in (_cb, None):
            with pytest.raises(ValueError, match="fd must be"):
                lp.set_fd_handler(fd, read)
    COUNTS.bad += 2


def test_r30_property_figures() -> None:
    """Publishes the property test's figures (runs after it, in file order)."""
    add_stats(bad_calls_total=COUNTS.bad, good_calls_interleaved_total=COUNTS.good)
