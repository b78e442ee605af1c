"""``GET /api/v1/cohorts``, the cohort segments and the SSE event ``cohort`` (contract section 6).

Over HTTP to the standalone dashboard app in this process, against the real Redis of
``tests/test_api.py`` (its database and helpers). Cohorts are written in the contract's
format through its models (``tests/cohort_data.py``); hostile hash fields and messages must
be left out and counted, never passed on and never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from schemas.cohort import Cohort
from stream_app.devstack import free_port
from stream_app.kpis.cohorts import WEEK_US, newest_cohort_starts, to_datetime, to_us
from stream_app.published import MAX_COHORT_FIELDS
from stream_app.redis_keys import cohort_updates_channel, cohorts_key
from tests.cohort_data import cohort, cohorts, field_name, publish_update, write_cohorts
from tests.kpi_data import rfc3339
from tests.test_api import _next_event, db_url, get, rdb, serve, settings_for
from tests.test_api_untrusted import _malformed

__all__ = ["db_url", "rdb"]  # fixtures shared with tests/test_api.py

pytestmark = pytest.mark.integration

WATERMARK = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
DAY_US = 24 * 3600 * 1_000_000


def as_json(found: list[Cohort]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in found]


@pytest.fixture
def seeded(rdb: redis.Redis) -> dict[str, list[Cohort]]:
    """Weekly and monthly cohorts of all and region:EU, monthly ones of a campaign."""
    found = {
        "week:all": cohorts(WATERMARK, "week"),
        "month:all": cohorts(WATERMARK, "month", seed=3),
        "week:region:EU": cohorts(WATERMARK, "week", seed=5, count=4),
        "month:campaign:spring-sale": cohorts(WATERMARK, "month", seed=9, count=2),
    }
    for name, written in found.items():
        grain, _, segment = name.partition(":")
        write_cohorts(rdb, grain, segment, written)  # type: ignore[arg-type]
    return found


async def test_cohorts_are_the_hash_newest_first_by_grain_and_segment(
    db_url: str, seeded: dict[str, list[Cohort]]
) -> None:
    async with serve(settings_for(db_url)) as base:
        status, week, _ = await get(f"{base}/api/v1/cohorts")  # grain week, segment all
        _, month, _ = await get(f"{base}/api/v1/cohorts?grain=month&segment=all")
        _, region, _ = await get(f"{base}/api/v1/cohorts?grain=week&segment=region:EU")
        _, campaign, _ = await get(
            f"{base}/api/v1/cohorts?grain=month&segment=campaign:spring-sale"
        )
        counts = await _malformed(base)
    assert status == 200, week
    assert week == {
        "grain": "week",
        "segment": "all",
        "count": 26,
        "cohorts": as_json(seeded["week:all"]),
    }
    starts = [c["cohort_start"] for c in week["cohorts"]]
    assert starts == sorted(starts, reverse=True)
    assert starts[0] == "2026-11-23T00:00:00Z"  # the Monday of the watermark's week
    assert week["cohorts"][0]["periods"][-1]["complete"] is False
    assert month["count"] == 12
    assert month["cohorts"] == as_json(seeded["month:all"])
    assert month["cohorts"][0]["cohort_start"] == "2026-11-01T00:00:00Z"
    assert region["cohorts"] == as_json(seeded["week:region:EU"])
    assert campaign["cohorts"] == as_json(seeded["month:campaign:spring-sale"])
    assert counts["cohort"] == 0


async def test_segments_list_the_cohort_segments_per_grain(
    db_url: str, rdb: redis.Redis, seeded: dict[str, list[Cohort]]
) -> None:
    rdb.hset("kpi-cohorts:year:all", "x", "1")  # no grain of the contract
    rdb.hset("kpi-cohorts:week:region:eu", "x", "1")  # no segment of the contract
    rdb.set(cohorts_key("week", "region:NA"), "not a hash")
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/segments")
        counts = await _malformed(base)
    assert status == 200, body
    assert body["cohorts"] == {
        "week": ["all", "region:EU"],
        "month": ["all", "campaign:spring-sale"],
    }
    assert counts["key"] == 2


BAD = [
    ("/api/v1/cohorts?grain=year", 400, "grain: 'year' is not a grain; use week or month"),
    ("/api/v1/cohorts?grain=WEEK", 400, "grain: 'WEEK' is not a grain; use week or month"),
    ("/api/v1/cohorts?grain=week&grain=month", 400, "grain: given 2 times; give it once"),
    ("/api/v1/cohorts?segment=region:E%20U", 400, None),
    ("/api/v1/cohorts?segment=campaign:a%00b", 400, None),
    ("/api/v1/cohorts?segment=" + "x" * 5000, 400, None),
    ("/api/v1/cohorts?segment=region:XX", 404, "no cohorts of grain week for segment region:XX"),
    ("/api/v1/cohorts?grain=week&segment=campaign:spring-sale", 404, None),
    ("/api/v1/cohorts?segment=region:NA", 404, None),  # a key of another type
    ("/api/v1/stream?cohort_segment=region:%00", 400, None),
]


async def test_bad_parameters_and_unknown_segments_answer_like_the_other_endpoints(
    db_url: str, rdb: redis.Redis, seeded: dict[str, list[Cohort]]
) -> None:
    rdb.set(cohorts_key("week", "region:NA"), "not a hash")
    async with serve(settings_for(db_url)) as base:
        for path, expected, message in BAD:
            status, body, headers = await get(base + path)
            assert status == expected, (path, status, body)
            assert headers["Content-Type"].startswith("application/json"), path
            assert list(body) == ["error"], (path, body)
            assert 0 < len(body["error"]) < 400, (path, body)
            if message is not None:
                assert body["error"] == message
        # The same segment error as the snapshot endpoints, word for word.
        _, snapshot_error, _ = await get(f"{base}/api/v1/snapshot?window=1h&segment=region:E%20U")
        _, cohort_error, _ = await get(f"{base}/api/v1/cohorts?segment=region:E%20U")
    assert cohort_error == snapshot_error


async def test_redis_down_is_503_like_the_other_endpoints() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with serve(settings_for(url)) as base:
        status, body, headers = await get(f"{base}/api/v1/cohorts?grain=month")
        snapshot_status, snapshot_body, _ = await get(
            f"{base}/api/v1/snapshot?window=1h&segment=all"
        )
    assert (
        (status, body)
        == (snapshot_status, snapshot_body)
        == (
            503,
            {"error": "Redis unavailable; try again shortly"},
        )
    )
    assert headers["Retry-After"] == "2"


def _hostile_fields() -> dict[str | bytes, bytes]:
    """Fields of the weekly hash that are no cohort of theirs, each for one reason; the
    cohorts at ``starts[0]`` and ``starts[2]`` are left alone."""
    watermark = to_us(WATERMARK)
    starts = newest_cohort_starts(watermark, "week")

    def at(i: int, k: int | None = None, /, **changes: Any) -> tuple[str, bytes]:
        found = cohort(starts[i], watermark, "week", size=40)
        data = found.model_dump(mode="json")
        if k is None:
            data.update(changes)
        else:
            data["periods"][k].update(changes)
        return field_name(found), orjson.dumps(data)

    tuesday = to_datetime(starts[9] + DAY_US)
    monthly = cohort(to_us(datetime(2026, 11, 1, tzinfo=UTC)), watermark, "month", size=9)
    oldest = cohort(starts[25], watermark, "week", size=40).model_dump(mode="json")
    second = cohort(starts[1], watermark, "week", size=40).model_dump(mode="json")
    second["periods"][0]["complete"] = False  # only the last period can be incomplete
    fields: list[tuple[str | bytes, bytes]] = [
        ("not a time", at(3)[1]),
        (at(3)[0], orjson.dumps(at(3)[0])),  # a JSON string, not a cohort
        (at(4)[0], at(5)[1]),  # the cohort of another start
        (at(5)[0] + "x", at(5)[1]),
        (b"\xff\xfe", at(6)[1]),  # no UTF-8
        at(6, size="40"),
        at(7, extra=1),
        at(8, size=-1),
        (tuesday.isoformat(), at(9, cohort_start=tuesday.isoformat())[1]),  # not a Monday
        (field_name(monthly), monthly.model_dump_json().encode()),  # a month's cohort
        at(10, 0, end=rfc3339(to_datetime(starts[10] + WEEK_US + DAY_US))),  # not the calendar's
        at(11, 0, k=1),
        at(12, 0, active=10**6),
        at(13, 0, retention="1.0"),
        at(14, 0, revenue=12.5),
        at(15, 0, revenue="1" * 40_000 + ".00"),  # over the size cap
        at(16, 0, end="0001-01-01T00:00:00+01:00"),  # no UTC form
        (at(17)[0], b"NaN"),
        at(18, grain="week", segment="all"),  # an update, not a stored cohort
        at(19, 0, complete=None),
        (
            field_name(Cohort.model_validate(oldest)),
            orjson.dumps(oldest | {"periods": [*oldest["periods"], oldest["periods"][-1]]}),
        ),  # deeper than 26 periods
        (at(20)[0], b"[" * 100_000),
        (field_name(Cohort.model_validate(second)), orjson.dumps(second)),
    ]
    return dict(fields)


async def test_hostile_cohort_fields_are_left_out_and_counted_never_a_500(
    db_url: str, rdb: redis.Redis
) -> None:
    good = cohorts(WATERMARK, "week", count=3)
    hostile = _hostile_fields()
    write_cohorts(rdb, "week", "region:EU", good)
    rdb.hset(cohorts_key("week", "region:EU"), mapping=hostile)  # type: ignore[arg-type]
    # The last month there is: its period would end in year 10000.
    last = {
        "cohort_start": "9999-12-01T00:00:00Z",
        "size": 1,
        "periods": [
            {"k": 0, "end": "9999-12-31T00:00:00Z", "complete": False, "active": 1,
             "retention": 1.0, "revenue": "1.00", "revenue_per_customer": "1.00"}
        ],
    }  # fmt: skip
    rdb.hset(
        cohorts_key("month", "region:EU"),
        mapping={"x": b"\xff\xfe", b"\xff": b"{}", "9999-12-01T00:00:00Z": orjson.dumps(last)},
    )
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/cohorts?segment=region:EU")
        month_status, month, _ = await get(f"{base}/api/v1/cohorts?grain=month&segment=region:EU")
        counts = await _malformed(base)
    assert status == 200, body
    assert body["cohorts"] == as_json([good[0], good[2]])
    assert len(hostile) == 23
    assert counts["cohort"] == len(hostile) + 3  # good[1] was replaced by a bad one
    assert month_status == 200
    assert month["cohorts"] == []  # the segment is there, with nothing valid


async def test_the_stream_carries_the_cohorts_of_its_cohort_segment(
    db_url: str, rdb: redis.Redis
) -> None:
    week = cohorts(WATERMARK, "week", count=1)[0]
    month = cohorts(WATERMARK, "month", count=1)[0]
    query = "segment=all&cohort_segment=region:EU"
    async with (
        serve(settings_for(db_url)) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/stream?{query}") as response,
    ):
        await response.content.readuntil(b"\n\n")  # retry:
        event, hello = await _next_event(response)
        assert (event, hello["segment"], hello["cohort_segment"]) == ("hello", "all", "region:EU")
        publish_update(rdb, "week", "all", week)  # another cohort segment: not for this client
        channel = cohort_updates_channel("week", "region:EU")
        wrong = week.model_dump(mode="json") | {"grain": "week", "segment": "region:NA"}
        rdb.publish(channel, orjson.dumps(wrong))  # not its channel's segment
        rdb.publish(channel, orjson.dumps(wrong | {"segment": "region:EU", "size": 1}))
        rdb.publish(channel, b"{" * 50_000)
        rdb.publish("kpi-cohort-updates:year:region:EU", orjson.dumps(wrong))
        sent = [publish_update(rdb, "week", "region:EU", week)]
        sent.append(publish_update(rdb, "month", "region:EU", month))
        seen: list[tuple[str, Any]] = []
        while len(seen) < 2:
            event, data = await _next_event(response)
            if event not in ("ping", "status"):
                seen.append((event, data))
        counts = await _malformed(base)
    assert seen == [("cohort", update.model_dump(mode="json")) for update in sent]
    assert seen[1][1]["grain"] == "month"
    assert counts["message"] == 4


async def test_a_huge_cohort_hash_is_read_in_part_never_whole(
    db_url: str, rdb: redis.Redis
) -> None:
    good = cohorts(WATERMARK, "week", count=3)
    write_cohorts(rdb, "week", "region:NA", good)
    junk = {f"junk-{n}": b"{}" for n in range(MAX_COHORT_FIELDS + 500)}
    rdb.hset(cohorts_key("week", "region:NA"), mapping=junk)  # type: ignore[arg-type]
    async with serve(settings_for(db_url)) as base:
        status, body, _ = await get(f"{base}/api/v1/cohorts?segment=region:NA")
        counts = await _malformed(base)
    assert status == 200, body
    shown = body["cohorts"]
    assert all(c in as_json(good) for c in shown)
    assert counts["cohort"] == len(junk) + len(good) - len(shown)  # read or not, counted
