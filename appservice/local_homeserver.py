"""Start and stop a real local Synapse homeserver on loopback.

Used by Switchboard's demo command and by the test suite; part of the optional ``demo``
extra (matrix-synapse, PyYAML), which ``switchboard run`` never imports. Synapse is the one
installed from PyPI into the running interpreter's environment; it is run as
``sys.executable -m synapse.app.homeserver`` in its own process group.

Everything lives in ``data_dir``: ``homeserver.yaml`` (regenerated on each
``prepare()``), the log config, the signing key, the SQLite database
``homeserver.db``, the media store, the registration shared secret and the
chosen port. The last five survive across runs so a second demo run reuses the
same URL, users and rooms.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import yaml

logger = logging.getLogger(__name__)

_HIGH = {"per_second": 10000, "burst_count": 100000}
_TEST_RATE_LIMITS: dict[str, Any] = {
    **dict.fromkeys(
        "rc_message rc_registration rc_registration_token_validity rc_admin_redaction"
        " rc_joins_per_room rc_3pid_validation rc_third_party_invite rc_media_create"
        " rc_delayed_event_mgmt rc_room_creation rc_reports rc_user_directory rc_profile".split(),
        _HIGH,
    ),
    "rc_login": dict.fromkeys(("address", "account", "failed_attempts"), _HIGH),
    "rc_joins": dict.fromkeys(("local", "remote"), _HIGH),
    "rc_invites": dict.fromkeys(("per_room", "per_user", "per_issuer"), _HIGH),
    "rc_presence": {"per_user": _HIGH},
    "rc_federation": {
        "sleep_limit": 10000,
        "sleep_delay": 1,
        "reject_limit": 100000,
        "concurrent": 1000,
    },
}
# Demo: Synapse's defaults, except logging in and registering are comfortable for one person.
_COMFY = {"per_second": 1, "burst_count": 20}
_DEMO_RATE_LIMITS: dict[str, Any] = {
    "rc_registration": _COMFY,
    "rc_login": {
        "address": _COMFY,
        "account": _COMFY,
        "failed_attempts": {"per_second": 0.2, "burst_count": 10},
    },
}


class _Dumper(yaml.SafeDumper):
    """Writes shared sub-dicts in full instead of as YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no orphans after a kill).

    Takes effect for the calling thread's children only when called in the child itself, so
    it is used as ``preexec_fn`` and at the demo's start. A no-op off Linux.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file, or a note if it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(%s does not exist)" % path
    return "\n".join(text.splitlines()[-lines:]) or "(%s is empty)" % path


class LocalHomeserver:
    """A Synapse homeserver on ``127.0.0.1`` whose state lives in ``data_dir``."""

    def __init__(
        self,
        data_dir: pathlib.Path,
        *,
        port: int | None = None,
        server_name: str = "localhost",
        appservice_registrations: Iterable[pathlib.Path] = (),
        for_tests: bool = False,
    ) -> None:
        """Describe the server; nothing is written or started until ``prepare``/``start``.

        If ``port`` is None, the port saved in ``data_dir`` by an earlier run is
        reused, else a free loopback port is picked and saved.
        """
        self.data_dir = pathlib.Path(data_dir).resolve()
        self._server_name = server_name
        self.appservice_registrations = [
            pathlib.Path(p).resolve() for p in appservice_registrations
        ]
        self.for_tests = for_tests
        self._port_file = self.data_dir / "port"
        self.config_path = self.data_dir / "homeserver.yaml"
        self.log_config_path = self.data_dir / "log_config.yaml"
        self.log_path = self.data_dir / "homeserver.log"
        self.console_path = self.data_dir / "homeserver.console.log"
        self.signing_key_path = self.data_dir / "signing.key"
        self._secret_path = self.data_dir / "registration_shared_secret"
        self._requested_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- properties -------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The loopback port of the client/federation listener (chosen on first use)."""
        if self._port is None:
            self._port = self._resolve_port()
        return self._port

    @property
    def url(self) -> str:
        """Base URL for clients, e.g. ``http://127.0.0.1:8448``."""
        return "http://127.0.0.1:%d" % self.port

    @property
    def server_name(self) -> str:
        """The Matrix server name (the part after ``:`` in user ids)."""
        return self._server_name

    @property
    def running(self) -> bool:
        """Whether the Synapse process started by this object is still alive."""
        return self._process is not None and self._process.poll() is None

    def _resolve_port(self) -> int:
        if self._requested_port is not None:
            port = self._requested_port
        elif self._port_file.exists():
            port = int(self._port_file.read_text().strip())
        else:
            port = _free_loopback_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._port_file.write_text("%d\n" % port)
        return port

    def _shared_secret(self) -> str:
        if not self._secret_path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._secret_path.write_text(secrets.token_urlsafe(32) + "\n")
            self._secret_path.chmod(0o600)
        return self._secret_path.read_text().strip()

    # -- configuration ----------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "server_name": self._server_name,
            "pid_file": str(self.data_dir / "homeserver.pid"),
            "report_stats": False,
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.data_dir / "homeserver.db")},
            },
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client", "federation"], "compress": False}],
                }
            ],
            "signing_key_path": str(self.signing_key_path),
            "media_store_path": str(self.data_dir / "media_store"),
            "log_config": str(self.log_config_path),
            "registration_shared_secret": self._shared_secret(),
            "app_service_config_files": [str(p) for p in self.appservice_registrations],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": False,
            "presence": {"enabled": True},
            "max_upload_size": "50M",
            # Synapse lets only its admins publish rooms in its directory by default; this
            # loopback server lets its users (the bot's call-sign lobbies) do it
            "room_list_publication_rules": [{"action": "allow"}],
        }
        if self.for_tests:
            config["bcrypt_rounds"] = 4
            config.update(_TEST_RATE_LIMITS)
        else:
            config.update(_DEMO_RATE_LIMITS)
        return config

    def _log_config(self) -> dict[str, Any]:
        handler = {
            "class": "logging.FileHandler",
            "formatter": "precise",
            "encoding": "utf8",
            "filename": str(self.log_path),
        }
        fmt = "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s"
        config: dict[str, Any] = {
            "version": 1,
            "formatters": {"precise": {"format": fmt}},
            "handlers": {"file": handler},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        if self.for_tests:
            # which transaction went out when, and the recoverer's back-off and recovery: the
            # evidence when an event never reaches the appservice
            config["loggers"] = {"synapse.appservice.scheduler": {"level": "INFO"}}
        return config

    def prepare(self) -> None:
        """Write ``homeserver.yaml`` and the log config; generate the signing key if missing."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "media_store").mkdir(exist_ok=True)
        for path, data in (
            (self.log_config_path, self._log_config()),
            (self.config_path, self._config()),
        ):
            path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False))
        if not self.signing_key_path.exists():
            logger.info("Generating Synapse signing key in %s", self.signing_key_path)
            cmd = [
                sys.executable,
                "-m",
                "synapse.app.homeserver",
                "--generate-keys",
                "-c",
                str(self.config_path),
            ]
            result = subprocess.run(cmd, cwd=self.data_dir, capture_output=True, text=True)
            if result.returncode != 0 or not self.signing_key_path.exists():
                raise RuntimeError(
                    f"Generating the Synapse signing key failed (exit {result.returncode}):\n"
                    f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
                )

    # -- lifecycle --------------------------------------------------------------------
    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/_matrix/client/versions", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _failure(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"Synapse {what} (url {self.url}, data dir {self.data_dir}).\n"
            f"--- last lines of {self.console_path} ---\n{_tail(self.console_path)}\n"
            f"--- last lines of {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"Check that port {self.port} is free (a leftover Synapse? see homeserver.pid), "
            f"that {self.config_path} is valid, and that matrix-synapse is installed for "
            f"{sys.executable}."
        )

    def start(self, timeout: float = 60) -> None:
        """Prepare the data dir, launch Synapse and block until ``/versions`` answers."""
        if self.running:
            return
        self.prepare()
        if self._answers():
            raise self._failure("not started: something already answers on port %d" % self.port)
        began = time.monotonic()
        with open(self.console_path, "ab") as console:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # Synapse must not outlive us, even after SIGKILL
            )
        deadline = began + timeout
        while not self._answers():
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise self._failure("exited with code %s while starting" % code)
            if time.monotonic() > deadline:
                self.stop()
                raise self._failure("did not answer within %.0f s" % timeout)
            time.sleep(0.05)
        elapsed = time.monotonic() - began
        logger.info("Synapse %s is up at %s after %.2f s", self._server_name, self.url, elapsed)

    def stop(self, timeout: float = 15) -> None:
        """Send SIGTERM to Synapse's process group, then SIGKILL if needed. Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                logger.warning("Synapse (pid %d) ignored %s", process.pid, sig.name)
        process.wait()

    def restart(self, timeout: float = 60) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start(timeout=timeout)

    def __enter__(self) -> LocalHomeserver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- users ------------------------------------------------------------------------
    def register_user(
        self, localpart: str, password: str, *, admin: bool = False, displayname: str | None = None
    ) -> str:
        """Register a user through the shared-secret admin API and return its mxid.

        If the user already exists, its mxid is returned anyway (the password is
        then left unchanged).
        """
        endpoint = self.url + "/_synapse/admin/v1/register"
        with urllib.request.urlopen(endpoint, timeout=10) as resp:
            nonce = json.load(resp)["nonce"]
        mac = hmac.new(self._shared_secret().encode("utf8"), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode("utf8"))
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            body["displayname"] = displayname
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(endpoint, json.dumps(body).encode("utf8"), headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return str(json.load(resp)["user_id"])
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf8", "replace")
            try:
                errcode = json.loads(text).get("errcode")
            except ValueError:
                errcode = None
            if err.code == 400 and errcode == "M_USER_IN_USE":
                logger.debug("User %s already exists", localpart)
                return f"@{localpart}:{self._server_name}"
            raise RuntimeError(f"Registering {localpart} failed: HTTP {err.code} {text}") from err
