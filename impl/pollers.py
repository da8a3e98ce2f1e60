"""Pollers: the kernel's readiness interface, one small class per backend (selectors.py style).

Kernel facts (Linux) the loop relies on, written down once:

* poll(2) and epoll report HUP and ERR whether or not they were requested. With epoll this holds
  even for an fd registered with an *empty* mask, so "not polled" must mean "not registered"
  (EPOLL_CTL_DEL), never "registered with 0".
* An epoll registration belongs to the open file, not to the fd number. When the last descriptor
  of the file is closed, epoll silently drops the registration: no event, no error. A later
  EPOLL_CTL_MOD on that number fails with ENOENT (EBADF if the number is not open at all); a
  number reused by a new file is not registered, so the new file is never reported by mistake.
  If another descriptor still refers to the file (dup, fork), the registration survives the close
  and keeps reporting under the old number: delete the handler before closing the fd. Such a
  registration is out of reach: EPOLL_CTL_DEL by number fails (EBADF while the number is closed,
  ENOENT once it names another file), and a new registration of the number for the new file sits
  beside it, so the old file's events arrive under a number the loop registered. Only a new epoll
  object (`rebuild`) is rid of it.
* poll(2) takes fd numbers afresh on every call: a closed fd is reported as POLLNVAL on every
  call (a loop that ignores NVAL spins at 100% CPU), and a reused number is polled as the new
  file. So the loop checks the file identity of ready fds (on every poller: see the dup case
  above, where epoll keeps reporting a closed number).
* epoll refuses regular files and directories (EPERM); poll reports them always ready.
* POLLIN/POLLOUT/POLLERR/POLLHUP equal EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP on Linux, so events
  and revents pass through unchanged.
* selectors reports only EVENT_READ and EVENT_WRITE. Its epoll selector folds HUP and ERR into
  "readable and writable", masked by the registered interest. So a SelectorsPoller never reports
  HUP or ERR: a hangup on an fd polled only for writing (gate closed) shows as OUT and does *not*
  reach the read handler, and traces show IN/OUT where the seed shows HUP/ERR.

A poller keeps its registrations between waits; `modify(fd, events)` changes one (0 = stop
polling fd) and is a no-op when nothing changes. On an OSError from the kernel the poller's own
book says the fd is not registered, and the error propagates for the loop to judge.
"""

from __future__ import annotations

import contextlib
import errno
import select
import selectors
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

IN: int = select.POLLIN
OUT: int = select.POLLOUT
ERR: int = select.POLLERR
HUP: int = select.POLLHUP
NVAL: int = select.POLLNVAL
READ_EVENTS: int = IN | HUP | ERR
"""What a record with a read handler (and an open gate) polls, and what calls its read handler."""
WRITE_EVENTS: int = OUT | ERR
"""What a record with a write handler polls, and what calls its write handler."""
ALWAYS_REPORTED: int = HUP | ERR | NVAL
"""Reported by the kernel whether requested or not."""

_MAXEVENTS = 1024
_POLL_DEFAULT_MAXEVENTS = 1023
"""What `select.epoll.poll(timeout)` returns at most (CPython: FD_SETSIZE - 1; a test pins it)."""

_FLAG_NAMES: tuple[tuple[int, str], ...] = ((IN, "IN"), (OUT, "OUT"), (HUP, "HUP"), (ERR, "ERR"))


def flag_names(events: int) -> tuple[str, ...]:
    """The vector format's names, in its order (IN, OUT, HUP, ERR); NVAL has no name there.

    pre: 0 <= events < 64
    post: set(__return__) <= {"IN", "OUT", "HUP", "ERR"}  # R21
    post: list(__return__) == sorted(__return__, key=["IN", "OUT", "HUP", "ERR"].index)  # R21
    post: len(set(__return__)) == len(__return__)  # R21
    post: (__return__ == ()) == (events & (IN | OUT | HUP | ERR) == 0)  # R21
    post: ("IN" in __return__) == bool(events & IN) and ("ERR" in __return__) == bool(events & ERR)  # R21
    """
    return tuple(name for bit, name in _FLAG_NAMES if events & bit)


class Poller(ABC):
    """Persistent interest per fd, and a wait that reports `(fd, revents)` pairs.

    The loop's hot path reads three attributes, kept in step with the kernel object by every
    method that replaces it (a rebuild sets them with no call in between, so an exception from a
    signal handler cannot leave them naming a closed object): `wait_once(timeout)`, `wait`
    without its completeness step (a result of `batch_full` or more events may be partial, and
    the loop then calls `wait(0)` for all of them); `batch_full`; `confirm`, a fast positive
    answer to "does ready fd still name the file registered?" or None (then the loop compares
    fstat identities): `confirm(fd, events)` with the events fd is registered for; returning
    normally proves it, raising (OSError, ValueError) proves nothing.
    """

    wait_once: Callable[[float | None], list[tuple[int, int]]] | None = None  # None: `wait`
    batch_full: int = sys.maxsize
    confirm: Callable[[int, int], object] | None = None

    name: ClassVar[str]
    tracks_files: ClassVar[bool]
    """True if a registration follows the open file (epoll), False if it follows the number."""
    silent_removal: ClassVar[bool] = False
    """True if `modify(fd, 0)` cannot report a kernel registration it failed to remove."""
    polls_regular_files: ClassVar[bool]

    @abstractmethod
    def modify(self, fd: int, events: int) -> None:
        """Poll `fd` for `events` (poll flags) from the next wait on; 0 stops polling it."""

    @abstractmethod
    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        """Block up to `timeout` seconds (None: forever, 0: not at all); ready (fd, revents)."""

    @abstractmethod
    def close(self) -> None:
        """Release the poller's own fd, if any. Registered fds are not closed."""

    @abstractmethod
    def registered(self) -> dict[int, int]:
        """Read-only introspection: fd -> events (poll flags) this poller asks for (a copy)."""

    def fileno(self) -> int:
        """The kernel object holding the registrations (an epoll fd), or -1 if there is none."""
        return -1

    def rebuild(self) -> list[int]:
        """Drop every registration the kernel may hold that is not in the poller's book (an
        epoll registration that outlived its fd number: module docstring). Re-creates the kernel
        object from the book; returns the fds it could not register again (closed meanwhile),
        now dropped from the book."""
        return []

    def fast_wait(self) -> tuple[Callable[[float | None], list[tuple[int, int]]], int]:
        """`(wait_once, batch_full)`, as the attributes are now."""
        return self.wait_once or self.wait, self.batch_full

    def confirmer(self) -> Callable[[int, int], object] | None:
        """`confirm`, as the attribute is now."""
        return self.confirm


class EpollPoller(Poller):
    """epoll(7), level-triggered. Registrations persist; a wait costs O(ready)."""

    name = "epoll"
    tracks_files = True
    polls_regular_files = False

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._fds: dict[int, int] = {}
        self._hot(self._epoll)

    def _hot(self, ep: select.epoll) -> None:
        # The C methods themselves: no Python frame per iteration (bench/). Called with a
        # timeout only, epoll.poll returns at most FD_SETSIZE - 1 events.
        if type(self).wait is not EpollPoller.wait:  # a subclass's wait must be seen
            self.wait_once, self.batch_full = self.wait, sys.maxsize
        else:
            self.wait_once, self.batch_full = ep.poll, _POLL_DEFAULT_MAXEVENTS
        # EPOLL_CTL_MOD to the events already registered changes nothing, and succeeds only if
        # the set holds a registration for (the file fd names *now*, fd): epoll keys them by
        # (file, number), and every registration the loop makes is of the file the record saw
        # (a record whose file changed is renewed before it is polled again). So success means
        # "not closed, number not reused": one bare system call, cheaper than an os.fstat.
        self.confirm = ep.modify

    def modify(self, fd: int, events: int) -> None:
        fds = self._fds
        old = fds.get(fd, 0)
        if events == old:
            return
        ep = self._epoll
        if not events:
            # ENOENT/EBADF: the number no longer names the registered file. The kernel forgot the
            # registration if the file is gone, or keeps it out of reach if a dup holds the file
            # (see above): the error goes to the loop, which cannot tell the two apart either.
            # The book changes after the kernel: an exception in between leaves the book
            # claiming a registration, which the next modify(fd, 0) removes (or finds gone).
            try:
                ep.unregister(fd)
            finally:
                del fds[fd]
            return
        try:
            if old:
                ep.modify(fd, events)
            else:
                try:
                    ep.register(fd, events)
                except FileExistsError:  # the kernel kept a registration our book dropped
                    ep.modify(fd, events)
        except OSError:
            fds.pop(fd, None)
            raise
        fds[fd] = events

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        # A small fixed buffer keeps idle waits cheap; when it fills, sample again with room for
        # every registration (level-triggered, so nothing is lost) to report every ready fd in
        # one iteration, as poll does.
        events = self._epoll.poll(timeout, _MAXEVENTS)  # None blocks
        if len(events) == _MAXEVENTS and len(self._fds) > _MAXEVENTS:
            events = self._epoll.poll(0, len(self._fds))
        return events

    def close(self) -> None:
        self._epoll.close()
        self._fds.clear()

    def registered(self) -> dict[int, int]:
        return dict(self._fds)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def rebuild(self) -> list[int]:
        # The new object is complete before it replaces the old one, and the hot-path
        # attributes follow at once: an exception anywhere leaves a consistent poller.
        new = select.epoll()
        failed: list[int] = []
        try:
            for fd, events in list(self._fds.items()):
                try:
                    new.register(fd, events)
                except OSError:
                    failed.append(fd)
        except BaseException:
            new.close()
            raise
        old = self._epoll
        self._epoll = new
        self._hot(new)
        for fd in failed:
            del self._fds[fd]
        old.close()
        return failed


class PollPoller(Poller):
    """poll(2): the seed's system call. Each wait passes every registered fd: O(registered)."""

    name = "poll"
    tracks_files = False
    polls_regular_files = True

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: dict[int, int] = {}

    def modify(self, fd: int, events: int) -> None:
        old = self._fds.get(fd, 0)
        if events == old:
            return
        # The poll object first, the book after: an exception in between leaves the book
        # behind, and the next modify of fd (or a rebuild) puts the two in step again.
        if events:
            self._poll.register(fd, events)  # registers or modifies; no system call
            self._fds[fd] = events
        else:
            with contextlib.suppress(KeyError):  # an earlier unregister's book update was interrupted
                self._poll.unregister(fd)
            del self._fds[fd]

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        return self._poll.poll(None if timeout is None else timeout * 1000.0)

    def rebuild(self) -> list[int]:
        # poll(2) keeps nothing in the kernel, but the poll object may hold an fd the book lost
        # (an interrupted modify): polled, never dispatched, it would make every wait return.
        new = select.poll()
        for fd, events in list(self._fds.items()):
            new.register(fd, events)
        self._poll = new
        return []

    def close(self) -> None:
        self._fds.clear()

    def registered(self) -> dict[int, int]:
        return dict(self._fds)


_FLAGS_OF_MASK: dict[int, int] = {
    selectors.EVENT_READ: IN,
    selectors.EVENT_WRITE: OUT,
    selectors.EVENT_READ | selectors.EVENT_WRITE: IN | OUT,
}
"""A selectors event mask (never 0 once registered or reported) as poll flags."""


class SelectorsPoller(Poller):
    """`selectors.DefaultSelector`, for portability. Reports IN/OUT only (HUP/ERR folded, see
    the module docstring), so it cannot tell a hangup from readability."""

    name = "selectors"
    tracks_files = False  # portable: select/poll selectors follow numbers
    silent_removal = True  # selectors swallows the kernel's error (its epoll selector follows files)
    polls_regular_files = False  # DefaultSelector is epoll on Linux

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._masks: dict[int, int] = {}
        self._suspect = False  # an exception interrupted the selector: its map may be wrong

    def modify(self, fd: int, events: int) -> None:
        mask = (selectors.EVENT_READ if events & IN else 0) | (selectors.EVENT_WRITE if events & OUT else 0)
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        if self._suspect:
            self.rebuild()
        sel = self._selector
        try:
            if not mask:
                # No OSError: selectors swallows the kernel's (fd closed meanwhile) itself.
                sel.unregister(fd)
                del self._masks[fd]
                return
            try:
                if old:
                    sel.modify(fd, mask)  # on failure selectors unregisters fd itself
                else:
                    sel.register(fd, mask)
            except OSError:
                self._masks.pop(fd, None)
                raise
            except ValueError as e:  # selectors' word for a negative fd (never in the book)
                raise OSError(errno.EBADF, str(e)) from e
            self._masks[fd] = mask
        except OSError:
            raise
        except BaseException:
            # selectors keeps its own map beside the kernel's set; an exception (a signal
            # handler's) between the two updates leaves them out of step. Our book says fd is
            # not registered; the next modify rebuilds the selector from the book.
            self._masks.pop(fd, None)
            self._suspect = True
            raise

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        return [(key.fd, _FLAGS_OF_MASK[mask]) for key, mask in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()
        self._masks.clear()

    def registered(self) -> dict[int, int]:
        return {fd: _FLAGS_OF_MASK[mask] for fd, mask in self._masks.items()}

    def fileno(self) -> int:
        return self._selector.fileno() if hasattr(self._selector, "fileno") else -1

    def rebuild(self) -> list[int]:
        new = selectors.DefaultSelector()
        failed: list[int] = []
        try:
            for fd, mask in list(self._masks.items()):
                try:
                    new.register(fd, mask)
                except (OSError, ValueError):
                    failed.append(fd)
        except BaseException:
            new.close()
            raise
        old = self._selector
        self._selector = new
        self._suspect = False
        for fd in failed:
            del self._masks[fd]
        old.close()
        return failed


POLLERS: dict[str, type[Poller]] = {
    cls.name: cls
    for cls in (EpollPoller, PollPoller, SelectorsPoller)
    if cls is not EpollPoller or hasattr(select, "epoll")
}
if not hasattr(select, "poll"):  # pragma: no cover - not Linux
    POLLERS.pop("poll", None)


def default_poller_name() -> str:
    for name in ("epoll", "poll"):
        if name in POLLERS:
            return name
    return "selectors"


def make_poller(poller: str | Poller | None) -> Poller:
    """A poller instance from a name ("epoll", "poll", "selectors"), an instance, or None."""
    if poller is None:
        poller = default_poller_name()
    if isinstance(poller, Poller):
        return poller
    if not isinstance(poller, str):
        raise TypeError(f"poller must be a name or a Poller, got {type(poller).__name__}")
    try:
        cls = POLLERS[poller]
    except KeyError:
        raise ValueError(f"poller must be one of {sorted(POLLERS)}, got {poller!r}") from None
    return cls()
