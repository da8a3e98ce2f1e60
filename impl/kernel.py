"""The loop's kernel bookkeeping (R33, R34): which file each registration is for, whether a ready
fd still names it, and registrations that outlived their fd numbers. One small object over a
Poller; it reads and writes a record's `kev`, `ident` and `renew`, and reports problems to the
loop, which decides what they do to the registry (it never touches the registry itself).

Kernel facts this relies on (pollers.py has the backends' own):

* An fd number can be closed and reused for another file at any time between two system calls.
  So "is ready fd N still the file registered?" needs the file's identity, recorded at
  registration, compared with what N names now.
* `(st_dev, st_ino)` from fstat identifies a file, except for anonymous-inode files (eventfd,
  timerfd, signalfd, epoll, ...), which all share one inode on Linux: fstat cannot tell two of
  them apart. Nothing names such a file once its fd is closed: `/proc/self/fdinfo/N` of an
  eventfd has an `eventfd-id`, but it is the lowest free id, so a new eventfd takes the id of
  one just closed (seen on 6.18). Character devices are the same: `(st_dev, st_ino)` names the
  device node, shared by every open of it (every pty master from /dev/ptmx, /dev/net/tun,
  /dev/kvm, /dev/null). So their identity is "unknown", and another mechanism answers:
  - a re-registration of such a number while its record is in the kernel set is a fresh kernel
    registration (`renew`: drop, rebuild, register) unless the witness below (or, without one,
    epoll's confirm) proves the number still names the file, so the file that took the number
    is registered and the old one's events cannot reach it (a dup keeping the old file alive,
    the witness included).
  - every poller: the loop holds a *witness* per record of such a file, from its registration
    (add, update, revival) until the record is deleted, reaped or quarantined: a dup of the
    file registered. kcmp(2) (`KCMP_FILE`) tells whether the number and the witness name the
    same open file. A witness per record, not per kernel registration: a record not in the
    kernel set (not yet filled, or behind a closed gate, R10) must be told from a file that took
    its number as much as a polled one (the fill's fresh registration asks). The witness keeps
    the old file open until the loop lets the record go (harmless for eventfd, timerfd,
    signalfd, epoll; R34 asks for a delete before the close anyway). Where kcmp is missing or
    refused (seccomp), or the dup fails (EMFILE), there is no witness: epoll's confirm still
    answers for a polled record (a failed one proves the number names another file), and a
    re-registration is renewed where nothing can tell (selectors); otherwise such a reuse goes
    undetected.
* epoll's registrations belong to the open file (pollers.py's module docstring): a no-op
  `EPOLL_CTL_MOD` is the cheapest positive answer to "does N still name the file registered"
  (`Poller.confirm`), and a registration that outlived its number can only be dropped by
  `Poller.rebuild`. Such numbers are `orphans` until then.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import platform
import stat
from collections.abc import Callable

from iohandler.impl.errors import ClosedFdError, FdError, UnpollableFdError
from iohandler.impl.pollers import NVAL, Poller
from iohandler.impl.registry import Record


def _anon_inode() -> tuple[int, int] | None:
    """The (st_dev, st_ino) every anonymous-inode file shares, or None if there is none."""
    eventfd = getattr(os, "eventfd", None)
    if eventfd is None:  # pragma: no cover - not Linux
        return None
    fd = eventfd(0)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return (st.st_dev, st.st_ino)


ANON_INODE = _anon_inode()
UNKNOWN = None  # the identity part of an anonymous file nothing names


def identity(st: os.stat_result) -> tuple[object, ...]:
    """The identity of the file whose fstat is `st`, recorded at registration and compared
    later; "unknown" for anonymous-inode files (module docstring), which the witnesses and
    the poller's confirm answer for instead."""
    key = (st.st_dev, st.st_ino)
    if key != ANON_INODE and not stat.S_ISCHR(st.st_mode):
        return key
    return (*key, UNKNOWN)


def is_unknown(ident: tuple[object, ...]) -> bool:
    """An anonymous file whose identity nothing names: a re-registration renews it."""
    return len(ident) == 3 and ident[2] is UNKNOWN


# kcmp's number, where it is known; the probe below checks it on this machine before any use.
_SYS_KCMP = {
    "x86_64": 312,
    "aarch64": 272,
    "riscv64": 272,
    "loongarch64": 272,
    "i386": 349,
    "i686": 349,
    "armv7l": 378,
    "ppc64le": 354,
    "s390x": 343,
}
_KCMP_FILE = 0


@functools.cache
def same_file_check() -> Callable[[int, int], bool] | None:
    """`f(a, b)`: do this process's fds `a` and `b` name the same open file (kcmp(2),
    `KCMP_FILE`)? None where kcmp is unavailable. Probed once, on a dup pair and a different
    file, so a wrong system call number or a seccomp refusal gives None, never a wrong answer."""
    return _probe_kcmp()


def _probe_kcmp() -> Callable[[int, int], bool] | None:
    nr = _SYS_KCMP.get(platform.machine())
    eventfd = getattr(os, "eventfd", None)
    if nr is None or eventfd is None:  # pragma: no cover - not Linux, or an unlisted machine
        return None
    import ctypes  # only here: most loops never need it

    syscall = ctypes.CDLL(None).syscall  # errno unused: any failure returns -1
    getpid = os.getpid  # at each call: in a forked child, kcmp must name the child

    def order(a: int, b: int) -> int:
        pid = getpid()
        return int(syscall(nr, pid, pid, _KCMP_FILE, a, b))

    def same(a: int, b: int) -> bool:
        return order(a, b) == 0

    opened: list[int] = []  # each closed, whichever open fails (EMFILE)
    try:
        opened.append(a := eventfd(0))
        opened.append(b := os.dup(a))
        opened.append(c := eventfd(0))
        works = order(a, b) == 0 and order(a, c) in (1, 2, 3)  # -1: missing or refused
    finally:
        for fd in opened:
            os.close(fd)
    return same if works else None


_O_PATH = getattr(os, "O_PATH", 0)


def _o_path(fd: int) -> bool:
    """`fd` was opened with O_PATH: no poller can poll it."""
    try:
        return bool(_O_PATH and fcntl.fcntl(fd, fcntl.F_GETFL) & _O_PATH)
    except OSError:
        return False


class Kernel:
    """`poller` with the file identity of each registration. The loop reads the poller's
    hot-path attributes itself (Poller: `wait_once`, `batch_full`, `confirm`, the latter only if
    `fast_confirm`); `lost` holds the fds the last rebuild could not register again, for the
    loop to handle."""

    __slots__ = ("fast_confirm", "lost", "orphans", "own_fd", "poller", "same_file", "witnesses")

    def __init__(self, poller: Poller, *, fast_confirm: bool) -> None:
        self.poller = poller
        self.fast_confirm = fast_confirm
        # Numbers whose kernel registration could not be removed (see above). Registering such
        # a number again rebuilds the kernel set first, or the old file's events would reach
        # the new record.
        self.orphans: set[int] = set()
        self.lost: list[int] = []
        self.own_fd = poller.fileno()  # the kernel object's fd (R38), renewed by rebuild
        # fd -> witness (module docstring): one per record of an anonymous file. same_file is
        # looked up at the first such registration.
        self.witnesses: dict[int, int] = {}
        self.same_file: Callable[[int, int], bool] | None = None

    def registrations(self) -> dict[int, int]:
        """fd -> events the poller holds (a copy)."""
        return self.poller.registered()

    def file_problem(self, rec: Record) -> str | None:
        """Why `rec.fd` no longer names the file registered, or None if it does."""
        try:
            st = os.fstat(rec.fd)
        except OSError:
            return f"fd {rec.fd} was closed while registered; its handlers were removed"
        ident = identity(st)
        if ident != rec.ident or (len(ident) == 3 and self._names_another_file(rec)):
            return (
                f"fd {rec.fd} was closed while registered and its number now names another "
                "file; its handlers were removed"
            )
        return None

    def _names_another_file(self, rec: Record) -> bool:
        """`rec.fd` (an anonymous file: the caller compared identities first) names another
        file than the one registered: its witness says so, or, without one, epoll's confirm
        fails for a polled record (EPOLL_CTL_MOD finds no registration for the file the number
        names now)."""
        w = self.witnesses.get(rec.fd)
        if w is not None:
            return self.same_file is not None and not self.same_file(rec.fd, w)
        if not rec.kev or not is_unknown(rec.ident):
            return False
        confirm = self.poller.confirm if self.poller.tracks_files else None
        if confirm is None:
            return False
        try:
            confirm(rec.fd, rec.kev)
        except (OSError, ValueError):
            return True
        return False

    def bind(self, rec: Record, fd: int) -> bool:
        """`fd`, an anonymous file, is being registered for `rec` (add, update or revival):
        keep a witness of the file it names now. True if the number may name another file than
        the one `rec` was registered for (then a registration in the kernel is renewed)."""
        w = self.witnesses.get(fd)
        same = self.same_file
        if w is not None and same is not None and same(fd, w):
            return False  # the same open file: nothing changes
        if same is None:
            try:
                same = self.same_file = same_file_check()
            except OSError:  # EMFILE while probing: no witness now, probed again next time
                same = None
        if same is not None:
            try:
                new = os.dup(fd)
            except OSError:  # EMFILE: no witness, the fallbacks of the module docstring
                new = -1
            if new >= 0:
                # A signal handler's exception between the dup and this store leaks the dup:
                # one fd, no lost work.
                self.witnesses[fd] = new
                if w is not None:
                    os.close(w)
                return True
        if w is not None:  # a stale witness (the file changed) and no new one
            self._release_witness(fd)
            return True
        return self._may_have_changed(rec)

    def unbind(self, fd: int) -> None:
        """The record of `fd` is no longer for an anonymous file: its witness goes."""
        if self.witnesses:
            self._release_witness(fd)

    def _release_witness(self, fd: int) -> None:
        w = self.witnesses.pop(fd, None)
        if w is not None:
            os.close(w)

    def _may_have_changed(self, rec: Record) -> bool:
        """Without a witness, for a polled record of unknown identity being registered again:
        could its number name another file than the one the kernel holds? epoll's confirm
        answers; selectors cannot tell (yes); poll takes numbers afresh (no)."""
        if not rec.kev:
            return False
        poller = self.poller
        if not (poller.tracks_files or poller.silent_removal):
            return False
        confirm = poller.confirm
        if confirm is None:
            return True
        try:
            confirm(rec.fd, rec.kev)
        except (OSError, ValueError):
            return True
        return False

    def check_ready(self, rec: Record) -> FdError | None:
        """R33/R34 for a ready record the poller's confirm did not vouch for (one fstat): the
        error that removes it, or None if its fd still names the file registered. The loop
        asks for each ready record at its turn, so a handler that ran before it is seen."""
        if rec.deleted or rec.stale:
            return None
        problem = self.file_problem(rec)
        if problem is not None:
            return ClosedFdError(rec.fd, problem)
        if rec.rev & NVAL:  # the file registered, open, and invalid to poll(2): an O_PATH fd
            return UnpollableFdError(rec.fd, f"fd {rec.fd}: {self.poller.name} reports it invalid (NVAL)")
        return None

    def sync(self, rec: Record, ev: int) -> FdError | None:
        """Give the kernel the record's new interest (0: none). Returns the error that makes
        the record unusable (its file is gone, not the one registered, or unpollable)."""
        if rec.renew:
            rec.renew = False
            self.drop(rec)
            # The number was closed while registered: with a dup of the old file alive, its
            # epoll registration survives under this number beside the new one. Start afresh.
            self.rebuild()
        if not ev:
            if rec.deleted:
                self.release(rec)
            else:
                self.drop(rec)  # a closed gate (R10): the witness stays with the record
            return None
        if not rec.kev:  # a fresh registration: make sure it is still the same file
            problem = self.file_problem(rec)
            if problem is not None:
                return ClosedFdError(rec.fd, problem)
            if rec.fd in self.orphans:
                self.rebuild()
        poller = self.poller
        try:
            poller.modify(rec.fd, ev)
        except OSError as e:
            problem = self.file_problem(rec)
            if problem is None and e.errno == errno.ENOENT:
                # epoll dropped the registration when the old file closed, and the number was
                # re-registered for the file it names now: register afresh.
                try:
                    poller.modify(rec.fd, ev)
                except OSError as e2:
                    e = e2
                else:
                    rec.kev = ev
                    return None
            err: FdError
            # The file is the one registered and the kernel refuses it: EPERM for what epoll
            # cannot poll (/dev/null), EBADF for an fd opened with O_PATH (any other EBADF for
            # an open file is a closed fd's, as the kernel says).
            if problem is None and (e.errno == errno.EPERM or (e.errno == errno.EBADF and _o_path(rec.fd))):
                err = UnpollableFdError(rec.fd, f"fd {rec.fd}: {poller.name} cannot poll it")
            else:
                err = ClosedFdError(rec.fd, problem or f"fd {rec.fd}: {e.strerror}")
            err.__cause__ = e
            self.drop(rec)
            return err
        rec.kev = ev
        return None

    def drop(self, rec: Record) -> None:
        """Stop polling the record's fd; remember the number if the kernel may keep it."""
        if rec.kev:
            # kev is cleared last: if a signal handler's exception cuts this short, the record
            # still says it is polled and the next drop (or fill) finishes the job.
            try:
                self.poller.modify(rec.fd, 0)
            except OSError:  # the number no longer names the file: maybe out of reach
                self.orphans.add(rec.fd)
            else:
                if self.poller.silent_removal and self.file_problem(rec) is not None:
                    self.orphans.add(rec.fd)
            rec.kev = 0

    def release(self, rec: Record) -> None:
        """The record is let go (deleted, reaped, quarantined): its kernel registration and its
        witness."""
        self.drop(rec)
        if self.witnesses:
            self._release_witness(rec.fd)

    def rebuild(self) -> None:
        """Re-create the poller's kernel object from its book, dropping registrations that
        outlived their fd numbers. Fds that cannot be registered again go to `lost`."""
        # An exception from a signal handler between the rebuild and the extend loses the
        # fds it could not register: they were closed, and are found as an idle fd epoll
        # forgot is (R33: a re-registration or check_fds()).
        lost = self.poller.rebuild()
        self.lost.extend(lost)
        if self.witnesses:
            for fd in lost:
                self._release_witness(fd)
        self.own_fd = self.poller.fileno()
        self.orphans.clear()  # the new kernel object holds only the book's registrations

    def has_object(self) -> bool:
        return self.poller.fileno() >= 0

    def close(self) -> None:
        self.orphans.clear()
        self.poller.close()
        while self.witnesses:
            os.close(self.witnesses.popitem()[1])
