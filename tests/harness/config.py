"""Budgets and figures by Hypothesis profile, and the model as the lockstep oracle: `model_step`
(with R36's `folded_poll` for pollers that fold HUP/ERR). The strategies and `Config` live in
the installed package (iohandler.specs.scenarios), shared with `iohandler fuzz`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from iohandler.model import env as model_env
from iohandler.model.iterate import initial_world, step
from iohandler.model.state import World
from iohandler.specs.fuzz import folded_poll
from iohandler.specs.scenarios import (
    Config,
    config_of,
    configs,
    script_actions,
    to_vector,
)
from iohandler.specs.vector import (
    Action,
    Event,
    Vector,
)
from tests import support


def profile() -> str:
    return os.environ.get("HYPOTHESIS_PROFILE", "dev")


def budget(*, dev: int, ci: int, thorough: int) -> int:
    """A size by Hypothesis profile: ci is what the 150 s budget of these files affords.
    IOHANDLER_BUDGET=mutation (set by .ci/mutation/run.sh) halves dev: that suite runs once per
    mutant."""
    if os.environ.get("IOHANDLER_BUDGET") == "mutation":
        return max(1, dev // 2)
    return {"dev": dev, "ci": ci, "thorough": thorough}.get(profile(), dev)


def write_stats(name: str, data: Mapping[str, object]) -> None:
    """`$IOHANDLER_STATS_DIR/<name>.json`, read by `iohandler verify` for its summary."""
    folder = os.environ.get("IOHANDLER_STATS_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def open_fds() -> int:
    """How many fds the process has open (tests.support.open_fds, counted)."""
    return len(support.open_fds())


def model_step(world: World, action: Action, config: Config, *, fold: bool = False) -> tuple[World, tuple[Event, ...]]:
    """model.iterate.step; with `fold`, over `folded_poll` (SPEC R36)."""
    return step(world, action, config.scripts, config.gate_runs, poll=folded_poll if fold else model_env.poll)


def model_trace(vector: Vector, *, fold: bool = False) -> list[Event]:
    """The model's trace of a whole vector; with `fold`, as a poller that folds HUP/ERR sees it
    (R36): what the selectors poller must answer."""
    config = config_of(vector, vector.gate_scripts)
    world = world_for(config)
    events: list[Event] = []
    for action in vector.steps:
        world, out = model_step(world, action, config, fold=fold)
        events.extend(out)
    return events


def world_for(config: Config) -> World:
    return initial_world(to_vector(config, ()))


__all__ = [
    "Config",
    "budget",
    "configs",
    "folded_poll",
    "model_step",
    "model_trace",
    "open_fds",
    "profile",
    "script_actions",
    "to_vector",
    "world_for",
    "write_stats",
]
