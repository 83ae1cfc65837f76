"""The metrics listener on its own: its config, and a scrape while the database fails."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from appservice.bootstrap import Switchboard
from appservice.config import ConfigError, MetricsConfig, generate, load, parse
from appservice.db.gauges import DeskCounts
from appservice.metrics import Metrics
from appservice.startup import StartupError
from bridge.model import Advisor, AdvisorMxid, Presence


def _samples(text: str) -> dict[str, float]:
    return {
        s.name + str(sorted(s.labels.items()) or ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_config_written_before_metrics_existed_gets_them_on_loopback(tmp_path: Path):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    data = YAML().load(path.read_text())
    assert load(path, env={}).metrics == MetricsConfig(True, "127.0.0.1", 29332)
    del data["metrics"]
    with path.open("w") as f:
        YAML().dump(data, f)
    config = load(path, env={})
    assert config.metrics == MetricsConfig(True, "127.0.0.1", 29332)
    assert any(note.text.endswith(": metrics") for note in config.notes)  # said, once
    # and in the environment, as every key (e.g. to listen beyond loopback in a container)
    moved = load(path, env={"SWITCHBOARD_METRICS__HOSTNAME": "0.0.0.0"})
    assert moved.metrics.hostname == "0.0.0.0"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("port", 0, "metrics.port: expected a port number from 1 to 65535, got 0"),
        ("port", "9102", "metrics.port: expected a whole number"),
        ("enabled", "yes", "metrics.enabled: expected true or false"),
    ],
)
def test_a_bad_metrics_key_says_which_and_why(tmp_path: Path, key, value, message):
    generate(tmp_path / "config.yaml", tmp_path / "registration.yaml")
    data = YAML().load((tmp_path / "config.yaml").read_text())
    data["metrics"][key] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(data)


async def test_a_scrape_while_the_database_fails_still_answers_without_its_numbers(
    aiohttp_client, caplog
):
    failing = [True]

    async def counts() -> DeskCounts:
        if failing[0]:
            raise ConnectionRefusedError("database gone")
        return DeskCounts({"waiting": 2, "inviting": 1, "active": 0}, 900.0, 3, 1, 0, 990.0)

    async def advisors() -> list[Advisor]:
        return [
            Advisor(AdvisorMxid("@ana:hs"), available=True, presence=Presence.ONLINE),
            Advisor(AdvisorMxid("@bob:hs"), available=True, presence=Presence.OFFLINE),
            Advisor(AdvisorMxid("@cid:hs"), available=False, presence=Presence.ONLINE),
        ]

    metrics = Metrics("1.2.3", lambda: None, lambda: 4, now=lambda: 1000.0)
    metrics.read_from(counts, advisors)
    client = await aiohttp_client(metrics.app())
    with caplog.at_level(logging.WARNING):
        response = await client.get("/metrics")
        assert response.status == 200
        down = _samples(await response.text())
    assert down["switchboard_ready"] == 1 and down["switchboard_visitor_sockets"] == 4
    assert down["switchboard_build_info[('version', '1.2.3')]"] == 1
    assert "switchboard_visitors_waiting" not in down
    assert "switchboard_advisors_available" not in down
    assert "could not read the database (ConnectionRefusedError: database gone)" in caplog.text

    failing[0] = False
    up = _samples(await (await client.get("/metrics")).text())
    assert up["switchboard_visitors_waiting"] == 3
    assert up["switchboard_oldest_waiting_seconds"] == 100
    assert up["switchboard_outbox_oldest_pending_seconds"] == 10
    assert up["switchboard_outbox_pending_rows"] == 3
    assert up["switchboard_outbox_scheduled_rows"] == 1
    assert up["switchboard_advisors"] == 3 and up["switchboard_advisors_available"] == 1


async def test_prometheus_asking_for_openmetrics_gets_openmetrics(aiohttp_client):
    metrics = Metrics("1.2.3", lambda: "waiting for database", lambda: 0)
    client = await aiohttp_client(metrics.app())
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    assert text.rstrip().endswith("# EOF") and "switchboard_ready 0" in text


async def test_a_metrics_port_shared_with_the_portal_says_so_before_listening(tmp_path: Path):
    config = generate(
        tmp_path / "config.yaml",
        tmp_path / "registration.yaml",
        {"portal.port": 29400, "metrics.port": 29400},
    )
    switchboard = Switchboard(config)
    try:
        with pytest.raises(StartupError, match="metrics.port and portal.port are both 29400"):
            await switchboard.listen()
    finally:
        await switchboard.stop()
