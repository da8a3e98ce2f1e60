"""The model's data: poll flags, records, the loop, the fds' environment, the world.

All of it immutable (frozen dataclasses and tuples) and hashable, so a state can be compared,
deduplicated and replayed. Fds, scripts and gates are the vector's symbolic names: the model
talks the vector language and needs no real file descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Generic, TypeAlias, TypeVar

from iohandler.specs.vector import FLAG_ORDER, Flags

Fd: TypeAlias = str
ScriptName: TypeAlias = str
GateName: TypeAlias = str

# poll(2)'s bit values, so a porter can compare with their own revents directly.
IN = 0x001
OUT = 0x004
ERR = 0x008
HUP = 0x010
# R8: what fill asks for a read handler (gate open) and for a write handler.
READ_EVENTS = IN | HUP | ERR
WRITE_EVENTS = OUT | ERR
# R11: poll reports these whether asked or not.
ALWAYS_REPORTED = HUP | ERR

_BITS = {"IN": IN, "OUT": OUT, "HUP": HUP, "ERR": ERR}


def flag_names(mask: int) -> Flags:
    """The mask as names in the vector order IN, OUT, HUP, ERR.

    pre: 0 <= mask < 64
    post: flag_mask(__return__) == mask & (IN | OUT | HUP | ERR)  # R21
    post: list(__return__) == sorted(__return__, key=FLAG_ORDER.index)  # R21
    """
    return tuple(name for name in FLAG_ORDER if mask & _BITS[name])


def flag_mask(names: Flags) -> int:
    mask = 0
    for name in names:
        mask |= _BITS[name]
    return mask


@dataclass(frozen=True, slots=True)
class Record:
    """One `IOHandlerRecord`. `poll_index` is its slot in this iteration's poll set, or -1."""

    fd: Fd
    read: ScriptName | None
    write: ScriptName | None
    gate: GateName | None
    poll_index: int = -1
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Loop:
    """The registry (head first: the newest *created* record first) and the wakeup notifier."""

    records: tuple[Record, ...] = ()
    wakeup: bool = False  # the notifier is readable: notify() ran since the last poll sampled it


@dataclass(frozen=True, slots=True)
class FdState:
    """One symbolic fd as the environment sees it (VECTORS.md, fd kinds)."""

    kind: str  # an FdKind; a plain str so CrossHair can make symbolic ones
    pending: bool = False  # bytes sent toward the fd and not drained
    hung_up: bool = False  # the driver closed its end


PollSet: TypeAlias = tuple[tuple[Fd, int], ...]  # (fd, requested events), in list order

_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Table(Generic[_V]):
    """A small immutable, hashable mapping from names (sorted pairs): the fds' states, the gates'
    answers. Keys are plain names (str), which is what lets `set` keep them sorted and unique."""

    pairs: tuple[tuple[str, _V], ...] = ()

    def __getitem__(self, key: str) -> _V:
        for k, v in self.pairs:
            if k == key:
                return v
        raise KeyError(key)

    def set(self, key: str, value: _V) -> Table[_V]:
        """A copy with `key` answering `value`; pairs stay sorted and unique (lemma_table_set)."""
        rest = tuple((k, v) for k, v in self.pairs if k != key)
        return Table(tuple(sorted((*rest, (key, value)), key=lambda kv: kv[0])))


Env: TypeAlias = Table[FdState]
Gates: TypeAlias = Table[bool]


BhName: TypeAlias = str


@dataclass(frozen=True, slots=True)
class Bh:
    """One `QEMUBH` (async.c): its callback is the script. `ident` tells apart BHs created under
    the same name (R42). `freed`: unlinked by aio_bh_poll; the record stays only while a name
    still refers to it, because a handle keeps its flags (R44)."""

    ident: int
    name: BhName
    script: ScriptName
    scheduled: bool = False
    idle: bool = False
    deleted: bool = False
    freed: bool = False


@dataclass(frozen=True, slots=True)
class CtxNode:
    """One `AioHandler` (aio-posix.c). A deleted node and a newer one may share an fd (R48), so
    `ident` names the node; `revents` is `pfd.revents`, what the last aio_poll's poll left."""

    ident: int
    fd: Fd
    read: ScriptName | None
    write: ScriptName | None
    revents: int = 0
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Context:
    """The `AioContext`: the BH list and the handler list, head first (newest first), with their
    walking counters; `dispatching` as aio_poll sets it (R45). The context's notifier is the
    loop's wakeup (`Loop.wakeup`); its node is the oldest, always last (R49), and
    `notifier_revents` is that node's `pfd.revents`."""

    bhs: tuple[Bh, ...] = ()
    names: Table[int] = Table()
    walking_bh: int = 0
    nodes: tuple[CtxNode, ...] = ()
    walking_handlers: int = 0
    notifier_revents: int = 0
    dispatching: bool = False
    next_ident: int = 0


@dataclass(frozen=True, slots=True)
class World:
    """Everything a step can change: the loop, the fds, the gates' answers, the context."""

    loop: Loop
    env: Env
    gates: Gates
    ctx: Context = Context()

    def with_loop(self, loop: Loop) -> World:
        return replace(self, loop=loop)

    def with_ctx(self, ctx: Context) -> World:
        return replace(self, ctx=ctx)


def index_of(records: tuple[Record, ...], fd: Fd) -> int:
    """Position of the (first, and by R1 only) record for `fd`, deleted or not; -1 if none."""
    for i, record in enumerate(records):
        if record.fd == fd:
            return i
    return -1


def implies(a: bool, b: bool) -> bool:
    """For contracts: `a` implies `b`."""
    return b or not a


def fds_unique(records: tuple[Record, ...]) -> bool:
    """R1: at most one record per fd, counting deleted-but-unreaped ones."""
    return len({r.fd for r in records}) == len(records)
