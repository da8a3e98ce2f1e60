"""Signals through the loop (R60-R65): QEMU 2.3's `qemu_signal_init` and `sigfd_handler`
(main-loop.c) with `qemu_signalfd` (util/compatfd.c), for `MainLoop.add_signal_handler`.

The seed blocks its signals in the main thread, opens a non-blocking signalfd for them and
registers it as an ordinary read record (no gate, no writer); the record's handler reads one
`signalfd_siginfo` at a time until EAGAIN and calls the handler installed for each. So a signal
reaches the program in the walk, at the record's turn (R15), never between two bytecodes of a
callback.

Two mechanisms give the same callbacks:

* "signalfd": the signals are blocked in the calling (main) thread with `pthread_sigmask`, and
  the kernel queues them for `signalfd(2)` (called through ctypes: no package that wraps it is
  maintained; the call is one function). Dispositions are left alone, as the seed does: a
  blocked signal is never discarded as ignored (the kernel's `sig_ignored` skips blocked ones),
  so SIG_IGN'd signals (Python ignores SIGPIPE) still reach the fd. SIGCHLD is the exception:
  at SIG_IGN the kernel reaps children itself and sends none, so it is set to SIG_DFL while
  the loop has its handler. The kernel coalesces a
  standard signal raised again while pending, queues each real-time one, and hands them out
  lowest number first (the synchronous ones, SIGSEGV..., before the others; a thread's own
  before the process's).
* "wakeup" (where signalfd is missing, or chosen): Python's own C-level handler writes each
  signal's number to `signal.set_wakeup_fd` (a pipe here), as asyncio does, and the Python-level
  handler installed as the disposition records the signal's kind. The pipe gives numbers only
  (pid, uid and code are None) and one byte per delivery, so this side keeps the kernel's pending
  set itself: a standard signal is pending once, a real-time one once per byte, handed out in the
  kernel's order. A pipe merges one-byte writes (about 65 536 of them fit; a socket pair, which
  gives each byte its own buffer, held about 278); when a flood fills it anyway, the runtime's
  write fails silently, so a kind whose bytes were lost is taken from the recorded kinds (R61:
  at least once). The seed's compat path (`qemu_signalfd_compat`) used a thread in `sigwait`
  writing to a pipe; Python cannot block a signal in threads it did not start, so the wakeup fd,
  which works whatever thread the kernel picks, is the sound choice here.

One loop per process holds signal handlers at a time: masks and dispositions are the process's.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import select
import signal
import struct
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from iohandler.impl.errors import finish

__all__ = ["MECHANISMS", "SignalInfo", "SignalSet", "open_signalfd", "signal_name", "signalfd_available"]

MECHANISMS = ("signalfd", "wakeup")

BATCH = 64
"""The most signals one walk delivers (R61): past it the record stays readable and the next
iteration goes on, so a signal storm cannot starve the other records. The seed reads until
EAGAIN."""

# Signals the kernel dequeues before all others (kernel/signal.c, SYNCHRONOUS_MASK).
_SYNCHRONOUS = frozenset(
    int(s) for s in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGTRAP, signal.SIGFPE, signal.SIGSYS)
)
_UNCATCHABLE = frozenset((int(signal.SIGKILL), int(signal.SIGSTOP)))
_SIGINFO = struct.Struct("=IiiII")  # signalfd_siginfo: ssi_signo, ssi_errno, ssi_code, ssi_pid, ssi_uid
_SIGINFO_SIZE = 128  # sizeof(struct signalfd_siginfo)
_ZEROS = bytes(4096)
_ZERO4 = bytes(4)


class SignalInfo(NamedTuple):
    """What a signal callback gets first: the signal number, and the sender's pid and uid and
    the `si_code` (SI_USER for kill(), CLD_EXITED for SIGCHLD, ...) where the mechanism knows
    them (signalfd); None where it does not (the wakeup fallback)."""

    signo: int
    pid: int | None
    uid: int | None
    code: int | None


def signal_name(signo: int) -> str:
    """SIGTERM, SIGRTMIN+3, ...: the enum has no member for most real-time signals."""
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"SIGRTMIN+{signo - signal.SIGRTMIN}" if signo > signal.SIGRTMIN else str(signo)


def order_key(signo: int) -> tuple[bool, int]:
    """The kernel's dequeue order (R61): synchronous signals first, then lowest number."""
    return (signo not in _SYNCHRONOUS, signo)


# ----------------------------------------------------------------------- signalfd by ctypes

_libc: Any = None


def _signalfd_call() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fn = getattr(_libc, "signalfd", None)
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
        fn.restype = ctypes.c_int
    return fn


_SIGSET_WORDS = 1024 // (8 * ctypes.sizeof(ctypes.c_ulong))  # glibc's and musl's sigset_t: 128 bytes


def _sigset(signals: set[int]) -> ctypes.Array[ctypes.c_ulong]:
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    words = (ctypes.c_ulong * _SIGSET_WORDS)()
    for s in signals:  # the kernel's layout: signal n is bit n - 1
        words[(s - 1) // bits] |= 1 << ((s - 1) % bits)
    return words


def _signalfd(fd: int, signals: set[int]) -> int:
    """signalfd(2): a new fd (fd == -1) or a new mask for `fd`; non-blocking, close-on-exec
    (SFD_NONBLOCK and SFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC by definition)."""
    fn = _signalfd_call()
    if fn is None:
        raise OSError(errno.ENOSYS, "signalfd is missing from the C library")
    mask = _sigset(signals)
    ret = fn(fd, ctypes.byref(mask), os.O_NONBLOCK | os.O_CLOEXEC)
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"signalfd: {os.strerror(e)}")
    return int(ret)


def open_signalfd(signals: set[int]) -> int:
    """A new non-blocking, close-on-exec signalfd for `signals` (they must be blocked in the
    thread that reads it): for callers that manage their own signals (the conformance driver's
    `signal` fds)."""
    return _signalfd(-1, signals)


def signalfd_available() -> bool:
    """QEMU's `qemu_signalfd_available`: signalfd exists and the kernel has it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.close(_signalfd(-1, set()))
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------- argument checks


def check_signum(signum: object) -> int:
    """R30's standard for `signum`: an int naming a signal the process can catch."""
    if isinstance(signum, bool) or not isinstance(signum, int):
        raise TypeError(f"signum must be an int (a signal number), got {type(signum).__name__}")
    n = int(signum)
    if n in _UNCATCHABLE:
        raise ValueError(f"signum {signal_name(n)} cannot be caught, blocked or ignored")
    if n not in signal.valid_signals():
        raise ValueError(f"signum must be a signal number in 1..{signal.NSIG - 1}, got {n}")
    return n


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------- the signal set


class _Loop(Protocol):
    """What a SignalSet needs of its MainLoop (held weakly: no cycle)."""

    @property
    def closed(self) -> bool: ...

    def _register_signal_record(self) -> None: ...

    def _unregister_signal_record(self) -> None: ...


_owner: weakref.ref[SignalSet] | None = None  # the one SignalSet holding signals in this process
_owner_lock = threading.Lock()


_PARKED: list[SignalSet] = []  # released off the main thread: restored by the main thread (R64)


def restore_parked() -> None:
    """R64: restore the signal state of loops released off the main thread (main thread only)."""
    if _PARKED and _is_main_thread():
        with _owner_lock:
            parked = list(_PARKED)
            _PARKED.clear()
        for sigs in parked:
            sigs.close()


_TRIPPED: set[int] = set()
"""Wakeup mechanism: the kinds whose Python-level handler ran and whose byte has not been seen
yet. The handler runs in the main thread (at a bytecode boundary), after the runtime's C handler
has written the byte or failed to (a full pipe): R61's net for a flood."""

_MARKER = 255  # the re-arm byte: no signal has this number
_MARK = bytes((_MARKER,))
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def _wakeup_handler(signum: int, frame: object) -> None:
    """The wakeup mechanism's disposition: the C handler has written the pipe (if it had room)."""
    _TRIPPED.add(signum)


def _pipe_capacity(fd: int) -> int:
    """Bytes the pipe holds before a write fails: the kernel says on Linux; elsewhere PIPE_BUF,
    the least POSIX allows (a low guess only makes R61's net act more often)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            size = int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
            return size  # not `return int(...)`: MainLoop._iterate says why
    return select.PIPE_BUF


class SignalSet:
    """A loop's signal handlers and its signal record's fd: the record's `opaque`, so
    `records()` shows the record as the loop's own (`isinstance(info.opaque, SignalSet)`)."""

    def __init__(self, loop: _Loop, mechanism: str | None) -> None:
        if mechanism is None:
            mechanism = "signalfd" if signalfd_available() else "wakeup"
        if mechanism not in MECHANISMS:
            raise ValueError(f"signal_mechanism must be one of {MECHANISMS} or None, got {mechanism!r}")
        self.mechanism = mechanism
        self._loop = weakref.ref(loop)
        self.handlers: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        self._blocked: set[int] = set()  # signals this set blocked (they were not blocked before)
        self._saved: dict[int, Any] = {}  # wakeup: signum -> previous disposition
        self._fd = -1  # the record's fd (the epoll set below, or the wakeup pipe's read end)
        self._sfd = -1  # signalfd: the signalfd itself
        self._ep: select.epoll | None = None  # signalfd: an epoll set of the signalfd and the pipe
        # The wakeup pipe, or (signalfd) a pipe only for the re-arm marker: either way the
        # record's fd is readable while a marker is in it (R63, R35).
        self._pipe: tuple[int, int] | None = None  # (read end, write end)
        # R35: the signal taken and not yet handed to its callback. A signal moves from the
        # kernel (signalfd: into `_sbuf`, zero where nothing was read) or the pending list into
        # it with no call between the stores, and leaves it only when the callback has been
        # called: a KeyboardInterrupt anywhere between leaves it here for the next walk.
        self._inhand: SignalInfo | None = None
        self._sbuf = bytearray(_SIGINFO_SIZE)
        self._prev_wakeup = -1
        self._holding = False  # owns the process's signal state (some handler installed)
        # wakeup: the kernel's pending set, kept here (module docstring). Replaced whole, never
        # changed in place, so that each update is one store (R35).
        self._std: frozenset[int] = frozenset()
        self._rt: dict[int, int] = {}
        self._rbuf = bytearray(4096)  # read into, zero where nothing was read (R35)
        self._seen: set[int] = set()  # kinds read from the pipe since it was last empty
        self._since_empty = 0  # bytes read from the pipe since it was last empty
        self.closed = False
        self._thread_warned = False
        self._threads_at_block: set[int | None] = set()  # signalfd: threads alive at the first block

    def fileno(self) -> int:
        return self._fd

    def __repr__(self) -> str:
        return f"<SignalSet {self.mechanism} fd={self._fd} signals={sorted(self.handlers)}>"

    # ------------------------------------------------------------------ add and remove

    def add(self, signum: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Called by MainLoop.add_signal_handler with checked arguments, its lock held."""
        restore_parked()
        if not _is_main_thread():
            raise RuntimeError(
                "add_signal_handler must be called from the main thread: the signal mask is the "
                "calling thread's, and Python installs signal dispositions in the main thread only"
            )
        if self.handlers and self.mechanism == "wakeup":
            self._check_wakeup_fd()
        if signum in self.handlers:  # a replacement: mask and disposition stay as they are
            self.handlers[signum] = (callback, args)
            return
        first = not self.handlers
        try:
            if first:  # inside the try: a signal handler's exception as it ends lets go (R35)
                self._take_process()
            if self.mechanism == "signalfd":
                self._add_signalfd(signum)
            else:
                self._add_wakeup(signum)
        except BaseException:
            if first:
                self._release_process()
            raise
        self.handlers[signum] = (callback, args)
        if first:
            loop = self._loop()
            assert loop is not None  # the loop calls this
            try:
                loop._register_signal_record()  # R60: an ordinary record, R2's position
            except BaseException:  # nothing half-applied (R30)
                self.remove(signum)
                raise

    def remove(self, signum: int) -> bool:
        if not _is_main_thread():
            raise RuntimeError("remove_signal_handler must be called from the main thread")
        restore_parked()
        if signum not in self.handlers:
            return False
        # R35: a signal handler's exception part-way finishes the remove (every step can be
        # repeated), then leaves: never a handler half removed (a disposition lost, a signal
        # left blocked with no handler, the process left held by a loop with none).
        try:
            self._remove(signum)
        except BaseException:
            finish(lambda: self._remove(signum))
            raise
        return True

    def _remove(self, signum: int) -> None:
        """remove()'s steps, each repeatable (R35)."""
        self._drop_in_hand(signum)
        if self.mechanism == "signalfd":
            rest = set(self.handlers) - {signum}
            _signalfd(self._sfd, rest)  # the fd stops taking it before it is unblocked
            self._discard_pending(signum)
            if signum in self._saved:  # SIGCHLD's SIG_IGN, put back once it cannot be pending
                signal.signal(signum, self._saved[signum])
                del self._saved[signum]
            if signum in self._blocked:
                if len(self._blocked) == 1:  # the last one this loop blocked
                    self._warn_inherited_masks()
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
                self._blocked.discard(signum)
        else:
            self._drain()  # bytes already written for it are dropped with it
            if signum in self._saved:
                signal.signal(signum, self._saved[signum])
                del self._saved[signum]
            self._std = self._std - {signum}
            self._rt = {s: n for s, n in self._rt.items() if s != signum}
            _TRIPPED.discard(signum)
            if self._std or self._rt:  # the drain emptied the pipe: what it held for others must still wake the walk
                self._rearm()
        self.handlers.pop(signum, None)
        if not self.handlers:
            loop = self._loop()
            if loop is not None and not loop.closed:  # closing: the registry goes with it
                loop._unregister_signal_record()
            self._release_process()

    def _check_wakeup_fd(self) -> None:
        """R65: the process's wakeup fd is still our pipe (set_wakeup_fd has no getter: set and
        put back)."""
        assert self._pipe is not None
        cur = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        if cur != self._pipe[1]:
            signal.set_wakeup_fd(cur)
            raise RuntimeError(
                f"signal.set_wakeup_fd was set to fd {cur} after this loop took it (an asyncio "
                "loop?): the signals go there, not to the loop; the wakeup mechanism needs it"
            )

    def check_thread(self) -> None:
        """R65, called as the loop starts iterating: a signalfd read off the main thread sees
        the process's signals and that thread's, never those sent to the main thread itself."""
        if self.mechanism == "signalfd" and self.handlers and not self._thread_warned and not _is_main_thread():
            self._thread_warned = True
            warnings.warn(
                f"iohandler: the loop runs in thread {threading.current_thread().name!r} with "
                "signal handlers on signalfd: signals sent to the main thread itself "
                "(signal.raise_signal, pthread_kill) stay pending there and never reach the loop "
                "(R65). Run the loop in the main thread, or use MainLoop(signal_mechanism='wakeup').",
                RuntimeWarning,
                stacklevel=3,
            )

    def _warn_inherited_masks(self) -> None:
        """R64/R65: threads started while the loop's signals were blocked keep them blocked."""
        me = threading.current_thread()
        late = [t.name for t in threading.enumerate() if t is not me and t.ident not in self._threads_at_block]
        if late:
            warnings.warn(
                f"iohandler: threads {late} were started while the loop's signals "
                f"{[signal_name(s) for s in sorted(self._blocked)]} were blocked and keep them blocked: "
                "only the main thread's mask is restored (R64)",
                RuntimeWarning,
                stacklevel=4,
            )

    def _drop_in_hand(self, signum: int) -> None:
        """R64: a signal of a removed kind left in hand by an interrupt is dropped with it."""
        if self._sbuf[:4] != _ZERO4 and _SIGINFO.unpack_from(self._sbuf)[0] == signum:
            self._sbuf[:4] = _ZERO4
        if self._inhand is not None and self._inhand.signo == signum:
            self._inhand = None

    def _take_process(self) -> None:
        global _owner
        with _owner_lock:
            other = _owner() if _owner is not None else None
            if other is not None and other is not self and other._holding:
                raise RuntimeError(
                    f"another loop holds signal handlers ({other!r}): masks and dispositions are "
                    "the process's, so one loop at a time may have them"
                )
            if self._pipe is None:
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                self._pipe = (r, w)
            if self.mechanism == "wakeup":
                self._fd = self._pipe[0]
                prev = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
                if prev != -1:
                    signal.set_wakeup_fd(prev)
                    raise RuntimeError(
                        f"signal.set_wakeup_fd is already in use (fd {prev}: an asyncio loop?); "
                        "the wakeup mechanism needs it"
                    )
                self._prev_wakeup = prev
            elif self._sfd < 0:
                self._sfd = _signalfd(-1, set())
                self._ep = select.epoll()
                self._ep.register(self._sfd, select.EPOLLIN)
                self._ep.register(self._pipe[0], select.EPOLLIN)
                self._fd = self._ep.fileno()
            _owner = weakref.ref(self)
            self._holding = True

    def _release_process(self) -> None:
        global _owner
        with _owner_lock:
            if self.mechanism == "wakeup" and self._holding:
                assert self._pipe is not None
                cur = signal.set_wakeup_fd(self._prev_wakeup)
                # Replaced after we took it: the program's, kept. (`prev` itself: this is a
                # repeat after a signal handler's exception cut the first run short, R35.)
                if cur != self._pipe[1] and cur != self._prev_wakeup:
                    signal.set_wakeup_fd(cur)
                    warnings.warn(
                        f"iohandler: signal.set_wakeup_fd was set to fd {cur} while the loop held "
                        "signal handlers (signals went there meanwhile); it is left in place",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            self._holding = False
            if _owner is not None and _owner() is self:
                _owner = None

    def _add_signalfd(self, signum: int) -> None:
        if signum not in signal.pthread_sigmask(signal.SIG_BLOCK, set()):
            others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
            if others:
                warnings.warn(
                    f"iohandler: threads {others} were started before {signal_name(signum)} "
                    "was blocked: they do not block it, so the kernel may deliver it to one of "
                    "them, where it runs the signal's disposition instead of reaching the loop "
                    "(R63). Add signal handlers before starting threads, or use "
                    "MainLoop(signal_mechanism='wakeup').",
                    RuntimeWarning,
                    stacklevel=4,
                )
            if not self._blocked:
                self._threads_at_block = {t.ident for t in threading.enumerate()}
            signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
            self._blocked.add(signum)
        try:
            _signalfd(self._sfd, set(self.handlers) | {signum})
            if signum == signal.SIGCHLD and signal.getsignal(signum) == signal.SIG_IGN:
                # SIG_IGN'd SIGCHLD: the kernel reaps children itself and sends none, blocked
                # or not; SIG_DFL (ignore, no reaping) while ours, as the wakeup side does (R60).
                self._saved[signum] = signal.signal(signum, signal.SIG_DFL)
        except BaseException:
            if signum in self._blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
                self._blocked.discard(signum)
            raise

    def _add_wakeup(self, signum: int) -> None:
        if signum in signal.pthread_sigmask(signal.SIG_BLOCK, set()):
            raise ValueError(
                f"signum {signal_name(signum)} is blocked in the main thread: the wakeup "
                "mechanism's handler never runs there for it (unblock it, or use signalfd)"
            )
        prev = signal.getsignal(signum)
        if prev is None:
            raise ValueError(
                f"signum {signal_name(signum)}: its handler was not installed from Python, "
                "so it could not be restored; the wakeup mechanism refuses it"
            )
        signal.signal(signum, _wakeup_handler)
        self._saved[signum] = prev

    def _discard_pending(self, signum: int) -> None:
        """R64: signals of a removed kind still pending are dropped, not handed to the old
        disposition when unblocked (a pending SIGTERM would end the process). A signal the
        program had blocked itself stays blocked, and its pending ones are dropped too: they
        arrived for the loop's handler."""
        while signal.sigtimedwait({signum}, 0) is not None:
            pass

    # ------------------------------------------------------------------------ delivery

    def dispatch(self, _opaque: object) -> None:
        """The record's read handler (`sigfd_handler`): one signal at a time, lowest number
        first, at most BATCH, each to the handler installed when it is taken (R61, R62). A
        callback's exception propagates (the walk names the record, R32); signals not taken
        yet stay pending and keep the record readable (R63). R35: a KeyboardInterrupt from a
        Python signal handler at any point loses nothing (`_inhand`), and the record is then
        re-armed so that the next walk goes on."""
        wakeup = self.mechanism == "wakeup"
        take = self._take_wakeup if wakeup else self._take_signalfd
        done = False
        try:
            if not wakeup:
                self._drain_marks()
            taken = 0
            while taken < BATCH and self.handlers:
                info = take()
                if info is None:
                    break
                taken += 1
                entry = self.handlers.get(info.signo)
                if entry is None:  # removed since it was raised: the seed finds SIG_DFL too
                    self._inhand = None
                    continue
                callback, args = entry
                try:
                    callback(info, *args)
                except BaseException as e:
                    self._inhand = None  # R63: the signal in hand counts as delivered
                    e.add_note(f"iohandler: raised by the signal handler {callback!r} of {signal_name(info.signo)}")
                    raise
                self._inhand = None
            done = True
        finally:
            # No call before the write: an interrupt here would strand what is held.
            if not done or self._std or self._rt or self._inhand is not None:
                assert self._pipe is not None
                try:  # noqa: SIM105 (contextlib.suppress is a call before the write: R35)
                    os.write(self._pipe[1], _MARK)
                except BlockingIOError:  # full: readable anyway
                    pass

    def _rearm(self) -> None:
        """Keep the record readable while something is held (R63)."""
        assert self._pipe is not None
        with contextlib.suppress(BlockingIOError):  # full: readable anyway
            os.write(self._pipe[1], _MARK)

    def _take_signalfd(self) -> SignalInfo | None:
        info = self._inhand
        if info is not None:
            return info
        buf = self._sbuf
        if buf[:4] == _ZERO4:  # nothing left from an interrupted take
            try:
                n = os.readv(self._sfd, [buf])  # one signalfd_siginfo: the seed reads one
            except BlockingIOError:
                return None
            if n != _SIGINFO_SIZE:  # the seed prints and returns
                buf[:] = bytes(_SIGINFO_SIZE)
                raise OSError(errno.EIO, f"signalfd read returned {n} bytes")
        signo, _errno, code, pid, uid = _SIGINFO.unpack_from(buf)
        info = SignalInfo(signo, pid, uid, code)
        # The commit: stores only, no call between them (R35).
        self._inhand = info
        buf[:4] = _ZERO4
        return info

    def _drain_marks(self) -> None:
        """signalfd: empty the re-arm pipe (its markers carry nothing)."""
        assert self._pipe is not None
        while True:
            try:
                if not os.read(self._pipe[0], 4096):
                    return
            except BlockingIOError:
                return

    def _drain(self) -> None:
        """Move what the pipe holds into the pending list (wakeup mechanism). Each read lands in
        `_rbuf` and is merged in one step with no call between the stores (R35)."""
        assert self._pipe is not None
        rbuf = self._rbuf
        while True:
            # What is read is a prefix of non-zero bytes (signal numbers and markers).
            if rbuf[0]:  # read but not merged yet: a KeyboardInterrupt came
                self._merge(rbuf)
            try:
                os.readv(self._fd, [rbuf])
            except BlockingIOError:
                break
            if not rbuf[0]:  # end of file: cannot happen while we hold the write end
                break
        self._pipe_empty()

    def _merge(self, rbuf: bytearray) -> None:
        data = bytes(rbuf).rstrip(b"\0")
        counts = collections.Counter(data)
        counts.pop(_MARKER, None)
        std, rt = self._add_pending(counts)
        seen = self._seen | counts.keys()
        count = self._since_empty + len(data)
        # The commit: stores only, no call between them (R35).
        self._std = std
        self._rt = rt
        self._seen = seen
        self._since_empty = count
        rbuf[:] = _ZEROS

    def _pipe_empty(self) -> None:
        """The pipe was found empty: every byte written since it was last empty has been read.
        If they filled it, a write may have failed: a kind recorded by the Python-level handler
        and not seen in the pipe is taken as pending once (R61: at least once). Kinds seen are
        forgotten; others stay recorded (their byte may still be on its way)."""
        global _TRIPPED
        kinds = set(_TRIPPED) & set(self.handlers)
        full = self._since_empty >= select.PIPE_BUF and self._since_empty >= _pipe_capacity(self._fd)
        if full:
            std, rt = self._add_pending(dict.fromkeys(kinds - self._seen, 1))
            done = kinds
        else:
            std, rt = self._std, self._rt
            done = kinds & self._seen
        empty: set[int] = set()
        # The commit: stores only (R35).
        self._std = std
        self._rt = rt
        self._seen = empty
        self._since_empty = 0
        _TRIPPED -= done

    def _add_pending(self, counts: Mapping[int, int]) -> tuple[frozenset[int], dict[int, int]]:
        """New pending set and counts with `counts` raised: a standard signal once, a real-time
        one each time (R61). Pure: the caller commits."""
        std, rt = self._std, self._rt
        if counts:
            std = std | {s for s in counts if s < signal.SIGRTMIN}
            rt = dict(rt)
            for s, n in counts.items():
                if s >= signal.SIGRTMIN:
                    rt[s] = rt.get(s, 0) + n
        return std, rt

    def _take_wakeup(self) -> SignalInfo | None:
        info = self._inhand
        if info is not None:
            return info
        self._drain()  # what arrived since the last one: as a signalfd read sees it
        std, rt = self._std, self._rt
        if not std and not rt:
            return None
        signo = min((*std, *rt), key=order_key)
        if signo in std:
            std = std - {signo}
        else:
            rt = dict(rt)
            left = rt.pop(signo) - 1
            if left:
                rt[signo] = left
        info = SignalInfo(signo, None, None, None)
        # The commit: stores only, no call between them (R35).
        self._inhand = info
        self._std = std
        self._rt = rt
        return info

    # --------------------------------------------------------------------- close, fork

    def check_close(self) -> None:
        """R64: MainLoop.close() off the main thread with handlers installed is refused before
        anything changes: the mask is the main thread's and dispositions and the wakeup fd can
        only be set there."""
        if self.handlers and not _is_main_thread():
            raise RuntimeError(
                f"close() of a loop with signal handlers ({', '.join(map(signal_name, sorted(self.handlers)))}) "
                "must be called from the main thread: the signal mask and dispositions it restores "
                "can only be changed there (remove the handlers from the main thread first)"
            )

    def close(self) -> None:
        """R64: every handler removed (pending signals of their kinds dropped, mask and
        dispositions as before the first add), then the fd closed. Idempotent. Off the main
        thread (a loop collected there) nothing can be restored: the set is parked, its fds
        open (the wakeup fd still names its pipe), until the main thread's next signal call."""
        if self.closed:
            return
        if self.handlers and not _is_main_thread():
            warnings.warn(
                "iohandler: a loop with signal handlers "
                f"({', '.join(map(signal_name, sorted(self.handlers)))}) was released off the main "
                "thread; its mask and dispositions are restored at the main thread's next "
                "add_signal_handler or remove_signal_handler, or close() of a loop with signals",
                RuntimeWarning,
                stacklevel=3,
            )
            with _owner_lock:
                _PARKED.append(self)
            return
        restore_parked()
        for signum in list(self.handlers):
            self.remove(signum)
        self._close_fds()  # before the flag: a repeat after a cut finishes it (R35)
        self.closed = True

    def _close_fds(self) -> None:
        """Repeatable (R35). Each fd is forgotten before it is closed: a cut between leaks it,
        where the other order could close it twice (the number may be another file's by then)."""
        ep, self._ep = self._ep, None
        if ep is not None:
            ep.close()
        sfd, self._sfd = self._sfd, -1
        if sfd >= 0:
            os.close(sfd)
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            for fd in pipe:
                os.close(fd)
        self._fd = -1
        self._inhand = None

    def after_fork_in_child(self) -> None:
        """R65, in a forked child: the mask and dispositions as before the first add, the
        wakeup fd released, nothing pending (the kernel gives a child none); the fds are the
        child's copies, closed by the loop's close()."""
        global _owner
        if self._blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self._blocked)
            self._blocked = set()
        for signum, prev in self._saved.items():
            signal.signal(signum, prev)
        self._saved = {}
        if self.mechanism == "wakeup" and self._holding:
            signal.set_wakeup_fd(self._prev_wakeup)
        self.handlers.clear()
        self._std = frozenset()
        self._rt = {}
        self._inhand = None
        self._sbuf[:] = bytes(_SIGINFO_SIZE)
        _TRIPPED.clear()
        self._holding = False
        _owner = None


def _after_fork_in_child() -> None:
    global _owner_lock
    _owner_lock = threading.Lock()  # a parent thread may have held it at the fork
    owner = _owner() if _owner is not None else None
    if owner is not None:
        owner.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
