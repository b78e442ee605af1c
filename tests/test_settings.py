"""Settings: contract defaults, environment overrides, and errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest

from stream_app.kafka import aiokafka_options, input_topics, public_topics
from stream_app.settings import Settings, SettingsError, format_duration, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_follow_the_contract() -> None:
    settings = load_settings()
    assert [(w.name, w.size, w.step) for w in settings.windows] == [
        ("1h", timedelta(hours=1), timedelta(minutes=5)),
        ("24h", timedelta(hours=24), timedelta(hours=1)),
        ("7d", timedelta(days=7), timedelta(hours=1)),
        ("30d", timedelta(days=30), timedelta(days=1)),
    ]
    assert settings.topic_prefix == "crm."
    assert settings.reporting_currency == "USD"
    assert settings.attribution_window == timedelta(days=7)
    assert settings.max_lateness == timedelta(days=31)
    assert settings.dedupe_horizon >= timedelta(days=7)
    assert settings.gross_margin == Decimal(1)
    assert input_topics(settings) == {
        "signup": "crm.signups",
        "purchase": "crm.purchases",
        "cancellation": "crm.cancellations",
        "campaign_click": "crm.campaign-clicks",
        "survey": "crm.surveys",
    }
    assert set(public_topics(settings)) >= {"crm.dead-letters", "crm.kpi-updates", "crm.kpi-alerts"}


def test_one_prefix_renames_every_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPI_TOPIC_PREFIX", "shop7.")
    settings = load_settings()
    assert all(name.startswith("shop7.") for name in public_topics(settings))
    assert settings.dead_letter_topic == "shop7.dead-letters"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("250ms", timedelta(milliseconds=250)),
        ("P7D", timedelta(days=7)),
        ("3600", timedelta(hours=1)),
    ],
)
def test_durations(monkeypatch: pytest.MonkeyPatch, text: str, expected: timedelta) -> None:
    monkeypatch.setenv("KPI_ATTRIBUTION_WINDOW", text)
    assert load_settings().attribution_window == expected


def test_windows_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "KPI_WINDOWS",
        '[{"name": "15m", "size": "15m", "step": "1m"},'
        ' {"name": "90d", "size": "90d", "step": "1d"}]',
    )
    windows = load_settings().windows
    assert [(w.name, w.size_ms, w.step_ms) for w in windows] == [
        ("15m", 900_000, 60_000),
        ("90d", 90 * 86_400_000, 86_400_000),
    ]
    assert [format_duration(w.size) for w in windows] == ["15m", "90d"]


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("KPI_TOPIC_PARTITIONS", "0", "KPI_TOPIC_PARTITIONS"),
        ("KPI_TOPIC_PARTITIONS", "many", "KPI_TOPIC_PARTITIONS"),
        ("KPI_REDIS_URL", "http://localhost:6379", "KPI_REDIS_URL"),
        ("KPI_KAFKA_BOOTSTRAP_SERVERS", "localhost", "KPI_KAFKA_BOOTSTRAP_SERVERS"),
        ("KPI_REPORTING_CURRENCY", "usd", "KPI_REPORTING_CURRENCY"),
        ("KPI_GROSS_MARGIN", "1.5", "KPI_GROSS_MARGIN"),
        ("KPI_WINDOWS", '[{"name": "x", "size": "1h", "step": "7m"}]', "KPI_WINDOWS"),
        ("KPI_WINDOWS", "[]", "KPI_WINDOWS"),
        ("KPI_WINDOWS", "not json", "KPI_WINDOWS"),
        ("KPI_DEDUPE_HORIZON", "1d", "dedupe_horizon"),
        ("KPI_PUBLISH_INTERVAL", "10ms", "publish_interval"),
        ("KPI_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "kafka_sasl_username"),
        ("KPI_STORE", "s3://", "KPI_STORE"),
        ("KPI_HISTORY_STEPS", "10", "KPI_HISTORY_STEPS"),
    ],
)
def test_invalid_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_secrets_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPI_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KPI_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KPI_KAFKA_SASL_PASSWORD", "hunter2-very-secret")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert aiokafka_options(settings)["sasl_plain_password"] == "hunter2-very-secret"


def test_dotenv_file_is_read(tmp_path: os.PathLike[str]) -> None:
    with open(os.path.join(tmp_path, ".env"), "w") as handle:
        handle.write("KPI_TOPIC_PREFIX=fromdotenv.\n")
    assert Settings().topic_prefix == "fromdotenv."


def test_cli_reports_bad_settings_and_exits_2(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env["KPI_TOPIC_PARTITIONS"] = "-3"
    done = subprocess.run(
        [sys.executable, "-m", "stream_app", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "KPI_TOPIC_PARTITIONS" in done.stderr


def test_cli_help_lists_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream_app", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for command in ("worker", "dev", "topics"):
        assert command in done.stdout


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [
        f"KPI_{name.upper()}"
        for name in Settings.model_fields
        if f"`KPI_{name.upper()}`" not in readme
    ]
    assert not missing, f"README.md does not document {missing}"
