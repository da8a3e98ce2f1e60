"""The driver protocol, driver side (VECTORS.md, "The driver protocol").

The runner writes one vector per line (compact JSON) to the driver's stdin; the driver answers
one line per vector on stdout: `{"trace": [events]}` or `{"error": "message"}`, and exits 0 at
end of input. A Python driver is `serve(run)` with `run(vector) -> trace`.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TextIO

from iohandler.specs.vector import Event, Vector, VectorError, decode_json, event_to_json, parse_vector


class InvalidVector(Exception):
    """The vector is well-formed but cannot be run (say, a script sends after a hangup)."""


def answer_for(line: str, run: Callable[[Vector], Sequence[Event]]) -> dict[str, object]:
    try:
        vector = parse_vector(decode_json(line), "<stdin>", require_expect=False)
    except VectorError as e:  # not JSON, too deep, a huge integer, or not a vector
        return {"error": f"input: {e}" if str(e).startswith(("not JSON", "JSON ")) else str(e)}
    try:
        trace = run(vector)
    except (InvalidVector, VectorError) as e:
        return {"error": f"{vector.name}: {e}"}
    except Exception as e:  # a driver bug: say so, keep serving the next vector
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{vector.name}: driver raised {type(e).__name__}: {e}"}
    return {"trace": [event_to_json(e) for e in trace]}


def serve(
    run: Callable[[Vector], Sequence[Event]],
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    src = sys.stdin if stdin is None else stdin
    dst = sys.stdout if stdout is None else stdout
    for line in src:
        if not line.strip():
            continue
        dst.write(json.dumps(answer_for(line, run), separators=(",", ":")) + "\n")
        dst.flush()
    return 0
