"""An installation made by the first version, upgraded by today's `generate`, runs: the real
`switchboard run` process, its secrets from the environment, its SQLite file next to it."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from appservice.__main__ import main
from tests.desks import free_port, open_bot_chat
from tests.faults.process import SwitchboardProcess

FIXTURE = Path(__file__).parents[1] / "appservice" / "fixtures" / "config-2b5463b.yaml"


async def test_a_config_from_the_first_version_upgraded_by_generate_holds_a_conversation(
    homeserver, people, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "config.yaml"
    shutil.copy(FIXTURE, path)
    # what the admin edited back then, and the secrets moved out of the file since
    registered = homeserver.config
    admin_id = homeserver.new_user("admin")
    portal = free_port()
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    data = yaml.load(path.read_text())
    data["homeserver"]["address"] = homeserver.server.url
    data["homeserver"]["domain"] = homeserver.server.server_name
    data["appservice"]["address"] = registered.appservice.address
    data["appservice"]["port"] = registered.appservice.port
    data["appservice"]["as_token"] = data["appservice"]["hs_token"] = "generate"
    data["portal"]["port"] = portal
    data["portal"]["public_url"] = f"http://127.0.0.1:{portal}"
    data["desk"]["admins"] = [admin_id]
    out = io.StringIO()
    yaml.dump(data, out)
    path.write_text(out.getvalue())
    monkeypatch.setenv("SWITCHBOARD_APPSERVICE__AS_TOKEN", registered.appservice.as_token)
    monkeypatch.setenv("SWITCHBOARD_APPSERVICE__HS_TOKEN", registered.appservice.hs_token)
    # the upgrade turns the metrics listener on at its default port: one of the test's own
    monkeypatch.setenv("SWITCHBOARD_METRICS__PORT", str(free_port()))
    monkeypatch.chdir(tmp_path)  # the database goes next to the config, not here

    assert main(["generate", "-c", str(path), "-r", str(etc / "registration.yaml")]) == 0
    text = path.read_text()
    assert "as_token: generate" in text and registered.appservice.as_token not in text
    assert "abandon_after: 300" in text and "# How Switchboard logs" in text
    registration = YAML().load((etc / "registration.yaml").read_text())
    assert registration["as_token"] == registered.appservice.as_token  # what Synapse loaded

    process = SwitchboardProcess(path)
    await asyncio.to_thread(process.start)
    try:
        admin = await people.login(admin_id)
        bot = process.config.bot_mxid
        dm = await open_bot_chat(admin, bot)
        ana = await people.advisor(None, "ana")
        await admin.send_text(dm, f"!advisor add {ana.user_id}")
        await admin.wait_for_message(dm, f"{ana.user_id} is now an advisor", sender=bot)
        control = await ana.wait_for_invite()
        await ana.join(control)
        await ana.send_text(control, "!available")
        await ana.wait_for_message(control, "You are available", sender=bot)

        vera = await people.visitor(process)
        await vera.start()
        await vera.connect()
        room = await ana.wait_for_invite()
        await ana.join(room)
        await vera.wait_status("active")
        await vera.say("Still there after the upgrade?")
        await ana.wait_for_message(room, "Still there after the upgrade?")
        await ana.send_text(room, "Yes, all of it.")
        await vera.wait_message("Yes, all of it.")
    finally:
        process.stop()

    assert (etc / "switchboard.db").exists() and not (tmp_path / "switchboard.db").exists()
    log = process.log_path.read_text()
    assert "set from the environment: SWITCHBOARD_APPSERVICE__AS_TOKEN" in log
    assert "Traceback" not in log and registered.appservice.as_token not in log
