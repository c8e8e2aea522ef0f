"""docker-compose.yml checked structurally (no Docker needed): the services of the full stack,
their health checks and start order, the settings they pass, Kafka's KRaft and listener
configuration, and every sessionstore command in the file parsed by the real CLI."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer.core
import typer.main
import yaml

from sessionstore.adapters import cli
from sessionstore.adapters.settings import Settings, load_settings

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
STACK = ("postgres", "kafka", "migrate", "api", "relay", "projector")
LONG_RUNNING = ("api", "relay", "projector")
"""The sessionstore services `docker compose up` keeps running."""
KAFKA_FED = ("relay", "projector")
SETTING = re.compile(r"\bSESSIONSTORE_[A-Z0-9_]+\b")


def load_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def sessionstore_services(services: dict[str, dict[str, Any]]) -> list[str]:
    """The services that run the sessionstore image (built from this repository)."""
    return [name for name, service in services.items() if "build" in service]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, from either of compose's two spellings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Each dependency and its condition (a list form has none: compose's service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def check_invocation(argv: Sequence[str]) -> None:
    """Fail unless ``sessionstore *argv`` is a valid invocation of the CLI: every (sub)command
    exists, every option is one the command has and its value converts, every required
    parameter is given, nothing is left over. Parses only: no callback runs."""
    # Typer builds its commands on its own copy of click: TyperGroup is no click.Group.
    command: Any = typer.main.get_command(cli.app)
    path = ["sessionstore"]
    parent: Any = None
    args = list(argv)
    while isinstance(command, typer.core.TyperGroup):
        ctx = command.make_context(path[-1], [], parent=parent, resilient_parsing=True)
        if not args:
            assert command.invoke_without_command, f"`{' '.join(path)}` needs a subcommand"
            return
        assert not args[0].startswith("-"), f"`{' '.join(path)}`: group options are not used"
        wanted = args[0]
        name, sub, args = command.resolve_command(ctx, args)
        assert sub is not None, f"`{' '.join(path)}` has no {wanted!r}"
        path.append(name or wanted)
        parent, command = ctx, sub
    ctx = command.make_context(path[-1], list(args), parent=parent, resilient_parsing=True)
    where = " ".join(path)
    params = command.get_params(ctx)
    known = {opt: p for p in params for opt in (*p.opts, *p.secondary_opts)}
    for token in args:
        if token.startswith("-"):
            option = token.split("=", 1)[0]
            assert option in known, f"`{where}` has no option {option}"
            param = known[option]
            assert ctx.params.get(param.name or "") is not None, f"`{where}`: bad {option} value"
    for param in params:
        if param.required:
            assert ctx.params.get(param.name or "") is not None, f"`{where}` needs {param.name}"
    assert not ctx.args, f"`{where}`: unexpected arguments {ctx.args}"


def test_the_full_stack_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(STACK) <= set(services)
    assert set(STACK) - {"postgres", "kafka"} <= set(sessionstore_services(services))
    # Anything else (the demo) must not start with `docker compose up`.
    for name in set(services) - set(STACK):
        assert services[name].get("profiles"), f"{name} would start with `docker compose up`"
    # Every sessionstore service `up` keeps running is one the tests below hold to the rules.
    kept_running = {
        name
        for name in sessionstore_services(services)
        if services[name].get("restart") != "no" and not services[name].get("profiles")
    }
    assert kept_running == set(LONG_RUNNING)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_are_healthchecked_and_wait_for_the_schema(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    healthcheck = service.get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable")
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}
    assert service.get("restart") == "unless-stopped"
    deps = depends_on(service)
    assert deps.get("postgres") == "service_healthy"
    assert deps.get("migrate") == "service_completed_successfully"


@pytest.mark.parametrize("name", KAFKA_FED)
def test_kafka_clients_wait_for_a_healthy_broker(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    assert depends_on(services[name]).get("kafka") == "service_healthy"


def test_infrastructure_is_healthchecked_and_migrate_is_one_shot(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("postgres", "kafka"):
        assert services[name].get("healthcheck"), f"{name} has no healthcheck"
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "migrate"]
    assert migrate.get("restart") == "no"
    assert depends_on(migrate) == {"postgres": "service_healthy"}


def test_commands(services: dict[str, dict[str, Any]]) -> None:
    assert services["relay"]["command"] == ["relay"]
    projector = services["projector"]["command"]
    assert "--source" in projector
    assert projector[projector.index("--source") + 1] == "kafka"
    assert projector[:2] == ["projections", "run"]
    api = services["api"]["command"]
    assert api[0] == "serve"
    assert "--no-projector" in api
    assert api[api.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside its container
    # Scaling (`--scale projector=N`) needs compose to name the containers.
    assert "container_name" not in services["projector"]


def test_health_checks_probe_what_the_contract_says(services: dict[str, dict[str, Any]]) -> None:
    api = " ".join(services["api"]["healthcheck"]["test"])
    assert "/readyz" in api
    port = services["api"]["command"][services["api"]["command"].index("--port") + 1]
    assert f"127.0.0.1:{port}/readyz" in api
    assert services["relay"]["healthcheck"]["test"] == ["CMD", "sessionstore", "relay", "status"]
    assert services["projector"]["healthcheck"]["test"] == [
        "CMD",
        "sessionstore",
        "projections",
        "status",
    ]


def test_every_sessionstore_variable_in_the_file_is_a_setting() -> None:
    named = set(SETTING.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert "SESSIONSTORE_DATABASE_URL" in named
    unknown = sorted(
        name
        for name in named
        if name.removeprefix("SESSIONSTORE_").lower() not in Settings.model_fields
    )
    assert not unknown, f"not fields of sessionstore.adapters.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", ["migrate", *LONG_RUNNING])
def test_each_service_environment_is_valid_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("SESSIONSTORE_"):
            monkeypatch.delenv(key)
    for key, value in environment(services[name]).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # raises SettingsError naming any invalid variable
    assert settings.backend == "postgres"
    assert "@postgres:5432/" in settings.database_url
    if name in KAFKA_FED:
        advertised = listeners(environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"])
        for server in settings.kafka_bootstrap_servers.split(","):
            assert server in advertised.values(), f"{server} is not an advertised listener"


def listeners(spec: str) -> dict[str, str]:
    """``NAME://host:port,...`` as {NAME: "host:port"}."""
    parsed = {}
    for item in spec.split(","):
        name, _, address = item.strip().partition("://")
        parsed[name] = address
    return parsed


def test_kafka_is_a_single_kraft_node_with_internal_and_external_listeners(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"]), "pin a release tag"
    env = environment(kafka)
    roles = {role.strip() for role in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert {"broker", "controller"} <= roles
    assert env["CLUSTER_ID"], "the image needs CLUSTER_ID in KRaft mode"
    node_id = env["KAFKA_NODE_ID"]
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert (
        env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        == f"{node_id}@kafka:{bound[controller].split(':')[-1]}"
    )
    assert controller not in advertised
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert set(bound) <= {item.split(":")[0].strip() for item in protocol_map.split(",")}
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # Other containers: kafka:9092. The host: an EXTERNAL listener on 127.0.0.1, published there.
    assert "kafka:9092" in advertised.values()
    external = [address for address in advertised.values() if address.startswith("127.0.0.1:")]
    assert len(external) == 1
    port = external[0].rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}:{port}" in kafka["ports"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: spell ports as strings"
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    assert "127.0.0.1:8080:8080" in services["api"]["ports"]


def sessionstore_invocations(services: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Each sessionstore service's command, and its health check's when that is a
    ``sessionstore`` command (the arguments after the program name, as the image's ENTRYPOINT
    receives them)."""
    invocations: list[list[str]] = []
    for name in sessionstore_services(services):
        invocations.append([str(arg) for arg in services[name]["command"]])
        test = services[name].get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "sessionstore"]:
            invocations.append([str(arg) for arg in test[2:]])
    return invocations


INVOCATIONS = sessionstore_invocations(load_compose()["services"])


def test_the_commands_checked_include_the_workers() -> None:
    assert ["relay"] in INVOCATIONS
    assert ["relay", "status"] in INVOCATIONS
    assert ["projections", "status"] in INVOCATIONS
    assert ["db", "migrate"] in INVOCATIONS


@pytest.mark.parametrize("argv", INVOCATIONS, ids=" ".join)
def test_every_sessionstore_command_in_the_file_parses(argv: list[str]) -> None:
    check_invocation(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["sessions", "nope"],
        ["db", "migrate", "--nope"],
        ["serve", "--port", "not-a-port"],
        ["keys", "create", "--tenant", "dev"],
        ["db", "migrate", "extra"],
        ["db"],
    ],
)
def test_the_invocation_check_catches_mistakes(argv: list[str]) -> None:
    with pytest.raises(AssertionError):
        check_invocation(argv)


def test_the_documented_key_command_parses() -> None:
    check_invocation(["keys", "create", "--tenant", "dev", "--role", "admin"])
