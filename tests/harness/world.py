"""A small symbolic world for the model's unit tests (tests/test_exhaustive.py): three fds, one
gate and scripts that delete, add, update and revive. The exploration itself is tests/exploration.py."""

from __future__ import annotations

from iohandler.specs.scenarios import Config
from iohandler.specs.vector import Drain, Notify, Set, SetGate

CONFIG = Config(
    fds={"a": "socket", "b": "pipe-read", "c": "pipe-write"},
    gates={"g": True},
    scripts={
        "n": (),  # does nothing
        "x": (Set("b", None, None, None), Drain("a")),  # deletes another record, drains
        "y": (Set("a", "n", "x", None),),  # adds / updates / revives a (itself, when a's)
        "z": (Set("c", None, None, None), SetGate("g", False), Notify()),  # deletes c, closes the gate
    },
    gate_runs={},
)
