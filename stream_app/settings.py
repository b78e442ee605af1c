"""Typed settings for the processor, read from the environment (prefix ``KPI_``) and ``.env``."""

from __future__ import annotations

import json
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
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError

from stream_app.redaction import redis_url_problem

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


def split_urls(value: Any) -> Any:
    """``KPI_ALERT_WEBHOOKS``, ``KPI_CORS_ORIGINS``, ``KPI_WEB_ALLOWED_HOSTS``: separated by
    commas or whitespace, or JSON."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part for part in re.split(r"[\s,]+", text) if part]
    return value


WebhookUrls = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(split_urls)]


CorsOrigins = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_urls)]
HostNames = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_urls)]
_HOST_NAME = re.compile(r"[a-z0-9.-]+|[0-9a-f:.]+")
_ORIGIN = re.compile(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/?")
# A token a browser's basic-auth prompt and an Authorization header both carry unchanged.
_TOKEN = re.compile(r"[\x21-\x7e]{16,512}")


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
    # Static group membership: a name of this worker's own, kept across its restarts. A worker
    # restarted under the same name takes its partitions back at once, without waiting out
    # its dead predecessor's session or a rebalance of the whole group.
    group_instance_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{0,200}$")] = ""

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
    checkpoint_interval: Duration = timedelta(milliseconds=250)
    # Used instead while more than a full batch of input waits (catching up): each checkpoint
    # rewrites every customer it touched, so fewer of them is most of a backlog's speed.
    checkpoint_interval_backlog: Duration = timedelta(seconds=2)
    # Longest wait of a Kafka fetch for new data: bounds latency on brokers that do not
    # answer a waiting fetch as soon as data arrives.
    fetch_max_wait: Duration = timedelta(milliseconds=100)
    # How long a customer-stage write (checkpoint, dead letter) may wait for the broker;
    # after that the worker restarts from its last complete checkpoint.
    write_timeout: Duration = timedelta(seconds=40)
    # How often the customer stage resends its whole state to the segment stage.
    resync_interval: Duration = timedelta(minutes=1)
    stream_maxlen: Annotated[int, Field(ge=100)] = 100_000
    history_steps: Annotated[int, Field(ge=500)] = 1000

    # Churn-spike detection on hourly event-time buckets (docs/alerts.md).
    churn_enabled: bool = True
    churn_min_count: Annotated[int, Field(ge=1)] = 5
    churn_z_threshold: Annotated[float, Field(gt=0, le=100)] = 3.0
    churn_z_critical: Annotated[float, Field(gt=0, le=100)] = 5.0
    churn_baseline: Duration = timedelta(days=7)
    churn_min_baseline: Duration = timedelta(days=1)
    churn_std_floor: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0

    # Customer lifecycle (contract section 7; stream_app/lifecycle/stages.py holds the rules).
    # Off by default: it costs a worker about 40 % of its throughput and 3.6 KB per
    # customer (docs/benchmarks.md, lifecycle).
    lifecycle_enabled: bool = False
    lifecycle_new_for: Duration = timedelta(days=30)
    lifecycle_at_risk_after: Duration = timedelta(days=45)
    lifecycle_dormant_after: Duration = timedelta(days=120)
    lifecycle_loyal_purchases: Annotated[int, Field(ge=1, le=1_000_000)] = 4
    lifecycle_loyal_revenue: Annotated[Decimal, Field(ge=0, le=1_000_000_000)] = Decimal(200)
    lifecycle_at_risk_size: Annotated[int, Field(ge=1, le=100_000)] = 1000

    # Benchmarks (contract section 8): a shipped profile's name, the path of a profile file,
    # or "none". Read at start; a bad profile stops the start (stream_app/benchmarks).
    benchmark_profile: Annotated[str, Field(min_length=1, max_length=1000)] = "ecommerce"

    # Alert evaluation and delivery (churn spikes and the rules file).
    alert_rules_file: Path | None = None
    alert_grace: Duration = timedelta(minutes=15)
    alert_idle_timeout: Duration = timedelta(minutes=2)
    alert_lookback: Duration = timedelta(hours=24)
    alert_marker_ttl: Duration = timedelta(days=35)
    alert_stream_maxlen: Annotated[int, Field(ge=100)] = 10_000
    alert_webhooks: WebhookUrls = ()
    alert_webhook_timeout: Duration = timedelta(seconds=5)
    alert_webhook_retries: Annotated[int, Field(ge=0, le=20)] = 3
    alert_webhook_backoff: Duration = timedelta(seconds=1)
    alert_webhook_queue: Annotated[int, Field(ge=1, le=1_000_000)] = 1000

    # The worker's HTTP server (Faust web): localhost unless configured.
    web_host: str = "127.0.0.1"
    web_port: Annotated[int, Field(ge=1, le=65535)] = 6066

    # The HTTP API and dashboard page (docs/api.md): optional token, CORS off by default.
    api_token: SecretStr | None = None
    cors_origins: CorsOrigins = ()
    # /health turns 503 when data waits this long unpublished or the consumer is stuck.
    health_stall_after: Duration = timedelta(minutes=2)

    # The HTTP server's edges (docs/operations.md#the-http-servers-limits). Without a token,
    # only these Host names (and the address it listens on) are served: no DNS rebinding.
    web_allowed_hosts: HostNames = ("localhost", "127.0.0.1", "::1")
    # From a connection's start (or its previous response) to a complete request head.
    web_header_timeout: Annotated[
        Duration, Field(ge=timedelta(milliseconds=100), le=timedelta(minutes=10))
    ] = timedelta(seconds=10)
    web_max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 512
    web_max_streams: Annotated[int, Field(ge=0, le=1_000_000)] = 100

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("at least one host:port is required")
        for server in servers:
            if "@" in server:  # aiokafka takes no credentials here; never echo them
                raise ValueError(
                    "no user or password in the address: set KPI_KAFKA_SASL_USERNAME and "
                    "KPI_KAFKA_SASL_PASSWORD"
                )
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        problem = redis_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
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

    @field_validator("windows")
    @classmethod
    def _check_window_names(cls, value: tuple[WindowSpec, ...]) -> tuple[WindowSpec, ...]:
        reserved = [w.name for w in value if w.name.startswith("_")]
        if reserved:
            raise ValueError(f"window names starting with '_' are reserved, got {reserved}")
        return value

    @field_validator("alert_webhooks")
    @classmethod
    def _check_webhooks(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for i, url in enumerate(value, start=1):
            text = url.get_secret_value()
            if not re.match(r"^https?://[^\s/]+", text):
                # Never echo the URL: it may carry a token.
                raise ValueError(f"webhook #{i} is not an http:// or https:// URL")
        return value

    @field_validator("api_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN.fullmatch(value.get_secret_value()):
            # Never echo the token.
            raise ValueError("must be 16 to 512 printable ASCII characters, no spaces")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin[:100]!r} is not an origin like https://ops.example.com "
                    "(scheme and host, optional port, no path) or *"
                )
        return tuple(origin.rstrip("/") for origin in value)

    @field_validator("web_allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(name.lower().strip("[]").rstrip(".") for name in value)
        for name in names:
            if name != "*" and not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{name[:100]!r} is not a host name like dashboard.example.com or an IP "
                    "address (no scheme, no port), or *"
                )
        return names

    @field_validator("health_stall_after")
    @classmethod
    def _check_stall(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=24):
            raise ValueError("must be between 1s and 24h")
        return value

    @model_validator(mode="after")
    def _check_alerts(self) -> Settings:
        hour = timedelta(hours=1)
        for name in ("churn_baseline", "churn_min_baseline"):
            value: timedelta = getattr(self, name)
            if value <= timedelta(0) or value % hour:
                raise ValueError(f"{name}: must be a positive whole number of hours")
        if self.churn_min_baseline > self.churn_baseline:
            raise ValueError("churn_min_baseline: must not exceed churn_baseline")
        if self.churn_baseline > timedelta(days=14):
            raise ValueError("churn_baseline: at most 14d (hourly counts kept in memory)")
        if self.churn_z_critical < self.churn_z_threshold:
            raise ValueError("churn_z_critical: must be at least churn_z_threshold")
        if not timedelta(0) <= self.alert_grace <= timedelta(days=1):
            raise ValueError("alert_grace: must be between 0 and 1d")
        if self.alert_grace >= self.max_lateness:
            raise ValueError("alert_grace: must be shorter than max_lateness")
        if self.alert_idle_timeout < timedelta(seconds=1):
            raise ValueError("alert_idle_timeout: must be at least 1s")
        if not timedelta(0) <= self.alert_lookback <= timedelta(days=14):
            raise ValueError("alert_lookback: must be between 0 and 14d")
        if self.alert_marker_ttl < timedelta(days=1):
            raise ValueError("alert_marker_ttl: must be at least 1d")
        if not timedelta(milliseconds=100) <= self.alert_webhook_timeout <= timedelta(minutes=5):
            raise ValueError("alert_webhook_timeout: must be between 100ms and 5m")
        if not timedelta(0) <= self.alert_webhook_backoff <= timedelta(minutes=5):
            raise ValueError("alert_webhook_backoff: must be between 0 and 5m")
        return self

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
        if not self.checkpoint_interval <= self.checkpoint_interval_backlog <= timedelta(minutes=1):
            raise ValueError(
                "checkpoint_interval_backlog: must be between checkpoint_interval and 1m"
            )
        if not timedelta(seconds=1) <= self.write_timeout <= timedelta(minutes=10):
            raise ValueError("write_timeout: must be between 1s and 10m")
        if not (
            timedelta(0) < self.lifecycle_new_for
            and timedelta(0) < self.lifecycle_at_risk_after < self.lifecycle_dormant_after
        ):
            raise ValueError(
                "lifecycle_new_for and lifecycle_at_risk_after must be positive and "
                "lifecycle_dormant_after longer than lifecycle_at_risk_after"
            )
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
    def kpi_cohorts_topic(self) -> str:
        return self.topic("kpi-cohorts")

    @property
    def kpi_alerts_topic(self) -> str:
        return self.topic("kpi-alerts")

    @property
    def lifecycle_topic(self) -> str:
        return self.topic("customer-lifecycle")

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
