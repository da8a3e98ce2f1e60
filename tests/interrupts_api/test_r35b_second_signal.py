"""R35 attack (round r35b): two signal handlers' exceptions, the second at the next point
CPython checks. CPython runs every tripped signal's handler at one check; when one raises, the
rest stay tripped and run at the very next check (Modules/signalmodule.c,
`_PyErr_CheckSignalsTstate`), which is now inside the recovery: the entry of `errors.finish`
(a RESUME). impl/errors.py is outside the interrupt tests' `_IMPL_FILES`, so no sweep plants
there. Red at d7e961d."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import iohandler.impl.loop
from iohandler.impl import MainLoop, errors
from tests.interrupts_api.plant import Injector, point_index, run_with
from tests.support import lock_is_free

# Kept red on purpose: each test shows a limit the loop has today (strict: a fix shows as XPASS).
pytestmark = pytest.mark.xfail(
    strict=True,
    reason=(
        "R35 limit, by design: a second signal handler's exception at the repair's own entry stops the repair "
        "(SPEC R35)"
    ),
)

POLLERS = ["epoll", "poll", "selectors"]


def _second_signal_at_finish(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[str]:
    """`module.finish` raises KeyboardInterrupt at its entry once, as finish's own RESUME would
    with a second signal tripped (a raising trace function unsets tracing: the Injector cannot
    plant twice)."""
    seen: list[str] = []

    def finish(step: Any) -> None:
        if not seen:
            seen.append("second")
            raise KeyboardInterrupt("the second signal, at the entry of errors.finish")
        errors.finish(step)

    monkeypatch.setattr(module, "finish", finish)
    return seen


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("poller", POLLERS)
def test_add_cut_twice_leaves_a_record_without_its_identity(
    poller: str, pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """set_fd_handler (add), the first cut as `stat.S_ISCHR` returns in `_register` (after
    `reg.add(n)`: the record exists without `ident`, `stale`, not dirty: the state d7e961d's
    finish was added to complete), the second at finish's entry: nothing completes it.
    records() lists the handler, snapshot()/check_fds() raise AttributeError, and the fd's
    read handler never runs (R35: happened whole or not at all)."""
    a, pa = pair
    got: list[str] = []

    def reader(sock: socket.socket) -> None:
        got.append("read")
        with contextlib.suppress(BlockingIOError):
            sock.recv(100)

    with MainLoop(poller) as probe:
        n, entry = point_index(lambda: probe.set_fd_handler(a, reader, opaque=a), "_register", "S_ISCHR")
    assert not entry
    with MainLoop(poller) as loop:
        second = _second_signal_at_finish(monkeypatch, iohandler.impl.loop)
        inj = Injector(n)
        exc = run_with(inj, loop, lambda lp: lp.set_fd_handler(a, reader, opaque=a))
        assert inj.fired and second
        assert isinstance(exc, KeyboardInterrupt), f"{exc!r}"
        assert lock_is_free(loop)
        listed = bool(loop.records())
        problems = []
        for what in (loop.snapshot, loop.check_fds):
            try:
                what()
            except AttributeError as e:
                problems.append(f"{what.__name__}() raises {e!r}")
        pa.send(b"x")
        for _ in range(3):
            with contextlib.suppress(AttributeError):
                loop.main_loop_wait(nonblocking=True)
        if listed and got != ["read"]:
            problems.append(f"records() lists the handler, which ran {got}")
        assert not problems, problems
