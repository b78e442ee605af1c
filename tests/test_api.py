"""The HTTP API, the page's files, /health and /metrics: in-process and on a real worker.

Part 1 serves the standalone dashboard app (``kpi dashboard``'s aiohttp application) on a
free port in this process, against a real Redis (a database of its own, 14: other tests
flush 13 and use 15). Part 2 runs a real worker on a private broker and a private
redis-server, with a token and secrets set, and takes Redis and then the broker away.
Nothing is mocked: every request goes over HTTP, every read to Redis.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import hashlib
import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from aiohttp import web
from aiokafka import AIOKafkaProducer

from schemas import CAMPAIGN_KPIS, SEGMENT_KPIS
from stream_app.dashboard.api import routes
from stream_app.dashboard.httpserver import ServerRunner
from stream_app.dashboard.live import QUEUE_SIZE, Subscriber
from stream_app.dashboard.server import standalone_app
from stream_app.devstack import DevStack, free_port
from stream_app.settings import Settings
from tests.conftest import ROOT, StackEnv
from tests.http_raw import long_request_line, raw_exchange
from tests.kpi_data import alert, rfc3339, snapshot, write_alert, write_history, write_snapshot

pytestmark = pytest.mark.integration

DB = 14
TOKEN = "test-token-0123456789abcdef"
HOUR = timedelta(hours=1)
END = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
STATIC = ROOT / "stream_app" / "dashboard" / "static"


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def db_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture
def rdb(db_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(db_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def settings_for(url: str, **overrides: Any) -> Settings:
    return Settings(_env_file=None, redis_url=url, **overrides)  # type: ignore[call-arg]


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """The standalone dashboard app, on a free port of 127.0.0.1; yields its base URL."""
    app = standalone_app(settings, host="127.0.0.1", segments_ttl_s=0)
    runner = ServerRunner(app, settings, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers or {}) as response,
    ):
        body = await response.read()
        parsed: Any = body
        if response.content_type == "application/json":
            parsed = json.loads(body)
        return response.status, parsed, response.headers


SEEDED: dict[str, dict[str, Any]] = {}


@pytest.fixture
def seeded(rdb: redis.Redis) -> dict[str, dict[str, Any]]:
    """Snapshots of all, region:EU and a campaign, three past steps, four alerts."""
    SEEDED.clear()
    for segment, seed in (("all", 0), ("region:EU", 7)):
        for window, size, step in (("1h", HOUR, timedelta(minutes=5)), ("24h", 24 * HOUR, HOUR)):
            for back in (3, 2, 1):
                write_history(
                    rdb,
                    snapshot(window, segment, END - back * step, size=size, seed=seed - back),
                )
            current = snapshot(window, segment, END, size=size, seed=seed)
            write_snapshot(rdb, current)
            SEEDED[f"{window}:{segment}"] = current
    campaign = snapshot("1h", "campaign:spring-sale", END, size=HOUR, seed=3)
    write_snapshot(rdb, campaign)
    SEEDED["1h:campaign:spring-sale"] = campaign
    for n in range(3):
        write_alert(rdb, alert(n), publish=False)
    rdb.xadd("kpi-alerts", {"data": b"not an alert"})
    write_alert(rdb, alert(3, status="resolved"), publish=False)
    return SEEDED


# ------------------------------------------------------------------------- the API


async def test_meta_lists_the_windows_and_every_kpi(db_url: str, rdb: redis.Redis) -> None:
    async with serve(settings_for(db_url)) as base:
        status, body, headers = await get(f"{base}/api/v1/meta")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert [(w["name"], w["size_s"], w["step_s"]) for w in body["windows"]] == [
        ("1h", 3600, 300),
        ("24h", 86400, 3600),
        ("7d", 604800, 3600),
        ("30d", 2592000, 86400),
    ]
    names = [kpi["name"] for kpi in body["kpis"]]
    assert names == list(SEGMENT_KPIS)
    by_name = {kpi["name"]: kpi for kpi in body["kpis"]}
    assert by_name["churn_rate"]["kind"] == "percent"
    assert by_name["churn_rate"]["worse_when_up"] is True
    assert by_name["revenue"]["kind"] == "money"
    assert by_name["clicks"]["segment_kinds"] == ["segment", "campaign"]
    assert by_name["nps"]["segment_kinds"] == ["segment"]
    assert set(body["headline"]["campaign"]) <= set(CAMPAIGN_KPIS)
    assert set(body["headline"]["segment"]) <= set(SEGMENT_KPIS)
    assert body["currency"] == "USD"


async def test_segments_are_those_with_snapshots(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    rdb.set("kpi:1h:not-a-hash", "x")  # only hashes are snapshots
    rdb.hset("kpi:2h:region:XX", "window", '"2h"')  # not a configured window
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/segments")
        assert status == 200
        assert body == {
            "segments": ["all", "region:EU", "campaign:spring-sale"],
            "regions": ["region:EU"],
            "campaigns": ["campaign:spring-sale"],
            "cohorts": {"week": [], "month": []},  # tests/test_api_cohorts.py has some
        }
        write_snapshot(rdb, snapshot("24h", "region:NA", END, size=24 * HOUR))
        _, body, _ = await get(f"{base}/api/v1/segments")
    assert body["regions"] == ["region:EU", "region:NA"]


async def test_snapshot_is_the_hash_as_published(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    async with serve(settings_for(db_url)) as base:
        for key, expected in seeded.items():
            window, segment = key.split(":", 1)
            status, body, _ = await get(f"{base}/api/v1/snapshot?window={window}&segment={segment}")
            assert status == 200, body
            assert body == expected
        # A field that is not what the contract says is left out; unknown fields too.
        rdb.hset("kpi:1h:all", mapping={"orders": '"many"', "future_kpi": "1", "nps": "{"})
        _, body, _ = await get(f"{base}/api/v1/snapshot?window=1h&segment=all")
    assert "orders" not in body
    assert "future_kpi" not in body
    assert "nps" not in body
    assert body["revenue"] == seeded["1h:all"]["revenue"]


async def test_snapshots_pair_each_window_with_its_previous_step(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/snapshots?segment=region:EU")
        assert status == 200
        assert body["segment"] == "region:EU"
        assert list(body["windows"]) == ["1h", "24h", "7d", "30d"]
        one_hour = body["windows"]["1h"]
        assert one_hour["current"] == seeded["1h:region:EU"]
        # The step before: window end 5 minutes earlier, seeded with seed - 1.
        assert one_hour["previous"]["window_end"] == rfc3339(END - timedelta(minutes=5))
        assert one_hour["previous"]["orders"] == seeded["1h:region:EU"]["orders"] - 1
        assert body["windows"]["24h"]["previous"]["window_end"] == rfc3339(END - HOUR)
        assert body["windows"]["7d"] == {"current": None, "previous": None, "positions": {}}
        status, body, _ = await get(f"{base}/api/v1/snapshots?segment=all&windows=24h,1h")
        assert list(body["windows"]) == ["24h", "1h"]


async def test_history_is_oldest_first_and_filtered(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    step = timedelta(minutes=5)
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/history?window=1h&segment=all")
        assert status == 200
        ends = [point["window_end"] for point in body["points"]]
        assert ends == [rfc3339(END - n * step) for n in (3, 2, 1, 0)]
        assert body["count"] == 4
        assert body["points"][-1] == seeded["1h:all"]

        _, body, _ = await get(f"{base}/api/v1/history?window=1h&segment=all&limit=2")
        assert [p["window_end"] for p in body["points"]] == ends[-2:]

        since = int((END - 2 * step).timestamp())
        until = rfc3339(END - step)
        _, body, _ = await get(
            f"{base}/api/v1/history?window=1h&segment=all&since={since}&until={until}"
        )
        assert [p["window_end"] for p in body["points"]] == ends[1:3]

        _, body, _ = await get(
            f"{base}/api/v1/history?window=1h&segment=all&fields=revenue,churn_rate"
        )
        assert set(body["points"][0]) == {"window_start", "window_end", "revenue", "churn_rate"}

        # A segment with a snapshot but no history of that window: 200 and no points.
        status, body, _ = await get(f"{base}/api/v1/history?window=7d&segment=all")
        assert (status, body["points"]) == (200, [])


async def test_alerts_are_newest_first_and_garbage_is_skipped(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/alerts")
        assert status == 200
        assert [a["summary"] for a in body["alerts"]] == [
            f"Churn spike #{n} in region:EU" for n in (3, 2, 1, 0)
        ]
        assert body["alerts"][0] == alert(3, status="resolved")
        _, body, _ = await get(f"{base}/api/v1/alerts?limit=2")
    assert body["count"] == 1  # the newest two entries: one alert and the garbage


async def _next_event(response: aiohttp.ClientResponse, timeout_s: float = 5.0) -> tuple[str, Any]:
    raw = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout_s)
    event, data = "message", None
    for line in raw.decode().splitlines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))
    return event, data


async def test_stream_sends_the_segment_snapshots_and_every_alert(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    async with (
        serve(settings_for(db_url)) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/stream?segment=region:EU") as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert (await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)).startswith(
            b"retry: "
        )
        event, data = await _next_event(response)
        assert event == "hello"
        assert data["segment"] == "region:EU"
        assert data["redis"] == "up"  # subscribed before hello: nothing below is missed
        other = snapshot("1h", "region:NA", END, size=HOUR, seed=1)
        mine = snapshot("1h", "region:EU", END, size=HOUR, seed=99)
        write_snapshot(rdb, other)  # another segment: not for this client
        write_snapshot(rdb, mine)
        write_alert(rdb, alert(9, segment="region:NA"))
        seen: list[tuple[str, Any]] = []
        while len(seen) < 2:
            event, data = await _next_event(response)
            if event not in ("ping", "status"):
                seen.append((event, data))
    assert seen == [("snapshot", mine), ("alert", alert(9, segment="region:NA"))]
    async with serve(settings_for(db_url)) as base:
        status, _body, headers = await asyncio.wait_for(
            get(f"{base}/api/v1/stream", method="HEAD"), 5
        )
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"


async def test_a_client_that_falls_behind_is_told_to_reload() -> None:
    subscriber = Subscriber("all")
    for n in range(QUEUE_SIZE):
        subscriber.offer(("snapshot", b"%d" % n))
    subscriber.offer(("snapshot", b"one too many"))
    assert subscriber.queue.qsize() == 1
    assert subscriber.queue.get_nowait() == ("reset", b'{"reason":"client too slow"}')
    assert subscriber.resets == 1


# Hostile and malformed input: every one is answered with 400 (or 404 for a well-formed
# segment without data), JSON with a message, never a 500.
BAD_REQUESTS = [
    ("/api/v1/snapshot", 400),
    ("/api/v1/snapshot?segment=all", 400),
    ("/api/v1/snapshot?window=1h", 400),
    ("/api/v1/snapshot?window=2h&segment=all", 400),
    ("/api/v1/snapshot?window=../1h&segment=all", 400),
    ("/api/v1/snapshot?window=1h&window=24h&segment=all", 400),
    ("/api/v1/snapshot?window=1h&segment=" + "x" * 5000, 400),
    ("/api/v1/snapshot?window=1h&segment=region:" + "A" * 300, 400),
    ("/api/v1/snapshot?window=1h&segment=region:", 400),
    ("/api/v1/snapshot?window=1h&segment=region:E%20U", 400),
    ("/api/v1/snapshot?window=1h&segment=region:../../etc/passwd", 400),
    ("/api/v1/snapshot?window=1h&segment=../../etc/passwd", 400),
    ("/api/v1/snapshot?window=1h&segment=campaign:a%00b", 400),
    ("/api/v1/snapshot?window=1h&segment=campaign:a%0Ab", 400),
    ("/api/v1/snapshot?window=1h&segment=campaign:", 400),
    ("/api/v1/snapshot?window=1h&segment=all%0A", 400),
    ("/api/v1/snapshot?window=1h&segment=%D1%80%D0%B5%D0%B3%D0%B8%D0%BE%D0%BD:EU", 400),
    ("/api/v1/snapshot?window=1h&segment=campaign:%ED%A0%80", 404),  # decoded as U+FFFD
    ("/api/v1/snapshot?window=1h&segment=region:XX", 404),
    ("/api/v1/snapshot?window=1h&segment=campaign:../x", 404),
    (
        "/api/v1/snapshot?window=1h&segment=campaign:%E6%98%A5%E3%81%AE%E3%82%BB%E3%83%BC%E3%83%AB",
        404,
    ),
    ("/api/v1/snapshot?window=1h&segment=campaign:%ff%fe", 404),
    ("/api/v1/snapshot?window=1h&segment=campaign:*", 404),
    ("/api/v1/snapshots?segment=", 400),
    ("/api/v1/snapshots?segment=all&windows=1h,,24h", 400),
    ("/api/v1/snapshots?segment=region:ZZ", 404),
    ("/api/v1/history?window=1h&segment=all&limit=abc", 400),
    ("/api/v1/history?window=1h&segment=all&limit=0", 400),
    ("/api/v1/history?window=1h&segment=all&limit=-1", 400),
    ("/api/v1/history?window=1h&segment=all&limit=5001", 400),
    ("/api/v1/history?window=1h&segment=all&limit=1e3", 400),
    ("/api/v1/history?window=1h&segment=all&limit=%EF%BC%95", 400),
    ("/api/v1/history?window=1h&segment=all&limit=" + "9" * 400, 400),
    ("/api/v1/history?window=1h&segment=all&limit=%205", 400),
    ("/api/v1/history?window=1h&segment=all&since=yesterday", 400),
    ("/api/v1/history?window=1h&segment=all&since=2026-11-02T09:00:00", 400),
    ("/api/v1/history?window=1h&segment=all&since=2026-02-30T00:00:00Z", 400),
    ("/api/v1/history?window=1h&segment=all&since=200&until=100", 400),
    ("/api/v1/history?window=1h&segment=all&fields=revenue,nope", 400),
    ("/api/v1/history?window=1h&segment=all&fields=__proto__", 400),
    ("/api/v1/history?window=1h&segment=region:ZZ", 404),
    ("/api/v1/alerts?limit=0", 400),
    ("/api/v1/alerts?limit=501", 400),
    ("/api/v1/alerts?limit=ten", 400),
    ("/api/v1/stream?segment=region:%00", 400),
    ("/api/v1/nope", 404),
    ("/assets/../../etc/passwd", 404),
    ("/assets/%2e%2e/%2e%2e/etc/passwd", 404),
    ("/assets/app.js%00.png", 404),
    ("/assets/index.htm", 404),
]


async def test_bad_parameters_are_400_with_a_message_never_500(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    async with serve(settings_for(db_url)) as base:
        for path, expected in BAD_REQUESTS:
            status, body, headers = await get(base + path)
            assert status == expected, (path, status, body)
            assert headers["Content-Type"].startswith("application/json"), path
            assert isinstance(body, dict), path
            assert isinstance(body.get("error"), str), path
            assert 0 < len(body["error"]) < 400, (path, body)
        status, body, headers = await get(f"{base}/api/v1/meta", method="POST")
        assert status == 405
        assert "GET" in headers["Allow"]
        assert "error" in body


# ------------------------------------------------------------------------- documentation


async def test_every_route_is_in_the_openapi_document_and_docs(
    db_url: str, rdb: redis.Redis
) -> None:
    async with serve(settings_for(db_url)) as base:
        status, document, _ = await get(f"{base}/api/v1/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.1")
    served = {path.replace("{name:.+}", "{name}") for path, _handler in routes(_api_stub())}
    assert set(document["paths"]) == served
    api_doc = (ROOT / "docs" / "api.md").read_text()
    for path in served:
        assert f"`GET {path}" in api_doc, f"docs/api.md does not document GET {path}"
    for name in ("hello", "snapshot", "cohort", "alert", "status", "reset", "ping"):
        assert f"`{name}`" in api_doc, f"docs/api.md does not describe the SSE event {name}"
    windows = document["paths"]["/api/v1/snapshot"]["get"]["parameters"][0]["schema"]["enum"]
    assert windows == ["1h", "24h", "7d", "30d"]
    assert "SegmentSnapshot" in document["components"]["schemas"]
    assert "Alert" in document["components"]["schemas"]
    assert "Cohort" in document["components"]["schemas"]


def _api_stub() -> Any:
    """``routes`` only reads the handlers' names: any object with those attributes does."""

    class Stub:
        def __getattr__(self, name: str) -> Any:
            return name

    return Stub()


# ------------------------------------------------------------------------- the page


async def test_page_and_assets_come_from_this_server_only(db_url: str, rdb: redis.Redis) -> None:
    async with serve(settings_for(db_url)) as base:
        status, page, headers = await get(f"{base}/")
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "connect-src 'self'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        html = page.decode()
        referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
        assets = [ref for ref in referenced if ref.startswith("assets/")]
        assert len(assets) >= 5
        for ref in assets:
            status, body, headers = await get(f"{base}/{ref}")
            assert status == 200, ref
            assert body == (STATIC / ref.removeprefix("assets/")).read_bytes()
            etag = headers["ETag"]
            status, _, _ = await get(f"{base}/{ref}", {"If-None-Match": etag})
            assert status == 304
        assert {ref for ref in referenced if not ref.startswith("assets/")} == {
            "api/v1/openapi.json"
        }
    # Nothing from the internet: no absolute URL in the page's own files (an SVG namespace
    # is a name, not a load), and no CDN in the vendored library either.
    for path in STATIC.rglob("*"):
        if path.is_file() and path.name != "LICENSE":
            text = path.read_text("utf-8", "replace")
            text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
            urls = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}/", text)
            if path.parent.name == "uplot":  # its banner names the project's home page
                urls = [u for u in urls if "github.com" not in u]
            assert not urls, f"{path.name} refers to {urls}"


def test_the_vendored_chart_library_is_the_published_one() -> None:
    """VERSION records the npm package's files and their digests; they must still match."""
    vendor = STATIC / "vendor" / "uplot"
    lines = (vendor / "VERSION").read_text().splitlines()
    digests = dict(
        reversed(line.split()) for line in lines if re.fullmatch(r"[0-9a-f]{64}  \S+", line)
    )
    assert set(digests) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    for name, digest in digests.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (vendor / "LICENSE").read_text()


def test_every_static_file_ships_in_the_package() -> None:
    """setuptools package-data must cover each file of static/, or a wheel lacks it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["stream_app"]
    package = ROOT / "stream_app"
    # setuptools expands package-data with glob: '*' does not cross a '/'.
    packaged = {name for pattern in patterns for name in glob.glob(pattern, root_dir=package)}
    files = [p.relative_to(package).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert len(files) >= 6
    for name in files:
        assert name in packaged, f"{name} is not in [tool.setuptools.package-data]"


# ------------------------------------------------------------------------- access


async def test_a_token_protects_everything_but_the_health_status(
    db_url: str, rdb: redis.Redis, seeded: dict[str, Any]
) -> None:
    paths = [
        "/",
        "/assets/app.js",
        "/api/v1/meta",
        "/api/v1/segments",
        "/api/v1/snapshot?window=1h&segment=all",
        "/api/v1/snapshots?segment=all",
        "/api/v1/history?window=1h&segment=all",
        "/api/v1/alerts",
        "/api/v1/stream",
        "/api/v1/openapi.json",
        "/metrics",
    ]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    basic = {"Authorization": "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()}
    wrong = [
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()},
        {"Authorization": "Basic %%%"},
        {"Authorization": f"Token {TOKEN}"},
    ]
    async with serve(settings_for(db_url, api_token=TOKEN)) as base:
        for path in paths:
            status, body, headers = await get(base + path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "error" in body
            for headers_ in wrong:
                status, _, _ = await get(base + path, headers_)
                assert status == 401, (path, headers_)
            if path == "/api/v1/stream":
                continue  # a stream does not end; its 401s above are what matters
            for good in (bearer, basic):
                status, _, _ = await get(base + path, good)
                assert status == 200, (path, good)
        status, body, _ = await get(f"{base}/health")
        assert (status, body) == (200, {"status": "ok"})
        status, body, _ = await get(f"{base}/health", bearer)
        assert status == 200
        assert body["checks"]["redis"]["ok"] is True
        _, document, _ = await get(f"{base}/api/v1/openapi.json", bearer)
        assert document["security"] == [{"bearer": []}, {"basic": []}]


async def test_cors_is_off_by_default(db_url: str, rdb: redis.Redis) -> None:
    origin = {"Origin": "https://evil.example"}
    async with serve(settings_for(db_url)) as base:
        status, _, headers = await get(f"{base}/api/v1/meta", origin)
        assert status == 200
        assert "Access-Control-Allow-Origin" not in headers
        preflight = {**origin, "Access-Control-Request-Method": "GET"}
        status, _, headers = await get(f"{base}/api/v1/meta", preflight, method="OPTIONS")
        assert status == 405
        assert "Access-Control-Allow-Origin" not in headers


async def test_cors_allows_only_the_configured_origins(db_url: str, rdb: redis.Redis) -> None:
    allowed = "https://ops.example.com"
    settings = settings_for(db_url, cors_origins=(allowed, "http://127.0.0.1:3000"))
    async with serve(settings) as base:
        status, _, headers = await get(f"{base}/api/v1/meta", {"Origin": allowed})
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == allowed
        assert headers["Vary"] == "Origin"
        _, _, headers = await get(f"{base}/api/v1/meta", {"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers
        ask = {"Origin": allowed, "Access-Control-Request-Method": "GET"}
        status, _, headers = await get(f"{base}/api/v1/meta", ask, method="OPTIONS")
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == allowed
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        ask = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        status, _, headers = await get(f"{base}/api/v1/meta", ask, method="OPTIONS")
        assert status == 403
        assert "Access-Control-Allow-Origin" not in headers


def test_cors_and_token_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_app.settings import SettingsError, load_settings

    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KPI_CORS_ORIGINS", "https://a.example, http://127.0.0.1:8080")
    assert load_settings(_env_file=None).cors_origins == (
        "https://a.example",
        "http://127.0.0.1:8080",
    )
    monkeypatch.setenv("KPI_CORS_ORIGINS", "https://a.example/path")
    with pytest.raises(SettingsError, match="KPI_CORS_ORIGINS"):
        load_settings(_env_file=None)
    monkeypatch.delenv("KPI_CORS_ORIGINS")
    monkeypatch.setenv("KPI_API_TOKEN", "short-secret")
    with pytest.raises(SettingsError, match="KPI_API_TOKEN") as failure:
        load_settings(_env_file=None)
    assert "short-secret" not in str(failure.value)
    monkeypatch.delenv("KPI_API_TOKEN")
    settings = load_settings(_env_file=None)
    assert settings.api_token is None
    assert settings.cors_origins == ()
    assert settings.web_host == "127.0.0.1"


async def test_no_secret_reaches_a_page_a_response_or_the_log(
    artifacts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = {
        "redis": "redis-password-4f1c9e",
        "wrong": "wrong-password-0b7d33",
        "sasl": "sasl-password-77ab10",
        "webhook": "hook-token-5dd0e2",
    }
    stack = DevStack(log_dir=artifacts_dir / "api-redis-auth")
    url = stack.start_redis(free_port())
    redis.Redis.from_url(url).config_set("requirepass", secrets["redis"])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    try:
        for password, healthy in ((secrets["redis"], True), (secrets["wrong"], False)):
            settings = settings_for(
                url,
                api_token=TOKEN,
                redis_password=password,
                kafka_sasl_password=secrets["sasl"],
                alert_webhooks=f"https://hooks.example/alert?token={secrets['webhook']}",
            )
            async with serve(settings) as base:
                for path, reads_redis in (
                    ("/", False),
                    ("/assets/app.js", False),
                    ("/api/v1/meta", False),
                    ("/api/v1/openapi.json", False),
                    ("/metrics", False),
                    ("/api/v1/segments", True),
                    ("/api/v1/alerts", True),
                ):
                    status, body, _ = await get(base + path, auth)
                    assert status == (503 if reads_redis and not healthy else 200), path
                    seen.append(body.decode() if isinstance(body, bytes) else json.dumps(body))
                status, body, _ = await get(f"{base}/health", auth)
                assert status == (200 if healthy else 503)
                assert body["checks"]["redis"]["ok"] is healthy
                seen.append(json.dumps(body))
    finally:
        stack.stop()
    seen.append(caplog.text)
    assert "AuthenticationError" in seen[-2]  # the wrong password's health: a class name
    for text in seen:
        for secret in (*secrets.values(), TOKEN):
            assert secret not in text


# ------------------------------------------------------------------------- outages


async def test_standalone_health_is_503_while_redis_is_down(artifacts_dir: Path) -> None:
    stack = DevStack(log_dir=artifacts_dir / "api-redis-outage")
    port = free_port()
    url = stack.start_redis(port)
    try:
        async with (
            serve(settings_for(url)) as base,
            aiohttp.ClientSession() as session,
            session.get(f"{base}/api/v1/stream") as stream,
        ):
            status, body, _ = await get(f"{base}/health")
            assert (status, body["status"]) == (200, "ok")
            await stream.content.readuntil(b"\n\n")  # retry:
            assert await _next_event(stream) == ("hello", ANY_HELLO)
            await asyncio.to_thread(stack.stop)
            # The live stream says so, and again when Redis is back (then: reload).
            assert await _next_status(stream) == {"redis": "down"}
            status, body, _ = await get(f"{base}/health")
            assert status == 503
            assert body["status"] == "unhealthy"
            assert body["problems"] == ["redis"]
            status, body, headers = await get(f"{base}/api/v1/snapshot?window=1h&segment=all")
            assert status == 503
            assert body == {"error": "Redis unavailable; try again shortly"}
            assert headers["Retry-After"] == "2"
            await asyncio.to_thread(stack.start_redis, port)
            status, body, _ = await get(f"{base}/health")
            assert (status, body["status"]) == (200, "ok")
            assert await _next_status(stream, 15) == {"redis": "up"}
    finally:
        stack.stop()


class _AnyHello:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and other.get("redis") == "up" and "server_time" in other


ANY_HELLO = _AnyHello()


async def _next_status(response: aiohttp.ClientResponse, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        event, data = await _next_event(response, max(0.1, deadline - time.monotonic()))
        if event == "status":
            return data


def test_kpi_dashboard_serves_on_localhost_and_stops_on_sigterm(
    db_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    write_snapshot(rdb, snapshot("1h", "all", END, size=HOUR))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env.update({"KPI_REDIS_URL": db_url, "KPI_WEB_PORT": str(port)})
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream_app", "dashboard"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = _http_json(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert health["status"] == "ok"
        snap = _http_json(f"http://127.0.0.1:{port}/api/v1/snapshot?window=1h&segment=all")
        assert snap["orders"] == 321
        # A live stream is open: stopping ends it rather than waiting for it.
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        stream.request("GET", "/api/v1/stream")
        response = stream.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"retry:")
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert time.monotonic() - stopped < 5
        stream.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    text = log.read_text()
    assert f"dashboard on http://127.0.0.1:{port}/" in text  # localhost by default
    assert "without KPI_API_TOKEN" not in text


def test_listening_beyond_localhost_without_a_token_is_warned_about() -> None:
    from pydantic import SecretStr

    from stream_app.dashboard.security import Access, exposure_warning

    assert exposure_warning("127.0.0.1", Access(None)) is None
    assert exposure_warning("::1", Access(None)) is None
    assert "KPI_API_TOKEN" in (exposure_warning("0.0.0.0", Access(None)) or "")
    assert exposure_warning("0.0.0.0", Access(SecretStr(TOKEN))) is None


def _http_json(url: str, headers: dict[str, str] | None = None) -> Any:
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


# ------------------------------------------------------------------------- health logic


class _PartitionState:
    def __init__(self, offsets: dict[str, int]) -> None:
        self.offsets = offsets

    def next_fetch(self, topic: str) -> int:
        return self.offsets[topic]


class _Consumer:
    """What consumer_lag reads of an aiokafka consumer: assignment and high watermarks."""

    def __init__(self, highwater: dict[Any, int | None]) -> None:
        self._highwater = highwater

    def assignment(self) -> set[Any]:
        return set(self._highwater)

    def highwater(self, tp: Any) -> int | None:
        return self._highwater[tp]


def _engine(read: dict[int, int]) -> Any:
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    highwater = {TopicPartition("in", 0): 10, TopicPartition("in", 1): None}
    from stream_app.customers.engine import CustomerEngine

    states = {p: _PartitionState({"in": n}) for p, n in read.items()}
    engine = SimpleNamespace(consumer=_Consumer(highwater), states=states, topics={"in": "signup"})
    engine.lags = lambda: CustomerEngine.lags(engine)  # type: ignore[arg-type]
    return engine


def test_consumer_lag_is_highwater_minus_next_offset_to_read() -> None:
    from stream_app.dashboard.health import consumer_lag

    # Partition 1's high watermark is not known yet: left out, not reported as 0.
    assert consumer_lag(_engine({0: 4, 1: 0})) == {("in", 0): 6}
    assert consumer_lag(_engine({0: 10, 1: 0})) == {("in", 0): 0}
    assert consumer_lag(None) == {}


def test_health_fails_when_input_or_snapshots_are_stuck() -> None:
    from types import SimpleNamespace

    from stream_app.dashboard.health import WorkerHealth, consumer_lag

    now = [1000.0]
    engine = _engine({0: 4, 1: 0})
    publisher = SimpleNamespace(last_publish_at=None, last_tick_at=1000.0, pending_since=None)
    ctx = SimpleNamespace(
        settings=settings_for("redis://127.0.0.1:1/0", health_stall_after="5s"),
        engine=engine,
        publisher=publisher,
    )
    health = WorkerHealth(None, ctx, None, None, clock=lambda: now[0])  # type: ignore[arg-type]

    def consumer() -> dict[str, Any]:
        return health._consumer(consumer_lag(engine))

    assert consumer()["ok"] is True
    now[0] += 6  # lag 6, nothing read for 6 s
    assert consumer() == {"ok": False, "lag": 6, "error": "6 messages waiting, none read for 6s"}
    engine.states[0].offsets["in"] = 7  # it moves again
    assert consumer() == {"ok": True, "lag": 3}
    engine.states[0].offsets["in"] = 10
    now[0] += 60  # nothing to read: idle is not stuck
    assert consumer() == {"ok": True, "lag": 0}

    publisher.last_tick_at = now[0]
    assert health._publisher()["ok"] is True
    publisher.pending_since = now[0] - 4  # due but failing for 4 s: not yet
    assert health._publisher()["ok"] is True
    publisher.pending_since = now[0] - 6
    assert health._publisher()["ok"] is False
    publisher.pending_since = None
    publisher.last_tick_at = now[0] - 6  # the publish timer stopped
    assert health._publisher()["ok"] is False


# ------------------------------------------------------------------------- on a worker

SECRET_SASL = "sasl-secret-31c2f7aa"
SECRET_HOOK = "hook-secret-8e0d11bc"


class WorkerDeployment:
    """A worker on a private broker and a private redis-server, with a token and secrets."""

    def __init__(self, base: Path) -> None:
        self.broker_stack = DevStack(log_dir=base / "broker")
        self.redis_stack = DevStack(log_dir=base / "redis")
        self.redis_port = free_port()
        self.bootstrap = self.broker_stack.start_broker(free_port())
        self.redis_url = self.redis_stack.start_redis(self.redis_port)
        self.env = StackEnv(bootstrap=self.bootstrap, redis_url=self.redis_url, tmp_path=base)
        self.env.extra.update(
            {
                "KPI_API_TOKEN": TOKEN,
                "KPI_KAFKA_SASL_PASSWORD": SECRET_SASL,
                "KPI_ALERT_WEBHOOKS": f"http://127.0.0.1:9/hook?token={SECRET_HOOK}",
                "KPI_CHURN_ENABLED": "false",
            }
        )
        self.worker = self.env.start_worker("api")
        self.base = f"http://127.0.0.1:{self.worker.web_port}"

    def get(self, path: str, *, auth: bool = True) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
        request = urllib.request.Request(self.base + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body, ctype = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, body, ctype = exc.code, exc.read(), exc.headers
        if ctype.get_content_type() == "application/json":
            return status, json.loads(body)
        return status, body.decode()

    def wait(self, check: Any, what: str, timeout_s: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            assert self.worker.popen.poll() is None, self.worker.log_tail()
            try:
                last = check()
                if last:
                    return last
            except OSError as exc:
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"{what}: not after {timeout_s}s ({last!r})\n{self.worker.log_tail()}")

    def stop(self) -> None:
        # The broker may be gone: a graceful stop would wait for it; nothing here is kept.
        self.worker.stop(signal.SIGKILL)
        self.redis_stack.stop()
        self.broker_stack.stop()


async def _send_events(bootstrap: str, prefix: str) -> None:
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(8):
            customer = f"api-{n}"
            at = rfc3339(now - timedelta(seconds=30 - n))
            signup = {"event_id": f"s{n}", "customer_id": customer, "occurred_at": at,
                      "region": "EU" if n % 2 else "NA"}  # fmt: skip
            purchase = {"event_id": f"p{n}", "customer_id": customer, "occurred_at": at,
                        "order_id": f"o{n}", "amount": "19.90", "currency": "USD"}  # fmt: skip
            await producer.send_and_wait(
                f"{prefix}signups", orjson.dumps(signup), key=customer.encode()
            )
            await producer.send_and_wait(
                f"{prefix}purchases", orjson.dumps(purchase), key=customer.encode()
            )
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerDeployment]:
    deployment = WorkerDeployment(tmp_path_factory.mktemp("api-worker"))
    try:
        deployment.wait(
            lambda: len(deployment.get("/health")[1].get("customer_partitions", [])) == 4,
            "worker owns the 4 partitions",
        )
        asyncio.run(_send_events(deployment.bootstrap, deployment.env.prefix))
        client = redis.Redis.from_url(deployment.redis_url)
        deployment.wait(
            lambda: client.hget("kpi:1h:all", "orders") == b"8", "8 orders published", 60
        )
        client.close()
        yield deployment
    finally:
        deployment.stop()


def test_the_worker_serves_the_page_and_the_api(deployment: WorkerDeployment) -> None:
    status, body = deployment.get("/api/v1/snapshot?window=1h&segment=all")
    assert status == 200
    client = redis.Redis.from_url(deployment.redis_url)
    stored = {k.decode(): orjson.loads(v) for k, v in client.hgetall("kpi:1h:all").items()}
    client.close()
    assert body == stored
    assert body["orders"] == 8
    assert body["revenue"] == "159.20"
    status, body = deployment.get("/api/v1/segments")
    assert body["regions"] == ["region:EU", "region:NA"]
    status, page = deployment.get("/")
    assert status == 200
    assert "<title>CRM KPIs</title>" in page
    assert deployment.get("/", auth=False)[0] == 401
    # Faust's own views (tables, topology, an index at /) are not served.
    for path in ("/router/", "/table/", "/graph/", "/stats/"):
        assert deployment.get(path)[0] == 404, path


def test_the_worker_answers_malformed_requests_like_the_app(deployment: WorkerDeployment) -> None:
    port = int(deployment.base.rsplit(":", 1)[1])
    status, headers, body = asyncio.run(raw_exchange(port, long_request_line()))
    assert status == 400
    assert headers["server"] == "crm-kpi"
    assert headers["x-content-type-options"] == "nosniff"
    assert b"aaaa" not in body


def test_worker_health_reports_checks_and_consumer_lag(deployment: WorkerDeployment) -> None:
    status, body = deployment.get("/health")
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["problems"] == []
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "redis": True,
        "broker": True,
        "publisher": True,
        "consumer": True,
        "live": True,
    }
    assert body["checks"]["broker"]["brokers"] == 1
    lag = body["consumer_lag"]
    topics = {f"{deployment.env.prefix}{t}" for t in
              ("signups", "purchases", "cancellations", "campaign-clicks", "surveys")}  # fmt: skip
    assert {(p["topic"], p["partition"]) for p in lag["partitions"]} == {
        (t, n) for t in topics for n in range(4)
    }
    assert lag["total"] == sum(p["lag"] for p in lag["partitions"]) == 0
    assert body["customer_partitions"] == [0, 1, 2, 3]
    assert body["last_publish_at"]
    assert deployment.get("/health", auth=False) == (200, {"status": "ok"})


def _samples(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def test_worker_metrics_include_lag_and_event_to_publish_latency(
    deployment: WorkerDeployment,
) -> None:
    status, text = deployment.get("/metrics")
    assert status == 200
    lag = _samples(text, "kpi_consumer_lag")
    assert len(lag) == 20
    assert set(lag.values()) == {0.0}
    assert _samples(text, "kpi_events_total") == {
        '{event_type="purchase"}': 8.0,
        '{event_type="signup"}': 8.0,
    }
    count = _samples(text, "kpi_event_to_publish_seconds_count")[""]
    total = _samples(text, "kpi_event_to_publish_seconds_sum")[""]
    assert count >= 1
    # Measured from occurred_at: the newest event was stamped 23 s before it was sent, so
    # no observation is below that, and processing added seconds at most.
    assert _samples(text, "kpi_event_to_publish_seconds_bucket")['{le="10.0"}'] == 0
    assert 23 <= total / count < 60
    assert _samples(text, "kpi_snapshots_published_total")[""] > 0
    assert _samples(text, "kpi_publish_seconds_count")[""] > 0
    published = _samples(text, "kpi_last_publish_timestamp_seconds")[""]
    assert abs(published - time.time()) < 300
    assert "kpi_dashboard_stream_clients" in text


def test_the_worker_shows_no_secret(deployment: WorkerDeployment) -> None:
    texts = [
        str(deployment.get(path)[1])
        for path in (
            "/",
            "/assets/app.js",
            "/api/v1/meta",
            "/api/v1/openapi.json",
            "/health",
            "/metrics",
        )
    ]
    texts.append(deployment.worker.log_path.read_text(errors="replace"))
    for text in texts:
        for secret in (TOKEN, SECRET_SASL, SECRET_HOOK):
            assert secret not in text


def test_worker_health_is_503_while_redis_is_down(deployment: WorkerDeployment) -> None:
    deployment.redis_stack.stop()
    _status, body = deployment.wait(
        lambda: (r := deployment.get("/health"))[0] == 503 and r, "503 with Redis down", 20
    )
    assert "redis" in body["problems"]
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is True
    deployment.redis_stack.start_redis(deployment.redis_port)
    deployment.wait(lambda: deployment.get("/health")[0] == 200, "200 once Redis is back", 30)


def test_worker_health_is_503_while_the_broker_is_down(deployment: WorkerDeployment) -> None:
    deployment.broker_stack.stop()
    _status, body = deployment.wait(
        lambda: (r := deployment.get("/health"))[0] == 503 and r, "503 with the broker down", 30
    )
    assert "broker" in body["problems"]
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["redis"]["ok"] is True
