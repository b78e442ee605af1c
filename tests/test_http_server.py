"""The HTTP server's edges, over real sockets: Host names, slow heads, caps, aiohttp's errors.

The standalone dashboard app is served in this process (``tests.test_api.serve``) through the
same ``ServerRunner`` as the worker and ``kpi dashboard``; requests go over TCP, most with
aiohttp's client, the malformed and slow ones over raw asyncio streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest

from tests.http_raw import long_request_line, open_slow, raw_exchange
from tests.test_api import TOKEN, get, serve, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def url(redis_url: str) -> str:
    # Database 12: nothing is written, and /health only pings.
    return redis_url.rsplit("/", 1)[0] + "/12"


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def _assert_app_headers(headers: Any) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Server"] == "crm-kpi"


async def test_without_a_token_only_the_servers_own_host_names_are_served(url: str) -> None:
    async with serve(settings_for(url)) as base:
        port = _port(base)
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
            for path in ("/api/v1/meta", "/api/v1/snapshot?window=1h&segment=all", "/health"):
                status, body, headers = await get(base + path, {"Host": host})
                assert status == 421, (host, path)
                assert "attacker" not in str(body)
                _assert_app_headers(headers)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST."):
            status, _, headers = await get(f"{base}/api/v1/meta", {"Host": host})
            assert status == 200, host
    # A name of one's own; the address the server listens on stays served.
    async with serve(settings_for(url, web_allowed_hosts="kpi.example.com")) as base:
        port = _port(base)
        for host, expected in (
            (f"kpi.example.com:{port}", 200),
            (f"127.0.0.1:{port}", 200),
            (f"localhost:{port}", 421),
        ):
            status, _, _ = await get(f"{base}/api/v1/meta", {"Host": host})
            assert status == expected, host
    # With a token, the token keeps rebound pages out (they cannot send it).
    async with serve(settings_for(url, api_token=TOKEN)) as base:
        bearer = {"Authorization": f"Bearer {TOKEN}", "Host": "dashboard.internal:8080"}
        status, _, _ = await get(f"{base}/api/v1/meta", bearer)
        assert status == 200


async def test_slow_heads_are_cut_and_health_answers_at_the_connection_cap(url: str) -> None:
    timeout_s = 0.8
    settings = settings_for(url, web_header_timeout=timeout_s, web_max_connections=4)
    async with serve(settings) as base:
        slow = [await open_slow(_port(base)) for _ in range(4)]
        started = time.monotonic()
        await asyncio.sleep(0.05)  # let the server accept them
        # The cap is reached: the API says so, /health still answers.
        status, body, headers = await get(f"{base}/api/v1/meta")
        assert status == 503, body
        assert headers["Retry-After"] == "2"
        _assert_app_headers(headers)
        status, body, _ = await get(f"{base}/health")
        assert (status, body["status"]) == (200, "ok")
        # Each slow connection is closed once its head is late.
        for reader, writer in slow:
            assert await asyncio.wait_for(reader.read(), timeout_s + 2) == b""
            writer.close()
        assert time.monotonic() - started >= timeout_s - 0.1
        status, _, _ = await get(f"{base}/api/v1/meta")
        assert status == 200


async def _hello(response: aiohttp.ClientResponse) -> None:
    while not (await asyncio.wait_for(response.content.readline(), 5)).startswith(b"event: hello"):
        pass


async def test_live_streams_are_capped_and_health_answers_at_the_cap(url: str) -> None:
    settings = settings_for(url, web_max_streams=2)
    async with serve(settings) as base, aiohttp.ClientSession() as session:
        first = await session.get(f"{base}/api/v1/stream")
        second = await session.get(f"{base}/api/v1/stream?segment=region:EU")
        for response in (first, second):
            assert response.status == 200
            await _hello(response)
        status, body, headers = await asyncio.wait_for(get(f"{base}/api/v1/stream"), 5)
        assert status == 503, body
        assert headers["Retry-After"] == "5"
        _assert_app_headers(headers)
        status, body, _ = await get(f"{base}/health")
        assert (status, body["status"]) == (200, "ok")
        status, _, _ = await get(f"{base}/api/v1/meta")
        assert status == 200
        first.close()  # a stream ends: its place is free as soon as the server sees it
        deadline = time.monotonic() + 2
        while (await get(f"{base}/api/v1/stream", method="HEAD"))[0] != 200:
            assert time.monotonic() < deadline
        async with session.get(f"{base}/api/v1/stream") as third:
            assert third.status == 200
            await _hello(third)
        second.close()


async def test_aiohttps_own_errors_carry_the_app_headers_and_log_one_line_a_minute(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serve(settings_for(url)) as base:
        for _ in range(3):
            status, headers, body = await raw_exchange(_port(base), long_request_line())
            assert status == 400
            assert headers["server"] == "crm-kpi"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            assert b"aaaa" not in body
            assert b"bad request" in body
        _, _, headers = await get(f"{base}/api/v1/meta")
        assert headers["Server"] == "crm-kpi"  # no aiohttp version on any response
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    lines = [r for r in caplog.records if r.name == "stream_app.dashboard.httpserver"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "aaaa" not in lines[0].getMessage()
    assert lines[0].exc_info is None
