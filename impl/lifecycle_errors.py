"""Lifecycle errors of the loop (issue 14). Kept apart from errors.py while that module is being
reworked; LoopForkedError belongs beside LoopClosedError there."""

from __future__ import annotations

from iohandler.impl.errors import LoopClosedError


class LoopForkedError(LoopClosedError):
    """The loop was inherited through fork(): the child shares the parent's kernel objects
    (epoll set, wakeup), so every use from the child is refused. The child creates its own
    loop; `close()` on the inherited one releases the child's copies of its fds only."""
