"""The installed package works as a new user gets it: built as a wheel, installed (not editable)
into a fresh venv, used from a folder outside the checkout.

One module-scoped build and install; each test checks one promise of the README's porter section.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERIC_NAMES = {"model", "impl", "specs", "bench", "tests"}
USER_FILE = """\
import os

from iohandler.impl import MainLoop


def on_read(opaque: object) -> None:
    print(opaque)


def main() -> int:
    loop = MainLoop()
    r, w = os.pipe()
    loop.set_fd_handler(r, on_read, None, opaque="pipe")
    loop.set_fd_handler(r, None, None)
    return loop.main_loop_wait(nonblocking=True)
"""


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.bin = self.venv / "bin"
        self.python = self.bin / "python"
        self.work = root / "elsewhere"  # a folder that is not the checkout: nothing importable by accident
        self.wheel: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args], cwd=self.work, env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def site_packages(self) -> Path:
        out = self.run(self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        assert out.returncode == 0, out.stderr
        return Path(out.stdout.strip())


def _check(proc: subprocess.CompletedProcess[str], what: str) -> str:
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    inst = Installed(tmp_path_factory.mktemp("wheel"))
    inst.work.mkdir()
    dist = inst.root / "dist"
    # A clean copy of the working tree: setuptools reuses the checkout's build/, whose stale files
    # would hide a file the package data no longer names.
    src = inst.root / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "results"
        ),
    )
    # The checkout venv's pip builds the wheel with the venv's own setuptools (the test extra pins
    # the build-system's version), so no network is needed ...
    _check(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                "-w",
                str(dist),
                str(src),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "pip wheel",
    )
    (inst.wheel,) = dist.glob("iohandler-*.whl")
    # ... and installs it into a venv without pip, so its site-packages holds only what we install.
    venv.EnvBuilder(with_pip=False).create(inst.venv)
    _check(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(inst.python),
                "install",
                "--no-deps",
                "--quiet",
                str(inst.wheel),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        ),
        "pip install",
    )
    yield inst


def test_wheel_installs_one_top_level_package(installed: Installed) -> None:
    import zipfile

    assert installed.wheel is not None
    names = zipfile.ZipFile(installed.wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"iohandler", f"iohandler-{_version()}.dist-info"}, top
    # The data a porter needs travels with the code.
    for needed in (
        "iohandler/specs/SPEC.md",
        "iohandler/specs/VECTORS.md",
        "iohandler/specs/vector.schema.json",
        "iohandler/model/py.typed",
        "iohandler/impl/py.typed",
        "iohandler/specs/py.typed",
    ):
        assert needed in names, needed
    bundled = {p.relative_to(ROOT / "specs").as_posix() for p in (ROOT / "specs" / "vectors").rglob("*.json")}
    shipped = {n.removeprefix("iohandler/specs/") for n in names if n.startswith("iohandler/specs/vectors/")}
    assert shipped == bundled

    listing = {p.name for p in installed.site_packages().iterdir() if p.name != "__pycache__"}
    assert listing == {"iohandler", f"iohandler-{_version()}.dist-info"}, listing
    assert not listing & GENERIC_NAMES


def test_version_comes_from_the_metadata(installed: Installed) -> None:
    out = _check(installed.run(installed.bin / "iohandler", "--version"), "iohandler --version")
    assert out.strip() == f"iohandler {_version()}"


@pytest.mark.parametrize("driver", ["iohandler.model.driver", "iohandler.impl.driver"])
def test_conform_with_the_reference_drivers(installed: Installed, driver: str) -> None:
    out = _check(
        installed.run(installed.bin / "iohandler", "conform", "--driver", f"python -m {driver}"), f"conform {driver}"
    )
    bundled = sum(1 for _ in (ROOT / "specs" / "vectors").rglob("*.json"))
    assert out.strip().splitlines()[-1].startswith(f"{bundled} passed, 0 failed"), out


def test_generic_names_do_not_import(installed: Installed) -> None:
    for name in sorted(GENERIC_NAMES):
        proc = installed.run(installed.python, "-c", f"import {name}")
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, (name, proc.stderr)


def test_user_code_type_checks_against_the_installed_package(installed: Installed) -> None:
    user = installed.work / "user.py"
    user.write_text(USER_FILE)
    # The checkout's mypy, told to look at the other venv's site-packages: the PEP 561 markers decide.
    proc = installed.run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--config-file",
        "",
        "--python-executable",
        installed.python,
        user,
    )
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr
    user.write_text(USER_FILE + "\nx: str = MainLoop()\n")  # the check can fail: a wrong annotation is caught
    proc = installed.run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--config-file",
        "",
        "--python-executable",
        installed.python,
        user,
    )
    assert proc.returncode == 1 and "Incompatible types in assignment" in proc.stdout, proc.stdout


def _version() -> str:
    return importlib.metadata.version("iohandler")
