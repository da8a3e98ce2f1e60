"""The pollers on real fds: registration, the kernel facts impl/pollers.py relies on."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from impl import ERR, HUP, IN, NVAL, OUT, POLLERS, Poller, flag_names
from impl.pollers import make_poller

NAMES = sorted(POLLERS)


@pytest.fixture(params=NAMES)
def poller(request: pytest.FixtureRequest) -> Iterator[Poller]:
    p = make_poller(request.param)
    yield p
    p.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


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


def test_epoll_reports_every_ready_fd_beyond_its_buffer() -> None:
    if "epoll" not in POLLERS:
        pytest.skip("no epoll here")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1300
    if soft < want + 100:
        if hard != resource.RLIM_INFINITY and hard < want + 100:
            pytest.skip(f"needs {want + 100} fds, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want + 100, hard))
    p = make_poller("epoll")
    fds = [os.eventfd(1) for _ in range(want)]  # all readable
    try:
        for fd in fds:
            p.modify(fd, IN | HUP | ERR)
        assert sorted(p.wait(0)) == [(fd, IN) for fd in sorted(fds)]
    finally:
        for fd in fds:
            os.close(fd)
        p.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
