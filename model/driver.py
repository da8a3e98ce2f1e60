"""The model's driver for the conformance runner: `python -m iohandler.model.driver`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from iohandler.model.env import InvalidAction
from iohandler.model.iterate import run_vector
from iohandler.specs.protocol import InvalidVector, serve
from iohandler.specs.vector import Event, Vector


def run(vector: Vector) -> Sequence[Event]:
    try:
        return run_vector(vector)
    except InvalidAction as e:
        raise InvalidVector(str(e)) from None


if __name__ == "__main__":
    sys.exit(serve(run))
