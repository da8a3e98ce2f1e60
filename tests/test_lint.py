"""mypy --strict, ruff and ruff format, as `make verify` runs them, so that `make test` (CI) holds the code to
them too: a type error or lint finding fails CI, not only the main job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_strict_is_clean() -> None:
    out = _run("mypy", "--strict")  # the paths come from pyproject.toml
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_is_clean() -> None:
    out = _run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_is_clean() -> None:
    """`ruff format` over the tree (its settings: pyproject.toml); run it to fix a failure."""
    out = _run("ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr
