"""Argument checks (R30): each names the argument it refuses, and none changes any state."""

from __future__ import annotations

import math
from typing import Protocol

FD_LIMIT = 2**31  # fds are C ints


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike = int | HasFileno


def fd_number(fd: object) -> int:
    """The fd number, a plain int, of an int or of an object with `fileno()` (R30): an int
    subclass is normalised, so one fd is one record (R1) however it was spelled."""
    if isinstance(fd, bool):
        raise TypeError("fd must be an int or have fileno(), got bool")
    if isinstance(fd, int):
        n = int.__index__(fd)  # a subclass becomes its plain number (its own __eq__/__hash__ unused)
    else:
        fileno = getattr(fd, "fileno", None)
        if not callable(fileno):
            raise TypeError(f"fd must be an int or have fileno(), got {type(fd).__name__}")
        try:
            n = fileno()
        except Exception as e:  # a closed file object (ValueError), or any other failure
            raise ValueError(f"fd.fileno() failed: {type(e).__name__}: {e}") from e
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"fd.fileno() must return an int, got {type(n).__name__}")
        n = int.__index__(n)
    if n < 0:
        raise ValueError(f"fd must be >= 0, got {n}")
    if n >= FD_LIMIT:
        raise ValueError(f"fd must be < 2**31, got {n}")
    return n


def check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


def check_delay(name: str, value: object) -> float:
    """A finite number of seconds >= 0, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float (10**400)
        raise ValueError(f"{name} must be finite and >= 0, got an int of {int(value).bit_length()} bits") from None
    if not seconds >= 0 or math.isinf(seconds):  # `not >=` also rejects NaN
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return seconds
