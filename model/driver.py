"""The model's driver for the conformance runner: `python -m model.driver`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from model.env import InvalidAction
from model.iterate import run_vector
from specs.protocol import InvalidVector, serve
from specs.vector import Event, Vector


def run(vector: Vector) -> Sequence[Event]:
    try:
        return run_vector(vector)
    except InvalidAction as e:
        raise InvalidVector(str(e)) from None


if __name__ == "__main__":
    sys.exit(serve(run))
