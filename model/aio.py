"""The context's fd handlers and its own poll (QEMU aio-posix.c, async.c): `aio_set_fd_handler`,
`aio_poll(ctx, false)`, `aio_dispatch`, `aio_notify`. Rules R45-R49 (specs/SPEC.md).

Read beside QEMU (paraphrased, 2.3):

    aio_notify:          if (!ctx->dispatching) event_notifier_set(&ctx->notifier)
    aio_set_fd_handler:  node = first node for fd that is not deleted
                         if (!io_read && !io_write) { if (node) {
                                 if (ctx->walking_handlers) { node->deleted = 1; node->pfd.revents = 0; }
                                 else { QLIST_REMOVE(node); g_free(node); } } }
                         else { if (!node) { node = new, QLIST_INSERT_HEAD }
                                node->io_read = io_read; node->io_write = io_write;
                                node->pfd.events = (read ? IN|HUP|ERR : 0) | (write ? OUT|ERR : 0) }
                         aio_notify(ctx)
    aio_poll(ctx, false): was = ctx->dispatching; aio_set_dispatching(ctx, true)
                         fill pollfds with every node not deleted (events != 0)
                         ret = poll(pollfds, 0)
                         if (ret > 0) copy each pollfd's revents into its node's pfd.revents
                         progress = aio_dispatch(ctx); aio_set_dispatching(ctx, was); return progress
    aio_dispatch:        progress = aio_bh_poll(ctx)
                         for (node = first; node; ) {
                             ctx->walking_handlers++
                             revents = node->pfd.revents & node->pfd.events; node->pfd.revents = 0
                             if (!node->deleted && revents & (IN|HUP|ERR) && node->io_read) {
                                 node->io_read(opaque); if (opaque != &ctx->notifier) progress = true }
                             if (!node->deleted && revents & (OUT|ERR) && node->io_write) {
                                 node->io_write(opaque); progress = true }
                             tmp = node; node = next; ctx->walking_handlers--
                             if (!ctx->walking_handlers && tmp->deleted) { QLIST_REMOVE(tmp); g_free(tmp) } }
                         progress |= the context's timers (none in the vectors)

The context's notifier is a node too (aio_context_new registers it first, so it is the oldest
and always last), read by `event_notifier_test_and_clear`: here it is `Loop.wakeup`, polled for
IN, with its `pfd.revents` in `Context.notifier_revents`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from iohandler.model import bh as bhs
from iohandler.model import env
from iohandler.model.env import InvalidAction
from iohandler.model.state import (
    IN,
    READ_EVENTS,
    WRITE_EVENTS,
    Context,
    CtxNode,
    Env,
    Fd,
    PollSet,
    ScriptName,
    World,
)
from iohandler.specs.vector import CtxReadEvent, CtxWriteEvent, Event

# A callback (BH or context handler): its script runs against the world.
Callback = Callable[[World, ScriptName], tuple[World, tuple[Event, ...]]]
# A vector whose ctx-poll calls nest deeper than this is invalid (VECTORS.md): a callback that
# polls the context and is called again by that poll re-enters without end, in QEMU too.
MAX_NESTED_POLLS = 8

# How poll answers: (fds' states, poll set, notifier readable) -> (revents per entry, ret);
# env.poll, or R36's folded view (model/iterate.py passes it on).
PollFn = Callable[[Env, PollSet, bool], tuple[tuple[int, ...], int]]


def events_of(node: CtxNode) -> int:
    """`pfd.events` as aio_set_fd_handler computes it (R48); the same as fill's R8, no gate."""
    return (READ_EVENTS if node.read is not None else 0) | (WRITE_EVENTS if node.write is not None else 0)


def notify(world: World) -> World:
    """R45 `aio_notify`: the notifier becomes readable, unless the context is dispatching (inside
    aio_poll), where everything is re-evaluated before the next blocking poll anyway."""
    if world.ctx.dispatching:
        return world
    return world.with_loop(replace(world.loop, wakeup=True))


def set_fd_handler(world: World, fd: Fd, read: ScriptName | None, write: ScriptName | None) -> World:
    """R48 `aio_set_fd_handler`, then its `aio_notify` (R45; also for a delete, even of an
    unknown fd). Unlike the fd-handler list (R4, R5): a delete outside a walk unlinks at once
    and inside one only flags, and a deleted node is never revived: a new node goes to the head."""
    ctx = world.ctx
    node = next((n for n in ctx.nodes if n.fd == fd and not n.deleted), None)
    if read is None and write is None:
        if node is not None:
            if ctx.walking_handlers:
                ctx = _put(ctx, replace(node, deleted=True, revents=0))
            else:
                ctx = replace(ctx, nodes=tuple(n for n in ctx.nodes if n.ident != node.ident))
    elif node is None:
        fresh = CtxNode(ctx.next_ident, fd, read, write)
        ctx = replace(ctx, nodes=(fresh, *ctx.nodes), next_ident=ctx.next_ident + 1)
    else:
        ctx = _put(ctx, replace(node, read=read, write=write))  # position and revents kept
    return notify(world.with_ctx(ctx))


def poll_set(ctx: Context) -> PollSet:
    """The context's fds as aio_poll (and glib's query in the main wait) polls them: every node
    not deleted, in list order, with its events (R47). The notifier is not in it."""
    return tuple((n.fd, events_of(n)) for n in ctx.nodes if not n.deleted)


def ready_count(world: World, entries: PollSet, poll: PollFn = env.poll) -> int:
    """How many of `entries` poll reports with non-zero revents (R11's readiness rule)."""
    return poll(world.env, entries, False)[1]


def aio_poll(world: World, call: Callback, poll: PollFn = env.poll) -> tuple[World, bool, tuple[Event, ...]]:
    """R46 R47 `aio_poll(ctx, false)`: its own fill and zero-timeout poll, then aio_dispatch
    (the BH walk, then the handler walk); its progress value and events. Callable from any
    callback: `dispatching` is saved and restored, the walking counters nest (R46)."""
    # Every nested aio_poll that can recur runs inside a walk of the context, so the walking
    # counters bound its depth.
    if world.ctx.walking_bh + world.ctx.walking_handlers > MAX_NESTED_POLLS:
        raise InvalidAction(
            f"ctx-poll nested more than {MAX_NESTED_POLLS} deep: a callback that polls the "
            "context is called again by that poll, without end"
        )
    was = world.ctx.dispatching
    ctx = replace(world.ctx, dispatching=True)
    polled = [n for n in ctx.nodes if not n.deleted]
    answered, ret = poll(world.env, tuple((n.fd, events_of(n)) for n in polled), world.loop.wakeup)
    if ret > 0:
        # Only a poll that returned > 0 writes revents; else the nodes keep theirs (R46).
        revents = {n.ident: r for n, r in zip(polled, answered, strict=True)}
        nodes = tuple(replace(n, revents=revents[n.ident]) if n.ident in revents else n for n in ctx.nodes)
        ctx = replace(ctx, nodes=nodes, notifier_revents=IN if world.loop.wakeup else 0)
    world, progress, events = dispatch(world.with_ctx(ctx), call)
    return world.with_ctx(replace(world.ctx, dispatching=was)), progress, events


def dispatch(world: World, call: Callback) -> tuple[World, bool, tuple[Event, ...]]:
    """`aio_dispatch`: the BH walk (R43), then the handler walk (R49); progress and events."""
    world, progress, events = bhs.bh_poll(world, call)
    world, walked, out = handler_walk(world, call)
    return world, progress or walked, events + out


def handler_walk(world: World, call: Callback) -> tuple[World, bool, tuple[Event, ...]]:
    """R49 the handler walk of aio_dispatch, head to tail, then the notifier's node (the oldest).

    Nodes added by callbacks go to the head, behind the walk; nothing but the outermost walk
    unlinks (a delete inside a walk only flags, R48), and it unlinks only the node it stands
    on, after its calls: so the walk visits the nodes of the list at walk start, in order.
    """
    events: list[Event] = []
    progress = False
    for ident in [n.ident for n in world.ctx.nodes]:
        world, called, out = walk_step(world, ident, call)
        progress = progress or called
        events.extend(out)
    # The notifier's node: event_notifier_test_and_clear, which is not progress (R49).
    if world.ctx.notifier_revents & READ_EVENTS:
        world = world.with_loop(replace(world.loop, wakeup=False))
    return world.with_ctx(replace(world.ctx, notifier_revents=0)), progress, tuple(events)


def walk_step(world: World, ident: int, call: Callback) -> tuple[World, bool, tuple[Event, ...]]:
    """One node of the handler walk (R49): revents read and cleared before the calls and
    masked by the node's current events; read on IN|HUP|ERR, then write on OUT|ERR with the
    node's handlers and deleted flag as the read left them; unlinked after, if deleted and
    no other walk is in progress."""
    ctx = world.ctx
    node = _node(ctx, ident)
    ready = node.revents & events_of(node)
    world = world.with_ctx(replace(_put(ctx, replace(node, revents=0)), walking_handlers=ctx.walking_handlers + 1))
    events: list[Event] = []
    called = False
    if not node.deleted and ready & READ_EVENTS and node.read is not None:
        events.append(CtxReadEvent(node.fd, node.read))
        world, out = call(world, node.read)
        events.extend(out)
        called = True
    node = _node(world.ctx, ident)
    if not node.deleted and ready & WRITE_EVENTS and node.write is not None:
        events.append(CtxWriteEvent(node.fd, node.write))
        world, out = call(world, node.write)
        events.extend(out)
        called = True
    ctx = replace(world.ctx, walking_handlers=world.ctx.walking_handlers - 1)
    if ctx.walking_handlers == 0 and _node(ctx, ident).deleted:
        ctx = replace(ctx, nodes=tuple(n for n in ctx.nodes if n.ident != ident))
    return world.with_ctx(ctx), called, tuple(events)


def live_nodes(ctx: Context) -> tuple[CtxNode, ...]:
    return tuple(n for n in ctx.nodes if not n.deleted)


def _node(ctx: Context, ident: int) -> CtxNode:
    for n in ctx.nodes:
        if n.ident == ident:
            return n
    raise AssertionError(f"node #{ident} unlinked during a walk")  # only the outermost walk unlinks, its own node


def _put(ctx: Context, node: CtxNode) -> Context:
    return replace(ctx, nodes=tuple(node if n.ident == node.ident else n for n in ctx.nodes))
