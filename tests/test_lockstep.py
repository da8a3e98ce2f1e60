"""Stateful lockstep: every generated action runs on the model and on the real loop (real sockets
and pipes), on every poller, and the full traces must be equal; invariants after every step
(tests/harness/: R1, R17, registry order, kernel registrations, leaked fds).

epoll and poll are compared with the model exactly. selectors folds HUP/ERR into readable and
writable (SPEC R36): it is compared with the *folded* model (model.iterate with selectors' view
of poll), hangups included, so its dispatch differences (a HUP on a write-only poll reaches the
write handler, not the read handler) are checked, not avoided.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iohandler.impl import POLLERS, MainLoop
from iohandler.impl.driver import run_vector as impl_run_vector
from iohandler.specs.vector import (
    Action,
    Hangup,
    Iterate,
    ReadEvent,
    Set,
    WriteEvent,
    bundled_vectors_dir,
    load_vector,
    vector_files,
)
from tests.harness import (
    Config,
    Session,
    budget,
    fd_reuse_scenario,
    hunt,
    machine_for,
    model_step,
    to_vector,
    world_for,
    write_stats,
)

PollerName = str


def lockstep_settings() -> settings:
    # ci: 3 pollers x 400 examples x 40 steps (~50k steps, ~0.5 ms each with the real loop).
    return settings(
        max_examples=budget(dev=60, ci=400, thorough=5000),
        stateful_step_count=budget(dev=30, ci=40, thorough=80),
    )


@pytest.mark.parametrize("poller", sorted(POLLERS))
def test_lockstep(poller: PollerName) -> None:
    """Red fast: generation without Hypothesis' shrinker, then the project's `minimise`; the
    failure prints the minimised scenario and a vector to save (tests.harness.hunt)."""
    machine = machine_for(poller)
    try:
        red = hunt(machine, lockstep_settings())
    finally:
        write_stats(f"lockstep-{poller}", dict(machine.stats))
    if red is not None:
        pytest.fail(red.report(), pytrace=False)
    assert machine.stats["examples"] > 0


def test_lockstep_red_is_fast_and_minimised() -> None:
    """A planted "deleted handler is called" bug (the catalogue's) turns the lockstep test red
    without Hypothesis' shrinker (which took minutes on it): the minimised scenario and a vector
    to save are what the failure prints."""
    from tests.catalogue import VARIANTS

    variant = next(v for v in VARIANTS if v.name == "calls-deleted-handler")
    # The ci profile's budget, derandomized whatever the profile: this test is about what the
    # red looks like, and the dev profile's 60 random examples miss the bug in about 1 run of 5.
    budgeted = settings(max_examples=400, stateful_step_count=40, derandomize=True)
    red = hunt(machine_for(variant.poller, variant.loop, name="Red_calls_deleted"), budgeted)
    assert red is not None and red.error.tag == "R17"
    assert len(red.steps) <= 4, red.report()
    assert "(save as specs/vectors/<name>.json):" in red.report()


@pytest.mark.parametrize("poller", sorted(POLLERS))
def test_lockstep_context(poller: PollerName) -> None:
    """Format v3 (SPEC R42-R50): bottom halves, the context's handlers, ctx-poll and the
    timeout, besides every v1/v2 action, on the real loop against the model; the BH list and
    the context's handler list compared after every step, the kernel set at every wait."""
    machine = machine_for(poller, context=True)
    try:
        red = hunt(
            machine,
            settings(
                max_examples=budget(dev=40, ci=200, thorough=3000),
                stateful_step_count=budget(dev=30, ci=40, thorough=80),
            ),
        )
    finally:
        write_stats(f"lockstep-context-{poller}", dict(machine.stats))
    if red is not None:
        pytest.fail(red.report(), pytrace=False)
    assert machine.stats["examples"] > 0


# ------------------------------------------------------------- the harness is the driver


@pytest.mark.parametrize("poller", ["epoll", "poll"])
def test_session_replays_bundled_vectors(poller: PollerName) -> None:
    """The lockstep Session and impl.driver agree on every bundled vector, so a lockstep
    counterexample means what a conformance run would mean."""
    for path in vector_files([bundled_vectors_dir()]):
        v = load_vector(path)
        config = Config(v.fds, v.gates, v.scripts, gate_runs=v.gate_scripts)
        session = Session(config, poller)
        try:
            got = [e for a in v.steps for e in session.run(a)]
            assert not session.violations, (path.name, session.violations)
        finally:
            session.close()
        assert got == impl_run_vector(v, poller) == list(v.expect or ()), path.name


def test_folded_model_differs_only_where_selectors_folds() -> None:
    """The fold is in effect (a HUP on a write-only poll reaches the write handler, R36) and is
    undone after the step (the plain model still delivers it to the read handler)."""
    config = Config({"a": "pipe-read"}, {"g": False}, {"r": (), "w": ()})
    steps: list[Action] = [Set("a", "r", "w", "g"), Hangup("a")]
    plain = folded = world_for(config)
    for action in steps:
        plain, _ = model_step(plain, action, config)
        folded, _ = model_step(folded, action, config, fold=True)
    _, unfolded = model_step(plain, Iterate(), config)
    _, seen = model_step(folded, Iterate(), config, fold=True)
    assert ReadEvent("a", "r") in unfolded and WriteEvent("a", "w") not in unfolded
    assert WriteEvent("a", "w") in seen and ReadEvent("a", "r") not in seen
    _, again = model_step(plain, Iterate(), config)
    assert again == unfolded


def test_counterexample_is_a_loadable_vector(tmp_path: object) -> None:
    """What a failure prints (scenario + v1 vector) loads back and replays to its own expect."""
    from tests.harness import counterexample

    config = Config({"a": "socket"}, {}, {"s0": ()})
    steps: list[Action] = [Iterate()]
    text = counterexample(config, steps)
    assert "steps:\n  1. iterate" in text
    import json

    from iohandler.specs.vector import parse_vector

    v = parse_vector(json.loads(text.split("(save as specs/vectors/<name>.json):\n", 1)[1]))
    assert impl_run_vector(v) == list(v.expect or ())
    assert to_vector(config, steps).fds == {"a": "socket"}


# ------------------------------------------------------------------ R34: fd-number reuse


@pytest.mark.parametrize("poller", sorted(POLLERS))
@settings(max_examples=budget(dev=8, ci=8, thorough=50))
@given(iterate_first=st.booleans(), delete_first=st.booleans(), ready_old=st.booleans())
def test_reused_fd_number_never_reaches_old_handler(
    poller: PollerName, iterate_first: bool, delete_first: bool, ready_old: bool
) -> None:
    """R34 (tests.harness.r34.fd_reuse_scenario), on every poller."""
    fd_reuse_scenario(MainLoop, poller, iterate_first=iterate_first, delete_first=delete_first, ready_old=ready_old)


# ------------------------------- the conformance driver in process (mutation testing showed
# its command line and option handling unpinned: the runner only starts it as a subprocess)


@pytest.mark.parametrize("poller", sorted(POLLERS))
def test_impl_driver_main_in_process(poller: PollerName, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import json

    from iohandler.impl.driver import main
    from iohandler.specs.vector import event_to_json, vector_to_json

    config = Config({"a": "socket"}, {"g": True}, {"s0": ()}, gate_runs={"g": "s0"})
    steps: list[Action] = [Set("a", "s0", None, "g"), Hangup("a"), Iterate()]
    good = to_vector(config, steps)
    bad = to_vector(Config({"a": "socket"}, {"g": True}, {"s0": ()}, gate_runs={"g": "nope"}), steps)
    lines = "".join(json.dumps(vector_to_json(v)) + "\n" for v in (good, bad))
    out = io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    monkeypatch.setattr("sys.stdout", out)
    assert main(["--poller", poller]) == 0
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["trace"] == [event_to_json(e) for e in impl_run_vector(good, poller)] != []
    assert "gate_scripts" in second["error"]
    with pytest.raises(SystemExit):
        main(["--poller", "no-such-poller"])
