"""Redis data the API must not trust (issue 23, items 1 to 3): out-of-range times, messages
that used to end live updates, malformed keys, fields that are not their key's, huge values.

Everything goes over HTTP to the standalone dashboard app in this process, against the
real Redis of ``tests/test_api.py`` (its database and helpers); nothing is mocked. Each bad
record must be left out of the answer, counted in ``kpi_dashboard_malformed_total`` and
logged at most once a minute per kind, and never turn a response into a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from aiohttp import web
from prometheus_client import CollectorRegistry

from stream_app.dashboard.api import install
from stream_app.dashboard.health import DashboardHealth
from stream_app.dashboard.live import LiveHub
from stream_app.dashboard.reader import KpiReader
from stream_app.dashboard.server import build_api, redis_client
from stream_app.devstack import free_port
from tests.kpi_data import alert, rfc3339, snapshot, write_alert, write_history, write_snapshot
from tests.test_api import (
    END,
    HOUR,
    _next_event,
    _samples,
    db_url,
    get,
    rdb,
    serve,
    settings_for,
)

__all__ = ["db_url", "rdb"]  # fixtures shared with tests/test_api.py

pytestmark = pytest.mark.integration

BEFORE_YEAR_1 = "0001-01-01T00:00:00+01:00"  # parses, but is before year 1 in UTC
AFTER_9999 = "9999-12-31T23:59:59-01:00"  # parses, but is after year 9999 in UTC
MALFORMED = "kpi_dashboard_malformed_total"
LOGGED = "malformed"


async def _malformed(base: str) -> dict[str, float]:
    _, body, _ = await get(f"{base}/metrics")
    return {
        labels.removeprefix('{record="').removesuffix('"}'): value
        for labels, value in _samples(body.decode(), MALFORMED).items()
    }


def _log_lines(caplog: pytest.LogCaptureFixture, record: str) -> int:
    return sum(f"{LOGGED} {record}(s)" in r.getMessage() for r in caplog.records)


async def test_times_without_a_utc_form_are_left_out_and_counted_never_a_500(
    db_url: str, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    current = snapshot("1h", "region:NA", END, size=HOUR)
    write_snapshot(rdb, current)
    rdb.hset("kpi:1h:region:NA", "window_end", orjson.dumps(BEFORE_YEAR_1))
    previous = snapshot("1h", "region:NA", END - HOUR, size=HOUR)
    write_history(rdb, previous)
    write_history(
        rdb, snapshot("1h", "region:NA", END - 2 * HOUR, size=HOUR, window_end=AFTER_9999)
    )
    good = alert(1)
    write_alert(rdb, good, publish=False)
    write_alert(rdb, alert(2) | {"fired_at": BEFORE_YEAR_1}, publish=False)  # the strict model
    write_alert(rdb, {"summary": "x", "fired_at": AFTER_9999}, publish=False)  # the lenient one
    caplog.set_level(logging.WARNING)
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/snapshot?window=1h&segment=region:NA")
        assert status == 200, body
        without_end = {k: v for k, v in current.items() if k != "window_end"}
        assert body == without_end
        status, body, _ = await get(f"{base}/api/v1/snapshots?segment=region:NA&windows=1h")
        assert status == 200, body
        # Without its window end, the step before it cannot be found.
        assert body["windows"]["1h"]["current"] == without_end
        assert body["windows"]["1h"]["previous"] is None
        status, body, _ = await get(f"{base}/api/v1/history?window=1h&segment=region:NA")
        assert status == 200, body
        assert body["points"] == [previous, current]  # the step of year 9999 is left out
        for _ in range(3):  # each read counts again, but the log has one line a minute
            status, body, _ = await get(f"{base}/api/v1/alerts")
            assert status == 200, body
            assert body["alerts"] == [good]
        counts = await _malformed(base)
    assert counts["field"] == 2  # window_end of the snapshot, read by both endpoints
    assert counts["history"] == 1
    assert counts["alert"] == 6
    assert _log_lines(caplog, "alert") == 1


async def test_live_updates_survive_any_message_and_count_it(
    db_url: str, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    bad_time = snapshot("1h", "region:NA", END, size=HOUR, window_end=AFTER_9999)
    good = snapshot("1h", "region:NA", END, size=HOUR, seed=5)
    caplog.set_level(logging.WARNING)
    async with (
        serve(settings_for(db_url)) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/stream?segment=region:NA") as response,
    ):
        await response.content.readuntil(b"\n\n")  # retry:
        assert (await _next_event(response))[0] == "hello"
        rdb.publish("kpi-alerts", orjson.dumps({"summary": "x", "fired_at": BEFORE_YEAR_1}))
        rdb.publish("kpi-alerts", orjson.dumps(alert(1) | {"fired_at": AFTER_9999}))
        rdb.publish("kpi-updates:1h:region:NA", orjson.dumps(bad_time))
        rdb.publish("kpi-updates:1h:region:NA", orjson.dumps(good | {"segment": "region:EU"}))
        rdb.publish("kpi-updates:1h:region:NA", b"[" * 100_000)
        rdb.publish("kpi-updates:1h:region:NA", orjson.dumps(good))
        rdb.publish("kpi-alerts", orjson.dumps(alert(2, segment="region:NA")))
        seen: list[tuple[str, Any]] = []
        while len(seen) < 3:
            event, data = await _next_event(response)
            if event not in ("ping", "status"):
                seen.append((event, data))
        status, health, _ = await get(f"{base}/health")
        counts = await _malformed(base)
    assert seen == [
        ("snapshot", {k: v for k, v in bad_time.items() if k != "window_end"}),
        ("snapshot", good),
        ("alert", alert(2, segment="region:NA")),
    ]
    assert status == 200, health
    assert health["checks"]["live"] == {"ok": True, "clients": 1, "redis": "up"}
    assert counts["message"] == 4
    assert counts["field"] == 1
    assert _log_lines(caplog, "message") == 1


async def test_health_says_when_live_updates_are_not_running(db_url: str) -> None:
    def connect() -> Any:
        raise RuntimeError("a fault the hub did not foresee")

    settings = settings_for(db_url)
    reader = KpiReader(redis_client(settings), ["1h"])
    hub = LiveHub(connect, first_backoff_s=0.05, max_backoff_s=0.05)
    health = DashboardHealth(reader, hub)
    api = build_api(
        settings,
        host="127.0.0.1",
        reader=reader,
        hub=hub,
        health=health,
        registry=CollectorRegistry(),
    )
    app = web.Application()
    install(app, api)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        status, body, _ = await get(f"{base}/health")
        assert (status, body["checks"]["live"]) == (
            200,
            {"ok": True, "clients": 0, "redis": "connecting"},
        )
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/api/v1/stream") as stream,
        ):
            await stream.content.readuntil(b"\n\n")  # retry:, once hello gave up waiting
            status, body, _ = await get(f"{base}/health")
    finally:
        await runner.cleanup()
    assert status == 503
    assert body["problems"] == ["live"]
    assert body["checks"]["live"]["error"] == "live updates failing (RuntimeError)"


async def test_keys_and_fields_that_do_not_fit_the_snapshot_model_are_left_out(
    db_url: str, rdb: redis.Redis
) -> None:
    write_snapshot(rdb, snapshot("1h", "all", END, size=HOUR))
    write_snapshot(rdb, snapshot("1h", "region:EU", END, size=HOUR))
    for key in ("kpi:1h:bogus", "kpi:1h:region:<img src=x onerror=alert(1)>", "kpi:bogus"):
        rdb.hset(key, "window", '"1h"')
    # region:NA's hash holds region:EU's snapshot: not what its key says.
    theirs = snapshot("1h", "region:EU", END, size=HOUR, seed=4)
    rdb.hset("kpi:1h:region:NA", mapping={k: orjson.dumps(v) for k, v in theirs.items()})
    huge = '"' + "9" * 5_000_000 + '.00"'
    rdb.hset("kpi:1h:all", "revenue", huge)
    write_history(rdb, snapshot("1h", "all", END - HOUR, size=HOUR, revenue=huge[1:-1]))
    write_alert(rdb, alert(1) | {"summary": "x" * 5_000_000}, publish=False)
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/segments")
        assert status == 200
        assert body["segments"] == ["all", "region:EU", "region:NA"]
        status, body, _ = await get(f"{base}/api/v1/snapshot?window=1h&segment=region:NA")
        assert status == 404, body
        status, body, _ = await get(f"{base}/api/v1/snapshot?window=1h&segment=all")
        assert status == 200
        assert "revenue" not in body
        assert body["orders"] == snapshot("1h", "all", END, size=HOUR)["orders"]
        status, body, _ = await get(f"{base}/api/v1/history?window=1h&segment=all")
        assert [p["window_end"] for p in body["points"]] == [rfc3339(END)]
        status, body, _ = await get(f"{base}/api/v1/alerts")
        assert (status, body["alerts"]) == (200, [])
        counts = await _malformed(base)
    assert counts == {
        "field": 1,  # the revenue of the snapshot (the history entry's is over the record cap)
        "snapshot": 1,
        "history": 1,
        "alert": 1,
        "message": 0,
        "key": 3,
        "at_risk": 0,
    }
