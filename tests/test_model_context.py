"""The model's AioContext (model/bh.py, model/aio.py): the state the traces cannot show, the
walking counters and deferred frees (R44, R48, R49), dispatching saved and restored (R45, R46),
and bad names refused (a vector's invalid action)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from iohandler.model import aio, bh
from iohandler.model.env import InvalidAction
from iohandler.model.iterate import apply, run_script
from iohandler.model.state import IN, READ_EVENTS, WRITE_EVENTS, Context, FdState, Loop, Table, World
from iohandler.specs.vector import (
    BhDelete,
    BhEvent,
    BhNew,
    BhSchedule,
    CtxPoll,
    CtxProgressEvent,
    CtxReadEvent,
    CtxSet,
    Drain,
    Event,
    Notify,
    ScriptAction,
    Send,
)

Scripts = dict[str, tuple[ScriptAction, ...]]


def world(**fds: str) -> World:
    return World(Loop(), Table(tuple(sorted((fd, FdState(k)) for fd, k in fds.items()))), Table())


def run(w: World, actions: list[ScriptAction], scripts: Scripts) -> tuple[World, tuple[Event, ...]]:
    events: list[Event] = []
    for a in actions:
        w, out = apply(w, a, scripts=scripts)
        events.extend(out)
    return w, tuple(events)


def test_a_bh_deleted_in_a_nested_walk_is_freed_only_by_the_outermost() -> None:
    seen: list[tuple[int, tuple[bool, ...]]] = []

    def call(w: World, script: str) -> tuple[World, tuple[Event, ...]]:
        if script == "outer":  # delete b, then a nested walk: b must stay linked through both
            w = w.with_ctx(bh.delete(w.ctx, "b"))
            w, _, out = aio.aio_poll(w, call)
            seen.append((w.ctx.walking_bh, tuple(x.freed for x in w.ctx.bhs)))
            return w, out
        return w, ()

    ctx = bh.bh_new(bh.bh_new(Context(), "b", "inner"), "a", "outer")
    ctx, _ = bh.schedule(ctx, "a")
    w, ran, _ = bh.bh_poll(world().with_ctx(ctx), call)
    assert seen == [(1, (False, False))]  # inside the outer walk: nothing freed
    assert ran and w.ctx.walking_bh == 0
    assert [(x.name, x.deleted, x.freed) for x in w.ctx.bhs] == [("a", False, False), ("b", True, True)]


def test_a_freed_bh_no_name_reaches_is_dropped_and_a_named_one_keeps_its_flags() -> None:
    scripts: Scripts = {"s": ()}
    w, _ = run(world(), [BhNew("a", "s"), BhDelete("a"), CtxPoll()], scripts)
    (only,) = w.ctx.bhs
    assert only.freed and not only.scheduled
    w, _ = run(w, [Notify(), CtxPoll(), BhSchedule("a")], scripts)  # after the free: R44, flags kept
    assert w.ctx.bhs[0].scheduled and w.loop.wakeup  # notified, as before the free
    w, _ = run(w, [CtxPoll(), BhNew("a", "s")], scripts)  # the name now means a new BH
    assert [x.ident for x in w.ctx.bhs] == [1]


def test_a_context_delete_outside_a_walk_unlinks_and_inside_only_flags() -> None:
    w = aio.set_fd_handler(world(x="socket", y="socket"), "x", None, "wx")
    w = aio.set_fd_handler(w, "y", None, "wy")
    assert [n.fd for n in aio.set_fd_handler(w, "x", None, None).ctx.nodes] == ["y"]
    inside = aio.set_fd_handler(w.with_ctx(replace(w.ctx, walking_handlers=1)), "x", None, None)
    assert [(n.fd, n.deleted) for n in inside.ctx.nodes] == [("y", False), ("x", True)]
    readded = aio.set_fd_handler(inside, "x", "rx", None)  # no revival: a new node at the head
    assert [(n.fd, n.deleted) for n in readded.ctx.nodes] == [("x", False), ("y", False), ("x", True)]
    assert aio.poll_set(readded.ctx) == (("x", READ_EVENTS), ("y", WRITE_EVENTS))


def test_a_node_deleted_in_a_nested_walk_is_unlinked_by_the_outer_walk_only() -> None:
    scripts: Scripts = {"ry": (Drain("y"), CtxSet("x", None, None), CtxPoll()), "wx": ()}
    w, _ = run(world(x="socket", y="pipe-read"), [CtxSet("x", None, "wx"), CtxSet("y", "ry", None), Send("y")], scripts)
    lengths: list[int] = []

    def call(w: World, script: str) -> tuple[World, tuple[Event, ...]]:
        w, out = run_script(w, script, scripts)
        lengths.append(len(w.ctx.nodes))
        return w, out

    w, progress, events = aio.aio_poll(w, call)
    assert lengths == [2]  # x flagged, still linked after y's handler and its nested walk
    assert progress and [n.fd for n in w.ctx.nodes] == ["y"] and w.ctx.walking_handlers == 0
    assert events == (CtxReadEvent("y", "ry"), CtxProgressEvent(False))  # x: deleted, not called


def test_dispatching_is_restored_after_a_nested_poll() -> None:
    flags: list[bool] = []

    def call(w: World, script: str) -> tuple[World, tuple[Event, ...]]:
        flags.append(w.ctx.dispatching)
        w, _, _ = aio.aio_poll(w, lambda w2, s: (w2, ()))
        flags.append(w.ctx.dispatching)
        return w, ()

    ctx, _ = bh.schedule(bh.bh_new(Context(), "a", "s"), "a")
    w, _, _ = aio.aio_poll(world().with_ctx(ctx), call)
    assert flags == [True, True] and not w.ctx.dispatching


def test_the_notifier_is_consumed_by_a_poll_and_a_notify_inside_one_is_lost() -> None:
    scripts: Scripts = {"s": (Notify(), BhSchedule("b")), "t": ()}
    # b is newer than a: at the head, already passed when a's callback schedules it.
    w, _ = run(world(), [BhNew("a", "s"), BhNew("b", "t"), BhSchedule("a")], scripts)
    assert w.loop.wakeup
    w, events = run(w, [CtxPoll()], scripts)
    assert events == (BhEvent("a", "s"), CtxProgressEvent(True))  # b was behind the walk: not run
    assert not w.loop.wakeup  # R45: the callback's notify and schedule did not set it
    assert w.ctx.notifier_revents == 0 and bh.compute_timeout_ms(w.ctx) == 0


def test_stale_revents_survive_a_nested_poll_that_returned_zero() -> None:
    w = aio.set_fd_handler(world(x="pipe-read"), "x", "rx", None)
    w = replace(w, loop=Loop())  # the notifier consumed
    w, _ = apply(w, Send("x"))
    w = w.with_ctx(replace(w.ctx, nodes=tuple(replace(n, revents=IN) for n in w.ctx.nodes)))
    w = replace(w, env=w.env.set("x", FdState("pipe-read")))  # drained since
    calls: list[str] = []

    def call(w: World, script: str) -> tuple[World, tuple[Event, ...]]:
        calls.append(script)
        return w, ()

    _, progress, _ = aio.aio_poll(w, call)
    assert calls == ["rx"] and progress  # the poll returned 0: the old revents stand (R46)


@pytest.mark.parametrize("action", [BhSchedule("zz"), BhDelete("zz")])
def test_a_bh_used_before_its_bh_new_is_an_invalid_action(action: ScriptAction) -> None:
    w = world()
    with pytest.raises(InvalidAction, match="'zz' used before its bh-new"):
        apply(w, action)


def test_ctx_poll_without_scripts_is_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="scripts"):
        apply(world(), CtxPoll())


def test_a_poll_that_re_enters_itself_without_end_is_an_invalid_vector() -> None:
    # A socket is always writable: its write handler's nested poll calls it again, and again.
    scripts: Scripts = {"w": (CtxPoll(),)}
    w, _ = run(world(x="socket"), [CtxSet("x", None, "w")], scripts)
    with pytest.raises(InvalidAction, match="nested more than 8 deep"):
        run(w, [CtxPoll()], scripts)
    # Eight deep is fine: a BH chain a -> b -> ... each scheduling the next and polling.
    names = [f"b{i}" for i in range(8)]
    chain: Scripts = {
        n: ((BhSchedule(names[i + 1]),) if i + 1 < len(names) else ()) + (CtxPoll(),) for i, n in enumerate(names)
    }
    w, _ = run(world(), [*(BhNew(n, n) for n in reversed(names)), BhSchedule("b0")], chain)
    _, events = run(w, [CtxPoll()], chain)
    assert [e.bh for e in events if isinstance(e, BhEvent)] == names
