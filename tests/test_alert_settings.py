"""Alert settings, and where the detector's hourly counts come from (configured or internal)."""

from __future__ import annotations

import os
import zlib
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.kpis.formulas import BASE_INDEX
from stream_app.kpis.specs import HOUR_US, INTERNAL_HOURLY, computed_specs, hourly_source
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings, SettingsError, WindowSpec, load_settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate
from stream_app.verify.reference import filter_records, reference_from_intake


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.churn_min_count == 5
    assert settings.churn_z_threshold == 3
    assert settings.churn_z_critical == 5
    assert settings.churn_baseline == timedelta(days=7)
    assert settings.churn_min_baseline == timedelta(days=1)
    assert settings.alert_rules_file is None
    assert settings.alert_webhooks == ()


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("KPI_CHURN_MIN_COUNT", "0", "KPI_CHURN_MIN_COUNT"),
        ("KPI_CHURN_Z_THRESHOLD", "-1", "KPI_CHURN_Z_THRESHOLD"),
        ("KPI_CHURN_Z_CRITICAL", "2", "churn_z_critical"),  # below the threshold (3)
        ("KPI_CHURN_BASELINE", "90m", "churn_baseline"),
        ("KPI_CHURN_BASELINE", "30d", "churn_baseline"),
        ("KPI_CHURN_MIN_BASELINE", "8d", "churn_min_baseline"),
        ("KPI_CHURN_STD_FLOOR", "0", "KPI_CHURN_STD_FLOOR"),
        ("KPI_ALERT_GRACE", "2d", "alert_grace"),
        ("KPI_ALERT_LOOKBACK", "30d", "alert_lookback"),
        ("KPI_ALERT_WEBHOOK_TIMEOUT", "10m", "alert_webhook_timeout"),
        ("KPI_ALERT_WEBHOOK_RETRIES", "-1", "KPI_ALERT_WEBHOOK_RETRIES"),
        ("KPI_ALERT_WEBHOOKS", "ftp://example.com/x", "KPI_ALERT_WEBHOOKS"),
        ("KPI_WINDOWS", '[{"name": "_mine", "size": "1h", "step": "1h"}]', "KPI_WINDOWS"),
    ],
)
def test_invalid_alert_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_webhook_urls_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "KPI_ALERT_WEBHOOKS", "https://hooks.example/a?token=t0p-s3cret, http://127.0.0.1:9/b"
    )
    settings = load_settings()
    assert [url.get_secret_value() for url in settings.alert_webhooks] == [
        "https://hooks.example/a?token=t0p-s3cret",
        "http://127.0.0.1:9/b",
    ]
    assert "t0p-s3cret" not in repr(settings)
    monkeypatch.setenv("KPI_ALERT_WEBHOOKS", "ftp://x?token=t0p-s3cret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "t0p-s3cret" not in str(info.value)


def test_the_configured_1h_window_serves_as_hourly_buckets() -> None:
    settings = Settings()
    source = hourly_source(settings)
    assert source.spec.name == "1h"
    assert source.stride == 12  # 5-minute steps
    assert [spec.name for spec in computed_specs(settings)] == ["1h", "24h", "7d", "30d"]


def test_without_a_usable_1h_window_an_internal_spec_is_computed() -> None:
    windows = (WindowSpec(name="24h", size=timedelta(hours=24), step=timedelta(hours=1)),)
    settings = Settings(windows=windows)
    source = hourly_source(settings)
    assert source.spec.name == INTERNAL_HOURLY
    assert source.internal
    assert [spec.name for spec in computed_specs(settings)] == ["24h", INTERNAL_HOURLY]
    # Churn detection off: nothing extra to compute.
    assert [
        s.name for s in computed_specs(settings.model_copy(update={"churn_enabled": False}))
    ] == ["24h"]


def test_a_1h_window_kept_too_briefly_is_not_used() -> None:
    windows = (WindowSpec(name="1h", size=timedelta(hours=1), step=timedelta(minutes=1)),)
    short = Settings(
        windows=windows,
        max_lateness=timedelta(hours=2),
        attribution_window=timedelta(hours=1),
        history_steps=500,  # 500 minutes: not a week of hours
    )
    assert hourly_source(short).internal
    assert not hourly_source(Settings(windows=windows)).internal


def test_internal_hourly_counts_are_exact() -> None:
    """The internal spec through the customer stage and segment store, against the reference."""
    windows = (WindowSpec(name="24h", size=timedelta(hours=24), step=timedelta(hours=1)),)
    settings = Settings(windows=windows)
    records = list(generate(SimulationConfig(seed=3, duration=timedelta(days=3), customers=1500)))
    states = [PartitionState(p, settings, lambda: datetime.now(UTC)) for p in range(3)]
    store = SegmentStore()
    by_partition: dict[int, list[RawMessage]] = {}
    for offset, record in enumerate(records):
        assert record.key is not None
        p = zlib.crc32(record.key) % 3
        by_partition.setdefault(p, []).append(
            RawMessage(record.event_type, record.event_type, p, offset, record.key, record.value)
        )
    for p, messages in by_partition.items():
        states[p].ingest(messages)
        for update in states[p].checkpoint().updates:
            store.apply_update(orjson.loads(update.to_bytes()), 0)
    reference = reference_from_intake(filter_records(records, settings), settings)
    assert reference.watermark is not None
    last = int(reference.watermark.timestamp() * 1_000_000) // HOUR_US
    checked = 0
    for segment in ("all", "region:EU", "region:APAC"):
        totals = store.aggregates[segment].totals[INTERNAL_HOURLY]
        timeline = reference.amounts[segment]["churned_customers"]
        for hour in range(last - 70, last + 1):
            expected = timeline.total_between((hour - 1) * HOUR_US, hour * HOUR_US)
            assert totals.value_at(hour)[BASE_INDEX["churned_customers"]] == expected
            checked += expected
    assert checked > 10
