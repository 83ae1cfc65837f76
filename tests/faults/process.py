"""Switchboard as a separate process, so a fault test can SIGKILL it and start it again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from appservice.config import Config, load


def write_config(base: Path, path: Path, changes: dict[str, Any]) -> Config:
    """A copy of ``base`` (the registered config: same tokens) with ``changes`` applied."""
    yaml = YAML()
    data = yaml.load(base.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    with path.open("w") as f:
        yaml.dump(data, f)
    return load(path)


class SwitchboardProcess:
    def __init__(
        self,
        config_path: Path,
        command: Sequence[str] = (sys.executable, "-m", "appservice"),
        *,
        cwd: Path | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        """``command`` is how to call ``switchboard`` (default: this checkout, with this
        interpreter; tests/install gives an installed one), ``base_env`` replaces os.environ."""
        self.config_path = config_path
        self.config = load(config_path)
        self.log_path = config_path.with_suffix(".log")
        self.command = tuple(command)
        self.cwd = cwd
        self.base_env = dict(os.environ if base_env is None else base_env)
        self._process: subprocess.Popen[bytes] | None = None
        self.offset = 0  # where this run's output starts in the log file

    def start(
        self, timeout: float = 30, env: dict[str, str] | None = None, until: str = "/ready"
    ) -> None:
        """Start it and wait until ``until`` answers 200: ``/ready`` (serving) by default,
        ``/health`` for a start-up that is still waiting for something."""
        self.launch(env)
        assert self._process is not None
        deadline = time.monotonic() + timeout
        url = f"{self.config.portal.public_url}{until}"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Switchboard exited: {self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Switchboard did not start: {self.output()[-3000:]}")

    def launch(self, env: dict[str, str] | None = None) -> None:
        """Start the process and return at once (see :meth:`start` to wait for it)."""
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [*self.command, "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.cwd,
                env={**self.base_env, **(env or {})},
            )

    def output(self) -> str:
        """What this run (since the last :meth:`launch`) wrote to stdout and stderr."""
        with self.log_path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def signal(self, sig: int) -> None:
        assert self._process is not None
        self._process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Its exit status, once it exits by itself (fails after ``timeout`` seconds)."""
        assert self._process is not None
        code = self._process.wait(timeout)
        self._process = None
        return code

    def wait_killed(self, timeout: float = 30) -> int:
        """Wait for the process to die by itself (a crash hook); its exit status."""
        assert self._process is not None
        code = self._process.wait(timeout)
        self._process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses power."""
        if self._process is not None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None
