"""iohandler's real loop: QEMU's classic fd-handler main loop (1.5-2.3) on epoll, poll or
selectors. A library on its own: nothing here imports `model` or `specs` (only `impl.driver`,
the conformance driver, imports `specs`).

    from iohandler.impl import MainLoop
    with MainLoop() as loop:
        loop.set_fd_handler(sock, read=on_read, opaque=sock)
        loop.run_until(lambda: done)
"""

if __name__ != "iohandler.impl":  # the folder impl/ is installed as iohandler.impl, its only name
    raise ImportError(f"import iohandler.impl, not {__name__}: one module, one name")


from iohandler.impl.context import AioContext, AioHandlerInfo, BottomHalf
from iohandler.impl.errors import (
    ClosedFdError,
    FdError,
    IOHandlerError,
    LoopClosedError,
    LoopForkedError,
    ReentrantWaitError,
    UnpollableFdError,
)
from iohandler.impl.loop import FdLike, HandlerInfo, LoopSnapshot, MainLoop, Seams
from iohandler.impl.pollers import (
    ERR,
    HUP,
    IN,
    NVAL,
    OUT,
    POLLERS,
    READ_EVENTS,
    WRITE_EVENTS,
    EpollPoller,
    Poller,
    PollPoller,
    SelectorsPoller,
    default_poller_name,
    flag_names,
)
from iohandler.impl.registry import Record, RecordView, Registry
from iohandler.impl.signals import SignalInfo, SignalSet, signalfd_available
from iohandler.impl.timers import TimerHandle
from iohandler.impl.tracing import Handler, ListTracer, Tracer

__all__ = [
    "ERR",
    "HUP",
    "IN",
    "NVAL",
    "OUT",
    "POLLERS",
    "READ_EVENTS",
    "WRITE_EVENTS",
    "AioContext",
    "AioHandlerInfo",
    "BottomHalf",
    "ClosedFdError",
    "EpollPoller",
    "FdError",
    "FdLike",
    "Handler",
    "HandlerInfo",
    "IOHandlerError",
    "ListTracer",
    "LoopClosedError",
    "LoopForkedError",
    "LoopSnapshot",
    "MainLoop",
    "PollPoller",
    "Poller",
    "Record",
    "RecordView",
    "ReentrantWaitError",
    "Registry",
    "Seams",
    "SelectorsPoller",
    "SignalInfo",
    "SignalSet",
    "TimerHandle",
    "Tracer",
    "UnpollableFdError",
    "default_poller_name",
    "flag_names",
    "signalfd_available",
]
