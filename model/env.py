"""The environment: fd kinds, what the driver does to them, and what poll reports. R11, R12.

The readiness table is Linux's (VECTORS.md), for an AF_UNIX stream socketpair and a pipe:

    kind        readiness
    socket      OUT always; IN while bytes are pending; after hangup IN, OUT, HUP for good
    pipe-read   IN while bytes are pending; after hangup HUP (plus IN while bytes remain)
    pipe-write  OUT; after hangup OUT and ERR (no reader left)
    signal      IN while its signal is pending (raised, not drained): a signalfd (R60, R61)

A signal raised twice before a drain is pending once: the fd's readiness is all the loop sees of
it (the kernel's coalescing of standard signals, or a queue of real-time ones, is behind the fd).
"""

from __future__ import annotations

from dataclasses import replace

from iohandler.model.state import (
    ALWAYS_REPORTED,
    ERR,
    HUP,
    IN,
    OUT,
    Env,
    Fd,
    FdState,
    PollSet,
)


class InvalidAction(Exception):
    """An action the vector format calls invalid (send after hangup, send to a pipe-write)."""


def readiness(fd: FdState) -> int:
    """R12. What the kernel would report if asked for everything. Contract: lemma_readiness."""
    if fd.kind == "socket":
        return OUT | (IN | HUP if fd.hung_up else IN if fd.pending else 0)
    if fd.kind == "pipe-read":
        return (IN if fd.pending else 0) | (HUP if fd.hung_up else 0)
    if fd.kind == "signal":
        return IN if fd.pending else 0
    return OUT | (ERR if fd.hung_up else 0)


def send(fd: Fd, state: FdState) -> FdState:
    if state.kind in ("pipe-write", "signal"):
        raise InvalidAction(f"send on {state.kind} fd {fd!r}")
    if state.hung_up:
        raise InvalidAction(f"send on {fd!r} after its hangup")
    return replace(state, pending=True)


def raise_signal(fd: Fd, state: FdState) -> FdState:
    """`raise` (format v3): the fd's signal is pending until a drain reads it (R60)."""
    if state.kind != "signal":
        raise InvalidAction(f"raise on {state.kind} fd {fd!r}")
    return replace(state, pending=True)


def drain(fd: Fd, state: FdState) -> FdState:
    if state.kind == "pipe-write":
        raise InvalidAction(f"drain on pipe-write fd {fd!r}")
    return replace(state, pending=False)


def hangup(state: FdState) -> FdState:
    """The driver closes its end; a second hangup changes nothing."""
    return replace(state, hung_up=True)


def poll(env: Env, poll_set: PollSet, wakeup: bool) -> tuple[tuple[int, ...], int]:
    """R11, R13. Revents per poll-set entry and poll's return value.

    Each entry reports readiness ∩ (requested ∪ {HUP, ERR}); poll returns how many entries
    (the loop's wakeup notifier among them) have non-zero revents. Contract: lemma_poll.
    """
    revents = tuple(readiness(env[fd]) & (events | ALWAYS_REPORTED) for fd, events in poll_set)
    return revents, sum(1 for r in revents if r) + (1 if wakeup else 0)
