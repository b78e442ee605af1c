"""``kpi verify`` against a real Redis: a faithful publication passes, each corruption is named."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from stream_app.eventlog import LogRecord
from stream_app.kpis.cohorts import cohort_field
from stream_app.redis_keys import cohorts_key
from stream_app.settings import Settings
from stream_app.verify import cli
from stream_app.verify.compare import (
    ABSENT,
    KEY_FIELD,
    PRESENT,
    SCORE_FIELD,
    Mismatch,
    Report,
    verify_redis,
)
from stream_app.verify.reference import (
    Reference,
    Window,
    filter_records,
    format_timestamp,
    reference_from_intake,
)
from tests.test_verify_reference import (
    HOUR,
    MINUTE,
    cancel,
    click,
    make_settings,
    purchase,
    signup,
    survey,
)

pytestmark = pytest.mark.integration

HISTORY_STEPS = 4  # past windows written per key, the current one included
UPDATED_AT = datetime(2026, 11, 5, tzinfo=UTC)

# Customers in two regions and a campaign, from 1 November (T0 - 14 h) to the watermark at
# 2026-11-02T21:45:00Z.
EVENTS = [
    signup("ben", "e1", -14 * HOUR, "eu"),
    signup("dan", "e2", -12 * HOUR, "US"),
    signup("ana", "e3", 8 * HOUR, "EU", campaign="spring"),
    click("ben", "e4", 9 * HOUR, cost="0.80"),
    purchase("ben", "e5", 9 * HOUR + 30 * MINUTE, "29.99"),
    purchase("dan", "e6", 10 * HOUR, "50.00"),
    purchase("ana", "e7", 12 * HOUR, "15.00"),
    cancel("dan", "e8", 20 * HOUR),
    survey("ana", "e9", 21 * HOUR + 45 * MINUTE, "nps", 10),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def reference(settings: Settings) -> Reference:
    return reference_from_intake(filter_records(EVENTS, settings), settings)


def publish(client: redis.Redis, reference: Reference, settings: Settings) -> None:
    """Write what a correct engine would: current hashes and a few history steps per key."""
    specs = {spec.name: spec for spec in settings.windows}
    current = {window.name: window for window in reference.current_windows()}
    for name, segment in reference.expected_keys():
        window = current[name]
        snapshot = reference.expected_snapshot(window, segment, UPDATED_AT)
        client.hset(
            f"kpi:{name}:{segment}",
            mapping={field: json.dumps(value) for field, value in snapshot.items()},
        )
        step = specs[name].step_ms
        for back in range(HISTORY_STEPS):
            past = Window(name, window.start_ms - back * step, window.end_ms - back * step)
            member = json.dumps(reference.expected_snapshot(past, segment, UPDATED_AT))
            client.zadd(f"kpi-history:{name}:{segment}", {member: past.end_ms / 1000})
    for (grain, segment), cohorts in reference.cohorts.items():
        client.hset(
            cohorts_key(grain, segment),
            mapping={cohort_field(start): c.model_dump_json() for start, c in cohorts.items()},
        )


def check(client: redis.Redis, reference: Reference, settings: Settings, **kw: Any) -> Report:
    return verify_redis(client, reference, settings, **kw)


def history_members(client: redis.Redis, key: str) -> list[tuple[dict[str, Any], float]]:
    return [
        (json.loads(member), score) for member, score in client.zrange(key, 0, -1, withscores=True)
    ]


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ---------------------------------------------------------------------------------------------


def test_faithful_publication_has_no_mismatch(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    report = check(client, reference, settings)
    assert report.mismatches == []
    keys = len(reference.expected_keys())
    assert keys == 4 * 4  # 4 windows x all, region:EU, region:US, campaign:spring
    assert report.snapshots_checked == keys
    assert report.history_checked == keys * HISTORY_STEPS


def test_cohorts_are_checked_field_by_field(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    assert check(client, reference, settings).cohorts_checked == 10
    key = cohorts_key("week", "region:EU")
    (name, value), *_ = client.hgetall(key).items()
    cohort = json.loads(value)
    cohort["periods"][0]["active"] += 1
    client.hset(key, name, json.dumps(cohort))
    client.hset(cohorts_key("month", "region:XX"), "2026-01-01T00:00:00Z", "{}")
    client.delete(cohorts_key("week", "campaign:spring"))
    found = {
        (m.window, m.segment, m.field.split(" ")[1])
        for m in check(client, reference, settings).mismatches
    }
    assert found == {
        ("cohort:week", "region:EU", "periods[0].active"),
        ("cohort:month", "region:XX", "(cohort)"),
        ("cohort:week", "campaign:spring", "(cohort)"),
    }


def test_corrupted_field_is_reported(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    client.hset("kpi:24h:all", "revenue", json.dumps("94.98"))
    assert check(client, reference, settings).mismatches == [
        Mismatch(
            "24h", "all", stamp("2026-11-02T22:00:00Z"), "revenue", "94.99", "94.98", "current"
        )
    ]


def test_corrupted_history_member_is_reported(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    key = "kpi-history:1h:region:EU"
    snapshot, score = history_members(client, key)[0]
    client.zrem(key, json.dumps(snapshot))
    client.zadd(key, {json.dumps({**snapshot, "orders": snapshot["orders"] + 1}): score})
    assert check(client, reference, settings).mismatches == [
        Mismatch(
            "1h",
            "region:EU",
            stamp(snapshot["window_end"]),
            "orders",
            snapshot["orders"],
            snapshot["orders"] + 1,
            "history",
        )
    ]


def test_deleted_keys_are_reported(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    client.delete("kpi:1h:region:US", "kpi-history:30d:campaign:spring")
    assert check(client, reference, settings).mismatches == [
        Mismatch(
            "1h", "region:US", stamp("2026-11-02T21:50:00Z"), KEY_FIELD, PRESENT, ABSENT, "current"
        ),
        Mismatch(
            "30d",
            "campaign:spring",
            stamp("2026-11-03T00:00:00Z"),
            KEY_FIELD,
            PRESENT,
            ABSENT,
            "history",
        ),
    ]


def test_unexpected_keys_are_reported(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    client.hset("kpi:24h:region:XX", "orders", "0")
    client.hset("kpi:2h:all", "orders", "0")
    assert check(client, reference, settings).mismatches == [
        Mismatch("24h", "region:XX", None, KEY_FIELD, ABSENT, PRESENT, "current"),
        Mismatch("2h", "all", None, KEY_FIELD, ABSENT, PRESENT, "current"),
    ]


def test_shifted_current_window_is_reported(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    # One step later; no event lies in either hour that changes, so only the bounds differ.
    client.hset(
        "kpi:24h:all",
        mapping={
            "window_start": json.dumps("2026-11-01T23:00:00Z"),
            "window_end": json.dumps("2026-11-02T23:00:00Z"),
        },
    )
    shifted_end = stamp("2026-11-02T23:00:00Z")
    assert check(client, reference, settings).mismatches == [
        Mismatch(
            "24h",
            "all",
            shifted_end,
            "window_end",
            stamp("2026-11-02T22:00:00Z"),
            shifted_end,
            "current",
        ),
        Mismatch(
            "24h",
            "all",
            shifted_end,
            "window_start",
            stamp("2026-11-01T22:00:00Z"),
            stamp("2026-11-01T23:00:00Z"),
            "current",
        ),
    ]


def test_shifted_history_window_is_compared_with_its_own_window(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    key = "kpi-history:24h:all"
    snapshot, score = history_members(client, key)[-1]  # the current window [22:00, 22:00)
    client.zrem(key, json.dumps(snapshot))
    # Claim the values belong to the window one hour earlier, which misses ana's NPS answer.
    moved = {
        **snapshot,
        "window_start": "2026-11-01T21:00:00Z",
        "window_end": "2026-11-02T21:00:00Z",
    }
    client.zadd(key, {json.dumps(moved): score})
    end = stamp("2026-11-02T21:00:00Z")
    mismatches = check(client, reference, settings).mismatches
    assert mismatches == [
        Mismatch("24h", "all", end, "nps_responses", 0, 1, "history"),
        Mismatch("24h", "all", end, "promoters", 0, 1, "history"),
        Mismatch("24h", "all", end, "nps", None, 100.0, "history"),
        Mismatch("24h", "all", end, SCORE_FIELD, end.timestamp(), score, "history"),
        Mismatch("24h", "all", end, "(member)", "1 per window_end", 2, "history"),
    ]


def test_values_must_keep_their_json_type(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    client.hset(
        "kpi:7d:all",
        mapping={
            "orders": json.dumps("3"),  # a string, not a count
            "revenue": json.dumps(94.99),  # a number, not a money string
            "aov": json.dumps(None),
            "churn_rate": "0.5x",  # not JSON at all
        },
    )
    end = stamp("2026-11-02T22:00:00Z")
    assert check(client, reference, settings).mismatches == [
        Mismatch("7d", "all", end, "churn_rate", "a JSON value", "0.5x", "current"),
        Mismatch("7d", "all", end, "orders", 3, "3", "current"),
        Mismatch("7d", "all", end, "revenue", "94.99", 94.99, "current"),
        Mismatch("7d", "all", end, "aov", "31.66", None, "current"),
    ]


def test_ratios_compare_within_relative_tolerance(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    # In 24h: S = 2 (ben, dan), E = 2 (ben, ana), N = 1 (ana): retention (2 - 1) / 2.
    client.hset("kpi:24h:all", "retention_rate", json.dumps(0.5 * (1 + 1e-12)))
    assert check(client, reference, settings).mismatches == []
    client.hset("kpi:24h:all", "retention_rate", json.dumps(0.5 * (1 + 1e-8)))
    [mismatch] = check(client, reference, settings).mismatches
    assert (mismatch.field, mismatch.expected) == ("retention_rate", 0.5)


def test_missing_field_and_wrong_watermark(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    client.hdel("kpi:30d:campaign:spring", "roas")
    client.hset("kpi:30d:campaign:spring", "watermark", json.dumps("2026-11-02T21:00:00Z"))
    end = stamp("2026-11-03T00:00:00Z")
    assert check(client, reference, settings).mismatches == [
        Mismatch("30d", "campaign:spring", end, "roas", PRESENT, ABSENT, "current"),
        Mismatch(
            "30d",
            "campaign:spring",
            end,
            "watermark",
            stamp("2026-11-02T21:45:00Z"),
            stamp("2026-11-02T21:00:00Z"),
            "current",
        ),
    ]


def test_history_limit_checks_only_the_newest_entries(
    client: redis.Redis, reference: Reference, settings: Settings
) -> None:
    publish(client, reference, settings)
    key = "kpi-history:1h:all"
    oldest, score = history_members(client, key)[0]
    client.zrem(key, json.dumps(oldest))
    client.zadd(key, {json.dumps({**oldest, "clicks": 99}): score})
    newest = check(client, reference, settings, history=HISTORY_STEPS - 1)
    assert newest.mismatches == []
    assert newest.history_checked == len(reference.expected_keys()) * (HISTORY_STEPS - 1)
    assert [m.field for m in check(client, reference, settings).mismatches] == ["clicks"]


# ---------------------------------------------------------------------------------------------
# The command


def _write_log(path: Path, records: list[LogRecord]) -> Path:
    path.write_bytes(b"".join(record.to_line() for record in records))
    return path


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kpi")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["verify", *argv])


def test_run_exit_codes(
    client: redis.Redis,
    reference: Reference,
    settings: Settings,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = _write_log(tmp_path / "events.jsonl", [*EVENTS, EVENTS[4]])  # one duplicate
    publish(client, reference, settings)
    args = _args(str(log), "--redis-url", redis_url)
    assert args.func is cli.run
    assert cli.run(settings, args) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "duplicates" in out
    assert "Redis matches the reference." in out

    client.hset("kpi:1h:all", "clicks", "7")
    assert cli.run(settings, _args(str(log), "--redis-url", redis_url, "--history", "0")) == 1
    out = capsys.readouterr().out
    assert "1 mismatch(es)" in out
    assert "clicks" in out

    client.flushdb()
    assert cli.run(settings, _args(str(log), "--redis-url", redis_url, "--max-rows", "1")) == 1
    # 16 hashes, 16 histories and 10 cohorts (2 grains x all, region:EU, region:US, and
    # campaign:spring) missing
    assert "and 41 more" in capsys.readouterr().out


def test_run_uses_settings_redis_url(
    client: redis.Redis, reference: Reference, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url=redis_url)
    publish(client, reference, settings)
    log = _write_log(tmp_path / "events.jsonl", EVENTS)
    assert cli.run(settings, _args(str(log))) == cli.EXIT_OK


def test_run_reports_unreadable_inputs(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.jsonl"
    assert cli.run(settings, _args(str(missing))) == cli.EXIT_ERROR
    assert "cannot read the event log" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"event_type": "nonsense"}\n')
    assert cli.run(settings, _args(str(broken))) == cli.EXIT_ERROR
    log = _write_log(tmp_path / "events.jsonl", EVENTS)
    dead = "redis://user:s3cret@127.0.0.1:1/0"
    assert cli.run(settings, _args(str(log), "--redis-url", dead)) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "cannot read Redis at redis://user:***@127.0.0.1:1/0" in err
    assert "s3cret" not in err


def test_empty_log_expects_no_keys(
    client: redis.Redis, settings: Settings, tmp_path: Path, redis_url: str
) -> None:
    log = _write_log(tmp_path / "events.jsonl", [])
    assert cli.run(settings, _args(str(log), "--redis-url", redis_url)) == cli.EXIT_OK
    client.hset("kpi:1h:all", "orders", "0")
    assert cli.run(settings, _args(str(log), "--redis-url", redis_url)) == cli.EXIT_MISMATCH


def test_format_of_published_timestamps() -> None:
    assert format_timestamp(datetime(2026, 11, 2, 9, tzinfo=UTC)) == "2026-11-02T09:00:00Z"
    assert (
        format_timestamp(datetime(2026, 11, 2, 9, tzinfo=UTC) + timedelta(microseconds=5))
        == "2026-11-02T09:00:00.000005Z"
    )
