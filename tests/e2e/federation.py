"""Two real Synapses on loopback that federate (see MATRIX_NOTES, "Federation on loopback"):
each has ``server_name: localhost:<tls port>``, a TLS listener with the federation resource and a
self-signed certificate, trusts no key server and may reach loopback."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appservice.config import generate
from appservice.local_homeserver import LocalHomeserver
from tests.desks import DeskFactory, Homeserver, free_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key (PEM files in ``directory``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class FederatingHomeserver(LocalHomeserver):
    """A test Synapse whose server name is ``localhost:<tls_port>``: other such servers on this
    machine federate with it. Clients (and the appservice) use :attr:`url` as usual."""

    def __init__(self, data_dir: Path, tls_port: int, **kwargs: Any) -> None:
        super().__init__(data_dir, server_name=f"localhost:{tls_port}", for_tests=True, **kwargs)
        self.tls_port = tls_port

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        cert, key = self_signed(self.data_dir / "tls")
        config["listeners"].append(
            {
                "port": self.tls_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["federation"], "compress": False}],
            }
        )
        config.update(
            tls_certificate_path=str(cert),
            tls_private_key_path=str(key),
            federation_verify_certificates=False,
            # loopback is refused by default, and a refused address just times out
            ip_range_whitelist=["127.0.0.0/8", "::1/128"],
            federation={"max_short_retry_delay": "1s", "max_long_retry_delay": "2s"},
        )
        return config


def invite_stored_by_the_desks_server(desk: Any, user: str) -> asyncio.Event:
    """Set once the desk's homeserver pushes the invite of ``user``: it has stored it then.

    A remote invite reaches the invitee's server (and client) before the inviting server
    stores it; a join in between is refused ("not invited"). A person takes longer than that;
    the test waits for the push instead."""
    stored = asyncio.Event()
    sink = desk.endpoint._sink
    handle = sink.handle

    async def spy(event: Any) -> None:
        if (
            isinstance(event, dict)
            and event.get("type") == "m.room.member"
            and event.get("state_key") == user
            and event.get("content", {}).get("membership") == "invite"
        ):
            stored.set()
        await handle(event)

    sink.handle = spy
    return stored


class Federation:
    """The desk's homeserver (with Switchboard's registration) and another one it federates
    with; one pair per test run (the ``federation`` fixture)."""

    def __init__(self, desk_side: Homeserver, other: FederatingHomeserver) -> None:
        self.desk_side = desk_side
        self.other = other


@pytest.fixture(name="desks", params=["sqlite", "postgres"])
async def federated_desks(
    request: pytest.FixtureRequest, federation: Federation, tmp_path: Path
) -> AsyncIterator[DeskFactory]:
    """Desks on the federation's desk-side homeserver, on SQLite then PostgreSQL: a test
    module imports it to have its ``desks`` there."""
    factory = DeskFactory(federation.desk_side, request.param, tmp_path)
    yield factory
    await factory.stop_all()


def start_federation(root: Path) -> Iterator[Federation]:
    """Both homeservers started (the desk's first), stopped when the iterator ends."""
    ours = FederatingHomeserver(
        root / "ours", free_port(), appservice_registrations=[root / "registration.yaml"]
    )
    theirs = FederatingHomeserver(root / "theirs", free_port())
    as_port = free_port()
    config = generate(
        root / "config.yaml",
        root / "registration.yaml",
        {
            "homeserver.address": ours.url,
            "homeserver.domain": ours.server_name,
            "appservice.address": f"http://127.0.0.1:{as_port}",
            "appservice.port": as_port,
            "logging.root.level": "DEBUG",
            "metrics.enabled": False,
        },
    )
    ours.start()
    try:
        theirs.start()
        try:
            yield Federation(Homeserver(ours, config), theirs)
        finally:
            theirs.stop()
    finally:
        ours.stop()
