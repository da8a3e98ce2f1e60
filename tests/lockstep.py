"""The lockstep harness's public names, re-exported from its parts (tests/harness/) and from
the installed strategies (iohandler.specs.scenarios), for the test files that import them here."""

from __future__ import annotations

from iohandler.specs.scenarios import Config, configs, script_actions, to_vector
from tests.harness.config import budget, folded_poll, model_step, open_fds, profile, world_for, write_stats
from tests.harness.machine import LockstepMachine, machine_for
from tests.harness.printing import counterexample, describe_action, describe_event, scenario
from tests.harness.r34 import fd_reuse_scenario
from tests.harness.runner import Lockstep, minimise, replay
from tests.harness.session import CheckFailed, Session, failure, kernel_registrations
from tests.harness.world import CONFIG

__all__ = [
    "CONFIG", "CheckFailed", "Config", "Lockstep", "LockstepMachine", "Session",
    "budget", "configs", "counterexample",
    "describe_action", "describe_event", "failure", "fd_reuse_scenario", "folded_poll",
    "kernel_registrations", "machine_for", "minimise", "model_step", "open_fds", "profile", "replay", "scenario",
    "script_actions", "to_vector", "world_for", "write_stats",
]
