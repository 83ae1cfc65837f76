"""The YAML config: documented, kept as the admin wrote it, upgraded without losing a thing,
overridable from the environment, and clear about every mistake at once."""

from __future__ import annotations

import copy
import io
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from appservice.__main__ import main
from appservice.config import (
    EXAMPLE_CONFIG,
    Config,
    ConfigError,
    generate,
    load,
    parse,
    plain,
    registration,
    schema,
)
from appservice.config.parse import convert, free_form

FIXTURES = Path(__file__).with_name("fixtures")
KEYS = schema()
SECRET_KEYS = {"appservice.as_token", "appservice.hs_token", "portal.secret"}


def _example() -> Any:
    return YAML().load(EXAMPLE_CONFIG.read_text())


def _changed_logging() -> dict[str, Any]:
    section = plain(_example()["logging"])
    section["root"]["level"] = "DEBUG"
    section["handlers"]["console"]["formatter"] = "json"
    return section


#: a value other than the example's for every key
CHANGED: dict[str, Any] = {
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
    "portal.searches_per_minute": 60,
    "portal.search_burst": 7,
    "routing.capacity": 7,
    "routing.invite_timeout": 45.0,
    "routing.abandon_after": 600.0,
    "metrics.enabled": False,
    "metrics.hostname": "10.1.2.3",
    "metrics.port": 9102,
    "desk.admins": ["@boss:example.net"],
    "directory.call_sign_alias_prefix": "help_",
    "directory.max_open_per_server": 5,
    "directory.proof_of_life": 600,
    "logging": _changed_logging(),
}


def set_key(data: Any, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


def seen(config: Config, dotted: str) -> Any:
    """What the running desk uses for ``dotted``, in the file's terms."""
    if dotted == "database.url":
        return config.database_url
    if dotted == "database.retry_max_delay":
        return config.database_retry_max_delay
    if dotted == "desk.admins":
        return list(config.admins)
    if dotted == "logging":
        return config.logging
    section, key = dotted.split(".")
    value = getattr(getattr(config, section), key)
    return list(value) if isinstance(value, tuple) else value


def default(dotted: str, config_dir: Path) -> Any:
    value = convert(plain(_lookup(_example(), dotted)), KEYS[dotted])
    if dotted == "database.url":
        return f"sqlite:///{config_dir / 'switchboard.db'}"
    return list(value) if isinstance(value, tuple) else value


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def customised(comment: str = "# the admin's own note") -> str:
    """The example with every key changed, and a comment of the admin's in each section."""
    data = _example()
    for dotted, value in CHANGED.items():
        set_key(data, dotted, copy.deepcopy(value))
    out = io.StringIO()
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    yaml.dump(data, out)
    lines = []
    for line in out.getvalue().splitlines(keepends=True):
        lines.append(line)
        if re.match(r"^[a-z]+:$", line):
            lines.append(f"    {comment} about {line.strip()[:-1]}\n")
    return "".join(lines)


# -- the example and the schema -----------------------------------------------------------


def test_the_example_config_and_the_dataclasses_name_the_same_keys():
    def leaves(node: Any, prefix: str = "") -> list[str]:
        out = []
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and dotted not in free_form():
                out += leaves(value, dotted + ".")
            else:
                out.append(dotted)
        return out

    assert sorted(leaves(_example())) == sorted(KEYS)
    assert sorted(CHANGED) == sorted(KEYS), "CHANGED must give every key another value"


def test_every_key_of_the_example_config_is_explained_by_a_comment():
    """Each setting has its own comment right above it (upgrades copy it with the key)."""
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    example = _example()
    undocumented = []
    for dotted in KEYS:
        node, key = example, dotted
        if "." in dotted:
            section, key = dotted.split(".")
            node = example[section]
        line, _ = node.lc.key(key)
        if not lines[line - 1].strip().startswith("#"):
            undocumented.append(dotted)
    assert not undocumented, undocumented


def test_the_example_config_documents_environment_overrides_and_relative_sqlite():
    text = EXAMPLE_CONFIG.read_text()
    assert "SWITCHBOARD_DATABASE__URL" in text and "SWITCHBOARD_APPSERVICE__AS_TOKEN" in text
    assert "relative to this file's folder" in text and "sqlite:////" in text


# -- keeping what the admin wrote ---------------------------------------------------------


def test_every_key_the_admin_sets_survives_generate_and_load(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(customised())
    generate(path, tmp_path / "registration.yaml")  # runs over the admin's file again
    config = load(path)
    assert {dotted: seen(config, dotted) for dotted in KEYS} == CHANGED
    assert path.read_text() == customised(), "a current file is left exactly as it was"
    reg = YAML().load((tmp_path / "registration.yaml").read_text())
    assert reg["url"] == "http://10.1.2.3:9000" and reg["sender_localpart"] == "helpbot"
    assert reg["namespaces"]["users"] == [{"regex": r"@hd_.*:example\.net", "exclusive": True}]


@pytest.mark.parametrize("missing", sorted(KEYS))
def test_a_key_missing_from_an_older_file_is_added_with_its_comment_and_nothing_reverts(
    tmp_path: Path, missing: str
):
    """mautrix's weakness is a key the update forgets to copy: it silently goes back to its
    default. Here each key in turn is what an older file lacks; after `generate` that key has
    its default and its example comment, and every other key still has the admin's value."""
    data = YAML().load(customised())
    section, _, key = missing.partition(".")
    if not key or len(data[section]) == 1:
        del data[section]  # the whole section is new
        added = section
    else:
        del data[section][key]
        added = missing
    out = io.StringIO()
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    yaml.dump(data, out)
    path = tmp_path / "config.yaml"
    path.write_text(out.getvalue())
    path.chmod(0o600)
    admin_lines = [line for line in out.getvalue().splitlines() if "admin's own note" in line]

    config = generate(path, tmp_path / "registration.yaml")

    text = path.read_text()
    for dotted in KEYS:
        if dotted == missing and dotted in SECRET_KEYS:
            made = seen(config, dotted)
            made = made[0] if isinstance(made, list) and len(made) == 1 else made  # a secret
            assert len(made) >= 32 and made != CHANGED[dotted]
        elif dotted == missing or (not key and dotted.startswith(f"{section}.")):
            assert seen(config, dotted) == default(dotted, tmp_path), dotted
        else:
            assert seen(config, dotted) == CHANGED[dotted], f"{dotted} reverted"
    assert all(line in text for line in admin_lines), "the admin's comments are kept"
    example_lines = EXAMPLE_CONFIG.read_text().splitlines()
    line, _ = _example()[section].lc.key(key) if key else _example().lc.key(section)
    comment = example_lines[line - 1].strip()
    assert comment.startswith("#") and comment in text, "the new key comes with its comment"
    assert [n.text for n in config.notes] == [
        f"keys new in this version (added to the file): {added}"
    ]
    assert load(path).notes == (), "upgraded once, the file is current"


def test_a_config_generated_by_the_first_version_is_upgraded_in_place(tmp_path: Path, capsys):
    """`tests/appservice/fixtures/config-2b5463b.yaml` is the file `switchboard generate` of
    commit 2b5463b wrote. An admin edited it; the new `generate` adds what is new (with its
    comment), keeps every line the admin wrote, moves `logging.level`, and tightens the mode."""
    original = (FIXTURES / "config-2b5463b.yaml").read_text()
    edited = (
        original.replace("    capacity: 3\n", "    # we are a small team\n    capacity: 2\n")
        .replace("org_name: Example", "org_name: Acme  # shown to visitors")
        .replace("    level: INFO", "    level: warning")
    )
    assert edited.count("small team") == 1 and "Acme  #" in edited
    path = tmp_path / "config.yaml"
    path.write_text(edited)
    path.chmod(0o644)

    assert main(["generate", "-c", str(path), "-r", str(tmp_path / "registration.yaml")]) == 0

    out = capsys.readouterr().out
    assert "routing.abandon_after" in out and "logging.level to logging.root.level" in out
    assert "was mode 0644; it is 0600 now" in out
    text = path.read_text()
    before_logging = edited[: edited.index("\nlogging:")]  # that section is migrated
    kept = [line for line in before_logging.splitlines() if line.strip()]
    position = 0
    lines = text.splitlines()
    for line in kept:  # every line the admin had, in the same order
        assert line in lines[position:], f"lost or moved: {line!r}"
        position = lines.index(line, position) + 1
    assert "    # Seconds a visitor still waiting for an advisor may have no chat page" in text
    assert "    abandon_after: 300" in lines[lines.index("    invite_timeout: 60") + 3]
    assert "# How Switchboard logs: a standard Python logging configuration" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    config = load(path)
    fixture = YAML().load(original)
    assert config.appservice.as_token == fixture["appservice"]["as_token"]
    assert config.portal.secret == (fixture["portal"]["secret"],)
    assert config.routing.capacity == 2 and config.portal.org_name == "Acme"
    assert config.routing.abandon_after == 300 and config.log_level == "WARNING"
    assert config.notes == ()
    before = path.read_text()
    assert main(["generate", "-c", str(path), "-r", str(tmp_path / "registration.yaml")]) == 0
    assert path.read_text() == before, "a second generate changes nothing"


def test_run_upgrades_in_memory_only_and_logs_the_defaulted_keys(tmp_path: Path, caplog):
    from appservice.logs import log_notes

    path = tmp_path / "config.yaml"
    path.write_text((FIXTURES / "config-2b5463b.yaml").read_text())
    path.chmod(0o400)  # as under ProtectSystem=strict: nothing may write it
    before = (path.read_text(), path.stat().st_mtime_ns)

    config = load(path)

    assert (path.read_text(), path.stat().st_mtime_ns) == before
    assert config.routing.abandon_after == 300 and config.log_level == "INFO"
    with caplog.at_level("INFO", logger="appservice.config"):
        log_notes(config)
    logged = caplog.text
    assert "routing.abandon_after" in logged and "not in the file, using their defaults" in logged


def test_unknown_keys_are_reported_and_kept(tmp_path: Path, capsys):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    text = path.read_text().replace("    capacity: 3\n", "    capacity: 3\n    capcity: 4\n")
    path.write_text(text + "\ncolour: blue\n")
    assert main(["generate", "-c", str(path), "-r", str(tmp_path / "registration.yaml")]) == 0
    out = capsys.readouterr().out
    assert "unknown key routing.capcity" in out and "unknown key colour" in out
    assert "capcity: 4" in path.read_text() and "colour: blue" in path.read_text()
    warnings = [n.text for n in load(path).notes if n.warning]
    assert any("routing.capcity" in w for w in warnings)


def test_the_topics_and_the_logging_section_are_the_admins_to_fill(tmp_path: Path):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    text = path.read_text().replace(
        "        general: General question\n", "        sales: Buying from us\n"
    )
    path.write_text(text)
    generate(path, tmp_path / "registration.yaml")
    config = load(path)
    assert "general" not in config.portal.topics and config.portal.topics["sales"]
    assert config.notes == ()


# -- mistakes ----------------------------------------------------------------------------


def test_a_bad_config_names_every_bad_key_and_exits_2_without_a_traceback(tmp_path: Path, capsys):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    data = YAML().load(path.read_text())
    data["routing"]["capacity"] = "three"
    data["portal"]["port"] = 70000
    data["portal"]["public_url"] = "help.example.org"
    data["portal"]["trusted_proxies"] = ["the office"]
    data["desk"]["admins"] = ["boss"]
    data["appservice"]["hs_token"] = "generate"
    data["homeserver"] = "matrix.example.org"
    out = io.StringIO()
    YAML().dump(data, out)
    path.write_text(out.getvalue())

    assert main(["run", "-c", str(path)]) == 2

    err = capsys.readouterr().err
    assert "Traceback" not in err
    for dotted, why in [
        ("routing.capacity", "expected a whole number, got 'three' (text)"),
        ("portal.port", "from 1 to 65535"),
        ("portal.public_url", "http:// or https://"),
        ("portal.trusted_proxies", "'the office' is not an address or network"),
        ("desk.admins", "'boss' is not a Matrix user id"),
        ("appservice.hs_token", "run `switchboard generate`"),
        ("homeserver", "must be a mapping"),
    ]:
        assert re.search(rf"^  - {re.escape(dotted)}: .*{re.escape(why)}", err, re.M), dotted
    assert "7 problems" in err


def test_a_secret_is_never_shown_in_an_error(tmp_path: Path):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    data = plain(YAML().load(path.read_text()))
    data["appservice"]["as_token"] = ["not", "text"]
    with pytest.raises(ConfigError, match=r"appservice.as_token: expected text, got a list"):
        parse(data)
    data["appservice"]["as_token"] = 12345678901234567890
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert "12345678901234567890" not in str(e.value)


def test_a_wrong_item_in_a_list_names_the_list_and_what_it_holds(tmp_path: Path):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    data = plain(YAML().load(path.read_text()))
    data["desk"]["admins"] = ["@a:example.org", 42]
    data["portal"]["topics"] = {"general": ["not", "a", "label"]}
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert e.value.problems == [
        "portal.topics: expected a mapping of text, got {'general': ['not', 'a', 'label']} "
        "(a mapping)",
        "desk.admins: expected a list of text, got ['@a:example.org', 42] (a list)",
    ]


def test_a_file_that_is_not_yaml_says_where_and_exits_2(tmp_path: Path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("homeserver:\n    address: [unclosed\n")
    assert main(["run", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "line" in err and "Traceback" not in err


def test_a_missing_config_file_tells_how_to_make_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="switchboard generate"):
        load(tmp_path / "nope.yaml")


# -- the environment ------------------------------------------------------------------------


def _env_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, dict):
        import json

        return json.dumps(value)  # JSON is YAML
    return str(value)


@pytest.mark.parametrize("dotted", sorted(KEYS))
def test_every_key_can_be_set_from_the_environment(tmp_path: Path, dotted: str):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml", env={})
    name = "SWITCHBOARD_" + dotted.upper().replace(".", "__")
    value = CHANGED[dotted]
    # a secret may hold a comma: a list of them only in the [a, b] form
    text = f"[{', '.join(value)}]" if dotted in SECRET_KEYS and isinstance(value, list) else None
    config = load(path, env={name: text or _env_text(value)})
    assert seen(config, dotted) == value
    assert [n.text for n in config.notes] == [f"set from the environment: {name}"]


def test_secrets_can_stay_out_of_the_file(tmp_path: Path):
    """The tokens and the portal secret only in the environment: `generate` leaves them
    "generate" in the file, writes them into the registration, and `run` works."""
    env = {
        "SWITCHBOARD_APPSERVICE__AS_TOKEN": "01234567890123456789",  # digits: still text
        "SWITCHBOARD_APPSERVICE__HS_TOKEN": "h-from-the-environment-" * 2,
        "SWITCHBOARD_PORTAL__SECRET": "s-from-the-environment-" * 2,
        "SWITCHBOARD_DATABASE__URL": "postgresql://switchboard@db/switchboard",
    }
    path = tmp_path / "config.yaml"
    config = generate(path, tmp_path / "registration.yaml", env=env)
    file = YAML().load(path.read_text())
    assert file["appservice"]["as_token"] == "generate" == file["portal"]["secret"]
    assert file["database"]["url"] == "sqlite:///switchboard.db"
    reg = YAML().load((tmp_path / "registration.yaml").read_text())
    assert reg["as_token"] == "01234567890123456789" == config.appservice.as_token
    assert reg["hs_token"] == env["SWITCHBOARD_APPSERVICE__HS_TOKEN"]
    config = load(path, env=env)
    assert config.appservice.as_token == "01234567890123456789"
    assert config.portal.secret == (env["SWITCHBOARD_PORTAL__SECRET"],)
    assert config.database_url == env["SWITCHBOARD_DATABASE__URL"]
    with pytest.raises(ConfigError, match="SWITCHBOARD_PORTAL__SECRET"):
        load(path, env={k: v for k, v in env.items() if "PORTAL" not in k})


def test_environment_values_are_typed_like_the_key(tmp_path: Path):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml", env={})
    config = load(
        path,
        env={
            "SWITCHBOARD_ROUTING__INVITE_TIMEOUT": "12.5",
            "SWITCHBOARD_DESK__ADMINS": '["@a:example.org", "@b:example.org"]',
            "SWITCHBOARD_PORTAL__TOPICS__SALES": "Buying from us",
            "SWITCHBOARD_LOGGING__ROOT__LEVEL": "DEBUG",
            "SWITCHBOARD_LOGGING__HANDLERS__CONSOLE__FORMATTER": "json",
            "SWITCHBOARD_PORTAL__ORG_NAME": "123",
        },
    )
    assert config.routing.invite_timeout == 12.5
    assert config.admins == ("@a:example.org", "@b:example.org")
    assert config.portal.topics["sales"] == "Buying from us" and "general" in config.portal.topics
    assert config.log_level == "DEBUG"
    assert config.logging["handlers"]["console"]["formatter"] == "json"
    assert config.portal.org_name == "123"
    with pytest.raises(ConfigError) as e:
        load(
            path,
            env={
                "SWITCHBOARD_ROUTING__CAPACITY": "many",
                "SWITCHBOARD_PORTAL__PORT": "",
                "SWITCHBOARD_PORTAL__TOPICS": "{unclosed",
            },
        )
    problems = "\n".join(e.value.problems)
    assert "routing.capacity (from SWITCHBOARD_ROUTING__CAPACITY): expected a whole" in problems
    assert "portal.port (from SWITCHBOARD_PORTAL__PORT): expected a whole number" in problems
    assert "portal.topics (from SWITCHBOARD_PORTAL__TOPICS): not a valid YAML" in problems


def test_an_unknown_switchboard_variable_is_warned_about(tmp_path: Path):
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml", env={})
    config = load(
        path,
        env={
            "SWITCHBOARD_DATABASE_URL": "postgresql://x/y",
            "SWITCHBOARD_PORTAL__COLOUR": "blue",
            "SWITCHBOARD_TEST_POSTGRES": "postgresql://postgres@127.0.0.1/postgres",
            "HOME": "/root",
        },
    )
    warnings = [n.text for n in config.notes if n.warning]
    assert warnings == [
        "environment variable SWITCHBOARD_DATABASE_URL is not a setting "
        "(did you mean SWITCHBOARD_DATABASE__URL?); ignored",
        "environment variable SWITCHBOARD_PORTAL__COLOUR is not a setting; ignored",
    ]
    assert config.database_url.startswith("sqlite:")


# -- files and their modes ------------------------------------------------------------------


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


def test_config_and_registration_are_readable_by_their_owner_only(tmp_path: Path):
    path, reg = tmp_path / "config.yaml", tmp_path / "registration.yaml"
    generate(path, reg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(reg.stat().st_mode) == 0o600
    path.chmod(0o644)  # as the first version wrote it
    reg.chmod(0o644)
    generate(path, reg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(reg.stat().st_mode) == 0o640, "never for others"
    reg.chmod(0o640)  # the admin let the homeserver's group read it: that stays
    generate(path, reg)
    assert stat.S_IMODE(reg.stat().st_mode) == 0o640
    assert not list(tmp_path.glob(".*")), "no temporary file left behind"


def test_a_file_generate_cannot_write_is_one_clear_line(tmp_path: Path, capsys):
    (tmp_path / "a-file").write_text("")
    registration = tmp_path / "a-file" / "registration.yaml"
    assert main(["generate", "-c", str(tmp_path / "config.yaml"), "-r", str(registration)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("switchboard: cannot write") and "Traceback" not in err


# -- SQLite paths ---------------------------------------------------------------------------


def test_a_relative_sqlite_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = etc / "config.yaml"
    assert generate(path, etc / "registration.yaml").database_url == (
        f"sqlite:///{etc / 'switchboard.db'}"
    )
    for url, expected in [
        ("sqlite:///data/desk.db", etc / "data" / "desk.db"),
        ("sqlite:desk.db", etc / "desk.db"),
        (f"sqlite:///{tmp_path / 'abs.db'}", tmp_path / "abs.db"),  # four slashes
        ("sqlite:///../var/desk.db", tmp_path / "var" / "desk.db"),
    ]:
        config = load(path, env={"SWITCHBOARD_DATABASE__URL": url})
        assert config.database_url == f"sqlite:///{expected}", url
    # relative to the config file even when the config path itself is relative
    monkeypatch.chdir(tmp_path)
    assert load(Path("etc/config.yaml")).database_url == f"sqlite:///{etc / 'switchboard.db'}"


def test_an_old_absolute_three_slash_sqlite_url_keeps_its_existing_database(tmp_path: Path):
    """Older docs said sqlite:///absolute/path.db; such a file that exists is not swapped
    for a new empty one under the config folder, and the admin is told how to write it."""
    database = tmp_path / "var" / "switchboard.db"
    database.parent.mkdir()
    database.write_bytes(b"")
    path = tmp_path / "etc" / "config.yaml"
    generate(path, tmp_path / "etc" / "registration.yaml")
    legacy = f"sqlite://{database}"  # three slashes: what the old comment said
    config = load(path, env={"SWITCHBOARD_DATABASE__URL": legacy})
    assert config.database_url == f"sqlite:///{database}"
    assert any(n.warning and "four slashes" in n.text for n in config.notes)


async def test_the_database_is_created_next_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from appservice.db import close_database, open_database

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "etc" / "config.yaml"
    generate(path, tmp_path / "etc" / "registration.yaml")
    db = await open_database(load(path).database_url)
    await close_database(db)
    assert (tmp_path / "etc" / "switchboard.db").exists()
    assert not (tmp_path / "switchboard.db").exists() and not Path("/switchboard.db").exists()


# -- files as admins write them -------------------------------------------------------------

ODD_SHAPES = {
    "two-space indentation, an end-of-line comment": (
        "homeserver:\n  address: http://hs.example.net:8008   # via the LAN\n"
        "  domain: example.net\ndesk:\n  admins:\n  - '@a:example.net'\n  - '@b:example.net'\n"
    ),
    "a flow-style section": (
        "routing: {capacity: 2, invite_timeout: 30}\nportal:\n    org_name: Acme\n"
    ),
    "no newline at the end, a trailing comment": (
        "portal:\n    org_name: Acme\n    # more topics soon\nrouting:\n    capacity: 2"
    ),
    "Windows line ends": "portal:\r\n    org_name: Acme\r\nrouting:\r\n    capacity: 2\r\n",
    "a block scalar before a missing key": (
        "portal:\n    org_name: |\n        Acme\n\n        Support\n    port: 9001\n"
    ),
    "an empty section": "routing:\nportal:\n    org_name: Acme\n",
    "keys in another order": "routing:\n    invite_timeout: 30\n    capacity: 2\n",
}


@pytest.mark.parametrize("text", ODD_SHAPES.values(), ids=ODD_SHAPES.keys())
def test_files_of_any_layout_are_completed_without_changing_what_they_say(
    tmp_path: Path, text: str
):
    from appservice.config.files import _upgrade

    upgraded = _upgrade(text, tmp_path / "config.yaml")
    before, after = plain(YAML().load(text)), plain(upgraded.data)

    def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
        out = {}
        for key, value in (node or {}).items():
            if isinstance(value, dict) and f"{prefix}{key}" not in free_form():
                out.update(leaves(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    written = {k: v for k, v in leaves(before).items() if v is not None}  # not empty sections
    assert leaves(after) == {**leaves(_example_plain()), **written}
    assert _upgrade(upgraded.text, tmp_path / "config.yaml").text == upgraded.text, "stable"
    for line in text.replace("\r", "").splitlines():
        if line.strip().startswith("#") or "#" in line:
            assert line.strip() in upgraded.text.replace("\r", ""), "comments are kept"


def _example_plain() -> Any:
    return plain(_example())


def test_a_key_that_takes_text_or_a_list_reads_either_from_the_environment():
    """For keys typed ``str | tuple[str, ...]`` (a secret being rotated, say)."""
    from appservice.config.env import parse_value

    hint = str | tuple[str, ...]
    assert parse_value("0123456789", hint) == "0123456789"
    assert parse_value("[new-secret, old-secret]", hint) == ["new-secret", "old-secret"]
    assert convert(["a", "b"], hint) == ("a", "b") and convert("a", hint) == "a"
