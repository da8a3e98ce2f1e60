"""The Hypothesis state machine: one rule per kind of vector action, run in lockstep."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hypothesis import Phase, reject, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from iohandler.impl import MainLoop
from iohandler.impl.driver import LoopFactory
from iohandler.model import env as model_env
from iohandler.model.state import World
from iohandler.specs.scenarios import (
    Config,
    action_strategies,
    configs,
    context_actions,
    drop_invalid_sends,
)
from iohandler.specs.vector import (
    Action,
    BhSchedule,
    BhScheduleIdle,
    CtxSet,
    Drain,
    Hangup,
    Iterate,
    Notify,
    Raise,
    Send,
    SetGate,
    Snapshot,
)
from tests.harness.printing import counterexample
from tests.harness.runner import Lockstep, minimise, replay
from tests.harness.session import CheckFailed


class LockstepMachine(RuleBasedStateMachine):
    """Each rule is one vector action, run on the model and on the real loop (`Lockstep`); the
    invariants hold after every step. Subclasses (`machine_for`) fix the poller and the loop."""

    poller: ClassVar[str] = "epoll"
    make_loop: ClassVar[LoopFactory] = MainLoop
    stats: ClassVar[dict[str, int]] = {"examples": 0, "steps": 0}
    failures: ClassVar[list[tuple[Config, list[Action]]]] = []  # each failing run, in order

    def __init__(self) -> None:
        super().__init__()
        self.config: Config | None = None
        self.run: Lockstep | None = None

    @initialize(config=configs(signals=True))
    def start(self, config: Config) -> None:
        self.config = config
        self.run = Lockstep(config, self.poller, type(self).make_loop)
        type(self).stats["examples"] += 1

    def teardown(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.close()
            except CheckFailed:
                type(self).failures.append((run.config, list(run.steps)))
                raise

    @property
    def world(self) -> World:
        assert self.run is not None
        return self.run.world

    def do(self, action: Action) -> None:
        assert self.run is not None
        type(self).stats["steps"] += 1
        try:
            self.run.do(action)
        except model_env.InvalidAction:
            reject()  # format v3: polls that re-enter without end make the vector invalid
        except CheckFailed:
            type(self).failures.append((self.run.config, list(self.run.steps)))
            raise
        stats = type(self).stats
        for e in self.run.last_events:  # what the runs exercised, by event kind
            key = f"event {type(e).__name__}"
            stats[key] = stats.get(key, 0) + 1

    @invariant()
    def lockstep_invariants(self) -> None:
        if self.run is None:
            return
        try:
            self.run.check()
        except CheckFailed:
            type(self).failures.append((self.run.config, list(self.run.steps)))
            raise

    # -- rules: the actions of a vector

    @rule(data=st.data())
    def set_handler(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(data.draw(action_strategies(self.config).register, label="set"))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(data.draw(action_strategies(self.config).delete, label="delete"))

    @precondition(lambda self: self.config is not None and any(self._can_send(f) for f in self.config.fds))
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(Send(_pick(data, [f for f in self.config.fds if self._can_send(f)], "send")))

    @precondition(lambda self: self.config is not None and bool(self.config.drainable()))
    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(Drain(_pick(data, self.config.drainable(), "drain")))

    @precondition(lambda self: self.config is not None and bool(self.config.raisable()))
    @rule(data=st.data())
    def raise_signal(self, data: st.DataObject) -> None:
        """R60: a signal fd's signal raised (the kernel, or another process)."""
        assert self.config is not None
        self.do(Raise(_pick(data, self.config.raisable(), "raise")))

    @precondition(lambda self: self.config is not None and bool(self.config.hangable))
    @rule(data=st.data())
    def hangup(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(Hangup(_pick(data, sorted(self.config.hangable), "hangup")))

    @precondition(lambda self: self.config is not None and bool(self.config.gates))
    @rule(data=st.data(), value=st.booleans())
    def toggle_gate(self, data: st.DataObject, value: bool) -> None:
        assert self.config is not None
        self.do(SetGate(_pick(data, list(self.config.gates), "gate"), value))

    @rule()
    def notify(self) -> None:
        self.do(Notify())

    @rule()
    def snapshot(self) -> None:
        self.do(Snapshot())

    @rule(data=st.data())
    def iterate(self, data: st.DataObject) -> None:
        assert self.config is not None
        during = data.draw(action_strategies(self.config).during_wait, label="during_wait")
        # The fds already hung up, then the fuzzer's own filter (one definition of a valid send).
        hung = {f for f, s in self.world.env.pairs if s.hung_up}
        (step,) = drop_invalid_sends([Iterate(tuple(during))], hung)
        self.do(step)

    @rule()
    def iterate_plain(self) -> None:
        self.do(Iterate())  # the common case, cheap to shrink to

    def _can_send(self, fd: str) -> bool:
        assert self.config is not None
        return self.config.fds[fd] not in ("pipe-write", "signal") and not self.world.env[fd].hung_up


class ContextLockstepMachine(LockstepMachine):
    """Format v3 (SPEC R42-R50): configs with bottom halves and the context's own fds; the BHs
    are created first (`Config.setup`), then the rules above plus one for the context's actions
    (schedule, idle, cancel, delete, create again, context handlers, ctx-poll, timeout). The
    iterate rule's during_wait actions include them too (action_strategies)."""

    @initialize(config=configs(context=True))
    def start(self, config: Config) -> None:
        super().start(config)
        for action in config.setup():
            self.do(action)

    @precondition(lambda self: self.config is not None and bool(self.config.bhs))
    @rule(data=st.data())
    def context_step(self, data: st.DataObject) -> None:
        assert self.config is not None
        c = self.config
        options = context_actions(sorted(c.ctx_fds), list(c.scripts), list(c.bhs))
        self.do(data.draw(st.one_of(options), label="context"))

    # Rules of their own for what makes callbacks run, so BH walks and context handler walks
    # (where loops go wrong) are dense: a rule is drawn uniformly among the machine's rules.

    @precondition(lambda self: self.config is not None and bool(self.config.bhs))
    @rule(data=st.data(), idle=st.booleans())
    def bh_schedule(self, data: st.DataObject, idle: bool) -> None:
        assert self.config is not None
        name = _pick(data, list(self.config.bhs), "bh")
        self.do(BhScheduleIdle(name) if idle else BhSchedule(name))

    @precondition(lambda self: self.config is not None and bool(self.config.ctx_fds))
    @rule(data=st.data())
    def ctx_set(self, data: st.DataObject) -> None:
        assert self.config is not None
        fd = _pick(data, sorted(self.config.ctx_fds), "ctx fd")
        scripts = list(self.config.scripts)
        read = data.draw(st.none() | st.sampled_from(scripts), label="ctx read")
        write = data.draw(st.none() | st.sampled_from(scripts), label="ctx write")
        self.do(CtxSet(fd, read, write))

    @precondition(lambda self: self.config is not None and any(self._can_send(f) for f in self.config.ctx_fds))
    @rule(data=st.data())
    def send_ctx(self, data: st.DataObject) -> None:
        assert self.config is not None
        self.do(Send(_pick(data, [f for f in sorted(self.config.ctx_fds) if self._can_send(f)], "send ctx")))


@functools.lru_cache(maxsize=16)
def _indices(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


def _pick(data: st.DataObject, options: Sequence[str], label: str) -> str:
    return options[data.draw(_indices(len(options)), label=label)]


def machine_for(
    poller: str, make_loop: LoopFactory = MainLoop, *, name: str | None = None, context: bool = False
) -> type[LockstepMachine]:
    """A machine class of its own (own stats) for one poller and loop factory. selectors is
    compared against the folded model (SPEC R36), with hangups allowed. `context`: format v3
    (ContextLockstepMachine)."""
    attrs: dict[str, Any] = {
        "poller": poller,
        "make_loop": staticmethod(make_loop),
        "stats": {"examples": 0, "steps": 0},
        "failures": [],
    }
    base = ContextLockstepMachine if context else LockstepMachine
    return type(name or f"Lockstep_{poller}{'_context' if context else ''}", (base,), attrs)


@dataclass(frozen=True)
class Red:
    """A lockstep failure, minimised: what `hunt` returns instead of Hypothesis' shrunk example."""

    config: Config
    steps: list[Action]
    error: CheckFailed
    examples: int  # examples generated up to and including the failing one
    seconds_to_failure: float  # from the start of the run to the first failing example
    seconds_to_red: float  # from that failure to the minimised counterexample

    def report(self) -> str:
        return (
            f"[{self.error.tag}] {self.error}\n"
            f"after {self.examples} examples; minimised to {len(self.steps)} steps "
            f"in {self.seconds_to_red:.1f} s:\n{counterexample(self.config, self.steps)}"
        )


def hunt(machine: type[LockstepMachine], run_settings: settings) -> Red | None:
    """Run the machine until a lockstep check fails, then minimise with the project's own
    `minimise`. Hypothesis generates only: its stateful shrinker is what made a planted bug take
    minutes to turn red (it could run for over five minutes and give up), while `minimise`
    replays a few hundred candidates in seconds. A failure that is not a lockstep check (a crash
    inside the loop or the harness) is raised as it is, unminimised."""
    fast = settings(run_settings, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False)
    start = time.monotonic()
    try:
        run_state_machine_as_test(machine, settings=fast)
    except CheckFailed as e:
        if not machine.failures:
            raise
        failed_at = time.monotonic()
        config, steps = machine.failures[-1]
        examples = machine.stats["examples"]
        if replay(config, steps, machine.poller, machine.make_loop) is None:  # did not recur: as found
            return Red(config, list(steps), e, examples, failed_at - start, time.monotonic() - failed_at)
        config, best, err = minimise(config, steps, machine.poller, machine.make_loop)
        return Red(config, best, err, examples, failed_at - start, time.monotonic() - failed_at)
    return None
