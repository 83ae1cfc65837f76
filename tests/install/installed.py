"""Switchboard as an administrator installs it: the wheel, built from this checkout, installed by
deploy/install.sh with constraints.txt into a fresh virtualenv outside the checkout.

``installed_switchboard`` (one per test run) is that virtualenv; ``registered_config`` writes a
config whose tokens and appservice port are the ones the session's Synapse has loaded (the e2e
``homeserver`` fixture), so the installed ``switchboard run`` is a registered appservice.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.desks import Homeserver, free_port
from tests.faults.process import SwitchboardProcess, write_config

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "deploy" / "install.sh"
CONSTRAINTS = REPO / "constraints.txt"


def checkout_files() -> list[str]:
    """The checkout's files as git sees them: tracked or new, not ignored (no venv, no build/)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(f for f in listed.split("\0") if f and (REPO / f).is_file())


@dataclasses.dataclass(frozen=True)
class Wheel:
    path: Path
    sources: tuple[str, ...]  # the checkout's files it was built from

    def names(self) -> set[str]:
        with zipfile.ZipFile(self.path) as archive:
            return set(archive.namelist())


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    """The wheel of the checkout as it is now (uncommitted changes included), built from a clean
    copy so that nothing a former build left in build/ slips in."""
    root = tmp_path_factory.mktemp("wheel")
    source, out = root / "source", root / "dist"
    files = checkout_files()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((REPO / name).read_bytes())
    # no build isolation: the setuptools pinned in constraints.txt builds it, offline
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(out), str(source)],
        cwd=root,
        capture_output=True,
        check=True,
    )
    (built,) = out.glob("switchboard-*.whl")
    return Wheel(built, tuple(files))


@dataclasses.dataclass(frozen=True)
class InstalledSwitchboard:
    """A virtualenv holding the installed wheel; commands run outside the checkout."""

    venv: Path
    workdir: Path  # a directory outside the checkout, the cwd of every command

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def command(self) -> Path:
        return self.venv / "bin" / "switchboard"

    @property
    def env(self) -> dict[str, str]:
        """This environment without anything that would point Python at the checkout."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``switchboard ARGS`` (output captured)."""
        return self._run([str(self.command), *map(str, args)], check)

    def python_c(self, code: str) -> str:
        """Run ``code`` with the virtualenv's Python; its stdout."""
        return self._run([str(self.python), "-c", code], True).stdout

    def _run(self, argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def process(self, config_path: Path) -> SwitchboardProcess:
        """``switchboard run -c config_path`` as a process of its own (not started yet)."""
        return SwitchboardProcess(
            config_path, (str(self.command),), cwd=self.workdir, base_env=self.env
        )


@pytest.fixture(scope="session")
def installed_switchboard(
    wheel: Wheel, tmp_path_factory: pytest.TempPathFactory
) -> InstalledSwitchboard:
    """The wheel installed by deploy/install.sh, with the pins, into a fresh virtualenv."""
    root = tmp_path_factory.mktemp("installed")
    assert REPO not in root.resolve().parents, "the virtualenv must lie outside the checkout"
    venv, workdir = root / "venv", root / "work"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # the interpreter under the test venv, so the new virtualenv does not nest in ours
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    env["CONSTRAINTS"] = str(CONSTRAINTS)
    result = subprocess.run(
        [str(INSTALL_SCRIPT), str(venv), str(wheel.path)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"install.sh failed:\n{result.stdout}\n{result.stderr}")
    return InstalledSwitchboard(venv, workdir)


def registered_config(
    homeserver: Homeserver, path: Path, changes: dict[str, Any]  # noqa: F811
) -> Path:
    """A config at ``path`` with the tokens and appservice port the session's Synapse loaded,
    a free portal port, and ``changes`` (e.g. ``database.url``)."""
    port = free_port()
    write_config(
        homeserver.config.path,
        path,
        {
            "portal.port": port,
            "portal.public_url": f"http://127.0.0.1:{port}",
            "logging.root.level": "INFO",
            **changes,
        },
    )
    return path


@pytest.fixture
def switchboard_processes() -> Iterator[list[SwitchboardProcess]]:
    """Processes a test started; each is stopped at its end."""
    started: list[SwitchboardProcess] = []
    yield started
    for process in started:
        process.stop()
