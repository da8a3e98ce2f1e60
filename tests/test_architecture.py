"""The layout's promises, checked on the source (AST): the import directions of README's
"Layout", and that no test reaches into the loop's private state (tests and the bug catalogue go
through public seams: `MainLoop.snapshot()`, `impl.Seams`, `Tracer`)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import iohandler.impl as impl
from iohandler.impl import MainLoop, Record, Registry
from iohandler.impl.kernel import Kernel

ROOT = Path(__file__).resolve().parent.parent

# The one exception, a method and not a field: the catalogue recompiles the iteration with a
# planted bug, since the dispatch walk is inline on purpose and has no seam (tests/catalogue.py).
ALLOWED_PRIVATE = {("tests/catalogue.py", "MainLoop._iterations")}


def _files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(module imported, at module level?) for each `iohandler.*` import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("iohandler."):
                yield name, id(node) in top


def _part(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("impl", {"model", "specs"}), ("model", {"impl"}), ("specs", {"impl"})],
)
def test_import_directions(folder: str, forbidden: set[str]) -> None:
    """The loop is a library a user can take alone (only its vector driver reads specs/); the
    model never imports the loop; specs/ runs the loop only as a driver process, and uses the
    model only in `iohandler fuzz` and `conform --exhaustive` (the oracle), so the vector format
    stands on its own."""
    bad = []
    for path in _files(folder):
        rel = path.relative_to(ROOT).as_posix()
        for module, _ in _imports(path):
            part = _part(module)
            if rel == "impl/driver.py" and part == "specs":
                continue
            oracle = rel in ("specs/fuzz.py", "specs/exhaustive.py")
            if part in forbidden or (folder == "specs" and part == "model" and not oracle):
                bad.append(f"{rel}: imports {module}")
    assert bad == []


def _loop_private_names() -> set[str]:
    with MainLoop("epoll") as loop:
        fields = {k for k in vars(loop) if k.startswith("_")}
    methods = {k for k in vars(MainLoop) if k.startswith("_") and not k.startswith("__")}
    return fields | methods


def test_no_test_reads_a_private_field_of_the_loop() -> None:
    names = _loop_private_names()
    assert {"_registry", "_kernel", "_wakeup", "_iterate"} <= names  # the check sees them
    found: set[tuple[str, str]] = set()
    for path in _files("tests"):
        rel = path.relative_to(ROOT).as_posix()
        found.update((rel, hit) for hit in _private_reads(ast.parse(path.read_text(encoding="utf-8")), names))
    assert found == ALLOWED_PRIVATE


_NAMED_ACCESS = {"getattr", "setattr", "hasattr", "delattr"}


def _private_reads(tree: ast.AST, names: set[str]) -> list[str]:
    """Reads of the loop's private names: attribute syntax (`loop._registry`) and the name as a
    literal string to getattr/setattr/hasattr/delattr, which attribute syntax alone misses."""

    def private(n: ast.AST) -> bool:
        if isinstance(n, ast.Attribute):
            return n.attr in names
        return (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id in _NAMED_ACCESS
            and len(n.args) >= 2
            and isinstance(n.args[1], ast.Constant)
            and n.args[1].value in names
        )

    return [ast.unparse(n) for n in ast.walk(tree) if private(n)]


def test_the_private_field_check_sees_a_read() -> None:
    """The AST walk above does find such reads, by attribute and by string name (so an empty
    result means something)."""
    src = (
        "def f(loop):\n"
        "    a = getattr(loop, '_by_fd', None)\n"
        "    setattr(loop, '_deleted', set())\n"
        "    return loop._registry.by_fd, loop.snapshot(), getattr(loop, 'poller')\n"
    )
    hits = sorted(_private_reads(ast.parse(src), _loop_private_names()))
    assert hits == ["getattr(loop, '_by_fd', None)", "loop._registry", "setattr(loop, '_deleted', set())"]


def _spec_loop_names() -> set[str]:
    """The names SPEC.md's *Loop* and *Python* paragraphs give for where the loop implements a
    rule: `Class.member` and bare `_private` method names."""
    spec = (ROOT / "specs" / "SPEC.md").read_text(encoding="utf-8")
    names: set[str] = set()
    for m in re.finditer(r"\*(?:Loop|Python)\*:(.*?)(?=\n\n|\*Seed\*|\*Port\*|\*Model\*)", spec, re.S):
        names.update(t for t in re.findall(r"`([^`]+)`", m.group(1)) if re.fullmatch(r"[A-Z]\w*\.\w+|_\w+", t))
    return names


def test_every_loop_name_spec_gives_exists() -> None:
    """Traceability from the rules to the loop stays true when code moves: each `Class.member`
    and `_method` SPEC.md names for the loop exists (a rename must update SPEC.md)."""
    classes: dict[str, type] = {n: v for n in dir(impl) if isinstance(v := getattr(impl, n), type)}
    classes.update(Kernel=Kernel, Registry=Registry, Record=Record)
    names = _spec_loop_names()
    assert len(names) > 20, sorted(names)  # the extraction still finds the paragraphs
    missing = []
    for name in sorted(names):
        owner, _, member = name.rpartition(".")
        if owner:
            cls = classes.get(owner)
            if cls is None or not (hasattr(cls, member) or member in getattr(cls, "__slots__", ())):
                missing.append(name)
        elif not any(hasattr(cls, name) for cls in (MainLoop, Kernel, Registry)):
            missing.append(name)
    assert missing == [], f"SPEC.md names loop code that does not exist: {missing}"


class _ReturnedCalls(ast.NodeVisitor):
    """`return <a call>` inside a `with` or in the body of a try that has a finally, within one
    function: CPython compiles the with's exit (the finally body) right after the returned call,
    outside their handlers, so a signal handler's exception raised as the call returns skips
    them (R35): a lock left held, a flag left set."""

    def __init__(self) -> None:
        self.depth = 0
        self.found: list[int] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        saved, self.depth = self.depth, 0
        self.generic_visit(node)
        self.depth = saved

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_With(self, node: ast.With) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_Try(self, node: ast.Try) -> None:
        if not node.finalbody:
            self.generic_visit(node)
            return
        self.depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.depth -= 1
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_Return(self, node: ast.Return) -> None:
        calls = (ast.Call, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)  # 3.11: a comprehension is a call
        if self.depth and node.value is not None and any(isinstance(n, calls) for n in ast.walk(node.value)):
            self.found.append(node.lineno)


def returned_calls(source: str) -> list[int]:
    visitor = _ReturnedCalls()
    visitor.visit(ast.parse(source))
    return visitor.found


def test_no_call_is_returned_from_inside_a_with_or_a_try_finally_in_impl() -> None:
    """R35 (MainLoop._iterate's comment): found by a planted signal at every bytecode, which
    left the loop "running" when `_iterate` returned its iterations' result from its try."""
    found = {
        (path.relative_to(ROOT).as_posix(), line)
        for path in _files("impl")
        for line in returned_calls(path.read_text(encoding="utf-8"))
    }
    assert not found, f"return of a call inside a with or a try/finally: {sorted(found)}"


def test_the_returned_call_check_sees_the_pattern() -> None:
    src = (
        "def f(lock, g):\n"
        "    with lock:\n"
        "        return g()\n"
        "def h(g):\n"
        "    try:\n"
        "        return g()\n"
        "    finally:\n"
        "        pass\n"
        "def k(lock, xs):\n"
        "    with lock:\n"
        "        return [x for x in xs]\n"
        "def ok(lock, g):\n"
        "    with lock:\n"
        "        x = g()\n"
        "    return x\n"
    )
    assert returned_calls(src) == [3, 6, 11]
