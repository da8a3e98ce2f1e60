"""The pollers on real fds: registration, the kernel facts impl/pollers.py relies on."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from iohandler.impl import ERR, HUP, IN, NVAL, OUT, POLLERS, MainLoop, Poller, flag_names, pollers
from iohandler.impl.pollers import EpollPoller, default_poller_name, make_poller
from tests.support import interrupt_before

NAMES = sorted(POLLERS)


@pytest.fixture(params=NAMES)
def poller(request: pytest.FixtureRequest) -> Iterator[Poller]:
    p = make_poller(request.param)
    yield p
    p.close()


def test_make_poller_by_name_and_errors() -> None:
    for name in NAMES:
        p = make_poller(name)
        assert p.name == name
        assert make_poller(p) is p
        p.close()
    with pytest.raises(ValueError, match="poller must be one of"):
        make_poller("kqueue-please")
    with pytest.raises(TypeError, match="poller must be a name"):
        make_poller(3)  # type: ignore[arg-type]


def test_flag_names_in_vector_order() -> None:
    assert flag_names(ERR | HUP | OUT | IN) == ("IN", "OUT", "HUP", "ERR")
    assert flag_names(NVAL) == ()


def test_idle_then_readable(poller: Poller, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.modify(a.fileno(), IN | HUP | ERR)
    assert poller.wait(0) == []
    b.send(b"x")
    assert poller.wait(0) == [(a.fileno(), IN)]
    assert poller.wait(0) == [(a.fileno(), IN)]  # level-triggered


def test_modify_changes_interest_and_zero_unregisters(
    poller: Poller, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    poller.modify(a.fileno(), OUT | ERR)
    assert poller.wait(0) == [(a.fileno(), OUT)]
    poller.modify(a.fileno(), IN | HUP | ERR)
    assert poller.wait(0) == []
    b.close()  # hangup: HUP is reported even when not asked for ...
    poller.modify(a.fileno(), 0)
    assert poller.wait(0) == []  # ... but not for an fd no longer polled at all
    poller.modify(a.fileno(), 0)  # idempotent


def test_unrequested_hup_is_reported(poller: Poller, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    poller.modify(a.fileno(), OUT | ERR)
    b.close()
    [(fd, rev)] = poller.wait(0)
    assert fd == a.fileno()
    if poller.name == "selectors":
        assert rev == OUT  # HUP folded away: the documented difference
    else:
        assert rev == OUT | HUP


def test_pipe_write_end_reports_err_after_reader_closes(poller: Poller) -> None:
    r, w = os.pipe()
    try:
        poller.modify(w, OUT | ERR)
        os.close(r)
        [(fd, rev)] = poller.wait(0)
        assert fd == w
        assert rev == (OUT if poller.name == "selectors" else OUT | ERR)
    finally:
        os.close(w)


def test_wait_timeout_returns_empty(poller: Poller, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    poller.modify(a.fileno(), IN)
    assert poller.wait(0.01) == []


def test_epoll_forgets_a_closed_fd_and_mod_fails() -> None:
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    p = make_poller("epoll")
    a, b = socket.socketpair()
    try:
        fd = a.fileno()
        p.modify(fd, IN | HUP | ERR)
        b.send(b"x")
        a.close()
        assert p.wait(0) == []  # forgotten silently
        with pytest.raises(OSError) as info:
            p.modify(fd, OUT | ERR)
        assert info.value.errno in (errno.EBADF, errno.ENOENT)
        p.modify(fd, 0)  # dropping a registration the kernel forgot is fine
    finally:
        b.close()
        p.close()


def test_poll_reports_nval_for_a_closed_fd() -> None:
    p = make_poller("poll")
    r, w = os.pipe()
    os.close(w)
    os.close(r)
    p.modify(r, IN | HUP | ERR)
    assert p.wait(0) == [(r, NVAL)]
    p.modify(r, 0)
    assert p.wait(0) == []


def test_epoll_refuses_regular_files(tmp_path: object) -> None:
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    p = make_poller("epoll")
    with open(__file__, "rb") as f:
        with pytest.raises(OSError) as info:
            p.modify(f.fileno(), IN)
        assert info.value.errno == errno.EPERM
    p.close()


def test_close_releases_the_poller_fd() -> None:
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    before = set(os.listdir("/proc/self/fd"))
    p = make_poller("epoll")
    assert set(os.listdir("/proc/self/fd")) != before
    p.close()
    assert set(os.listdir("/proc/self/fd")) == before


@contextlib.contextmanager
def _ready_eventfds(n: int) -> Iterator[list[int]]:
    """n readable eventfds, with RLIMIT_NOFILE raised for them (skips if the hard limit is low)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 100:
        if hard != resource.RLIM_INFINITY and hard < n + 100:
            pytest.skip(f"needs {n + 100} fds, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, hard))
    fds = [os.eventfd(1) for _ in range(n)]  # all readable
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def _epoll_on_ready_eventfds(n: int, events: int) -> Iterator[tuple[Poller, list[int]]]:
    """An epoll poller with n readable eventfds registered for `events`."""
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    p = make_poller("epoll")
    with _ready_eventfds(n) as fds:
        try:
            for fd in fds:
                p.modify(fd, events)
            yield p, fds
        finally:
            p.close()


def test_epoll_reports_every_ready_fd_beyond_its_buffer() -> None:
    with _epoll_on_ready_eventfds(1300, IN | HUP | ERR) as (p, fds):
        assert sorted(p.wait(0)) == [(fd, IN) for fd in sorted(fds)]


def test_epoll_fast_wait_is_the_c_method_and_its_batch_is_pinned() -> None:
    """The loop's hot path calls epoll.poll itself; `full` is what CPython returns at most when
    poll gets no maxevents (FD_SETSIZE - 1). If that default ever changed, this fails."""
    with _epoll_on_ready_eventfds(1100, IN) as (p, _):
        wait_once, full = p.fast_wait()
        assert type(wait_once).__name__ == "builtin_function_or_method"
        assert len(wait_once(0)) == full == 1023


def test_the_loop_dispatches_every_ready_fd_beyond_the_fast_wait_batch() -> None:
    """More ready fds than one fast wait returns: the loop resamples and dispatches all of
    them in one iteration, as poll(2) would."""
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    called: list[int] = []
    with _ready_eventfds(1300) as fds, MainLoop("epoll") as loop:
        for fd in fds:
            loop.set_fd_handler(fd, called.append, opaque=fd)
        assert loop.main_loop_wait(nonblocking=True) == 1300 + 1  # + the registrations' wakeup
        assert sorted(called) == sorted(fds)


def test_the_resample_of_a_full_batch_never_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop resamples a full fast-wait batch with wait(0): everything it wants is ready."""
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    timeouts: list[float | None] = []
    real = EpollPoller.wait

    def recording(self: EpollPoller, timeout: float | None) -> list[tuple[int, int]]:
        timeouts.append(timeout)
        return real(self, timeout)

    monkeypatch.setattr(EpollPoller, "wait", recording)  # the class's own: the fast path stays
    with _ready_eventfds(1100) as fds, MainLoop("epoll") as loop:
        for fd in fds:
            loop.set_fd_handler(fd, lambda _: None)
        assert loop.main_loop_wait(timeout=5) == 1100 + 1
    assert timeouts == [0]


def test_a_subclass_wait_is_what_the_loop_calls() -> None:
    """EpollPoller's fast path bypasses wait(): a subclass that overrides wait gets it back."""
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    timeouts: list[float | None] = []

    class Seen(EpollPoller):
        def wait(self, timeout: float | None) -> list[tuple[int, int]]:
            timeouts.append(timeout)
            return super().wait(timeout)

    assert Seen().fast_wait()[1] == sys.maxsize
    with MainLoop(Seen()) as loop:
        loop.main_loop_wait(nonblocking=True)
    assert timeouts == [0.0]


# Poller choice, the book (registered()), error translation, rebuild, and the kernel calls' args.


def test_default_poller_prefers_epoll_then_poll_then_selectors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_poller_name() == "epoll"
    assert make_poller(None).name == "epoll"
    monkeypatch.delitem(POLLERS, "epoll")
    assert default_poller_name() == "poll"
    monkeypatch.delitem(POLLERS, "poll")
    assert default_poller_name() == "selectors"


def test_make_poller_type_error_names_the_type() -> None:
    with pytest.raises(TypeError, match="got int"):
        make_poller(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'kqueue'"):
        make_poller("kqueue")


def fd_kind(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def test_fileno_names_the_kernel_poll_set_or_is_minus_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, kind in (("epoll", "anon_inode:[eventpoll]"), ("selectors", "anon_inode:[eventpoll]")):
        p = make_poller(name)
        assert fd_kind(p.fileno()) == kind
        p.close()
    p = make_poller("poll")
    assert p.fileno() == -1  # poll(2) keeps no kernel object
    p.close()
    monkeypatch.setattr(selectors, "DefaultSelector", selectors.PollSelector)  # no fileno() there
    p = make_poller("selectors")
    assert p.fileno() == -1
    p.close()


def test_registered_is_a_copy_in_poll_flags(poller: Poller, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    folded = poller.name == "selectors"  # HUP/ERR are not in selectors' masks
    poller.modify(a.fileno(), IN | HUP | ERR)
    poller.modify(b.fileno(), OUT | ERR)
    assert poller.registered() == {
        a.fileno(): IN if folded else IN | HUP | ERR,
        b.fileno(): OUT if folded else OUT | ERR,
    }
    poller.modify(b.fileno(), IN | OUT | ERR)
    assert poller.registered()[b.fileno()] == (IN | OUT if folded else IN | OUT | ERR)
    poller.registered().clear()
    assert len(poller.registered()) == 2
    poller.modify(a.fileno(), 0)
    assert poller.registered() == {b.fileno(): IN | OUT if folded else IN | OUT | ERR}


def test_selectors_reports_in_out_and_both(pair: tuple[socket.socket, socket.socket]) -> None:
    p = make_poller("selectors")
    a, b = pair
    try:
        p.modify(a.fileno(), IN | OUT | HUP | ERR)
        assert p.wait(0) == [(a.fileno(), OUT)]
        b.send(b"x")
        assert p.wait(0) == [(a.fileno(), IN | OUT)]
        p.modify(a.fileno(), IN | HUP | ERR)
        assert p.wait(0) == [(a.fileno(), IN)]
    finally:
        p.close()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "poll"])  # poll(2) checks fds at wait
def test_failed_modify_of_a_closed_fd_drops_it_from_the_book(name: str) -> None:
    p = make_poller(name)
    r, w = os.pipe()
    try:
        p.modify(w, OUT | ERR)
        p.modify(r, IN | HUP | ERR)
        os.close(r)
        with pytest.raises(OSError) as info:
            p.modify(r, IN | OUT | ERR)  # a change: a kernel call on the closed number
        assert info.value.errno in (errno.EBADF, errno.ENOENT)
        assert p.registered() == ({w: OUT | ERR} if name == "epoll" else {w: OUT})
        p.modify(r, 0)  # not in the book: nothing to do
    finally:
        os.close(w)
        p.close()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "poll"])
def test_refused_regular_file_is_not_in_the_book(name: str) -> None:
    p = make_poller(name)
    with open(__file__, "rb") as f:
        with pytest.raises(OSError) as info:
            p.modify(f.fileno(), IN | HUP | ERR)
        assert info.value.errno == errno.EPERM
        assert p.registered() == {}
    p.close()


def test_selectors_negative_fd_raises_oserror_naming_it() -> None:
    p = make_poller("selectors")
    with pytest.raises(OSError) as info:
        p.modify(-1, IN)
    assert info.value.errno == errno.EBADF
    assert "-1" in str(info.value)
    assert p.registered() == {}
    p.close()


def test_epoll_registers_again_over_a_registration_the_book_dropped() -> None:
    p = make_poller("epoll")
    r, w = os.pipe()
    keep = os.dup(r)
    try:
        p.modify(r, IN | HUP | ERR)
        os.close(r)  # the file stays open through `keep`: the kernel keeps (file, r)
        with pytest.raises(OSError) as info:  # EPOLL_CTL_DEL on a closed number fails,
            p.modify(r, 0)
        assert info.value.errno == errno.EBADF  # and the loop is told (the kernel keeps (file, r))
        assert p.registered() == {}
        os.dup2(keep, r)  # r names the same file again: the kernel's registration matches
        os.write(w, b"x")
        p.modify(r, IN | OUT | HUP | ERR)  # EEXIST -> modify instead
        assert p.registered() == {r: IN | OUT | HUP | ERR}
        assert p.wait(0) == [(r, IN)]
    finally:
        for fd in (r, w, keep):
            os.close(fd)
        p.close()


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_keeps_open_fds_and_returns_closed_ones(name: str) -> None:
    p = make_poller(name)
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        p.modify(a.fileno(), IN | HUP | ERR)
        p.modify(r, IN | HUP | ERR)
        os.close(r)
        os.close(w)
        failed = p.rebuild()
        if name == "poll":  # nothing held by the kernel: nothing to rebuild
            assert failed == []
            return
        assert failed == [r]
        assert set(p.registered()) == {a.fileno()}
        b.send(b"x")
        assert p.wait(0) == [(a.fileno(), IN)]
    finally:
        a.close()
        b.close()
        p.close()


def test_epoll_rebuild_drops_a_stray_registration_of_a_dup() -> None:
    p = make_poller("epoll")
    r, w = os.pipe()
    keep = os.dup(r)
    try:
        p.modify(r, IN | HUP | ERR)
        os.write(w, b"x")
        os.close(r)  # `keep` holds the file: epoll goes on reporting r
        assert p.wait(0) == [(r, IN)]
        assert p.rebuild() == [r]
        assert p.registered() == {}
        assert p.wait(0) == []
    finally:
        os.close(w)
        os.close(keep)
        p.close()


class RecordingPoll:
    """select.poll / select.epoll with every poll() call's arguments recorded."""

    def __init__(self, real: Any, calls: list[tuple[Any, ...]]) -> None:
        self._real = real
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def poll(self, *args: Any) -> Any:
        self._calls.append(args)
        return self._real.poll(*args)


def test_poll_wait_passes_milliseconds_and_none_blocks(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    calls: list[tuple[Any, ...]] = []
    real = select.poll
    monkeypatch.setattr(select, "poll", lambda: RecordingPoll(real(), calls))
    p = make_poller("poll")
    a, _ = pair
    p.modify(a.fileno(), OUT)
    for timeout in (None, 0, 0.25):
        assert p.wait(timeout) == [(a.fileno(), OUT)]
    assert calls == [(None,), (0,), (250.0,)]


def test_epoll_wait_resamples_only_when_its_buffer_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    real = select.epoll
    monkeypatch.setattr(select, "epoll", lambda: RecordingPoll(real(), calls))
    monkeypatch.setattr(pollers, "_MAXEVENTS", 4)
    p = make_poller("epoll")
    fds = [os.eventfd(1) for _ in range(6)]  # readable
    try:
        for fd in fds[:4]:
            p.modify(fd, IN)
        assert sorted(p.wait(None)) == [(fd, IN) for fd in fds[:4]]  # full, but nothing more to see
        assert calls == [(None, 4)]  # None blocks; no second sample
        p.modify(fds[4], IN)
        p.modify(fds[5], IN)
        calls.clear()
        assert sorted(p.wait(None)) == [(fd, IN) for fd in fds]
        assert calls == [(None, 4), (0, 6)]  # the resample never blocks
        for fd in fds[1:]:
            os.eventfd_read(fd)
        calls.clear()
        assert p.wait(0.5) == [(fds[0], IN)]
        assert calls == [(0.5, 4)]  # buffer not full: one sample
    finally:
        for fd in fds:
            os.close(fd)
        p.close()


# ------------------------------------------ a step cut short by a signal handler's exception (R35)


def test_poll_unregister_cut_short_before_its_book_update_is_finished_by_the_next() -> None:
    """The poll object forgot fd, the book still has it: the next modify(fd, 0) completes."""
    p = make_poller("poll")
    r, w = os.pipe()
    try:
        p.modify(r, IN)
        with (
            interrupt_before(pollers, "PollPoller.modify", "del self._fds[fd]") as fired,
            pytest.raises(KeyboardInterrupt),
        ):
            p.modify(r, 0)
        assert fired and p.registered() == {r: IN}  # the book is behind
        p.modify(r, 0)  # the poll object no longer has r: fine
        assert p.registered() == {}
        os.write(w, b"x")
        assert p.wait(0) == []
    finally:
        os.close(r)
        os.close(w)
        p.close()


@pytest.mark.parametrize("old", [0, OUT], ids=["register", "modify"])
def test_selectors_cut_short_after_its_own_map_changed_is_rebuilt_at_the_next_modify(old: int) -> None:
    """selectors updated its map and the kernel, but the book did not follow: the book drops
    fd, and the next modify starts from a selector rebuilt from the book."""
    p = make_poller("selectors")
    a, b = socket.socketpair()
    try:
        if old:
            p.modify(a.fileno(), old)
        with (
            interrupt_before(pollers, "SelectorsPoller.modify", "self._masks[fd] = mask") as fired,
            pytest.raises(KeyboardInterrupt),
        ):
            p.modify(a.fileno(), IN)
        assert fired and p.registered() == {}
        p.modify(a.fileno(), IN)  # selectors alone would refuse: "already registered"
        assert p.registered() == {a.fileno(): IN}
        b.send(b"x")
        assert p.wait(0) == [(a.fileno(), IN)]
    finally:
        a.close()
        b.close()
        p.close()


def test_epoll_confirm_vouches_for_a_registered_file_and_for_nothing_else() -> None:
    """The fast R33 check (Poller.confirm): epoll's is its EPOLL_CTL_MOD to the same events,
    which succeeds only while the number names the registered file. poll and selectors have
    none (the loop compares fstat identities instead)."""
    for name in ("poll", "selectors"):
        q = make_poller(name)
        assert q.confirmer() is None
        q.close()
    p = make_poller("epoll")
    r, w = os.pipe()
    other, peer = os.pipe()
    try:
        p.modify(r, IN)
        confirm = p.confirmer()
        assert confirm is not None
        confirm(r, IN)  # registered: returns
        with pytest.raises(OSError):
            confirm(other, IN)  # never registered: ENOENT
        p.rebuild()
        assert p.confirmer() is not confirm  # follows the new epoll object
        p.confirmer()(r, IN)  # type: ignore[misc]
        os.close(r)
        with pytest.raises(OSError):
            p.confirmer()(r, IN)  # type: ignore[misc]  # closed: EBADF
    finally:
        for fd in (w, other, peer):
            os.close(fd)
        p.close()
