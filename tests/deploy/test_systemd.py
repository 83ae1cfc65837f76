"""deploy/switchboard.service: systemd accepts it, rates it hardened, and what it forbids is
nothing Switchboard needs."""

from __future__ import annotations

import asyncio
import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.visitor import Visitor
from tests.deploy.servers import DEPLOY, need
from tests.deploy.settings import config_key_of
from tests.install.installed import InstalledSwitchboard, registered_config

UNIT = DEPLOY / "switchboard.service"
SHIPPED_COMMAND = "/opt/switchboard/bin/switchboard"  # where deploy/install.sh puts it
MAX_EXPOSURE = 2.0


def unit_settings() -> configparser.RawConfigParser:
    """The unit's [Service] settings; a key given twice keeps its last value."""
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def installed_unit(installed: InstalledSwitchboard, folder: Path) -> Path:
    """The shipped unit with ExecStart calling the wheel the tests installed."""
    text, count = re.subn(
        rf"^ExecStart={re.escape(SHIPPED_COMMAND)} ",
        f"ExecStart={installed.command} ",
        UNIT.read_text(),
        flags=re.MULTILINE,
    )
    assert count == 1, f"the unit's ExecStart no longer calls {SHIPPED_COMMAND}"
    unit = folder / "switchboard.service"  # verify takes the unit's name from the file's
    unit.write_text(text)
    return unit


def test_systemd_analyze_verify_accepts_the_unit(
    installed_switchboard: InstalledSwitchboard, tmp_path: Path
):
    analyze = need("systemd-analyze")
    unit = installed_unit(installed_switchboard, tmp_path)
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # an unknown key or a key in the wrong section is only a warning: none is allowed either
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if unit.name in line
    ]
    assert complaints == []


def test_systemd_analyze_security_rates_the_unit_at_most_2(tmp_path: Path):
    analyze = need("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = re.search(
        r"Overall exposure level for switchboard\.service: (\d+\.\d+)", result.stdout
    )
    assert found is not None, result.stdout
    assert float(found[1]) <= MAX_EXPOSURE, result.stdout


def test_the_unit_reads_its_config_from_etc_and_keeps_its_database_in_its_state_directory():
    service = unit_settings()["Service"]
    assert service["User"] == "switchboard" and service.get("DynamicUser", "no") == "no"
    assert service["ExecStart"] == f"{SHIPPED_COMMAND} run -c /etc/switchboard/config.yaml"
    assert service["ConfigurationDirectory"] == "switchboard"
    assert service["ProtectSystem"] == "strict"  # so /etc/switchboard is read-only
    assert service["StateDirectory"] == "switchboard"
    name, _, value = service["Environment"].partition("=")
    assert config_key_of(name) == ("database", "url")
    assert value == "sqlite:////var/lib/switchboard/switchboard.db"  # four slashes: absolute
    # the database file lies in the one directory the service may write
    assert service["WorkingDirectory"] == "/var/lib/switchboard"
    assert service["NoNewPrivileges"] == "yes" and service["CapabilityBoundingSet"] == ""
    assert service["Restart"] == "on-failure"


# What the unit's MemoryDenyWriteExecute= enforces, set on a process by the kernel: no mapping
# may be writable and executable, or become executable. Inherited by every program it execs.
MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3)
    sys.exit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""
WRITE_EXECUTE = (
    "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
)


async def test_switchboard_serves_a_visitor_under_memory_deny_write_execute(
    installed_switchboard: InstalledSwitchboard,
    homeserver,
    switchboard_processes,
    database_url: str,
    tmp_path: Path,
):
    """The unit sets MemoryDenyWriteExecute=yes, which would stop a Python extension that
    generates code (a JIT, some libffi callbacks). The installed Switchboard, run under the
    kernel's same rule, migrates, registers its bot and takes a visitor's chat, on SQLite and
    on PostgreSQL (asyncpg)."""
    wrapper = (sys.executable, "-c", MDWE)
    probe = subprocess.run(
        [*wrapper, sys.executable, "-c", WRITE_EXECUTE], capture_output=True, text=True
    )
    if "PR_SET_MDWE" in probe.stderr:
        pytest.skip(f"this kernel cannot deny write+execute memory: {probe.stderr.strip()}")
    assert probe.returncode != 0 and "PermissionError" in probe.stderr, "the rule is not on"

    config = registered_config(
        homeserver, tmp_path / "config.yaml", {"database.url": database_url}
    )
    process = installed_switchboard.process(config)
    process.command = (*wrapper, str(installed_switchboard.command))
    switchboard_processes.append(process)
    await asyncio.to_thread(process.start)  # /ready: migrated, bot registered

    visitor = Visitor(process.config.portal.public_url)
    try:
        await visitor.open()
        started = await visitor.start()
        assert started["conversation"]["status"] == "waiting"
    finally:
        await visitor.close()
    process.stop()
    output = process.output()
    assert "Traceback" not in output and "Operation not permitted" not in output, output
