"""``kpi watch --cohorts``: the matrix view, ``--once`` against the real Redis, live updates.

Cohorts are written in the contract's format through its models (``tests/cohort_data.py``).
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from rich.console import Console

from schemas.cohort import Cohort
from stream_app.cli import main
from stream_app.kpis.cohorts import to_us
from stream_app.redis_keys import cohort_updates_channel, cohorts_key
from stream_app.watch.cohorts import CohortState, CohortWatcher, render_cohorts
from stream_app.watch.follow import client_factory
from tests.cohort_data import cohort, cohorts, field_name, write_cohorts
from tests.test_watch import WATCH_DB, _until, kpi_env

__all__ = ["kpi_env"]  # a fixture of tests/test_watch.py

SEGMENT = "region:WCOHORT"
WATERMARK = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
AT = datetime(2026, 11, 25, 12, 31, tzinfo=UTC)


_ROW = re.compile(r"^\d{4}-\d{2}(-\d{2})? ")


def frame_text(state: CohortState, width: int = 250) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_cohorts(state, AT))
    return console.export_text()


def matrix_rows(text: str) -> dict[str, list[str]]:
    """Cohort label -> its cells (size, then retention per period) in a frame."""
    rows = [line.split() for line in text.splitlines() if _ROW.match(line)]
    return {row[0]: row[1:] for row in rows}


def header(text: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[1:2] == ["of"])


def expected_row(c: Cohort) -> list[str]:
    """The row the matrix must show: size, then each period's retention %, '*' if open."""
    cells = [str(c.size)]
    for p in c.periods:
        assert p.retention is not None
        cells.append(f"{p.retention * 100:.0f}" + ("" if p.complete else "*"))
    return cells


def test_the_matrix_shows_each_cohort_newest_first_with_open_periods_marked() -> None:
    found = cohorts(WATERMARK, "week", count=5)
    state = CohortState("week", SEGMENT)
    assert state.apply_cohorts((list(reversed(found)), 2))
    assert not state.apply_cohorts((found, 2))  # the same read again changes nothing
    text = frame_text(state)
    rows = matrix_rows(text)
    labels = ["2026-11-23", "2026-11-16", "2026-11-09", "2026-11-02", "2026-10-26"]
    assert list(rows) == labels
    assert header(text) == ["week", "of", "size", "k0", "k1", "k2", "k3", "k4"]
    for c, label in zip(found, labels, strict=True):
        assert rows[label] == expected_row(c), label
    assert rows["2026-11-23"][:2] == ["40", "100*"]
    assert "2 malformed cohort(s) skipped" in text
    assert f"cohorts by week · segment {SEGMENT}" in text


def test_a_cohort_without_customers_shows_dashes_and_no_cohorts_says_so() -> None:
    state = CohortState("month", SEGMENT)
    assert f"no cohorts in kpi-cohorts:month:{SEGMENT}" in frame_text(state)
    empty = cohort(to_us(datetime(2026, 11, 1, tzinfo=UTC)), to_us(WATERMARK), "month", size=0)
    state.apply_cohorts(([empty], 0))
    assert matrix_rows(frame_text(state))["2026-11"] == ["0", "—*"]


def test_a_narrow_terminal_shows_the_first_periods_that_fit_and_says_so() -> None:
    state = CohortState("week", SEGMENT)
    found = cohorts(WATERMARK, "week")
    state.apply_cohorts((found, 0))
    wide = frame_text(state, width=250)
    assert header(wide)[-1] == "k25"
    assert "not shown" not in wide
    narrow = frame_text(state, width=80)
    assert header(narrow)[-1] == "k11"
    assert "k12..k25 not shown: widen the terminal" in narrow
    assert all(len(line) <= 80 for line in narrow.splitlines())
    assert matrix_rows(narrow)["2026-11-16"] == expected_row(found[1])  # a short row, whole


def test_messages_replace_their_cohort_and_others_are_counted() -> None:
    found = cohorts(WATERMARK, "week")
    state = CohortState("week", SEGMENT)
    state.apply_cohorts((found[1:], 0))
    channel = cohort_updates_channel("week", SEGMENT)
    update = orjson.dumps(found[0].model_dump(mode="json") | {"grain": "week", "segment": SEGMENT})
    assert state.apply_message(channel, update)
    assert not state.apply_message(channel, update)  # the same cohort again
    assert len(state.cohorts) == 26
    older = cohort(
        to_us(found[-1].cohort_start) - 7 * 86_400_000_000, to_us(WATERMARK), "week", size=3
    )
    old = orjson.dumps(older.model_dump(mode="json") | {"grain": "week", "segment": SEGMENT})
    state.apply_message(channel, old)
    assert older.cohort_start not in state.cohorts  # past the published depth: dropped
    assert len(state.cohorts) == 26
    for bad_channel, data in (
        (channel, b"{"),
        (channel, update.replace(b'"week"', b'"month"')),  # another grain than its channel
        (cohort_updates_channel("week", "all"), update),  # not this view's segment
        (cohort_updates_channel("week", SEGMENT), update.replace(b'"size":40', b'"size":"40"')),
    ):
        assert state.apply_message(bad_channel, data)
    assert state.malformed_messages == 4
    assert state.newest_first()[0] == found[0]


# ----------------------------------------------------------- against the real Redis


@pytest.fixture
def watch_url(redis_url: str) -> Iterator[str]:
    """The test Redis, database WATCH_DB; the cohort hashes of SEGMENT are removed after."""
    url = redis_url.rsplit("/", 1)[0] + f"/{WATCH_DB}"
    yield url
    client = redis.Redis.from_url(url)
    client.delete(cohorts_key("week", SEGMENT), cohorts_key("month", SEGMENT))
    client.close()


@pytest.mark.integration
def test_once_shows_exactly_what_redis_holds(
    watch_url: str, kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(watch_url)
    found = cohorts(WATERMARK, "month")
    write_cohorts(client, "month", SEGMENT, found)
    client.hset(cohorts_key("month", SEGMENT), "2025-01-01T00:00:00Z", b'{"size": "x"}')
    client.close()
    argv = ["watch", "--cohorts", "--grain", "month", "--segment", SEGMENT, "--once"]
    assert main([*argv, "--redis-url", watch_url]) == 0
    out = capsys.readouterr().out
    rows = matrix_rows(out)
    labels = [c.cohort_start.strftime("%Y-%m") for c in found]
    assert list(rows) == labels
    for c, label in zip(found, labels, strict=True):
        assert rows[label] == expected_row(c), label
    assert "1 malformed cohort(s) skipped" in out
    assert "kpi-cohorts" not in out  # it has cohorts: no 'no cohorts in ...'


@pytest.mark.integration
async def test_live_updates_from_the_channel(watch_url: str) -> None:
    setup = aioredis.Redis.from_url(watch_url)
    found = cohorts(WATERMARK, "week", count=3)
    await setup.hset(
        cohorts_key("week", SEGMENT),
        mapping={field_name(c): c.model_dump_json() for c in found[1:]},
    )
    state = CohortState("week", SEGMENT)
    watcher = CohortWatcher(state, client_factory(watch_url, None), poll_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop, lambda _changed: None))
    try:
        await asyncio.wait_for(watcher.live.wait(), 15)
        assert state.newest_first() == found[1:]  # read from the hash first
        channel = cohort_updates_channel("week", SEGMENT)
        update = found[0].model_dump(mode="json") | {"grain": "week", "segment": SEGMENT}
        await setup.publish(channel, b"garbage")
        assert await setup.publish(channel, orjson.dumps(update)) >= 1
        await _until(lambda: len(state.cohorts) == 3, 15)
        assert state.newest_first() == found
        assert state.malformed_messages == 1
        assert matrix_rows(frame_text(state))["2026-11-23"] == expected_row(found[0])
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await setup.aclose()
    assert watcher.failures == 0


def test_help_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["watch", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("--cohorts", "--grain {week,month}", "kpi-cohorts:<grain>:<segment>", "'*'"):
        assert phrase in text, phrase
    with pytest.raises(SystemExit) as exit_info:
        main(["watch", "--cohorts", "--grain", "year"])
    assert exit_info.value.code == 2
    assert main(["watch", "--cohorts", "--segment", "region:eu", "--once"]) == 2
    assert "is not a cohort segment" in capsys.readouterr().err
