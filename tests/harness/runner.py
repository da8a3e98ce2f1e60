"""The lockstep runner: model and real loop step by step (`Lockstep`), `replay`, `minimise`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from iohandler.impl import MainLoop
from iohandler.impl.driver import LoopFactory
from iohandler.model import env as model_env
from iohandler.model.registry import live_records
from iohandler.model.state import fds_unique
from iohandler.specs.scenarios import (
    Config,
    pruned,
    smaller_steps,
)
from iohandler.specs.vector import (
    Action,
    Event,
)
from tests.harness.config import model_step, open_fds, world_for
from tests.harness.printing import counterexample, describe_event
from tests.harness.session import CheckFailed, Session, failure


class Lockstep:
    """One lockstep run: each `do(action)` runs the action on the model and on the real loop and
    compares their events; `check()` is the invariants; `close()` the leak check. Plain code, so
    a counterexample can be replayed and minimised without Hypothesis (`replay`, `minimise`)."""

    def __init__(
        self, config: Config, poller: str, make_loop: LoopFactory = MainLoop, *, fold: bool | None = None
    ) -> None:
        self.config = config
        self.fold = poller == "selectors" if fold is None else fold
        self.steps: list[Action] = []
        self.baseline = open_fds()
        self.world = world_for(config)
        self.session: Session | None = Session(config, poller, make_loop)
        self.last_events: list[Event] = []  # the last step's events (for the machine's figures)

    def fail(self, tag: str, message: str) -> CheckFailed:
        return failure(tag, f"{message}\n\n{counterexample(self.config, self.steps, fold=self.fold)}")

    def do(self, action: Action) -> None:
        assert self.session is not None
        self.steps.append(action)
        try:
            self.world, want = model_step(self.world, action, self.config, fold=self.fold)
        except model_env.InvalidAction:
            self.steps.pop()  # not run on the loop: the vector would be invalid (VECTORS.md)
            raise
        got = self.session.run(action)
        self.last_events = got
        if self.session.violations:
            v = self.session.violations[0]
            raise self.fail(v.tag, str(v).split("] ", 1)[1])
        if list(want) != got:
            raise self.fail(
                "trace", "the loop's events differ from the model's at the last step\n" + _diff(list(want), got)
            )

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
            leaked = open_fds() - self.baseline
            if leaked > 0:
                raise self.fail("leak", f"{leaked} fd(s) still open after the loop and the test's fds were closed")

    def check(self) -> None:
        if self.session is None:
            return
        s = self.session
        # R1: at most one record per fd, deleted-but-unreaped ones counted.
        if not fds_unique(self.world.loop.records):
            raise self.fail("R1", "the model holds two records for one fd")
        held = s.full_list()
        rows = [fd for fd, *_ in s.live_rows()]
        fds = [fd for fd, _ in held]
        if len(set(fds)) != len(fds) or len(set(rows)) != len(rows):
            raise self.fail("R1", f"the loop holds two records for one fd: {held}")
        # The registry, live records and deleted ones, in the model's order.
        want_live = tuple((r.fd, r.read, r.write, r.gate) for r in live_records(self.world.loop))
        got_live = s.live_rows()
        if want_live != got_live:
            raise self.fail("order", f"live records: loop {got_live}, model {want_live}")
        want = [(r.fd, r.deleted) for r in self.world.loop.records]
        if held != want:
            raise self.fail("order", f"records incl. deleted (fd, deleted): loop {held}, model {want}")
        # The context (format v3): its BH list and handler list, deleted ones not yet freed or
        # unlinked included, in the model's order (R42-R44, R48).
        ctx = self.world.ctx
        want_bhs = [(b.name, b.scheduled, b.idle, b.deleted) for b in ctx.bhs if not b.freed]
        got_bhs = s.bh_rows()
        if want_bhs != got_bhs:
            raise self.fail("bh-list", f"BHs (name, scheduled, idle, deleted): loop {got_bhs}, model {want_bhs}")
        want_nodes = [(n.fd, n.read, n.write, n.deleted) for n in ctx.nodes]
        got_nodes = s.ctx_rows()
        if want_nodes != got_nodes:
            raise self.fail(
                "ctx-list", f"context handlers (fd, read, write, deleted): loop {got_nodes}, model {want_nodes}"
            )
        # Between iterations the backend polls only fds that still have a record: a reaped
        # record's registration is gone (no leak in the kernel). The context's fds are checked
        # at each wait instead (Session.on_poll): a delete during the wait leaves the kernel at
        # the next fill.
        regs = s.registered_fds()
        present = {r.fd for r in self.world.loop.records} | set(self.config.ctx_fds)
        if regs is not None and not regs <= present:
            raise self.fail("kernel", f"backend still polls {sorted(regs - present)}, which have no record")


def replay(
    config: Config, steps: Sequence[Action], poller: str, make_loop: LoopFactory = MainLoop
) -> CheckFailed | None:
    """Run `steps` in lockstep; the first failed check, or None."""
    run: Lockstep | None = None
    try:
        run = Lockstep(config, poller, make_loop)
        for action in steps:
            run.do(action)
            run.check()
        run.close()
    except CheckFailed as e:
        return e
    except model_env.InvalidAction:
        return None  # a shortened sequence the vector format forbids: not a counterexample
    finally:
        if run is not None and run.session is not None:
            run.session.close()
    return None


def minimise(
    config: Config, steps: Sequence[Action], poller: str, make_loop: LoopFactory = MainLoop
) -> tuple[Config, list[Action], CheckFailed]:
    """Greedy delta debugging: drop single steps, single during_wait actions, then single script
    actions, while the same check still fails; then drop what nothing names. Cheap next to
    Hypothesis' stateful shrinker, and it gives the counterexample's length in steps."""
    first = replay(config, steps, poller, make_loop)
    assert first is not None, "not a counterexample"
    best, err = list(steps), first

    def still(c: Config, cand: list[Action]) -> CheckFailed | None:
        e = replay(c, cand, poller, make_loop)
        return e if e is not None and e.tag == err.tag else None

    changed = True
    while changed:
        changed = False
        for cand in smaller_steps(best):
            e = still(config, cand)
            if e is not None:
                best, err, changed = cand, e, True
                break
    for name in list(config.scripts):
        i = 0
        while i < len(config.scripts[name]):
            body = config.scripts[name]
            smaller = replace(config, scripts={**config.scripts, name: body[:i] + body[i + 1 :]})
            e = still(smaller, best)
            if e is not None:
                config, err = smaller, e
            else:
                i += 1
    smaller = pruned(config, best)
    e = still(smaller, best)
    if e is not None:
        config, err = smaller, e
    return config, best, err


def _diff(want: list[Event], got: list[Event]) -> str:
    lines = []
    for i in range(max(len(want), len(got))):
        w = describe_event(want[i]) if i < len(want) else "(nothing)"
        g = describe_event(got[i]) if i < len(got) else "(nothing)"
        lines.append(f"  {'  ' if w == g else '!!'} model: {w:<40} loop: {g}")
    return "\n".join(lines)
