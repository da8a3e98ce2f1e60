"""The real loop on real fds for the lockstep runner: impl.driver's `VectorSession` plus the
checks a trace cannot show (R17 calls, kernel registrations), each failure tagged."""

from __future__ import annotations

from collections.abc import Mapping

from iohandler.impl import IN, OUT, EpollPoller, MainLoop, PollPoller, SelectorsPoller, flag_names
from iohandler.impl.driver import LoopFactory, VectorSession, callback_name
from iohandler.impl.tracing import Handler
from iohandler.specs.scenarios import Config
from iohandler.specs.vector import CtxSet, Iterate, ScriptAction, Set
from tests import support


class CheckFailed(AssertionError):
    """A lockstep check failed; `tag` names the check."""

    tag = "?"

    def __init__(self, tag: str, message: str) -> None:
        super().__init__(f"[{tag}] {message}")
        self.tag = tag


_FAILURES: dict[str, type[CheckFailed]] = {}


def failure(tag: str, message: str) -> CheckFailed:
    """A CheckFailed of a class per tag: Hypothesis tells failures apart by exception type and
    place, so while shrinking it keeps to the check that failed first instead of drifting."""
    cls = _FAILURES.get(tag)
    if cls is None:
        cls = _FAILURES[tag] = type(f"CheckFailed_{tag}", (CheckFailed,), {})
    return cls(tag, message)


def kernel_registrations(loop: MainLoop) -> dict[int, int] | None:
    """fd -> IN/OUT interest the backend holds *now*. For epoll (and selectors, which is epoll on
    Linux) this is the kernel's own book (tests.support.epoll_kernel_set: /proc/self/fdinfo of
    the epoll fd), not the poller's; for poll(2), which has no kernel registration, the poller's
    table. None if the backend is unknown (the check is then skipped, never faked). Unlike
    tests.support.kernel_registrations it never asserts: a difference is a tagged lockstep
    failure, and the notifier's registration is left in for the caller to count."""
    poller = loop.poller
    if isinstance(poller, PollPoller):
        return {fd: ev & (IN | OUT) for fd, ev in poller.registered().items()}
    if not isinstance(poller, EpollPoller | SelectorsPoller) or poller.fileno() < 0:
        return None
    # The kernel adds HUP/ERR to every registration: compare the interest that varies.
    return {fd: ev & (IN | OUT) for fd, ev in support.epoll_kernel_set(poller.fileno()).items()}


class Session(VectorSession):
    """impl.driver's `VectorSession` for a Config, with the lockstep checks on its hooks.
    `violations` collects what the checks found inside callbacks (raising there would be caught
    and re-noted by the loop)."""

    def __init__(self, config: Config, poller: str, make_loop: LoopFactory = MainLoop) -> None:
        self.config = config
        self.violations: list[CheckFailed] = []
        # Shadow of what the session itself registered: fd -> (read, write), None once deleted.
        self.shadow: dict[str, tuple[str | None, str | None] | None] = {}
        # The same for the context's handlers (format v3, R48): fd -> (read, write), None once deleted.
        self.ctx_shadow: dict[str, tuple[str | None, str | None] | None] = {}
        super().__init__(config.fds, config.scripts, config.gates, config.gate_runs, poller=poller, make_loop=make_loop)

    # -- the hooks: checks made while the loop runs

    def on_call(self, fd: str, script: str) -> None:
        """R17: a handler runs only for a live record, and only as its current handler; R49 the
        same for the context's handlers (a deleted node is never called)."""
        if fd in self.ctx_shadow:  # an fd is in one list or the other (SPEC R48)
            now = self.ctx_shadow.get(fd)
            if now is None or script not in now:
                self.violations.append(
                    failure("R49", f"context handler {script} ran for {fd}, whose handlers are {now}")
                )
            return
        current = self.shadow.get(fd)
        if current is None:
            self.violations.append(failure("R17", f"handler {script} ran for {fd}, whose record was deleted"))
        elif script not in current:
            self.violations.append(failure("R17", f"handler {script} ran for {fd}, whose handlers are {current}"))

    def on_dispatch(self, fd: str, role: int, callback: Handler) -> None:
        current = self.shadow.get(fd)
        if current is None or current[role] != callback_name(callback):
            what = "read" if role == 0 else "write"
            self.violations.append(
                failure("R17", f"{what} handler {callback_name(callback)} about to run for {fd}; registered: {current}")
            )

    def on_poll(self, entries: list[tuple[int, int]]) -> None:
        """While the loop waits, the backend polls exactly the poll set (plus the notifier)."""
        assert self.loop is not None
        regs = kernel_registrations(self.loop)
        if regs is None:
            return
        mine = {fd: ev for fd, ev in regs.items() if fd in self.names}
        want = {fd: ev & (IN | OUT) for fd, ev in entries}
        # The context's live handlers are in the same kernel set (one wait, R47), as they were
        # when this fill ran: changes made during the last wait reach the kernel at this fill.
        for name, handlers in self.ctx_shadow.items():
            if handlers is not None:
                fd = self.fds[name].fd
                want[fd] = (IN if handlers[0] is not None else 0) | (OUT if handlers[1] is not None else 0)
        others = [fd for fd in regs if fd not in self.names]
        if mine != want or len(others) != 1:
            self.violations.append(
                failure(
                    "kernel",
                    f"backend registrations {self._show(mine)} (+{len(others)} other) while the poll set is "
                    f"{self._show(want)} (+ the notifier)",
                )
            )

    def on_set(self, action: Set) -> None:
        fd = action.fd
        if action.read is None and action.write is None:
            if fd in self.shadow:
                self.shadow[fd] = None
        else:
            self.shadow[fd] = (action.read, action.write)
        # R1 right after each registration: a duplicate may be reaped before the step ends.
        held = self.full_list()
        if len({f for f, _ in held}) != len(held):
            self.violations.append(failure("R1", f"two records for one fd after {action}: {held}"))

    def act(self, action: ScriptAction | Iterate) -> None:
        super().act(action)
        if isinstance(action, CtxSet):
            self.ctx_shadow[action.fd] = (
                None if action.read is None and action.write is None else (action.read, action.write)
            )

    # -- what the runner reads between steps

    def bh_rows(self) -> list[tuple[str, bool, bool, bool]]:
        """The context's BH list, newest first, deleted ones not yet freed included: (name the
        BH was created under, scheduled, idle, deleted)."""
        assert self.loop is not None
        return [(self.bh_names[b], b.scheduled, b.idle, b.deleted) for b in self.loop.context.bottom_halves()]

    def ctx_rows(self) -> list[tuple[str, str | None, str | None, bool]]:
        """The context's handler list, newest first, nodes flagged deleted included."""
        assert self.loop is not None
        return [
            (self.names[h.fd], callback_name(h.read), callback_name(h.write), h.deleted)
            for h in self.loop.context.handlers()
        ]

    def registered_fds(self) -> set[str] | None:
        """Handler fds the backend polls now (None: unknown backend)."""
        assert self.loop is not None
        regs = kernel_registrations(self.loop)
        return None if regs is None else {self.names[fd] for fd in regs if fd in self.names}

    def _show(self, regs: Mapping[int, int]) -> str:
        return "{" + ", ".join(f"{self.names[fd]}:{'|'.join(flag_names(ev))}" for fd, ev in sorted(regs.items())) + "}"

    def full_list(self) -> list[tuple[str, bool]]:
        """Every record the loop holds, deleted ones included, in list order (the public
        `snapshot()`, so a renamed private field cannot switch this check off)."""
        assert self.loop is not None
        return [(self.names.get(r.fd, str(r.fd)), r.deleted) for r in self.loop.snapshot().records]
