"""The alert rules and the Grafana dashboard against a live desk: every metric they name is in
its scrape, and a real Prometheus scrapes it, evaluates every rule and answers every panel."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from ruamel.yaml import YAML

from appservice.bootstrap import Switchboard
from tests.desks import free_port
from tests.e2e.test_metrics import scrape

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "switchboard.json"
METRIC = re.compile(r"\b(?:switchboard|process)_[a-z_]+\b|\bup\b")
#: what Grafana puts in before it sends a panel's query
GRAFANA = {"$__rate_interval": "1m", "$job": "switchboard"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def alert_expressions() -> dict[str, str]:
    data = YAML(typ="safe").load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"]}


def panel_queries() -> dict[str, str]:
    """Each panel's queries, as Grafana sends them for the job "switchboard"."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} / {target['refId']}"] = expr
    return queries


def tool(name: str) -> str:
    """Debian's prometheus package (`make test` installs it); skipped without it, unless
    CI=true."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is missing: apt-get install prometheus (make prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


async def busy_desk(sqlite_desks: Any, people: Any) -> Switchboard:
    """A desk with an advisor, a visitor in a chat and another in the queue."""
    desk = await sqlite_desks.start(capacity=1)
    await people.chatting(desk)
    queued = await people.visitor(desk)
    await queued.start(name="Second")
    return desk


def test_the_dashboard_is_grafana_json_with_a_query_in_every_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "switchboard" and dashboard["title"] == "Switchboard"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs and all(p.get("targets") for p in graphs)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job"}


async def test_the_alerts_and_the_dashboard_name_only_metrics_a_live_desk_exports(
    sqlite_desks, people
):
    desk = await busy_desk(sqlite_desks, people)
    exported = (await scrape(desk)).names
    families = exported | {
        n[: -len(s)] for n in exported for s in HISTOGRAM_SUFFIXES if n.endswith(s)
    }
    named = {
        where: set(METRIC.findall(expr))
        for where, expr in {**alert_expressions(), **panel_queries()}.items()
    }
    assert all(named.values())  # every alert and panel asks for something
    families.add("up")  # Prometheus's own, per target
    missing = {where: names - families for where, names in named.items() if names - families}
    assert not missing


async def test_promtool_finds_nothing_to_fix_in_a_live_scrape(sqlite_desks, people):
    promtool = tool("promtool")
    desk = await busy_desk(sqlite_desks, people)
    text = (await scrape(desk)).text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


class Prometheus:
    """A real Prometheus server scraping the desk every second with the alert rules."""

    def __init__(self, target: str, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "switchboard", "static_configs": [{"targets": [target]}]}
            ],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, binary: str) -> None:
        self._log = (self.root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self._log.close()

    async def api(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/api/v1/{path}", params=params) as r:
                body = await r.json()
                assert body["status"] == "success", body
                return body["data"]

    async def until(self, what: str, check: Any, timeout: float = 30) -> Any:
        """Ask ``check()`` until it returns something true (Prometheus starting, scraping)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = await check()
            except (aiohttp.ClientError, AssertionError):
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                log = (self.root / "prometheus.log").read_text()[-3000:]
                raise AssertionError(f"Prometheus: no {what} within {timeout} s\n{log}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[Any]:
    binary = tool("prometheus")
    started: list[Prometheus] = []

    def start(desk: Switchboard) -> Prometheus:
        server = Prometheus(f"127.0.0.1:{desk.config.metrics.port}", tmp_path)
        started.append(server)
        server.start(binary)
        return server

    yield start
    for server in started:
        server.stop()


async def test_a_real_prometheus_scrapes_the_desk_and_answers_every_alert_and_panel(
    sqlite_desks, people, prometheus
):
    desk = await busy_desk(sqlite_desks, people)
    server = prometheus(desk)

    async def up() -> bool:
        targets = (await server.api("targets"))["activeTargets"]
        return bool(targets) and targets[0]["health"] == "up"

    async def two_scrapes() -> bool:
        # a rate needs two samples in its window
        found = await server.api("query", query="count_over_time(switchboard_ready[1m])")
        return bool(found["result"]) and float(found["result"][0]["value"][1]) >= 3

    await server.until("target up", up)
    await server.until("three scrapes", two_scrapes)
    waiting = await server.api("query", query='switchboard_visitors_waiting{job="switchboard"}')
    assert [float(r["value"][1]) for r in waiting["result"]] == [1.0]

    async def rules_evaluated() -> list[Any]:
        groups = (await server.api("rules"))["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["lastEvaluation"][:4] != "0001" for r in rules) else []

    rules = await server.until("rules evaluated", rules_evaluated)
    assert {r["name"] for r in rules} == set(alert_expressions())
    assert all(r["health"] == "ok" for r in rules), [
        (r["name"], r.get("lastError")) for r in rules
    ]
    # a healthy busy desk: nothing fires or is about to (SwitchboardNoAdvisorAvailable: Ana is
    # in her chat, available but at her capacity of one)
    assert [r["name"] for r in rules if r["state"] != "inactive"] == []
    for where, query in panel_queries().items():
        found = await server.api("query", query=query)
        assert found["result"], f"{where}: {query} answers nothing"
