"""Static checks of the deployment files: docker-compose.yml, Dockerfile and .dockerignore.

No Docker engine is needed: the compose file is parsed with PyYAML (which also resolves its
anchors and merge keys), compose's ``${VAR:-default}`` interpolation is reproduced here, and
the values a container would receive are fed to the real ``Settings``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from pydantic import SecretStr

from stream_app.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = ("kafka", "redis", "worker", "dashboard")
APP_SERVICES = ("worker", "dashboard")
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN")

# Worker settings that the deployment itself pins (volume path, store, web server that the
# port mapping and healthcheck use); every other KPI_* variable must be overridable.
PINNED_WORKER_SETTINGS = {"KPI_DATA_DIR", "KPI_STORE", "KPI_WEB_HOST", "KPI_WEB_PORT"}
PINNED_SETTINGS = {
    "worker": PINNED_WORKER_SETTINGS,
    "dashboard": {"KPI_WEB_HOST", "KPI_WEB_PORT"},
}
README = ROOT / "README.md"
REQUIRED_WORKER_SETTINGS = {
    "KPI_KAFKA_BOOTSTRAP_SERVERS",
    "KPI_REDIS_URL",
    "KPI_REDIS_PASSWORD",
    "KPI_KAFKA_SASL_PASSWORD",
    "KPI_STORE",
    "KPI_DATA_DIR",
    "KPI_WEB_HOST",
    "KPI_TOPIC_PARTITIONS",
    "KPI_LOG_LEVEL",
}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Compose interpolation: $$ (a literal $), ${NAME}, ${NAME:-d}, ${NAME-d}, ${NAME:?e},
# ${NAME?e}, $NAME.
_INTERPOLATION = re.compile(
    rf"\$(?:(?P<escaped>\$)|\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?])(?P<arg>[^}}$]*))?\}}"
    rf"|(?P<named>{_NAME}))"
)
# A value that is one interpolation and nothing else.
_ONLY_INTERPOLATION = re.compile(rf"\$\{{(?P<name>{_NAME})(?:(?P<op>:?[-?])(?P<arg>[^}}$]*))?\}}")
_DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")


# ---------------------------------------------------------------------------------------
# Helpers


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve compose interpolation in ``value`` against ``env`` (the shell plus ``.env``)."""
    if "$" in _INTERPOLATION.sub("", value):
        raise ValueError(f"invalid interpolation in {value!r}")

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"]
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        if op in (":?", "?") and (name not in env or (op == ":?" and not env[name])):
            raise ValueError(f"{name} is required: {arg}")
        return env.get(name, "")

    return _INTERPOLATION.sub(replace, value)


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's ``environment``, list or mapping syntax, as a dict (None = no value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        items: dict[str, str | None] = {}
        for entry in env:
            key, sep, value = str(entry).partition("=")
            items[key] = value if sep else None
        return items
    return {str(k): None if v is None else str(v) for k, v in env.items()}


def is_secret_setting(var: str) -> bool:
    """Whether a KPI_* variable maps to a ``SecretStr`` field of ``Settings``."""
    if not var.startswith(ENV_PREFIX):
        return False
    field = Settings.model_fields.get(var.removeprefix(ENV_PREFIX).lower())
    if field is None:
        return False
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


def assert_secret_from_environment(where: str, value: Any) -> None:
    """A secret must be exactly ``${NAME}`` / ``${NAME:-}`` / ``${NAME:?...}``: no literal."""
    match = _ONLY_INTERPOLATION.fullmatch(value) if isinstance(value, str) else None
    assert match, f"{where}: literal secret {value!r}; use ${{VAR}} interpolation"
    op, arg = match["op"], match["arg"]
    assert op is None or "?" in op or arg == "", (
        f"{where}: {value!r} has a literal default; a secret's default must be empty"
    )


def service_names(compose: Mapping[str, Any]) -> list[str]:
    return list(compose["services"])


def settings_from_container_env(
    env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Settings:
    """Load settings exactly as the container would: from these variables only, no .env."""
    import os

    for var in list(os.environ):
        if var.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)  # Settings reads ./.env: make sure there is none.
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    return load_settings()


def resolved_app_env(service: Mapping[str, Any], shell: Mapping[str, str]) -> dict[str, str]:
    return {
        var: interpolate(value, shell)
        for var, value in environment(service).items()
        if value is not None and var.startswith(ENV_PREFIX)
    }


def readme_settings() -> list[str]:
    """The variables of the README's settings table (section "Configuration"), in order."""
    section = README.read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"^\| `(KPI_[A-Z0-9_]+)` \|", section, flags=re.MULTILINE)


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends with a line continuation"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        assert result, "instruction before the first FROM"
        result[-1].append(instruction)
    return result


def copy_sources(args: str) -> list[str]:
    """Source paths of a COPY/ADD from the build context (empty for COPY --from=...)."""
    parts = json.loads(args) if args.startswith("[") else args.split()
    flags = [p for p in parts if p.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return []
    paths = [p for p in parts if not p.startswith("--")]
    return paths[:-1]


# ---------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    assert isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return stages(dockerfile)[-1]


# ---------------------------------------------------------------------------------------
# The interpolation helper itself (the checks below rely on it)


def test_interpolate_follows_compose_rules() -> None:
    assert interpolate("${A:-x}", {}) == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("${A:-x}", {"A": "y"}) == "y"
    assert interpolate("pre-${A}-$B-$$C", {"A": "1", "B": "2"}) == "pre-1-2-$C"
    with pytest.raises(ValueError, match="required"):
        interpolate("${A:?set A}", {})
    with pytest.raises(ValueError, match="invalid"):
        interpolate("cost $ 5", {})


# ---------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_spec_without_version_and_with_the_four_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose spec has no top-level version key"
    missing = set(SERVICES) - set(compose["services"])
    assert not missing, f"missing services: {sorted(missing)}"


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("kafka", ("/opt/kafka/bin/kafka-broker-api-versions.sh", "--bootstrap-server")),
        ("redis", ("redis-cli", "ping")),
        ("worker", ("urllib", "http://127.0.0.1:6066/health")),
        ("dashboard", ("urllib", "http://127.0.0.1:8080/health")),
    ],
)
def test_healthchecks(services: dict[str, Any], name: str, probe: tuple[str, ...]) -> None:
    healthcheck = services[name].get("healthcheck")
    assert isinstance(healthcheck, dict), f"{name}: no healthcheck"
    assert not healthcheck.get("disable"), f"{name}: healthcheck disabled"
    test = healthcheck.get("test")
    assert isinstance(test, list), f"{name}: healthcheck test must be a list"
    assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: test must start with CMD or CMD-SHELL"
    assert len(test) > 1
    command = " ".join(test[1:])
    for part in probe:
        assert part in command, f"{name}: healthcheck does not use {part!r}: {command!r}"
    for key in ("interval", "timeout", "start_period"):
        value = healthcheck.get(key)
        assert isinstance(value, str), f"{name}: healthcheck {key} missing"
        assert _DURATION.match(value), f"{name}: healthcheck {key}={value!r} is no duration"
    retries = healthcheck.get("retries")
    assert isinstance(retries, int), f"{name}: healthcheck retries missing"
    assert retries >= 1


@pytest.mark.parametrize(
    ("name", "dependencies"),
    [("worker", {"kafka", "redis"}), ("dashboard", {"worker", "redis"})],
)
def test_depends_on_healthy_services(
    services: dict[str, Any], name: str, dependencies: set[str]
) -> None:
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on must use the long syntax"
    assert dependencies <= set(depends_on), f"{name}: depends_on {sorted(depends_on)}"
    for dependency, spec in depends_on.items():
        assert spec.get("condition") == "service_healthy", (
            f"{name} -> {dependency}: condition must be service_healthy"
        )
        # service_healthy on a service without a healthcheck never starts the dependent.
        healthcheck = services[dependency].get("healthcheck")
        assert healthcheck, f"{name} waits for {dependency} to be healthy: no healthcheck"
        assert not healthcheck.get("disable"), f"{name} waits for {dependency}: check disabled"


def test_kpi_variables_are_settings_fields(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    seen = 0
    for name, service in services.items():
        for var in environment(service):
            if not var.upper().startswith(ENV_PREFIX):
                continue
            seen += 1
            assert var == var.upper(), f"{name}: {var} must be upper-case"
            field = var.removeprefix(ENV_PREFIX).lower()
            assert field in fields, f"{name}: {var} is not a setting (no Settings.{field})"
    assert seen, "no KPI_* variable set on any service"


def test_worker_sets_the_essential_settings(services: dict[str, Any]) -> None:
    missing = REQUIRED_WORKER_SETTINGS - set(environment(services["worker"]))
    assert not missing, f"worker does not set {sorted(missing)}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_set_only_kpi_variables(services: dict[str, Any], name: str) -> None:
    others = [var for var in environment(services[name]) if not var.startswith(ENV_PREFIX)]
    assert not others, f"{name}: non-{ENV_PREFIX} variables {others}"


def test_worker_settings_are_overridable_from_dotenv(services: dict[str, Any]) -> None:
    """Each unpinned KPI_X of the worker is ``${KPI_X...}``, so `.env` or the shell wins."""
    for var, value in environment(services["worker"]).items():
        if var in PINNED_WORKER_SETTINGS:
            continue
        match = _ONLY_INTERPOLATION.fullmatch(value or "")
        assert match, f"worker: {var}={value!r} is not a ${{{var}:-default}} interpolation"
        assert match["name"] == var, f"worker: {var} is interpolated from {match['name']}"


def test_kafka_runs_in_kraft_mode(compose: dict[str, Any], services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    env = {k: interpolate(v or "", {}) for k, v in environment(kafka).items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith("1@")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert {"PLAINTEXT", "CONTROLLER"} <= listeners
    protocol_map = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert listeners <= set(protocol_map), "every listener needs a security protocol"
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in advertised
    assert not any(a.startswith("CONTROLLER://") for a in advertised)
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "zookeeper" not in json.dumps(compose).lower(), "KRaft only: no ZooKeeper"

    # The worker's default bootstrap server is the broker's advertised PLAINTEXT listener.
    worker_env = resolved_app_env(services["worker"], {})
    for server in worker_env["KPI_KAFKA_BOOTSTRAP_SERVERS"].split(","):
        assert f"PLAINTEXT://{server}" in advertised


def _named_volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """target -> named volume, for the named volumes a service mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume" and volume.get("source"):
                mounts[volume["target"]] = volume["source"]
            continue
        parts = str(volume).split(":")
        if len(parts) >= 2 and not parts[0].startswith(("/", ".", "~", "$")):
            mounts[parts[1]] = parts[0]
    return mounts


def test_volumes_are_declared_and_mounted_where_state_lives(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose.get("volumes") or {})
    used = {
        volume for service in services.values() for volume in _named_volume_mounts(service).values()
    }
    assert used, "no named volume used"
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused volumes: {sorted(declared - used)}"

    kafka_env = environment(services["kafka"])
    assert kafka_env.get("KAFKA_LOG_DIRS") in _named_volume_mounts(services["kafka"])
    assert "/data" in _named_volume_mounts(services["redis"])
    worker_env = resolved_app_env(services["worker"], {})
    assert worker_env["KPI_DATA_DIR"] in _named_volume_mounts(services["worker"])


def test_redis_persists_with_append_only_file(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7.4-alpine"
    command = redis.get("command")
    assert isinstance(command, list)
    assert command[0] == "redis-server"
    index = command.index("--appendonly")
    assert command[index + 1] == "yes"


def test_no_literal_secrets(services: dict[str, Any]) -> None:
    checked = 0
    for name, service in services.items():
        for var, value in environment(service).items():
            if any(word in var.upper() for word in SECRET_WORDS) or is_secret_setting(var):
                checked += 1
                assert_secret_from_environment(f"{name}: {var}", value)
        command = service.get("command")
        if isinstance(command, list) and "--requirepass" in command:
            checked += 1
            password = command[command.index("--requirepass") + 1]
            assert_secret_from_environment(f"{name}: --requirepass", password)
    assert checked, "no secret variable found to check"


@pytest.mark.parametrize(("name", "container_port"), [("worker", 6066), ("dashboard", 8080)])
def test_ports_published_on_localhost_only(
    services: dict[str, Any], name: str, container_port: int
) -> None:
    published: set[int] = set()
    for service_name, service in services.items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip, target = port.get("host_ip"), int(port["target"])
            else:
                parts = interpolate(str(port), {}).split(":")
                assert len(parts) == 3, f"{service_name}: {port!r} does not name a host IP"
                host_ip, target = parts[0], int(parts[2].split("/")[0])
            assert host_ip == "127.0.0.1", f"{service_name}: {port!r} is not bound to 127.0.0.1"
            if service_name == name:
                published.add(target)
    assert container_port in published, f"{name}: port {container_port} not published"


def test_worker_and_dashboard_run_the_image(services: dict[str, Any]) -> None:
    worker, dashboard = services["worker"], services["dashboard"]
    assert worker["command"] == ["worker"]
    assert dashboard["command"] == ["dashboard"]
    for service in (worker, dashboard):
        build = service.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context in (".", "./"), "app services are built from the repository root"
        if isinstance(build, dict):
            assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    assert worker["image"] == dashboard["image"]
    assert worker["restart"] == "unless-stopped"
    assert worker["deploy"]["replicas"] == 1


def test_dashboard_does_not_inherit_the_worker_healthcheck(services: dict[str, Any]) -> None:
    """The image's HEALTHCHECK probes the worker's :6066/health; the dashboard must override it."""
    healthcheck = services["dashboard"].get("healthcheck")
    assert isinstance(healthcheck, dict), "dashboard inherits the image's worker healthcheck"
    if not healthcheck.get("disable"):
        test = " ".join(healthcheck.get("test") or [])
        assert test, "dashboard healthcheck has no test"
        assert ":6066/" not in test, "dashboard healthcheck probes the worker's port"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_defaults_are_valid_settings(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no `.env` and an empty shell, the container's KPI_* values load as Settings."""
    env = resolved_app_env(services[name], {})
    assert env
    settings = settings_from_container_env(env, monkeypatch, tmp_path)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.web_host == "0.0.0.0"
    if name == "worker":
        assert settings.kafka_bootstrap_servers == "kafka:9092"
        assert settings.store == "rocksdb://"
        assert settings.data_dir == Path("/data")
        assert settings.web_port == 6066
    else:
        assert settings.web_port == 8080


def test_dotenv_values_reach_the_worker(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shell = {
        "KPI_TOPIC_PARTITIONS": "12",
        "KPI_LOG_LEVEL": "DEBUG",
        "KPI_KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092",
        "KPI_REDIS_PASSWORD": "from-the-environment",
    }
    env = resolved_app_env(services["worker"], shell)
    settings = settings_from_container_env(env, monkeypatch, tmp_path)
    assert settings.topic_partitions == 12
    assert settings.log_level == "DEBUG"
    assert settings.bootstrap_servers == ["broker-1:9092", "broker-2:9092"]
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "from-the-environment"


def test_the_readme_table_lists_exactly_the_settings() -> None:
    documented = readme_settings()
    assert len(documented) == len(set(documented)), "a setting is listed twice"
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert not fields - set(documented), f"README table lacks {sorted(fields - set(documented))}"
    assert not set(documented) - fields, f"README lists non-settings {set(documented) - fields}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_documented_setting_reaches_the_app_services(
    services: dict[str, Any], name: str
) -> None:
    """Each setting of the README table set in `.env` or the shell arrives in the container,
    unless the service pins it (and then it is set to the pinned value)."""
    documented = readme_settings()
    assert len(documented) > 50
    shell = {var: f"from-dotenv-{var.lower()}" for var in documented}
    env = resolved_app_env(services[name], shell)
    pinned = PINNED_SETTINGS[name]
    dropped = [var for var in documented if var not in pinned and env.get(var) != shell[var]]
    assert not dropped, f"{name}: these settings from .env or the shell never reach it: {dropped}"
    for var in pinned:
        assert var in env, f"{name}: pins {var} but does not set it"
        assert env[var] != shell[var], f"{name}: {var} is pinned, .env must not change it"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_a_dotenv_file_configures_the_containers(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Settings the compose file once dropped, from a real `.env`, load in the container."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "KPI_ALERT_WEBHOOKS=https://hooks.example.com/a?token=x,https://hooks.example.com/b\n"
        "KPI_ALERT_RULES_FILE=/config/alerts.toml\n"
        "KPI_CHURN_MIN_COUNT=9\n"
        "KPI_CHURN_Z_THRESHOLD=4\n"
        'KPI_WINDOWS=\'[{"name":"1h","size":"1h","step":"5m"}]\'\n'
        "KPI_KAFKA_SECURITY_PROTOCOL=SSL\n"
        "KPI_KAFKA_SSL_CAFILE=/certs/ca.pem\n"
        "KPI_KAFKA_SSL_KEY_PASSWORD=key-secret\n"
        "KPI_HEALTH_STALL_AFTER=5m\n",
        encoding="utf-8",
    )
    shell = {k: v for k, v in dotenv_values(dotenv).items() if v is not None}
    container = tmp_path / "container"
    container.mkdir()
    settings = settings_from_container_env(
        resolved_app_env(services[name], shell), monkeypatch, container
    )
    assert [url.get_secret_value() for url in settings.alert_webhooks][1] == (
        "https://hooks.example.com/b"
    )
    assert settings.alert_rules_file == Path("/config/alerts.toml")
    assert settings.churn_min_count == 9
    assert settings.churn_z_threshold == 4.0
    assert [window.name for window in settings.windows] == ["1h"]
    assert settings.kafka_ssl_cafile == Path("/certs/ca.pem")
    assert settings.kafka_ssl_key_password is not None
    assert settings.health_stall_after.total_seconds() == 300


# ---------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def test_dockerfile_is_based_on_python_311_slim(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args.split() for keyword, args in dockerfile if keyword == "FROM"]
    assert froms, "no FROM"
    stage_names = {parts[2].lower() for parts in froms if len(parts) == 3}
    bases = [parts[0] for parts in froms if parts[0].lower() not in stage_names]
    assert bases
    for base in bases:
        assert base.startswith("python:3.11-slim"), f"base image {base}"


def test_dockerfile_installs_the_rocksdb_extra(dockerfile: list[tuple[str, str]]) -> None:
    all_stages = stages(dockerfile)
    install = re.compile(r"pip install\b[^;&|]*[\"']?\.\[rocksdb\][\"']?")
    installing = [
        index
        for index, stage in enumerate(all_stages)
        if any(keyword == "RUN" and install.search(args) for keyword, args in stage)
    ]
    assert installing, "no `pip install .[rocksdb]`"
    final = all_stages[-1]
    if len(all_stages) - 1 not in installing:
        # Installed in a build stage: the final stage must take the result from it.
        names = {
            all_stages[i][0][1].split()[-1].lower()
            for i in installing
            if len(all_stages[i][0][1].split()) == 3
        }
        copies_from = {
            flag.split("=", 1)[1].lower()
            for keyword, args in final
            if keyword == "COPY"
            for flag in args.split()
            if flag.startswith("--from=")
        }
        assert names & copies_from, "the final stage copies nothing from the install stage"
    sources = {
        source.rstrip("/").removeprefix("./")
        for keyword, args in dockerfile
        if keyword in ("COPY", "ADD")
        for source in copy_sources(args)
    }
    needed = {"pyproject.toml", "README.md", "stream_app", "schemas"}
    assert needed <= sources, f"not copied: {sorted(needed - sources)}"


def test_dockerfile_final_stage(final_stage: list[tuple[str, str]]) -> None:
    def last(keyword: str) -> str:
        values = [args for kw, args in final_stage if kw == keyword]
        assert values, f"final stage has no {keyword}"
        return values[-1]

    user = last("USER").split(":")[0]
    assert user not in ("root", "0"), f"final stage runs as {user}"
    assert json.loads(last("ENTRYPOINT")) == ["kpi"]
    assert json.loads(last("CMD")) == ["worker"]
    assert "6066" in last("EXPOSE").split()
    healthcheck = last("HEALTHCHECK")
    assert " CMD " in f" {healthcheck} "
    assert "urllib" in healthcheck
    assert "http://127.0.0.1:6066/health" in healthcheck
    for keyword, args in final_stage:
        if keyword == "RUN":
            for tool in ("build-essential", "gcc", "g++", "cmake"):
                assert tool not in args.split(), f"final stage installs {tool}"


def test_dockerignore_keeps_local_state_out_but_not_the_sources(
    dockerfile: list[tuple[str, str]],
) -> None:
    assert DOCKERIGNORE.is_file(), f"{DOCKERIGNORE} is missing"
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for required in (".git", ".venv", ".env", "var", "**/__pycache__", ".pytest_cache"):
        assert required in patterns, f".dockerignore does not exclude {required}"
    sources = [
        source.rstrip("/").removeprefix("./")
        for keyword, args in dockerfile
        if keyword in ("COPY", "ADD")
        for source in copy_sources(args)
    ]
    for source in sources:
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            assert not fnmatch.fnmatch(source, pattern.removeprefix("**/")), (
                f".dockerignore pattern {pattern!r} excludes {source}, which the image needs"
            )
