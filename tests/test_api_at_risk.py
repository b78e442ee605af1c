"""``GET /api/v1/at-risk`` over HTTP against a real Redis: the sorted set as the workers write
it, and what no worker writes (scores out of [0, 1], members that are no customer id, a key
of another type), which is left out and counted, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from stream_app.redis_keys import at_risk_key
from tests.test_api import _samples, db_url, get, rdb, serve, settings_for

__all__ = ["db_url", "rdb"]  # fixtures shared with tests/test_api.py

pytestmark = pytest.mark.integration


def seed(client: redis.Redis, segment: str, risks: dict[str, float]) -> None:
    client.zadd(at_risk_key(segment), {k: v for k, v in risks.items()})


async def _at_risk_skipped(base: str) -> float:
    _, body, _ = await get(f"{base}/metrics")
    return _samples(body.decode(), "kpi_dashboard_malformed_total")['{record="at_risk"}']


async def test_highest_risk_first_per_segment_up_to_the_limit(
    db_url: str, rdb: redis.Redis
) -> None:
    risks = {f"cust-{n:03d}": round(n / 40, 3) for n in range(40)}
    seed(rdb, "all", risks)
    seed(rdb, "region:EU", {"eu-1": 0.25, "eu-2": 0.75})
    async with serve(settings_for(db_url)) as base:
        status, body, headers = await get(f"{base}/api/v1/at-risk")
        assert status == 200
        assert headers["Cache-Control"] == "no-store"
        expected = sorted(risks.items(), key=lambda kv: kv[1], reverse=True)[:20]
        assert body == {
            "segment": "all",
            "count": 20,
            "customers": [{"customer_id": c, "risk": r} for c, r in expected],
        }
        status, body, _ = await get(f"{base}/api/v1/at-risk?segment=all&limit=3")
        assert [c["customer_id"] for c in body["customers"]] == ["cust-039", "cust-038", "cust-037"]
        status, body, _ = await get(f"{base}/api/v1/at-risk?segment=region:EU&limit=1000")
        assert body["customers"] == [
            {"customer_id": "eu-2", "risk": 0.75},
            {"customer_id": "eu-1", "risk": 0.25},
        ]


async def test_no_set_is_nobody_at_risk_and_bad_parameters_are_400(
    db_url: str, rdb: redis.Redis
) -> None:
    seed(rdb, "all", {"a": 0.5})
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/at-risk?segment=region:NA")
        assert (status, body) == (200, {"segment": "region:NA", "count": 0, "customers": []})
        for query, word in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("limit=1e3", "limit"),
            ("segment=nope", "segment"),
            ("limit=1&limit=2", "once"),
        ]:
            status, body, _ = await get(f"{base}/api/v1/at-risk?{query}")
            assert status == 400, query
            assert word in body["error"], (query, body)


async def test_what_no_worker_writes_is_left_out_and_counted(db_url: str, rdb: redis.Redis) -> None:
    seed(
        rdb,
        "all",
        {
            "good-high": 0.9,
            "good-low": 0.1,
            "edge-one": 1.0,
            "edge-zero": 0.0,
            "too-high": 1.5,
            "negative": -0.01,
            "plus-inf": float("inf"),
            "minus-inf": float("-inf"),
            "ctrl\x07id": 0.8,
            "x" * 129: 0.7,
        },
    )
    rdb.zadd(at_risk_key("all"), {b"\xff\xfe-not-utf8": 0.6})
    rdb.set(at_risk_key("region:EU"), "not a sorted set")
    async with serve(settings_for(db_url)) as base:
        before = await _at_risk_skipped(base)
        status, body, _ = await get(f"{base}/api/v1/at-risk?limit=100")
        assert status == 200
        shown: list[dict[str, Any]] = body["customers"]
        assert shown == [
            {"customer_id": "edge-one", "risk": 1.0},
            {"customer_id": "good-high", "risk": 0.9},
            {"customer_id": "good-low", "risk": 0.1},
            {"customer_id": "edge-zero", "risk": 0.0},
        ]
        assert body["count"] == 4
        # The three bad members within [0, 1] are counted (the scores outside it are never
        # read), and a key of another type is an empty list, counted too.
        assert await _at_risk_skipped(base) == before + 3
        status, body, _ = await get(f"{base}/api/v1/at-risk?segment=region:EU")
        assert (status, body["customers"]) == (200, [])
        assert await _at_risk_skipped(base) == before + 4


async def test_the_openapi_document_describes_it(db_url: str, rdb: redis.Redis) -> None:
    async with serve(settings_for(db_url)) as base:
        _, document, _ = await get(f"{base}/api/v1/openapi.json")
    operation = document["paths"]["/api/v1/at-risk"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["segment", "limit"]
    assert operation["parameters"][1]["schema"]["maximum"] == 1000
    assert set(operation["responses"]) == {"200", "400", "401", "503"}
    schemas = document["components"]["schemas"]
    risk = schemas["AtRiskCustomer"]["properties"]["risk"]
    assert (risk["minimum"], risk["maximum"]) == (0, 1)
    assert schemas["AtRiskList"]["properties"]["customers"]["items"] == {
        "$ref": "#/components/schemas/AtRiskCustomer"
    }
