"""deploy/prometheus/alerts.yml: each alert fires on the failure it names, and none on a
healthy desk (Prometheus's own rule tester, promtool, evaluates them over made-up series)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
JOB = 'job="switchboard",instance="sb:29332"'
AT = {"job": "switchboard", "instance": "sb:29332"}


def promtool() -> str:
    """Debian's promtool (`make test` installs the prometheus package); skipped without it,
    unless CI=true."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: apt-get install prometheus (make prometheus)")
        pytest.skip("promtool is missing: apt-get install prometheus (make prometheus)")
    return found


def rules() -> dict[str, dict[str, Any]]:
    data = YAML(typ="safe").load(ALERTS.read_text())
    return {r["alert"]: r for group in data["groups"] for r in group["rules"]}


def fires(name: str, summary: str, by_job: bool = False) -> dict[str, Any]:
    """What promtool should see: ``name`` firing with its labels and annotations."""
    rule = rules()[name]
    labels = {**rule["labels"], **({"job": "switchboard"} if by_job else AT)}
    return {
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "description": rule["annotations"]["description"]},
    }


HEALTHY = [
    {"series": f"up{{{JOB}}}", "values": "1x20"},
    {"series": f"switchboard_ready{{{JOB}}}", "values": "1x20"},
    {"series": f"switchboard_outbox_parked_rows{{{JOB}}}", "values": "0x20"},
    {"series": f"switchboard_outbox_oldest_pending_seconds{{{JOB}}}", "values": "0x20"},
    {"series": f"switchboard_oldest_waiting_seconds{{{JOB}}}", "values": "30x20"},
    {"series": f"switchboard_visitors_waiting{{{JOB}}}", "values": "2x20"},
    {"series": f"switchboard_advisors_available{{{JOB}}}", "values": "1x20"},
    {
        "series": f'switchboard_appservice_transactions_total{{{JOB},outcome="ok"}}',
        "values": "0+5x20",
    },
    {
        "series": f'switchboard_appservice_transactions_total{{{JOB},outcome="failed"}}',
        "values": "0x20",
    },
    {
        "series": f'switchboard_appservice_transactions_total{{{JOB},outcome="forbidden"}}',
        "values": "0x20",
    },
]


def healthy_but(**changed: str) -> list[dict[str, Any]]:
    """The healthy series with some changed (by metric name, or ``outcome`` for the
    transactions), or left out (an empty string)."""
    series = []
    for s in HEALTHY:
        name = s["series"].split("{")[0]
        key = name if "outcome" not in s["series"] else s["series"].split('outcome="')[1][:-2]
        value = changed.get(key, s["values"])
        if value:
            series.append({"series": s["series"], "values": value})
    return series


def case(series: list[dict[str, Any]], *checks: tuple[str, str, list[Any]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": name, "exp_alerts": alerts}
            for at, name, alerts in checks
        ],
    }


def test_every_alert_has_a_severity_a_summary_and_what_to_do():
    data = YAML(typ="safe").load(ALERTS.read_text())
    assert [g["name"] for g in data["groups"]] == ["switchboard"]
    for name, rule in rules().items():
        assert name.startswith("Switchboard"), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "switchboard" in rule["expr"], name


def test_promtool_accepts_the_rules(tmp_path: Path):
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_its_failure_and_none_on_a_healthy_desk(tmp_path: Path):
    tool = promtool()
    every = list(rules())
    tests = [
        # a healthy desk for ten minutes: nothing fires
        case(HEALTHY, *(("10m", name, []) for name in every)),
        case(
            healthy_but(up="0x10"),
            ("1m", "SwitchboardDown", []),
            (
                "3m",
                "SwitchboardDown",
                [fires("SwitchboardDown", "Switchboard at sb:29332 does not answer scrapes")],
            ),
        ),
        case(
            healthy_but(switchboard_ready="0x10", switchboard_outbox_parked_rows=""),
            ("1m", "SwitchboardNotReady", []),
            (
                "3m",
                "SwitchboardNotReady",
                [
                    fires(
                        "SwitchboardNotReady",
                        "Switchboard at sb:29332 has not been ready for 2 minutes",
                    )
                ],
            ),
            # not ready: the database's metrics are missing by design, no second alert
            ("10m", "SwitchboardDatabaseUnreadable", []),
        ),
        case(
            healthy_but(switchboard_outbox_parked_rows="0 0 stale"),
            ("4m", "SwitchboardDatabaseUnreadable", []),
            (
                "8m",
                "SwitchboardDatabaseUnreadable",
                [
                    fires(
                        "SwitchboardDatabaseUnreadable",
                        "Switchboard at sb:29332 cannot read its database",
                    )
                ],
            ),
        ),
        case(
            healthy_but(switchboard_outbox_parked_rows="0 2x10"),
            (
                "3m",
                "SwitchboardOutboxParked",
                [
                    fires(
                        "SwitchboardOutboxParked",
                        "2 outbox row(s) parked after repeated failures",
                        by_job=True,
                    )
                ],
            ),
        ),
        case(
            healthy_but(switchboard_outbox_oldest_pending_seconds="0 120x10"),
            ("2m", "SwitchboardOutboxBehind", []),
            (
                "4m",
                "SwitchboardOutboxBehind",
                [fires("SwitchboardOutboxBehind", "The outbox is 2m 0s behind", by_job=True)],
            ),
        ),
        case(
            healthy_but(switchboard_oldest_waiting_seconds="30 660x10"),
            (
                "3m",
                "SwitchboardVisitorsWaitingLong",
                [
                    fires(
                        "SwitchboardVisitorsWaitingLong",
                        "A visitor has waited 11m 0s for an advisor",
                        by_job=True,
                    )
                ],
            ),
        ),
        case(
            healthy_but(switchboard_advisors_available="1 0x10"),
            ("4m", "SwitchboardNoAdvisorAvailable", []),
            (
                "7m",
                "SwitchboardNoAdvisorAvailable",
                [
                    fires(
                        "SwitchboardNoAdvisorAvailable",
                        "Visitors wait and no advisor is available",
                        by_job=True,
                    )
                ],
            ),
        ),
        case(
            healthy_but(failed="0+1x20"),
            ("3m", "SwitchboardTransactionsFailing", []),
            (
                "8m",
                "SwitchboardTransactionsFailing",
                [
                    fires(
                        "SwitchboardTransactionsFailing",
                        "Transactions from the homeserver fail",
                        by_job=True,
                    )
                ],
            ),
        ),
        case(
            healthy_but(forbidden="0+1x20"),
            (
                "8m",
                "SwitchboardTransactionsRefused",
                [
                    fires(
                        "SwitchboardTransactionsRefused",
                        "Pushes to the appservice endpoint carry a wrong hs_token",
                        by_job=True,
                    )
                ],
            ),
        ),
    ]
    spec = tmp_path / "alerts_test.yml"
    with spec.open("w") as f:
        YAML().dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}, f)
    result = subprocess.run([tool, "test", "rules", str(spec)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
