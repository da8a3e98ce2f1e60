"""The model's driver, misbehaving one way: `python tests/fuzz_drivers/hostile.py MODE`.

tests/test_fuzz.py uses these to see how `iohandler fuzz` reports a driver that is wrong in a
way the gate-scripts probe or a saved vector's description must tell apart:

    drop-last      every trace loses its last event (a wrong answer to the probe, too)
    refuse-v2      answers {"error": ...} to a format v2 vector (a v1-only port that says so)
    refuse-hangup  answers {"error": ...} to a vector with a hangup anywhere (it errs, it does
                   not differ)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from iohandler.model.driver import run
from iohandler.specs.protocol import InvalidVector, serve
from iohandler.specs.vector import Event, Vector, vector_to_json

MODES = ("drop-last", "refuse-v2", "refuse-hangup")


def hostile(mode: str) -> object:
    if mode not in MODES:
        raise SystemExit(f"hostile.py: MODE must be one of {', '.join(MODES)}, got {mode!r}")

    def answer(vector: Vector) -> Sequence[Event]:
        if mode == "refuse-v2" and vector.gate_scripts:
            raise InvalidVector("this driver reads format v1 only")
        if mode == "refuse-hangup" and '"hangup"' in str(vector_to_json(vector)).replace("'", '"'):
            raise InvalidVector("hangup is not supported here")
        trace = run(vector)
        return trace[:-1] if mode == "drop-last" else trace

    return answer


if __name__ == "__main__":
    sys.exit(serve(hostile(sys.argv[1] if len(sys.argv) > 1 else "")))  # type: ignore[arg-type]
