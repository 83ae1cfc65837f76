"""``switchboard demo``: a local Synapse (SQLite, loopback), Switchboard and an advisor account.

The data directory keeps everything (homeserver database, config, passwords), so a second run
resumes where the first stopped. The homeserver comes from the optional ``demo`` extra
(``pip install 'switchboard[demo]'``); nothing outside this command imports it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import socket
import sys
from pathlib import Path

from . import logs
from .__main__ import wait_for_stop_signal
from .config import generate, load, write_registration

SERVER_NAME = "localhost"
DEMO_CALL_SIGN = "help"
#: What the demo extra adds: the module it is imported as, and the distribution to install.
DEMO_EXTRA = (("synapse", "matrix-synapse"), ("yaml", "PyYAML"))


def missing_demo_packages() -> list[str]:
    """The distributions of the ``demo`` extra that are not installed."""
    return [dist for module, dist in DEMO_EXTRA if importlib.util.find_spec(module) is None]


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def _credentials(data_dir: Path) -> dict[str, str]:
    path = data_dir / "credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    credentials = {"ana": secrets.token_urlsafe(9), "admin": secrets.token_urlsafe(9)}
    path.write_text(json.dumps(credentials))
    path.chmod(0o600)
    return credentials


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo(data_dir: Path) -> None:
    from .bootstrap import Switchboard
    from .local_homeserver import LocalHomeserver, die_with_parent

    die_with_parent()  # `make demo` killed: we stop too, and take the homeserver with us
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs.configure(logs.default_logging("WARNING"))
    config_path, registration = data_dir / "config.yaml", data_dir / "registration.yaml"
    homeserver = LocalHomeserver(
        data_dir / "synapse", server_name=SERVER_NAME, appservice_registrations=[registration]
    )
    if config_path.exists():
        config = load(config_path)
        # the demo owns its homeserver: a registration from an older version (without the
        # call signs' namespace, say) is written anew before the homeserver loads it
        write_registration(config, registration)
    else:
        as_port, portal_port = _port(29330), _port(29331)
        portal_url = f"http://127.0.0.1:{portal_port}"
        config = generate(
            config_path,
            registration,
            {
                "homeserver.address": homeserver.url,
                "homeserver.domain": SERVER_NAME,
                "appservice.address": f"http://127.0.0.1:{as_port}",
                "appservice.port": as_port,
                "portal.port": portal_port,
                "portal.public_url": portal_url,
                "database.url": "sqlite:///switchboard.db",  # next to config.yaml
                "desk.admins": [f"@admin:{SERVER_NAME}"],
                "logging.root.level": "WARNING",
            },
        )
    credentials = _credentials(data_dir)
    _say(f"[1/3] Starting the local homeserver ({homeserver.url}) …")
    # in this thread: the homeserver is tied to the thread that starts it (die_with_parent)
    homeserver.start()
    switchboard: Switchboard | None = None
    try:
        for user in ("ana", "admin"):
            await asyncio.to_thread(
                homeserver.register_user,
                user,
                credentials[user],
                admin=user == "admin",
                displayname="Ana" if user == "ana" else "Admin",
            )
        _say("[2/3] Starting Switchboard …")
        switchboard = Switchboard(config)
        await switchboard.start()
        ana = f"@ana:{SERVER_NAME}"
        _, created = await switchboard.advisors.add(ana, "Ana")
        if created:  # welcomed in a direct chat with the bot, from the outbox
            await switchboard.advisors.set_available(ana, True)
        call_signs = switchboard.desk.call_signs
        if not await call_signs.exists(DEMO_CALL_SIGN):
            await call_signs.set(DEMO_CALL_SIGN, ana, "help ayuda billing facturación")
        alias, user = switchboard.gateway.call_sign_address(DEMO_CALL_SIGN)
        _say("[3/3] Ready.\n")
        _say(f"  Visitor portal:  {config.portal.public_url}/")
        _say(f"  Homeserver:      {homeserver.url}  (server name {SERVER_NAME})")
        _say(f"  Advisor login:   user ana, password {credentials['ana']}")
        _say(f"  Admin login:     user admin, password {credentials['admin']}")
        _say(
            f'  Call sign:       {DEMO_CALL_SIGN} (Ana): type "ayuda" in the portal\'s search box'
        )
        _say(f"                   once Ana is online, or from Matrix knock on {alias}")
        _say(f"                   or start a direct chat with {user}")
        _say("  Log in with any Matrix client (e.g. Element: change the homeserver to the URL")
        _say("  above). Ana is available; visitors arrive as invites. Talk to the bot")
        _say(f"  {config.bot_mxid} with !help. Data is kept in {data_dir}.")
        _say("\nPress Ctrl-C to stop.")
        await wait_for_stop_signal()
        _say("Stopping …")
    finally:
        if switchboard is not None:
            await switchboard.stop()
        await asyncio.to_thread(homeserver.stop)
    print("Stopped.", file=sys.stderr)
