"""The YAML config: documented, kept as the admin wrote it, and clear when wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from appservice.config import EXAMPLE_CONFIG, ConfigError, generate, load, parse, registration

CHANGED = {
    "homeserver.address": "https://matrix.example.net",
    "homeserver.domain": "example.net",
    "homeserver.retry_max_delay": 12.5,
    "appservice.address": "http://10.1.2.3:9000",
    "appservice.hostname": "0.0.0.0",
    "appservice.port": 9000,
    "appservice.id": "helpdesk",
    "appservice.bot_username": "helpbot",
    "appservice.bot_displayname": "Help Bot",
    "appservice.user_prefix": "hd_",
    "appservice.as_token": "a" * 40,
    "appservice.hs_token": "h" * 40,
    "database.url": "postgresql://sb@db.example.net/sb",
    "database.retry_max_delay": 7.0,
    "portal.hostname": "0.0.0.0",
    "portal.port": 9001,
    "portal.public_url": "https://help.example.net",
    "portal.allowed_origins": ["https://www.example.net"],
    "portal.org_name": "Example Net",
    "portal.topics": {"orders": "Orders", "returns": "Returns"},
    "portal.trusted_proxies": ["10.0.0.0/8"],
    "portal.starts_per_minute": 9,
    "portal.secret": ["n" * 40, "o" * 40],  # rotating: the new one first
    "portal.messages_per_minute": 12,
    "portal.message_burst": 4,
    "portal.typing_per_minute": 11,
    "portal.typing_burst": 3,
    "routing.capacity": 7,
    "routing.invite_timeout": 45.0,
    "routing.abandon_after": 600.0,
    "desk.admins": ["@boss:example.net"],
    "logging.level": "DEBUG",
}


def _leaves(node, prefix=""):
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key != "topics":
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted


def test_every_key_of_the_example_config_is_explained_by_a_comment():
    """Each setting has its own comment right above it."""
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    key = re.compile(r"^( +)([a-z_]+):(.*)$")
    undocumented = []
    for i, line in enumerate(lines):
        match = key.match(line)
        topic = any(lines[k].strip() == "topics:" for k in range(max(0, i - 4), i))
        if not match or not match[3].strip() or topic:
            continue  # sections, and the topics themselves (their labels are the documentation)
        if not lines[i - 1].strip().startswith("#"):
            undocumented.append(match[2])
    assert not undocumented, undocumented


def test_every_key_the_admin_sets_survives_generate_and_load(tmp_path: Path):
    yaml = YAML()
    data = yaml.load(EXAMPLE_CONFIG.read_text())
    assert sorted(_leaves(data)) == sorted(CHANGED), "CHANGED must cover every key"
    for dotted, value in CHANGED.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path = tmp_path / "config.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    generate(path, tmp_path / "registration.yaml")  # runs over the admin's file again
    config = load(path)
    seen = {
        "homeserver.address": config.homeserver.address,
        "homeserver.domain": config.homeserver.domain,
        "homeserver.retry_max_delay": config.homeserver.retry_max_delay,
        **{
            f"appservice.{k}": getattr(config.appservice, k)
            for k in (
                "address",
                "hostname",
                "port",
                "id",
                "bot_username",
                "bot_displayname",
                "user_prefix",
                "as_token",
                "hs_token",
            )
        },
        "database.url": config.database_url,
        "database.retry_max_delay": config.database_retry_max_delay,
        **{
            f"portal.{k}": getattr(config.portal, k)
            for k in (
                "hostname",
                "port",
                "public_url",
                "org_name",
                "topics",
                "starts_per_minute",
                "messages_per_minute",
                "message_burst",
                "typing_per_minute",
                "typing_burst",
            )
        },
        "portal.secret": list(config.portal.secret),
        "portal.allowed_origins": list(config.portal.allowed_origins),
        "portal.trusted_proxies": list(config.portal.trusted_proxies),
        "routing.capacity": config.routing.capacity,
        "routing.invite_timeout": config.routing.invite_timeout,
        "routing.abandon_after": config.routing.abandon_after,
        "desk.admins": list(config.admins),
        "logging.level": config.log_level,
    }
    assert seen == CHANGED
    reg = YAML().load((tmp_path / "registration.yaml").read_text())
    assert reg["url"] == "http://10.1.2.3:9000" and reg["sender_localpart"] == "helpbot"
    assert reg["namespaces"]["users"] == [{"regex": r"@hd_.*:example\.net", "exclusive": True}]


def test_generate_fills_secrets_and_writes_a_registration_with_ephemeral_events(tmp_path: Path):
    config = generate(tmp_path / "config.yaml", tmp_path / "registration.yaml")
    assert (
        len(config.appservice.as_token) >= 32
        and config.appservice.as_token != config.appservice.hs_token
    )
    reg = registration(config)
    assert reg["receive_ephemeral"] is True and reg["rate_limited"] is False
    assert reg["as_token"] == config.appservice.as_token
    again = generate(tmp_path / "config.yaml", tmp_path / "registration.yaml")
    assert again.appservice.hs_token == config.appservice.hs_token  # kept, not regenerated
    assert oct((tmp_path / "registration.yaml").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["portal"].pop("port"), "Missing key 'portal.port'"),
        (
            lambda d: d["routing"].__setitem__("capacity", "three"),
            "'routing.capacity' has the wrong type",
        ),
        (
            lambda d: d["appservice"].__setitem__("hs_token", "generate"),
            "run `switchboard generate`",
        ),
        (lambda d: d["portal"].__setitem__("topics", {}), "portal.topics"),
        (lambda d: d["routing"].__setitem__("capacity", 0), "routing.capacity"),
        (lambda d: d["portal"].__setitem__("secret", []), "portal.secret must be"),
        (
            lambda d: d["portal"].__setitem__("secret", ["n" * 40, "generate"]),
            "portal.secret is not set",
        ),
        (
            lambda d: d["portal"].__setitem__("message_burst", 0),
            "portal.message_burst must be at least 1",
        ),
    ],
)
def test_a_bad_config_says_which_key_and_what_to_do(tmp_path: Path, mutate, message):
    generate(tmp_path / "config.yaml", tmp_path / "registration.yaml")
    data = YAML().load((tmp_path / "config.yaml").read_text())
    mutate(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(data)


def test_a_missing_config_file_tells_how_to_make_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="switchboard generate"):
        load(tmp_path / "nope.yaml")


def test_generate_writes_a_config_only_its_owner_reads(tmp_path: Path):
    """The config holds the tokens and the portal secret: 0600, also when an older one was 0644."""
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.chmod(0o644)
    generate(path, tmp_path / "registration.yaml")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
