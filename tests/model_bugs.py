# ruff: noqa: E501  (planted edits quote model source lines whole, so a drift is caught)
"""A catalogue of bugs planted in the *model*, each to be refuted by the closure itself.

A bug is a source-text replacement in one file of `model/`. `plant` copies the installed
`iohandler.model` into a temporary folder and applies it there (the original text must be
present exactly once, so a drifted catalogue fails loudly); `refute` then runs the explorer of
tests/exploration.py in a subprocess whose sys.path puts that copy first (`iohandler` is a
namespace package, so `iohandler.model` comes from the copy and the rest from the install).
Nothing is monkey-patched.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import iohandler.model

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    file: str  # in model/
    edits: tuple[tuple[str, str], ...]  # (original text, planted text)
    rules: tuple[str, ...]  # a refutation must name one of these
    scope: str = "fds"  # the CI configuration that refutes it


CATALOGUE: tuple[Bug, ...] = (
    Bug(
        "deleted-check-removed",
        "dispatch.py",
        (
            (
                "        if not record.deleted and record.poll_index != -1:\n            ready = revents[record.poll_index]\n"
                "        if not record.deleted and record.read is not None and ready & READ_EVENTS:",
                # (a deleted record's slot may be from an older poll set: read it only if in range)
                "        if -1 < record.poll_index < len(revents):\n            ready = revents[record.poll_index]\n"
                "        if record.read is not None and ready & READ_EVENTS:",
            ),
        ),
        ("R17",),
    ),
    Bug(
        "reap-before-walk",
        "dispatch.py",
        (
            (
                "    events: list[Event] = []\n    for fd in",
                "    events: list[Event] = []\n"
                "    world = world.with_loop(replace(world.loop, records=tuple(r for r in world.loop.records if not r.deleted)))\n"
                "    for fd in",
            ),
        ),
        ("R19",),
    ),
    Bug(
        "write-check-old-handler",
        "dispatch.py",
        (
            (
                "            events.extend(out)\n        record = _record(world, fd)\n        if not record.deleted and record.write",
                "            events.extend(out)\n        if not record.deleted and record.write",
            ),
        ),
        ("R18",),
    ),
    Bug(
        "gate-at-dispatch",
        "dispatch.py",
        (
            (
                "        if not record.deleted and record.read is not None and ready & READ_EVENTS:",
                "        if not record.deleted and record.read is not None and ready & READ_EVENTS and (\n"
                "                record.gate is None or world.gates[record.gate]):",
            ),
        ),
        ("R16",),
    ),
    Bug(
        "never-reaps",
        "dispatch.py",
        (
            (
                "        if record.deleted:\n            world = world.with_loop(",
                "        if record.deleted and not record.deleted:\n            world = world.with_loop(",
            ),
        ),
        ("R19",),
    ),
    Bug(
        "reaps-on-zero",
        "dispatch.py",
        (
            (
                "    if ret <= 0:\n        return world, ()",
                "    if ret <= 0:\n"
                "        return world.with_loop(replace(world.loop, records=tuple(r for r in world.loop.records if not r.deleted))), ()",
            ),
        ),
        ("R14",),
    ),
    Bug(
        "insert-at-tail",
        "registry.py",
        (("records = (fresh, *loop.records) if i == -1 else", "records = (*loop.records, fresh) if i == -1 else"),),
        ("R2",),
    ),
    Bug(
        "revive-to-head",
        "registry.py",
        (
            (
                "else _put(loop.records, i, fresh)",
                "else (fresh, *loop.records[:i], *loop.records[i + 1 :]) if loop.records[i].deleted else _put(loop.records, i, fresh)",
            ),
        ),
        ("R5",),
    ),
    Bug(
        "no-slot-reset",
        "registry.py",
        (
            (
                "    fresh = Record(fd, read, write, gate, poll_index=-1, deleted=False)",
                "    fresh = Record(fd, read, write, gate, poll_index=loop.records[i].poll_index if i != -1 else -1)",
            ),
        ),
        ("R6",),
    ),
    Bug(
        "delete-unlinks",
        "registry.py",
        (
            (
                "        return replace(loop, records=_put(loop.records, i, replace(loop.records[i], deleted=True)))",
                "        return replace(loop, records=loop.records[:i] + loop.records[i + 1 :])",
            ),
        ),
        ("R4",),
    ),
    Bug(
        "duplicates",
        "registry.py",
        (
            (
                "    i = index_of(loop.records, fd)\n    if read is None",
                "    i = index_of(loop.records, fd) if read is None and write is None else -1\n    if read is None",
            ),
        ),
        ("R1",),
    ),
    Bug(
        "no-wakeup",
        "registry.py",
        (("    return Loop(records, wakeup=True)", "    return Loop(records, wakeup=loop.wakeup)"),),
        ("R7",),
    ),
    Bug(
        "gate-own-change-ignored",
        "fill.py",
        (("                record = _record(world, fd)  # the gate may have changed its own record\n", ""),),
        ("R22",),
        scope="gate-scripts",
    ),
    Bug("deleted-polled", "fill.py", (("        if record.deleted:\n            continue\n", ""),), ("R8",)),
    Bug(
        "closed-gate-polled",
        "fill.py",
        (
            (
                "            if is_open:\n                asked |= READ_EVENTS",
                "            if True:\n                asked |= READ_EVENTS",
            ),
        ),
        ("R8", "R10"),
    ),
    Bug(
        "notify-lost",
        "iterate.py",
        (
            (
                "        case Notify():\n            return aio.notify(world), ()",
                "        case Notify():\n            return world, ()",
            ),
        ),
        ("R13",),
    ),
    Bug(
        "notify-consumed-after-walk",
        "iterate.py",
        (
            (
                "    world, out = dispatch(world, revents, ret, call)\n",
                "    world, out = dispatch(world, revents, ret, call)\n"
                "    world = world.with_loop(Loop(world.loop.records, wakeup=False))\n",
            ),
        ),
        ("R13",),
    ),
    Bug(
        "unrequested-events",
        "env.py",
        (("readiness(env[fd]) & (events | ALWAYS_REPORTED) for fd", "readiness(env[fd]) for fd"),),
        ("R11",),
    ),
    # The context (format v3): refuted by the context's closure.
    Bug(
        "schedule-rearms-idle",
        "bh.py",
        (
            (
                "    bh = find(ctx, name)\n    if bh.scheduled:\n        return ctx, False",
                "    bh = find(ctx, name)\n    if bh.scheduled and not bh.idle:\n        return ctx, False",
            ),
        ),
        ("R42",),
        "context",
    ),
    Bug(
        "notify-while-dispatching",
        "aio.py",
        (("    if world.ctx.dispatching:\n        return world", "    if False:\n        return world"),),
        ("R45", "R13"),
        "context",
    ),
    Bug(
        "bh-walk-counter-leaks",
        "bh.py",
        (
            (
                "    ctx = replace(world.ctx, walking_bh=world.ctx.walking_bh - 1)",
                "    ctx = replace(world.ctx, walking_bh=world.ctx.walking_bh)",
            ),
        ),
        ("R44",),
        "context",
    ),
    Bug(
        "ctx-delete-flags-outside-walk",
        "aio.py",
        (("            if ctx.walking_handlers:\n", "            if True:\n"),),
        ("R48",),
        "context",
    ),
    Bug(
        "ctx-revents-kept",
        "aio.py",
        (
            (
                "replace(_put(ctx, replace(node, revents=0)), walking_handlers",
                "replace(_put(ctx, node), walking_handlers",
            ),
        ),
        ("R49",),
        "context",
    ),
)


def plant(bug: Bug, folder: Path) -> Path:
    """`folder`/iohandler/model: a copy of the model with `bug` planted; returns `folder`."""
    source = Path(iohandler.model.__file__).resolve().parent
    target = folder / "iohandler" / "model"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    path = target / bug.file
    text = path.read_text()
    for old, new in bug.edits:  # none for the control
        if text.count(old) != 1:
            raise AssertionError(f"bug {bug.name}: the original text is not in model/{bug.file} exactly once: {old!r}")
        text = text.replace(old, new)
    path.write_text(text)
    return folder


_CHILD = """
import json, pathlib, sys
sys.path.insert(0, sys.argv[1])
import iohandler.model
assert pathlib.Path(iohandler.model.__file__).parent == pathlib.Path(sys.argv[1]) / "iohandler" / "model"
from iohandler.specs.exhaustive import context_scopes
from tests.exploration import Violation, explore, scopes
scope = {s.name: s for s in [*scopes(False), *context_scopes()]}[sys.argv[2]]
try:
    c = explore(scope, workers=1)
    print(json.dumps({"closed": c.closed, "states": c.states}))
except Violation as e:
    print(json.dumps({"violation": str(e)}))
"""


@dataclass(frozen=True)
class Refutation:
    rule: str | None  # None: the closure found no violation
    depth: int
    message: str


def refute(bug: Bug, folder: Path, timeout: float = 300) -> Refutation:
    """Run the closure on the planted model; the first violation it finds."""
    plant(bug, folder)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), bug.scope],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        return Refutation(None, 0, f"the explorer crashed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    if "violation" not in out:
        return Refutation(None, 0, f"no violation: {out}")
    message: str = out["violation"]
    rule = message.split(":", 1)[0]
    depth = re.search(r"at depth (\d+)", message)
    return Refutation(rule, int(depth.group(1)) if depth else 0, message)
