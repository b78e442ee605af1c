"""Typed settings for the processor, read from the environment (prefix ``KPI_``) and ``.env``."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError

ENV_PREFIX = "KPI_"

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """Accept ``90s``, ``5m``, ``1h``, ``7d``, ``2w``, plain seconds, or ISO 8601 (``P7D``)."""
    if isinstance(value, str):
        if value.strip().isdigit():
            return timedelta(seconds=int(value))
        match = _DURATION_RE.match(value)
        if match:
            return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def duration_ms(value: timedelta) -> int:
    """A timedelta as whole milliseconds (the unit every window computation uses)."""
    return int(value / timedelta(milliseconds=1))


def format_duration(value: timedelta) -> str:
    """Shortest ``<n><unit>`` spelling of a duration, for names and logs."""
    ms = duration_ms(value)
    for unit in ("w", "d", "h", "m", "s"):
        unit_ms = int(_UNIT_SECONDS[unit] * 1000)
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    return f"{ms}ms"


class WindowSpec(BaseModel):
    """One rolling window: a name users read in keys, a size and a step."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    size: Duration
    step: Duration

    @model_validator(mode="after")
    def _check(self) -> WindowSpec:
        if self.step <= timedelta(0) or self.size <= timedelta(0):
            raise ValueError(f"window {self.name!r}: size and step must be positive")
        if duration_ms(self.size) % duration_ms(self.step) != 0:
            raise ValueError(
                f"window {self.name!r}: size {format_duration(self.size)} is not a whole "
                f"number of steps of {format_duration(self.step)}"
            )
        if duration_ms(self.step) % 1000 != 0:
            raise ValueError(f"window {self.name!r}: step must be a whole number of seconds")
        return self

    @property
    def size_ms(self) -> int:
        return duration_ms(self.size)

    @property
    def step_ms(self) -> int:
        return duration_ms(self.step)


DEFAULT_WINDOWS: tuple[WindowSpec, ...] = (
    WindowSpec(name="1h", size=timedelta(hours=1), step=timedelta(minutes=5)),
    WindowSpec(name="24h", size=timedelta(hours=24), step=timedelta(hours=1)),
    WindowSpec(name="7d", size=timedelta(days=7), step=timedelta(hours=1)),
    WindowSpec(name="30d", size=timedelta(days=30), step=timedelta(days=1)),
)


class Settings(BaseSettings):
    """Every knob of the processor; each maps to the environment variable ``KPI_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # Compose passes unset secrets as ${VAR:-}: empty means "use the default".
        env_ignore_empty=True,
    )

    # Identity and logging.
    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")] = "crm-kpi"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    data_dir: Path = Path("var")

    # Kafka connection and security (passed through to Faust and aiokafka).
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None

    # Topics.
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{0,100}$")] = "crm."
    topic_partitions: Annotated[int, Field(ge=1, le=1024)] = 4
    topic_replication_factor: Annotated[int, Field(ge=1, le=16)] = 1

    # Faust consumer-group timing; lower values make a fresh group join faster.
    broker_session_timeout: Duration = timedelta(seconds=30)
    broker_rebalance_timeout: Duration = timedelta(seconds=60)
    broker_heartbeat_interval: Duration = timedelta(seconds=3)

    # State store: memory:// for tests and dev, rocksdb:// in production.
    store: Literal["memory://", "rocksdb://"] = "memory://"

    # Redis.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None

    # KPI semantics.
    windows: tuple[WindowSpec, ...] = DEFAULT_WINDOWS
    attribution_window: Duration = timedelta(days=7)
    max_lateness: Duration = timedelta(days=31)
    dedupe_horizon: Duration = timedelta(days=31)
    reporting_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    gross_margin: Annotated[Decimal, Field(gt=0, le=1)] = Decimal(1)

    # Publishing: snapshots at most this often; customer-stage checkpoints this often.
    publish_interval: Duration = timedelta(seconds=1)
    checkpoint_interval: Duration = timedelta(milliseconds=500)
    stream_maxlen: Annotated[int, Field(ge=100)] = 100_000
    history_steps: Annotated[int, Field(ge=500)] = 1000

    # The worker's HTTP server (Faust web): localhost unless configured.
    web_host: str = "127.0.0.1"
    web_port: Annotated[int, Field(ge=1, le=65535)] = 6066

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("at least one host:port is required")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, value: tuple[WindowSpec, ...]) -> tuple[WindowSpec, ...]:
        if not value:
            raise ValueError("at least one window is required")
        names = [w.name for w in value]
        if len(set(names)) != len(names):
            raise ValueError(f"window names must be unique, got {names}")
        return value

    @model_validator(mode="after")
    def _check_semantics(self) -> Settings:
        if self.dedupe_horizon < timedelta(days=7):
            raise ValueError("dedupe_horizon: the contract requires at least 7 days")
        if self.attribution_window <= timedelta(0):
            raise ValueError("attribution_window: must be positive")
        if self.max_lateness <= timedelta(0):
            raise ValueError("max_lateness: must be positive")
        if self.publish_interval < timedelta(milliseconds=100):
            raise ValueError("publish_interval: must be at least 100ms")
        if not timedelta(milliseconds=50) <= self.checkpoint_interval <= timedelta(minutes=1):
            raise ValueError("checkpoint_interval: must be between 50ms and 1m")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "kafka_sasl_username and kafka_sasl_password are required with "
                f"kafka_security_protocol={self.kafka_security_protocol}"
            )
        return self

    # Topic names: one prefix renames them all (contract section 1).
    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def dead_letter_topic(self) -> str:
        return self.topic("dead-letters")

    @property
    def kpi_updates_topic(self) -> str:
        return self.topic("kpi-updates")

    @property
    def kpi_alerts_topic(self) -> str:
        return self.topic("kpi-alerts")

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_bootstrap_servers.split(",")


class SettingsError(Exception):
    """Invalid configuration, with one line per offending setting named as its variable."""


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment; on error name each bad ``KPI_*`` variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            name = (ENV_PREFIX + loc[0]).upper() if loc else "settings"
            detail = f" (at {'.'.join(loc[1:])})" if len(loc) > 1 else ""
            lines.append(f"{name}{detail}: {error['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
    except EnvParseError as exc:
        # pydantic-settings fails before validation on undecodable JSON (e.g. KPI_WINDOWS).
        match = re.search(r"field \W?(\w+)", str(exc))
        name = (ENV_PREFIX + match.group(1)).upper() if match else "settings"
        raise SettingsError(f"invalid settings:\n  {name}: not valid JSON") from None
