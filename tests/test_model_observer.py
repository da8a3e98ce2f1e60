"""model.iterate's Observer sees every registration, wherever it is made: a step, a handler
script run by the dispatch walk, a gate's script run by the fill (R22), an action during the
wait (R20). The exploration's invariants rely on it (tests/exploration.py), so a registration
the observer misses is one no invariant checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from iohandler.model.iterate import Observer, gate_scripts, initial_world, step
from iohandler.model.state import flag_mask
from iohandler.specs.vector import (
    BhEvent,
    CtxReadEvent,
    CtxWriteEvent,
    GateEvent,
    Iterate,
    ReadEvent,
    Set,
    Vector,
    WriteEvent,
    bundled_vectors_dir,
    load_vector,
    vector_files,
)

VECTORS = vector_files([bundled_vectors_dir()])


def _sets(actions: tuple[object, ...]) -> list[Set]:
    return [a for a in actions if isinstance(a, Set)]


def _expected_registrations(vector: Vector) -> list[tuple[str, str | None, str | None, str | None]]:
    """From the vector and the model's own trace: the top-level sets and those in during_wait
    actions, and the sets of each script the trace shows running (handlers; gates that run one)."""
    runs = gate_scripts(vector)
    world = initial_world(vector)
    out: list[Set] = []
    for action in vector.steps:
        if isinstance(action, Set):
            out.append(action)
        world, events = step(world, action, vector.scripts, runs)
        if isinstance(action, Iterate):
            out += _sets(action.during_wait)
        for e in events:
            if isinstance(e, ReadEvent | WriteEvent | BhEvent | CtxReadEvent | CtxWriteEvent):  # v3: BHs, context
                out += _sets(vector.scripts[e.script])
            elif isinstance(e, GateEvent) and e.gate in runs:
                out += _sets(vector.scripts[runs[e.gate]])
    return sorted(((s.fd, s.read, s.write, s.gate) for s in out), key=repr)


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_the_observer_sees_every_registration(path: Path) -> None:
    vector = load_vector(path)
    seen: list[tuple[str, str | None, str | None, str | None]] = []
    obs = Observer(on_register=lambda fd, r, w, g: seen.append((fd, r, w, g)))
    runs = gate_scripts(vector)
    world = initial_world(vector)
    for action in vector.steps:
        world, _ = step(world, action, vector.scripts, runs, observer=obs)
    assert sorted(seen, key=repr) == _expected_registrations(vector)


def test_some_vectors_register_from_each_place() -> None:
    """The test above covers all four places: some vector registers from each."""
    where = {"step": False, "script": False, "gate": False, "during_wait": False}
    for path in VECTORS:
        v = load_vector(path)
        where["step"] |= any(isinstance(a, Set) for a in v.steps)
        where["during_wait"] |= any(isinstance(a, Iterate) and _sets(a.during_wait) for a in v.steps)
        where["gate"] |= any(_sets(v.scripts[s]) for s in gate_scripts(v).values())
        where["script"] |= any(_sets(acts) for s, acts in v.scripts.items() if s not in gate_scripts(v).values())
    assert all(where.values()), where


def test_flag_mask_is_the_union_of_the_named_flags() -> None:
    one = [flag_mask((n,)) for n in ("IN", "OUT", "HUP", "ERR")]
    assert len(set(one)) == 4 and all(m and m & (m - 1) == 0 for m in one)  # four distinct bits
    assert flag_mask(("IN", "OUT", "HUP", "ERR")) == one[0] | one[1] | one[2] | one[3]
    assert flag_mask(("IN", "HUP")) == one[0] | one[2]
    assert flag_mask(()) == 0
