"""The wheel, installed as an administrator would (deploy/install.sh, constraints.txt, a fresh
virtualenv without system site-packages, outside the checkout), gives a working ``switchboard``:
its migrations run, ``--version``, ``generate`` and ``run`` work, and a visitor talks to an
advisor through it."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

from ruamel.yaml import YAML

from tests.desks import open_bot_chat
from tests.install.installed import REPO, InstalledSwitchboard, Wheel, registered_config

PACKAGES = ("bridge/", "appservice/", "web_portal/")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_the_wheel_ships_every_module_and_the_migrations_and_no_alembic_package(wheel: Wheel):
    names = wheel.names()
    expected = {f for f in wheel.sources if f.startswith(PACKAGES)}
    # the repository's alembic/ folder ships as appservice/migrations/
    expected |= {
        "appservice/migrations/" + f.removeprefix("alembic/")
        for f in wheel.sources
        if f.startswith("alembic/")
    }
    assert "appservice/migrations/env.py" in expected
    assert expected - names == set(), "list it in pyproject's packages or package-data"
    # `alembic` is the library's import name: never shadow it
    assert not [n for n in names if n.split("/")[0] == "alembic"]
    dist_info = f"switchboard-{VERSION}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names


def test_the_installed_package_lies_in_its_own_virtualenv_and_tells_its_version(
    installed_switchboard: InstalledSwitchboard,
):
    venv = installed_switchboard.venv
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    where = json.loads(
        installed_switchboard.python_c(
            "import json, alembic, appservice; from appservice.db import migrate;"
            "print(json.dumps([appservice.__file__, alembic.__file__,"
            " str(migrate.SCRIPT_LOCATION)]))"
        )
    )
    package, library, migrations = (Path(p) for p in where)
    assert venv in package.parents and REPO not in package.parents
    assert venv in migrations.parents and (migrations / "env.py").is_file()
    # `import alembic` is still the library, untouched by our migrations
    assert venv in library.parents and not (library.parent / "env.py").exists()
    assert installed_switchboard.run("--version").stdout.strip() == f"switchboard {VERSION}"


def test_generate_writes_a_config_and_registration_only_their_owner_reads(
    installed_switchboard: InstalledSwitchboard, tmp_path: Path
):
    config, registration = tmp_path / "config.yaml", tmp_path / "registration.yaml"
    out = installed_switchboard.run("generate", "-c", config, "-r", registration).stdout
    assert "app_service_config_files" in out
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert oct(registration.stat().st_mode & 0o777) == "0o600"
    written = YAML().load(registration.read_text())
    assert written["as_token"] == YAML().load(config.read_text())["appservice"]["as_token"]


def test_the_demo_without_its_extra_says_what_to_install(
    installed_switchboard: InstalledSwitchboard, tmp_path: Path
):
    result = installed_switchboard.run("demo", "--data-dir", tmp_path / "demo", check=False)
    assert result.returncode == 2
    assert "pip install 'switchboard[demo]'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "demo").exists()


async def test_installed_switchboard_connects_a_visitor_with_an_advisor(
    installed_switchboard: InstalledSwitchboard,
    homeserver,
    people,
    switchboard_processes,
    database_url: str,
    tmp_path: Path,
):
    admin_id = homeserver.new_user("admin")
    config = registered_config(
        homeserver,
        tmp_path / "config.yaml",
        {"database.url": database_url, "desk.admins": [admin_id]},
    )
    # the admin's step: generate keeps the config's tokens and writes the registration the
    # homeserver loaded
    registration = tmp_path / "registration.yaml"
    installed_switchboard.run("generate", "-c", config, "-r", registration)
    loaded = homeserver.server.appservice_registrations[0]
    assert YAML().load(registration.read_text()) == YAML().load(loaded.read_text())

    process = installed_switchboard.process(config)
    switchboard_processes.append(process)
    await asyncio.to_thread(process.start)  # migrations run, then the portal answers

    # an admin makes Ana an advisor with the bot; she says she is available
    ana = await people.advisor(None, "ana")
    admin = await people.login(admin_id)
    bot = process.config.bot_mxid
    dm = await open_bot_chat(admin, bot)
    await admin.send_text(dm, f"!advisor add {ana.user_id}")
    await admin.wait_for_message(dm, f"{ana.user_id} is now an advisor", sender=bot)
    control = await ana.wait_for_invite()
    await ana.join(control)
    await ana.send_text(control, "!available")
    await ana.wait_for_message(control, "You are available", sender=bot)

    # a visitor presses Start on the portal; Ana accepts the invite; words cross both ways
    chat = await people.chatting(process, ana)
    await ana.wait_for_message(chat.room, "Hello, I was charged twice.")
    await ana.send_text(chat.room, "Hi, let me look.")
    await chat.visitor.wait_message("Hi, let me look.")
    await chat.visitor.say("Order 1234.")
    await ana.wait_for_message(chat.room, "Order 1234.")

    process.stop()
    assert "Traceback" not in process.log_path.read_text()
