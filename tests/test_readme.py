"""README's first example runs as printed and prints what its last comment says (the bottom-half
and signal examples are run by tests/test_impl_context.py and tests/test_impl_signals.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_first_example_runs_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    section = README.read_text(encoding="utf-8").split("## A first example", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    expected = code.rsplit("# ", 1)[1].strip()
    assert capsys.readouterr().out.strip() == expected == "[b'hello']"


def test_readme_has_no_placeholder_or_history() -> None:
    text = README.read_text(encoding="utf-8")
    for stale in ("OWNER", "previous stop", "two stops ago", "this stop"):
        assert stale not in text, stale
