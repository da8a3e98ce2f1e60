"""The lockstep test harness, in parts: config (budgets, the model oracle), session (the real
loop on real fds, with checks), printing, runner (lockstep, replay, minimise), machine (the
Hypothesis state machine), r34 (fd-number reuse), exploration (exhaustive, model only).

Its public names are imported from here (`from tests.harness import ...`); the strategies
themselves are the installed ones (iohandler.specs.scenarios)."""

from __future__ import annotations

from iohandler.specs.scenarios import Config, configs, script_actions, to_vector
from tests.harness.config import budget, folded_poll, model_step, open_fds, profile, world_for, write_stats
from tests.harness.machine import LockstepMachine, Red, hunt, machine_for
from tests.harness.printing import counterexample, describe_action, describe_event, scenario
from tests.harness.r34 import fd_reuse_scenario
from tests.harness.runner import Lockstep, minimise, replay
from tests.harness.session import CheckFailed, Session, failure, kernel_registrations
from tests.harness.world import CONFIG

__all__ = [
    "CONFIG",
    "CheckFailed",
    "Config",
    "Lockstep",
    "LockstepMachine",
    "Red",
    "Session",
    "budget",
    "configs",
    "counterexample",
    "describe_action",
    "describe_event",
    "failure",
    "fd_reuse_scenario",
    "folded_poll",
    "hunt",
    "kernel_registrations",
    "machine_for",
    "minimise",
    "model_step",
    "open_fds",
    "profile",
    "replay",
    "scenario",
    "script_actions",
    "to_vector",
    "world_for",
    "write_stats",
]
