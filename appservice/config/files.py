"""The files: ``load`` for ``switchboard run`` (upgraded in memory, overridden from the
environment), ``generate`` (the config upgraded in place, secrets, the registration)."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .env import EnvOverrides, apply_env
from .model import EXAMPLE_CONFIG, GENERATE, SECRETS, Config, ConfigError, Note
from .parse import free_form, parse, plain, schema
from .upgrade import UnreadableConfig, Upgraded, dump, make_yaml, upgrade


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration: {e.strerror}", path) from None


def _upgrade(text: str, path: Path) -> Upgraded:
    try:
        return upgrade(text, EXAMPLE_CONFIG.read_text(), path, free_form=free_form())
    except UnreadableConfig as e:
        raise ConfigError(str(e), path) from None


def _notes(upgraded: Upgraded, env: EnvOverrides, *, written: bool) -> tuple[Note, ...]:
    notes = [Note(f"moved {text}") for text in upgraded.migrated]
    if upgraded.added:
        where = "added to the file" if written else "not in the file, using their defaults"
        notes.append(Note(f"keys new in this version ({where}): {', '.join(upgraded.added)}"))
    notes.extend(
        Note(f"unknown key {dotted} is ignored (a typo, or from another version?)", True)
        for dotted in upgraded.unknown
    )
    if env.applied:
        notes.append(Note(f"set from the environment: {', '.join(env.applied)}"))
    notes.extend(Note(text, True) for text in env.unknown)
    return tuple(notes)


def _parse(data: Any, path: Path, env: EnvOverrides, notes: tuple[Note, ...]) -> Config:
    """:func:`parse`, with the environment's problems reported with the file's."""
    try:
        config = parse(data, path, sources=env.sources, notes=notes)
    except ConfigError as e:
        raise ConfigError([*env.problems, *e.problems], path) from None
    if env.problems:
        raise ConfigError(env.problems, path)
    return config


def load(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read the config as ``switchboard run`` does: upgraded in memory (the file is never
    written: it may be read-only) and overridden by ``SWITCHBOARD_*`` environment variables.
    ``Config.notes`` says what was defaulted, unknown or overridden."""
    if not path.exists():
        raise ConfigError(
            f"No config at {path}. Run `switchboard generate -c {path} -r registration.yaml` "
            "to create it from the commented example, then edit it."
        )
    upgraded = _upgrade(_read(path), path)
    data = plain(upgraded.data)
    overrides = apply_env(data, schema(), os.environ if env is None else env)
    notes = _notes(upgraded, overrides, written=False)
    return _parse(data, path, overrides, notes)


def generate(
    config_path: Path,
    registration_path: Path,
    overrides: dict[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Create the config from the example (or upgrade the admin's in place, keeping every
    value and comment), fill the secrets still marked "generate" and write the homeserver
    registration. ``overrides`` (dotted keys) are written into the file, the environment's
    ``SWITCHBOARD_*`` values are not (a secret set there stays out of the file, and the
    registration gets it). Both files are written readable by their owner only."""
    env = os.environ if env is None else env
    exists = config_path.exists()
    original = _read(config_path) if exists else None
    upgraded = _upgrade(
        original if original is not None else EXAMPLE_CONFIG.read_text(), config_path
    )
    data = upgraded.data
    changed = False
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        changed = True
    from_env = apply_env(plain(data), schema(), env)
    for dotted in SECRETS:
        section, key = dotted.split(".")
        node = data.get(section)
        if (
            isinstance(node, Mapping)
            and node.get(key) in (GENERATE, None, "")
            and dotted not in from_env.sources
        ):
            node[key] = secrets.token_urlsafe(32)
            changed = True
    text = upgraded.text
    if changed:
        text = dump(data, upgraded.layout)
    final = plain(make_yaml().load(text))
    overridden = apply_env(final, schema(), env)
    notes = _notes(upgraded, overridden, written=True)
    config = _parse(final, config_path, overridden, notes)
    try:
        mode = stat.S_IMODE(config_path.stat().st_mode) if exists else 0o600
        if text != original:
            write_private(config_path, text, 0o600)
        elif mode != 0o600:
            config_path.chmod(0o600)  # a file an older version wrote readable by everyone
        write_registration(config, registration_path)
    except OSError as e:
        raise ConfigError(f"cannot write {e.filename or config_path}: {e.strerror}") from None
    if mode & 0o077:
        notes = (*notes, Note(f"{config_path} was mode {mode:04o}; it is 0600 now"))
        config = dataclasses.replace(config, notes=notes)
    return config


def write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` atomically, never readable by others even for a moment; a
    file that exists keeps its owner and group."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        before: os.stat_result | None = path.stat()
    except FileNotFoundError:
        before = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if before is not None and (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(tmp, before.st_uid, before.st_gid)
            except PermissionError:
                pass  # not root: the new file is ours, as it would be after any edit
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def registration(config: Config) -> dict[str, Any]:
    domain = config.homeserver.domain.replace(".", r"\.")
    prefix = config.appservice.user_prefix
    aliases = [{"regex": f"#{prefix}.*:{domain}", "exclusive": True}]
    call_signs = config.directory.call_sign_alias_prefix
    if not call_signs.startswith(prefix):  # else the first namespace holds them already
        aliases.append({"regex": f"#{re.escape(call_signs)}.*:{domain}", "exclusive": True})
    return {
        "id": config.appservice.id,
        "url": config.appservice.address,
        "as_token": config.appservice.as_token,
        "hs_token": config.appservice.hs_token,
        "sender_localpart": config.appservice.bot_username,
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        "namespaces": {
            "users": [{"regex": f"@{prefix}.*:{domain}", "exclusive": True}],
            "aliases": aliases,
            "rooms": [],
        },
    }


def write_registration(config: Config, path: Path) -> None:
    """Write the registration 0600, or, over an existing one, with its mode less any access
    for others: a group the admin gave read access (the homeserver's) keeps it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode) & 0o770 | 0o600
    except FileNotFoundError:
        mode = 0o600
    write_private(path, dump(registration(config)), mode)
