"""Bottom halves (QEMU async.c): `aio_bh_new`, `qemu_bh_schedule`, `qemu_bh_schedule_idle`,
`qemu_bh_cancel`, `qemu_bh_delete`, `aio_bh_poll`, and the BH part of `aio_compute_timeout`.
Rules R42-R44, R50 (specs/SPEC.md).

Read beside QEMU (paraphrased, 2.3; 2.4 changed how a scheduled BH is scheduled again):

    aio_bh_new:             bh = zeroed {cb, opaque}; bh->next = ctx->first_bh; ctx->first_bh = bh
    qemu_bh_schedule:       if (bh->scheduled) return; bh->idle = 0; bh->scheduled = 1; aio_notify(ctx)
    qemu_bh_schedule_idle:  if (bh->scheduled) return; bh->idle = 1; bh->scheduled = 1
    qemu_bh_cancel:         bh->scheduled = 0
    qemu_bh_delete:         bh->scheduled = 0; bh->deleted = 1
    aio_bh_poll:            ctx->walking_bh++; ret = 0
                            for (bh = first; bh; bh = next) { next = bh->next;
                                if (!bh->deleted && bh->scheduled) {
                                    bh->scheduled = 0; if (!bh->idle) ret = 1; bh->idle = 0; bh->cb(opaque) } }
                            ctx->walking_bh--
                            if (!ctx->walking_bh) unlink and free every deleted bh
                            return ret
    aio_compute_timeout:    a scheduled, not deleted BH: 0 if not idle (at once), else 10 ms;
                            then the context's timers (none in the vectors)

The notify of `qemu_bh_schedule` is the caller's (model/aio.py `notify`), so these functions stay
pure functions of the context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from iohandler.model.env import InvalidAction
from iohandler.model.state import Bh, BhName, Context, ScriptName, World
from iohandler.specs.vector import BhEvent, Event

# A BH callback: its script runs against the world (model/iterate.py `run_script`).
BhCallback = Callable[[World, ScriptName], tuple[World, tuple[Event, ...]]]

IDLE_TIMEOUT_MS = 10  # aio_compute_timeout: "idle bottom halves will be polled at least every 10ms"


def bh_new(ctx: Context, name: BhName, script: ScriptName) -> Context:
    """R42: a new BH, not scheduled, at the head of the list; `name` now refers to it (a BH the
    name referred to before stays in the list, unreachable). No notify."""
    bh = Bh(ctx.next_ident, name, script)
    names = ctx.names.set(name, bh.ident)
    bound = {ident for _, ident in names.pairs}
    # A freed BH is kept only while a name can still reach it (R44); an unnamed one is gone.
    rest = tuple(b for b in ctx.bhs if not b.freed or b.ident in bound)
    return replace(ctx, bhs=(bh, *rest), names=names, next_ident=ctx.next_ident + 1)


def find(ctx: Context, name: BhName) -> Bh:
    """The BH `name` refers to; a name no `bh-new` has bound yet is an invalid vector."""
    try:
        ident = ctx.names[name]
    except KeyError:
        raise InvalidAction(f"bh {name!r} used before its bh-new") from None
    return _by_ident(ctx, ident)


def schedule(ctx: Context, name: BhName) -> tuple[Context, bool]:
    """R42 `qemu_bh_schedule`: the context and whether to `aio_notify`. A scheduled BH is left as
    it is (an idle one stays idle) and nothing is notified; a deleted one is marked, notifies,
    and still never runs (R44)."""
    bh = find(ctx, name)
    if bh.scheduled:
        return ctx, False
    return _put(ctx, replace(bh, scheduled=True, idle=False)), True


def schedule_idle(ctx: Context, name: BhName) -> Context:
    """R42 `qemu_bh_schedule_idle`: like schedule, marked idle, and never notifies."""
    bh = find(ctx, name)
    if bh.scheduled:
        return ctx
    return _put(ctx, replace(bh, scheduled=True, idle=True))


def cancel(ctx: Context, name: BhName) -> Context:
    """R42 `qemu_bh_cancel`: not scheduled (the idle flag is left; every schedule sets it)."""
    return _put(ctx, replace(find(ctx, name), scheduled=False))


def delete(ctx: Context, name: BhName) -> Context:
    """R44 `qemu_bh_delete`: not scheduled and flagged; freed by the end of the outermost walk."""
    return _put(ctx, replace(find(ctx, name), scheduled=False, deleted=True))


def runnable(bh: Bh) -> bool:
    """What aio_bh_poll runs and aio_compute_timeout counts: scheduled and not deleted."""
    return bh.scheduled and not bh.deleted


def bh_poll(world: World, call: BhCallback) -> tuple[World, bool, tuple[Event, ...]]:
    """R43 `aio_bh_poll`: the walk, its return value (a non-idle BH ran) and its `bh` events.

    The walk visits the BHs of the list at walk start, head first: a BH created by a callback
    goes to the head, behind the walk; nothing is unlinked while any walk runs (R44), so every
    BH of the start is still there when its turn comes. `scheduled` is cleared before the
    callback, so a callback that schedules its own BH runs it in the next walk, not this one;
    a BH a nested walk ran (or a callback cancelled or deleted) before its turn is skipped.
    """
    world = world.with_ctx(replace(world.ctx, walking_bh=world.ctx.walking_bh + 1))
    ran_busy = False
    events: list[Event] = []
    for ident in [b.ident for b in world.ctx.bhs]:
        bh = _by_ident(world.ctx, ident)
        if not runnable(bh):
            continue
        ran_busy = ran_busy or not bh.idle
        world = world.with_ctx(_put(world.ctx, replace(bh, scheduled=False, idle=False)))
        events.append(BhEvent(bh.name, bh.script))
        world, out = call(world, bh.script)
        events.extend(out)
    ctx = replace(world.ctx, walking_bh=world.ctx.walking_bh - 1)
    if ctx.walking_bh == 0:
        ctx = free_deleted(ctx)
    return world.with_ctx(ctx), ran_busy, tuple(events)


def free_deleted(ctx: Context) -> Context:
    """R44 the end of the outermost walk frees every deleted BH: unlinked; the record is kept
    (marked freed) only while a name still refers to it, since the handle keeps its flags."""
    bound = {ident for _, ident in ctx.names.pairs}
    kept = tuple(replace(b, freed=True) if b.deleted else b for b in ctx.bhs if not b.deleted or b.ident in bound)
    return replace(ctx, bhs=kept)


def compute_timeout_ms(ctx: Context) -> int | None:
    """R50 `aio_compute_timeout` (in ms; None is QEMU's -1, no timeout): 0 with a runnable BH
    that is not idle, else 10 with a runnable idle one, else the timers' (none here)."""
    timeout: int | None = None
    for bh in ctx.bhs:
        if runnable(bh):
            if not bh.idle:
                return 0
            timeout = IDLE_TIMEOUT_MS
    return timeout


def _by_ident(ctx: Context, ident: int) -> Bh:
    for bh in ctx.bhs:
        if bh.ident == ident:
            return bh
    raise AssertionError(f"bh #{ident} is referred to but not kept")  # bh_new/free_deleted keep named ones


def _put(ctx: Context, bh: Bh) -> Context:
    return replace(ctx, bhs=tuple(bh if b.ident == bh.ident else b for b in ctx.bhs))
