"""The Dockerfile and deploy/docker-compose.yml, checked statically.

Neither is built or run here: the test machine cannot pull base images. What can go wrong
without Docker is checked instead: the image installs with the same deploy/install.sh and
constraints.txt as the wheel test, runs as a non-root user with the config's ports and health
check; the compose file parses and every service, volume, variable and config key it names
exists, and only the portal is published.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

from ruamel.yaml import YAML

from tests.deploy.servers import DEPLOY, REPO
from tests.deploy.settings import APPSERVICE_PORT, PORTAL_PORT, config_key_of

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / "env.example"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    result = []
    for line in joined:
        word, _, rest = line.strip().partition(" ")
        result.append((word.upper(), " ".join(rest.split())))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE)
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(starts) >= 2, "build the wheel in a stage of its own"
    return steps[starts[-1] :]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"use the exec form (a JSON list): {arguments}"
    return [str(v) for v in value]


def dockerignored(name: str) -> bool:
    patterns = [
        p.strip().lstrip("/")
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = PurePosixPath(name).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, p) for p in patterns for prefix in prefixes)


def test_the_image_installs_the_wheel_with_the_shared_install_script_and_the_pins():
    stage = final_stage()
    copies: dict[str, str] = {}  # destination -> source in the checkout
    for word, arguments in stage:
        if word == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            for source in sources:
                assert (REPO / source).is_file(), f"COPY {source}: no such file"
                assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
                copies[destination] = source
    script = next(d for d, s in copies.items() if s == "deploy/install.sh")
    # install.sh finds the pins at ../constraints.txt from itself, as in the checkout
    pins = str(PurePosixPath(script).parent.parent / "constraints.txt")
    assert copies.get(pins) == "constraints.txt", f"copy constraints.txt to {pins}"

    runs = [shlex.split(a) for w, a in stage if w == "RUN" and "install.sh" in a]
    assert len(runs) == 1, "one RUN calls deploy/install.sh"
    argv = runs[0]
    at = argv.index(script)
    venv, wheel = argv[at + 1], argv[at + 2]
    assert venv == "/opt/switchboard"
    assert re.fullmatch(r"/\S+/switchboard-\*\.whl", wheel), wheel
    assert not any(a.startswith("CONSTRAINTS=") for a in argv), "the copied pins, not others"
    # the wheel comes from the build stage, which builds it from this checkout
    assert any(w == "COPY" and a.startswith("--from=build") for w, a in stage)
    build = " ".join(a for w, a in instructions(DOCKERFILE) if w == "RUN")
    assert "pip wheel" in build and "-c constraints.txt" in build
    for package in ("bridge", "appservice", "web_portal", "alembic", "pyproject.toml"):
        assert not dockerignored(package), f"the build stage needs {package}"


def test_the_image_runs_as_a_user_of_its_own_with_the_configs_ports_and_health_check():
    stage = final_stage()
    users = [a for w, a in stage if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("VOLUME", "/data") in stage
    (entrypoint,) = [exec_form(a) for w, a in stage if w == "ENTRYPOINT"]
    (command,) = [exec_form(a) for w, a in stage if w == "CMD"]
    assert entrypoint + command == ["switchboard", "run", "-c", "/data/config.yaml"]
    exposed = {int(p) for w, a in stage if w == "EXPOSE" for p in a.split()}
    assert exposed == {PORTAL_PORT, APPSERVICE_PORT}
    (healthcheck,) = [a for w, a in stage if w == "HEALTHCHECK"]
    assert f"http://127.0.0.1:{PORTAL_PORT}/health" in healthcheck
    path = next(a for w, a in stage if w == "ENV" and "PATH=" in a)
    assert "/opt/switchboard/bin" in path  # so "switchboard" and "python" are the venv's
    for word, arguments in stage:
        if word == "ENV":
            for name in re.findall(r"\b(SWITCHBOARD_\w+)=", arguments):
                config_key_of(name)


def compose() -> dict[str, Any]:
    data = YAML(typ="safe").load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_the_compose_file_names_only_services_volumes_and_variables_that_exist():
    data = compose()
    services: dict[str, Any] = data["services"]
    assert {"postgres", "synapse", "switchboard"} <= set(services)
    declared = set(data.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[target], f"{target} has no health check"
    assert used == declared, f"declared but unused: {declared - used}"

    # every ${VAR} has a line in env.example
    listed = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    referenced = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert referenced <= listed, f"add to deploy/env.example: {referenced - listed}"

    # the image is built from the checkout's Dockerfile
    build = services["switchboard"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name in services["switchboard"]["environment"]:
        config_key_of(name)


def test_the_registration_goes_from_switchboard_to_synapse_and_only_the_portal_is_published():
    services = compose()["services"]
    switchboard, synapse = services["switchboard"], services["synapse"]
    assert "registration:/registration" in switchboard["volumes"]
    assert "registration:/registration:ro" in synapse["volumes"]
    # Synapse (group 991 in its image) reads the registration through the group
    assert str(switchboard["user"]).split(":")[1] == "991"
    # the appservice endpoint is for the homeserver, on the compose network only
    published = [str(p).rsplit(":", 1)[-1] for p in switchboard.get("ports", [])]
    assert published == [str(PORTAL_PORT)]
    assert all(str(p).startswith("127.0.0.1:") for p in switchboard["ports"])
    environment = switchboard["environment"]
    assert environment["SWITCHBOARD_HOMESERVER__ADDRESS"] == "http://synapse:8008"
    assert (
        environment["SWITCHBOARD_APPSERVICE__ADDRESS"] == f"http://switchboard:{APPSERVICE_PORT}"
    )
    assert environment["SWITCHBOARD_DATABASE__URL"].endswith("@postgres:5432/switchboard")
    assert f"127.0.0.1:{PORTAL_PORT}/health" in " ".join(switchboard["healthcheck"]["test"])


def test_the_compose_file_runs_the_synapse_version_the_tests_ran_against():
    pinned = re.search(
        r"^matrix-synapse==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE
    )
    assert pinned is not None
    assert compose()["services"]["synapse"]["image"] == f"matrixdotorg/synapse:v{pinned[1]}"
