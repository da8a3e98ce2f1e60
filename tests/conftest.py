"""Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (default `dev`).

dev       fast feedback while editing
ci        bounded for CI's budget, derandomized so a red run replays exactly
thorough  long runs, by hand or nightly
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, settings

import iohandler.impl.loop as impl_loop
from iohandler.impl import POLLERS, MainLoop
from tests.support import FakeClock, Pairs, pairs

_base = settings(
    deadline=None,  # real fds and threads: wall time is not the property under test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", _base, max_examples=40, stateful_step_count=20)
settings.register_profile("ci", _base, max_examples=150, stateful_step_count=30, derandomize=True, database=None)
settings.register_profile(
    "thorough", _base, max_examples=3000, stateful_step_count=60, phases=list(Phase), verbosity=Verbosity.normal
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected, non-blocking socketpair, closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def socks() -> Iterator[Pairs]:
    """Non-blocking socketpairs made with `socks.pair()`, all closed after the test."""
    with pairs() as p:
        yield p


@pytest.fixture(params=sorted(POLLERS))
def loop(request: pytest.FixtureRequest) -> Iterator[MainLoop]:
    """A MainLoop on each poller in turn (the test runs once per poller), closed after the test."""
    with MainLoop(request.param) as lp:
        yield lp


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The loop's clock under the test's control: the loop reads `time.monotonic()` and calls
    `time.sleep()` through its module's `time`, which this replaces (support.FakeClock)."""
    c = FakeClock()
    monkeypatch.setattr(impl_loop, "time", c)
    return c
