"""R33/R34 for anonymous-inode files (eventfd, timerfd, signalfd, epoll): on Linux they all share
one (st_dev, st_ino), so comparing fstat results cannot tell two of them apart."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import socket
from collections.abc import Iterator

import pytest

import iohandler.impl.kernel
from iohandler.impl import ERR, HUP, IN, OUT, ClosedFdError, MainLoop, PollPoller, Record
from iohandler.impl.kernel import Kernel, identity, same_file_check
from tests.support import Pairs, interrupt_before, open_fds

POLLERS = ["epoll", "poll", "selectors"]


@pytest.fixture
def fds() -> Iterator[list[int]]:
    owned: list[int] = []
    yield owned
    for fd in owned:
        with contextlib.suppress(OSError):
            os.close(fd)


def _eventfd(owned: list[int]) -> int:
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    owned.append(fd)
    return fd


def _reuse_as_eventfd(old: int, owned: list[int]) -> int:
    """Close `old` and open a new eventfd on the same number."""
    os.close(old)
    owned.remove(old)
    new = _eventfd(owned)
    assert new == old, "the number was not reused"
    return new


@pytest.mark.parametrize("poller", POLLERS)
def test_r34_reregistered_eventfd_number_reaches_the_new_handler(poller: str, fds: list[int]) -> None:
    calls: list[str] = []
    with MainLoop(poller) as loop:
        old = _eventfd(fds)
        loop.set_fd_handler(old, lambda _: calls.append("old"))
        loop.main_loop_wait(nonblocking=True)
        new = _reuse_as_eventfd(old, fds)  # closed without a delete, number taken by a new one

        def on_new(_: object) -> None:
            calls.append("new")
            os.eventfd_read(new)

        loop.set_fd_handler(new, on_new)
        loop.main_loop_wait(nonblocking=True)
        os.eventfd_write(new, 1)
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
            if calls:
                break
        assert calls == ["new"]


@pytest.mark.parametrize("poller", POLLERS)
def test_r34_reregistered_eventfd_number_does_not_hear_the_old_file_kept_by_a_dup(poller: str, fds: list[int]) -> None:
    calls: list[str] = []
    with MainLoop(poller) as loop:
        old = _eventfd(fds)
        loop.set_fd_handler(old, lambda _: calls.append("old"))
        loop.main_loop_wait(nonblocking=True)
        keep = os.dup(old)  # the old file outlives its number
        fds.append(keep)
        new = _reuse_as_eventfd(old, fds)
        loop.set_fd_handler(new, lambda _: calls.append("new"))
        loop.main_loop_wait(nonblocking=True)
        os.eventfd_write(keep, 1)  # the OLD file becomes readable; the new one is not
        for _ in range(3):
            loop.main_loop_wait(nonblocking=True)
        assert calls == []


@pytest.mark.parametrize("poller", POLLERS)
def test_r34_eventfd_number_reused_without_reregistration_never_reaches_the_old_handler(
    poller: str, fds: list[int]
) -> None:
    _needs_kcmp(poller)
    calls: list[str] = []
    with MainLoop(poller) as loop:
        old = _eventfd(fds)
        loop.set_fd_handler(old, lambda _: calls.append("old"))
        loop.main_loop_wait(nonblocking=True)
        new = _reuse_as_eventfd(old, fds)
        os.eventfd_write(new, 1)  # somebody else's eventfd now, and readable
        raised = 0
        for _ in range(3):
            try:
                loop.main_loop_wait(nonblocking=True)
            except ClosedFdError as e:
                assert e.fd == new
                raised += 1
        assert calls == []
        if poller == "poll":  # epoll (selectors' too) forgot the closed file silently (R33)
            assert raised == 1
            assert loop.records() == []


# --------------------------------------------------- the witnesses (impl/kernel.py, R34)


def _needs_kcmp(poller: str) -> None:
    if poller == "poll" and same_file_check() is None:
        pytest.skip("kcmp(2) is missing or refused here: poll cannot tell anonymous files apart")


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("how", ["delete", "close", "drop", "quarantine"])
def test_r34_witness_lives_exactly_as_long_as_the_record(poller: str, how: str, fds: list[int]) -> None:
    """The dup held for an anonymous file is taken when the record is registered (before any
    fill: a record not in the kernel set needs it too), and closed when the record is let go:
    by a delete, by close(), by a loop collected without close(), or by the quarantine of a
    reused number. No fd is left behind."""
    _needs_kcmp(poller)
    before = open_fds()
    loop: MainLoop | None = MainLoop(poller)
    assert loop is not None
    ev = _eventfd(fds)
    loop.set_fd_handler(ev, lambda _: None)
    witnesses = open_fds() - before - {ev, loop.wakeup_fd, loop.poller.fileno()}
    assert len(witnesses) == 1  # one dup, of the eventfd, at once
    (w,) = witnesses
    assert same_file_check() is not None and same_file_check()(w, ev)  # type: ignore[misc]
    loop.main_loop_wait(nonblocking=True)
    assert open_fds() - before - {ev, loop.wakeup_fd, loop.poller.fileno()} == {w}  # the fill takes none
    if how == "delete":
        loop.set_fd_handler(ev, None, None)
        assert open_fds() - before == {ev, loop.wakeup_fd, loop.poller.fileno()} - {-1}
        loop.close()
    elif how == "close":
        loop.close()
    elif how == "drop":
        with pytest.warns(ResourceWarning):
            loop = None
            gc.collect()
    else:
        new = _reuse_as_eventfd(ev, fds)
        os.eventfd_write(new, 1)
        with pytest.raises(ClosedFdError):
            loop.check_fds()
        assert loop.records() == []
        loop.close()
    assert open_fds() - before <= set(fds)


def test_r34_poll_witness_tells_a_reregistered_reused_number_from_the_same_file(fds: list[int]) -> None:
    """Re-registering a number that still names the file registered keeps its registration and
    witness; one a new anonymous file took after the close renews both."""
    _needs_kcmp("poll")
    calls: list[str] = []
    with MainLoop("poll") as loop:
        ev = _eventfd(fds)
        loop.set_fd_handler(ev, lambda _: calls.append("first"))
        loop.main_loop_wait(nonblocking=True)
        (w,) = loop_witnesses(fds, loop)
        loop.set_fd_handler(ev, lambda _: calls.append("same"))
        loop.main_loop_wait(nonblocking=True)
        assert loop_witnesses(fds, loop) == [w]  # the same file: nothing renewed
        new = _reuse_as_eventfd(ev, fds)

        def on_new(_: object) -> None:
            calls.append("new")
            os.eventfd_read(new)

        loop.set_fd_handler(new, on_new)
        loop.main_loop_wait(nonblocking=True)
        (w2,) = loop_witnesses(fds, loop)
        assert same_file_check()(w2, new)  # type: ignore[misc]
        os.eventfd_write(new, 1)
        loop.main_loop_wait(nonblocking=True)
        assert calls == ["new"]


def test_r34_a_drop_cut_short_before_its_witness_left_is_finished_by_the_next_registration(
    fds: list[int],
) -> None:
    """A signal handler's exception between a delete's kernel step and its witness's release
    (R35) leaves the witness behind; registering the number again keeps it (the same file): no
    fd leaks."""
    _needs_kcmp("poll")
    before = open_fds()
    with MainLoop("poll") as loop:
        ev = _eventfd(fds)
        loop.set_fd_handler(ev, lambda _: None)
        loop.main_loop_wait(nonblocking=True)
        (w,) = loop_witnesses(fds, loop)
        with (
            interrupt_before(iohandler.impl.kernel, "Kernel.release", "self._release_witness(rec.fd)") as fired,
            pytest.raises(KeyboardInterrupt),
        ):
            loop.set_fd_handler(ev, None, None)
            loop.main_loop_wait(nonblocking=True)
        assert fired and loop_witnesses(fds, loop) == [w]  # left behind
        calls: list[int] = []

        def on_ev(_: object) -> None:
            calls.append(os.eventfd_read(ev))

        loop.set_fd_handler(ev, on_ev)
        loop.main_loop_wait(nonblocking=True)
        assert loop_witnesses(fds, loop) == [w]  # one witness, still the same file's
        os.eventfd_write(ev, 3)
        loop.main_loop_wait(nonblocking=True)
        assert calls == [3]
    assert open_fds() - before <= set(fds)


@pytest.mark.parametrize("poller", POLLERS)
@pytest.mark.parametrize("kcmp", [True, False])
def test_r34_an_update_of_the_same_eventfd_renews_only_where_nothing_can_tell(
    poller: str, kcmp: bool, fds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Updating the handlers of a registered eventfd whose number still names it: the witness
    vouches for the file on every poller, so the kernel object stays (selectors used to rebuild
    its whole selector per update). Without kcmp, epoll's confirm still vouches, poll takes
    numbers afresh, and selectors cannot tell, so its registration is renewed (a rebuild)."""
    if kcmp:
        _needs_kcmp(poller)
    else:
        monkeypatch.setattr(iohandler.impl.kernel, "same_file_check", lambda: None)
    calls: list[str] = []
    with MainLoop(poller) as loop:
        ev = _eventfd(fds)
        loop.set_fd_handler(ev, lambda _: calls.append("first"))
        loop.main_loop_wait(nonblocking=True)
        before = loop.poller.fileno()
        witnesses = loop_witnesses(fds, loop)
        assert len(witnesses) == kcmp

        def second(_: object) -> None:
            calls.append("second")
            os.eventfd_read(ev)

        loop.set_fd_handler(ev, second)
        (view,) = loop.snapshot().records
        renewed = poller == "selectors" and not kcmp
        assert view.renew is renewed
        loop.main_loop_wait(nonblocking=True)
        assert (loop.poller.fileno() != before) is renewed  # rebuilt or not
        assert loop_witnesses(fds, loop) == witnesses
        os.eventfd_write(ev, 1)
        loop.main_loop_wait(nonblocking=True)
        assert calls == ["second"]


def test_r34_poll_witnesses_follow_only_their_own_registrations(fds: list[int], socks: Pairs) -> None:
    """On poll (where a ready number's file matters most), beside a witnessed eventfd: a
    socket registered, changed and deleted takes and drops no witness; the eventfd's interest
    changing keeps its witness (the same file)."""
    _needs_kcmp("poll")
    a, _ = socks.pair()
    with MainLoop("poll") as loop:
        ev = _eventfd(fds)
        loop.set_fd_handler(ev, print)
        loop.set_fd_handler(a, print)
        loop.main_loop_wait(nonblocking=True)
        (w,) = loop_witnesses(fds, loop)
        loop.set_fd_handler(a, print, print)  # interest changes: a sync, no witness
        loop.main_loop_wait(nonblocking=True)
        loop.set_fd_handler(a, None, None)  # dropped: no witness to release
        loop.main_loop_wait(nonblocking=True)
        assert loop_witnesses(fds, loop) == [w]
        loop.set_fd_handler(ev, print, print)  # the eventfd's interest changes: same file
        loop.main_loop_wait(nonblocking=True)
        assert loop_witnesses(fds, loop) == [w]
        assert dict(loop.snapshot().kernel).get(ev) == IN | OUT | HUP | ERR


def loop_witnesses(fds: list[int], loop: MainLoop) -> list[int]:
    """The loop's fds that are neither the test's nor its wakeup: its witnesses."""
    kinds = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in open_fds()}
    return sorted(fd for fd, kind in kinds.items() if "eventfd" in kind and fd not in fds and fd != loop.wakeup_fd)


# --------------------------------------------- the probes themselves (impl/kernel.py)


def test_anon_inode_is_what_every_eventfd_reports() -> None:
    """The shared inode is measured afresh (not only cached at import): two new eventfds and
    the loop's own wakeup report it, a socket does not."""
    from iohandler.impl.kernel import ANON_INODE, _anon_inode

    shared = _anon_inode()
    assert shared == ANON_INODE
    a, b = os.eventfd(0), os.eventfd(0)
    s1, s2 = socket.socketpair()
    try:
        for fd in (a, b):
            st = os.fstat(fd)
            assert (st.st_dev, st.st_ino) == shared
        st = os.fstat(s1.fileno())
        assert (st.st_dev, st.st_ino) != shared
    finally:
        os.close(a)
        os.close(b)
        s1.close()
        s2.close()


def _kcmp_works_here() -> bool:
    """An oracle independent of impl/kernel.py: kcmp(2) called directly, x86_64 only."""
    if platform.machine() != "x86_64":
        return False
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    a = os.eventfd(0)
    b = os.dup(a)
    try:
        return int(syscall(312, os.getpid(), os.getpid(), 0, a, b)) == 0
    finally:
        os.close(a)
        os.close(b)


def test_the_kcmp_probe_answers_same_file_for_dups_only() -> None:
    """`_probe_kcmp` run afresh (the cached answer of `same_file_check` hides it): true for a dup,
    false for another eventfd, a socket, a closed or a negative number; it leaves no fd open."""
    from iohandler.impl.kernel import _probe_kcmp

    if not _kcmp_works_here():
        pytest.skip("kcmp(2) is missing or refused here (or this is not x86_64)")
    before = open_fds()
    same = _probe_kcmp()
    assert open_fds() == before
    assert same is not None, "kcmp works in this process, but a fresh probe says it does not"
    a = os.eventfd(0)
    b, c = os.dup(a), os.eventfd(0)
    s1, s2 = socket.socketpair()
    try:
        assert same(a, b) and same(b, a) and same(a, a)
        assert not same(a, c) and not same(c, a)
        assert not same(a, s1.fileno())
        assert not same(s1.fileno(), s2.fileno())
        assert same(s1.fileno(), s1.fileno())
        assert not same(a, -1)
        os.close(c)
        assert not same(a, c)
    finally:
        os.close(a)
        os.close(b)
        s1.close()
        s2.close()


class _LosingPoll(PollPoller):
    """poll(2) whose next rebuild reports `lose` as not registrable again (a backend that
    tracks numbers in the kernel could)."""

    lose: int | None = None

    def rebuild(self) -> list[int]:
        super().rebuild()
        return [] if self.lose is None else [self.lose]


def test_r34_a_witness_leaves_with_a_registration_a_rebuild_loses(fds: list[int]) -> None:
    _needs_kcmp("poll")
    poller = _LosingPoll()
    kernel = Kernel(poller, fast_confirm=True)
    ev = _eventfd(fds)
    rec = Record(ev, 1)
    rec.ident = identity(os.fstat(ev))
    rec.kev = 0
    before = open_fds()
    assert kernel.bind(rec, ev)  # a fresh witness
    assert kernel.sync(rec, IN) is None
    (w,) = open_fds() - before
    assert kernel.witnesses == {ev: w}
    poller.lose = ev
    kernel.rebuild()
    assert kernel.lost == [ev]
    assert kernel.witnesses == {}
    assert open_fds() == before
    kernel.close()
