"""Real nginx and Caddy, run from the site files in deploy/ on free loopback ports.

The test changes only where a shipped file listens, the portal's port it proxies to and (for
nginx) the certificate; every other directive is the shipped one, so a broken file fails the
test. What the test adds around it (nginx's ``http {}`` wrapper with its pid and temp paths,
Caddy's global options) is what the distribution's main config provides on a real server.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy.settings import PORTAL_PORT
from tests.desks import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NGINX_SITE = DEPLOY / "nginx" / "switchboard.conf"
CADDYFILE = DEPLOY / "Caddyfile"
SBIN = ("/usr/sbin", "/sbin")  # nginx lies here, not always on a user's PATH


def need(command: str) -> str:
    """The path of ``command``; skips the test if it is missing, fails it when ``CI=true``
    (``make test`` installs it: see the Makefile's ``deploy-tools``)."""
    path = shutil.which(command, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
    if path is not None:
        return path
    reason = f"{command} is not installed (`make deploy-tools` installs it from the distribution)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run every deploy test", pytrace=False)
    pytest.skip(reason)


def free_port_v4_and_v6() -> int:
    """A port free on 127.0.0.1 and on ::1 (the shipped nginx site listens on both)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET6) as s:
            try:
                s.bind(("::1", port))
            except OSError:
                continue
        return port


def substitute(
    text: str, pattern: str, replace: str | Callable[[re.Match[str]], str], *, what: str
) -> str:
    """``re.sub`` that fails if the shipped file no longer has ``pattern``."""
    changed, count = re.subn(pattern, replace, text, flags=re.MULTILINE)
    assert count, f"the shipped file has no {what} ({pattern!r}): update tests/deploy/servers.py"
    return changed


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 (nginx's; Caddy makes its own)."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, folder: Path) -> "Certificate":
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        made = cls(folder / "cert.pem", folder / "key.pem")
        made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return made


class Server:
    """A proxy running in the foreground as a child of the test, its log read as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.env = env
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None

    def start(self, ready: str, timeout: float = 30) -> None:
        """Start it and return once it logged a line containing ``ready``."""
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._read, args=(self._process,), daemon=True).start()

        def seen() -> bool:
            return any(ready in line for line in self.lines)

        with self._changed:
            self._changed.wait_for(lambda: seen() or self._ended(), timeout)
            started = seen()
        if not started:
            self.stop()
            raise AssertionError(f"{self.argv[0]} did not start:\n{self.log()}")

    def _ended(self) -> bool:
        return self._process is not None and self._process.poll() is not None

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        process.wait()
        with self._changed:
            self._changed.notify_all()

    def log(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


@dataclasses.dataclass
class Proxy:
    """A proxy in front of a portal: visitors use ``url``; ``http_url`` is its plain-HTTP port."""

    name: str
    url: str
    http_url: str
    ca: Path  # the certificate that signed the proxy's (what a visitor's client trusts)
    server: Server

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def stop(self) -> None:
        self.server.stop()


def nginx_site(https_port: int, http_port: int, upstream: int, certificate: Certificate) -> str:
    """deploy/nginx/switchboard.conf on the test's ports and certificate, nothing else changed."""
    site = NGINX_SITE.read_text()
    ports = {"80": http_port, "443": https_port}
    site = substitute(
        site,
        r"^(\s*listen\s+)\[::\]:(80|443)\b",
        lambda m: f"{m[1]}[::1]:{ports[m[2]]}",
        what="IPv6 listen",
    )
    site = substitute(
        site,
        r"^(\s*listen\s+)(80|443)\b",
        lambda m: f"{m[1]}127.0.0.1:{ports[m[2]]}",
        what="listen",
    )
    site = substitute(
        site,
        rf"(server\s+127\.0\.0\.1:){PORTAL_PORT};",
        rf"\g<1>{upstream};",
        what="upstream portal",
    )
    site = substitute(
        site, r"^(\s*ssl_certificate\s+)\S+;", rf"\g<1>{certificate.cert};", what="certificate"
    )
    return substitute(
        site, r"^(\s*ssl_certificate_key\s+)\S+;", rf"\g<1>{certificate.key};", what="key"
    )


def start_nginx(folder: Path, upstream: int, https_port: int) -> Proxy:
    """nginx serving the shipped site, in front of the portal on ``upstream``."""
    nginx = need("nginx")
    folder.mkdir(parents=True, exist_ok=True)
    certificate = Certificate.make(folder)
    http_port = free_port_v4_and_v6()
    (folder / "switchboard.conf").write_text(
        nginx_site(https_port, http_port, upstream, certificate)
    )
    # what Debian's /etc/nginx/nginx.conf gives a site, with every path in the test's folder
    temp = " ".join(
        f"{kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    temp += f" uwsgi_temp_path {folder / 'uwsgi'}; scgi_temp_path {folder / 'scgi'};"
    wrapper = folder / "nginx.conf"
    wrapper.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # workers read the test's 0700 folders
        + f"worker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log stderr notice;\n"
        + "events { worker_connections 256; }\n"
        + f"http {{\n  access_log {folder / 'access.log'};\n  {temp}\n"
        + f"  include {folder / 'switchboard.conf'};\n}}\n"
    )
    argv = [nginx, "-p", str(folder), "-c", str(wrapper)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, f"nginx -t:\n{checked.stderr}"
    server = Server([*argv, "-g", "daemon off;"])
    # the master logs this once its sockets are bound and a worker accepts on them
    server.start("start worker process ")
    return Proxy(
        "nginx",
        f"https://127.0.0.1:{https_port}",
        f"http://127.0.0.1:{http_port}",
        certificate.cert,
        server,
    )


def caddy_file(https_port: int, http_port: int, upstream: int) -> str:
    """deploy/Caddyfile on the test's ports, under the global options a test run needs."""
    site = CADDYFILE.read_text()
    site = substitute(site, r"^help\.example\.org(?=\s*\{)", "127.0.0.1", what="site address")
    site = substitute(
        site,
        rf"(reverse_proxy\s+127\.0\.0\.1:){PORTAL_PORT}\b",
        rf"\g<1>{upstream}",
        what="upstream portal",
    )
    # no admin API (it would share port 2019 with other runs), the test's ports, loopback
    # only, and Caddy's own CA for 127.0.0.1 without touching the system's trust store
    options = (
        "{\n\tadmin off\n"
        f"\thttp_port {http_port}\n\thttps_port {https_port}\n"
        "\tdefault_bind 127.0.0.1\n\tskip_install_trust\n}\n\n"
    )
    return options + site


def start_caddy(folder: Path, upstream: int, https_port: int) -> Proxy:
    """Caddy serving the shipped Caddyfile (validated first), in front of ``upstream``."""
    caddy = need("caddy")
    folder.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    caddyfile = folder / "Caddyfile"
    caddyfile.write_text(caddy_file(https_port, http_port, upstream))
    env = {
        **os.environ,
        "HOME": str(folder),
        "XDG_DATA_HOME": str(folder / "data"),  # its CA and certificates
        "XDG_CONFIG_HOME": str(folder / "config"),
    }
    argv = [caddy, "validate", "--config", str(caddyfile), "--adapter", "caddyfile"]
    checked = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert checked.returncode == 0, f"caddy validate:\n{checked.stdout}\n{checked.stderr}"
    server = Server([caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"], env=env)
    # its listeners are up first; the certificate for 127.0.0.1 (a fresh CA each run) is the
    # last thing it needs before a visitor's TLS handshake succeeds
    server.start("certificate obtained successfully")
    proxy = Proxy(
        "caddy",
        f"https://127.0.0.1:{https_port}",
        f"http://127.0.0.1:{http_port}",
        folder / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt",
        server,
    )
    # Caddy logs that line just before it puts the certificate in its cache, and logs
    # nothing after: a handshake tells when it serves it
    handshake(https_port, proxy.ssl_context(), server)
    return proxy


def handshake(port: int, context: ssl.SSLContext, server: Server, timeout: float = 10) -> None:
    """Wait until a TLS handshake with 127.0.0.1:``port`` succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return
        except (OSError, ssl.SSLError) as error:
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(
                    f"no TLS on port {port} ({error}):\n{server.log()}"
                ) from error
            time.sleep(0.02)
