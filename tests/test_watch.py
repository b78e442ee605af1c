"""``kpi watch``: the pure view, ``--once`` against the real Redis, live updates, outages."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from rich.console import Console

from schemas import CAMPAIGN_KPIS, SEGMENT_KPIS
from stream_app.cli import main
from stream_app.devstack import DevStack, free_port
from stream_app.published import clean_value, kpi_kind, parse_alert
from stream_app.redis_keys import segment_updates_pattern
from stream_app.watch.cli import Watcher, client_factory
from stream_app.watch.view import (
    DOWN,
    NULL,
    SAME,
    UP,
    WatchState,
    arrow,
    format_value,
    render,
)

ROOT = Path(__file__).resolve().parent.parent
# A region code as the contract allows (2 to 8 characters): a snapshot of any other is malformed.
SEGMENT = "region:WTEST"
# A database of its own on the test Redis: the engine tests flush database 13 and treat any
# kpi:* hash there that they did not expect as a mismatch.
WATCH_DB = 15

# ------------------------------------------------------------------------------ data


def snapshot(window: str = "1h", **overrides: Any) -> dict[str, Any]:
    """A complete segment snapshot as the publisher writes it, every KPI distinct."""
    data: dict[str, Any] = {
        "window": window,
        "segment": SEGMENT,
        "window_start": "2026-11-02T09:05:00Z",
        "window_end": "2026-11-02T10:05:00Z",
        "watermark": "2026-11-02T10:04:59.250000Z",
        "updated_at": "2026-11-23T12:00:00Z",
        "active_start": 1200,
        "active_end": 1210,
        "new_customers": 14,
        "churned_customers": 4,
        "churn_rate": 0.0033333333333333335,
        "retention_rate": 0.9966666666666667,
        "orders": 17,
        "revenue": "1204.50",
        "aov": "70.85",
        "purchasing_customers": 15,
        "repeat_customers": 2,
        "repeat_purchase_rate": 0.13333333333333333,
        "purchase_frequency": 1.1333333333333333,
        "clv": "24090.00",
        "clicks": 60,
        "converted_clicks": 3,
        "conversion_rate": 0.05,
        "spend": "30.00",
        "cac": "2.14",
        "attributed_revenue": "210.00",
        "roas": 7.0,
        "ltv_cac_ratio": 11256.07476635514,
        "nps_responses": 7,
        "promoters": 4,
        "passives": 1,
        "detractors": 2,
        "nps": 28.571428571428573,
        "csat_responses": 0,
        "csat_satisfied": 0,
        "csat": None,
    }
    data.update(overrides)
    return data


# What the view must show for snapshot(): worked out by hand from the rules in --help.
SHOWN = {
    "active_start": "1200",
    "active_end": "1210",
    "new_customers": "14",
    "churned_customers": "4",
    "churn_rate": "0.33%",
    "retention_rate": "99.67%",
    "orders": "17",
    "revenue": "1204.50",
    "aov": "70.85",
    "purchasing_customers": "15",
    "repeat_customers": "2",
    "repeat_purchase_rate": "13.33%",
    "purchase_frequency": "1.13",
    "clv": "24090.00",
    "clicks": "60",
    "converted_clicks": "3",
    "conversion_rate": "5.00%",
    "spend": "30.00",
    "cac": "2.14",
    "attributed_revenue": "210.00",
    "roas": "7.00",
    "ltv_cac_ratio": "11256.07",
    "nps_responses": "7",
    "promoters": "4",
    "passives": "1",
    "detractors": "2",
    "nps": "28.6",
    "csat_responses": "0",
    "csat_satisfied": "0",
    "csat": "—",
}


def as_hash(data: dict[str, Any]) -> dict[str, bytes]:
    """The Redis hash layout of the contract: one field per key, its value JSON-encoded."""
    return {name: orjson.dumps(value) for name, value in data.items()}


def table_rows(text: str) -> dict[str, list[str]]:
    """Label -> cells of every row of the KPI table (the one with borders) in a frame."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            rows.setdefault(cells[0], cells[1:])
        elif line.startswith("└"):
            break
    return rows


def frame_text(state: WatchState, now: datetime) -> str:
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(render(state, now))
    return console.export_text()


AT = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)


# ----------------------------------------------------------------- the pure view


def test_every_published_kpi_has_a_row_in_the_order_of_the_contract() -> None:
    state = WatchState(SEGMENT, ("1h",))
    state.apply_message(f"kpi-updates:1h:{SEGMENT}", orjson.dumps(snapshot()))
    rows = list(table_rows(frame_text(state, AT)))
    assert rows == ["window start", "window end", "watermark", "updated", *SEGMENT_KPIS]
    campaign = WatchState("campaign:spring", ("1h",))
    assert list(table_rows(frame_text(campaign, AT)))[4:] == list(CAMPAIGN_KPIS)


def test_values_are_formatted_by_kind_and_nulls_are_dashes() -> None:
    state = WatchState(SEGMENT, ("1h", "24h"))
    assert state.apply_message(f"kpi-updates:1h:{SEGMENT}", orjson.dumps(snapshot()))
    rows = table_rows(frame_text(state, AT))
    for name, shown in SHOWN.items():
        assert rows[name] == [shown, ""], name  # no previous snapshot: no arrow; 24h empty
    assert rows["window start"] == ["11-02 09:05", ""]
    assert rows["window end"] == ["11-02 10:05", ""]
    assert rows["watermark"] == ["11-02 10:04", ""]
    assert rows["updated"] == ["30s ago", "no snapshot"]
    assert {kpi_kind(n) for n in SEGMENT_KPIS} == {"count", "money", "percent", "score", "ratio"}
    assert format_value("csat", 80.0) == "80.0"
    assert format_value("nps", -100.0) == "-100.0"
    assert format_value("revenue", "-3.10") == "-3.10"
    assert format_value("orders", None) == NULL


def test_arrows_show_the_change_since_the_previous_snapshot_of_that_window() -> None:
    state = WatchState(SEGMENT, ("1h", "24h"))
    channel = f"kpi-updates:1h:{SEGMENT}"
    state.apply_message(channel, orjson.dumps(snapshot()))
    state.apply_message(f"kpi-updates:24h:{SEGMENT}", orjson.dumps(snapshot("24h")))
    changed = snapshot(
        updated_at="2026-11-23T12:00:01Z",
        orders=18,  # up
        churn_rate=0.002,  # down
        revenue="1204.50",  # same money
        csat=None,  # null before and after
        clv=None,  # a value that became null: no direction
        aov="9.99",  # money down: compared as decimals, not as text ("9.99" > "70.85")
        nps=30.0,  # up
    )
    assert state.apply_message(channel, orjson.dumps(changed))

    rows = table_rows(frame_text(state, AT))
    assert rows["orders"] == ["18 " + UP, "17"]  # 24h has one snapshot only: no arrow
    assert rows["churn_rate"] == ["0.20% " + DOWN, "0.33%"]
    assert rows["revenue"] == ["1204.50 " + SAME, "1204.50"]
    assert rows["csat"] == [f"{NULL} {SAME}", NULL]
    assert rows["clv"] == [NULL, "24090.00"]
    assert rows["aov"] == ["9.99 " + DOWN, "70.85"]
    assert rows["nps"] == ["30.0 " + UP, "28.6"]
    assert rows["active_start"] == ["1200 " + SAME, "1200"]
    # The same snapshot again (stream and channel both deliver it) changes nothing.
    assert not state.apply_message(channel, orjson.dumps(changed))
    assert table_rows(frame_text(state, AT))["orders"] == ["18 " + UP, "17"]
    # An older one arriving late is ignored.
    assert not state.apply_message(channel, orjson.dumps(snapshot(orders=1)))
    assert state.views["1h"].current is not None
    assert state.views["1h"].current["orders"] == 18


def test_arrow_rules() -> None:
    assert arrow("orders", None, {"orders": 3}) == ""
    assert arrow("orders", {"orders": 2}, {"orders": 3}) == UP
    assert arrow("orders", {"orders": 3}, {"orders": 2}) == DOWN
    assert arrow("revenue", {"revenue": "100.00"}, {"revenue": "99.99"}) == DOWN
    assert arrow("revenue", {"revenue": "100.00"}, {"revenue": "100.0"}) == SAME
    assert arrow("churn_rate", {"churn_rate": None}, {"churn_rate": 0.1}) == ""
    assert arrow("churn_rate", {"churn_rate": None}, {"churn_rate": None}) == SAME


def test_a_window_without_updates_is_marked_stale() -> None:
    state = WatchState(SEGMENT, ("1h",), stale_after_s=60)
    state.apply_message(f"kpi-updates:1h:{SEGMENT}", orjson.dumps(snapshot()))
    updated = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert table_rows(frame_text(state, updated + timedelta(seconds=59)))["updated"] == ["59s ago"]
    stale = table_rows(frame_text(state, updated + timedelta(minutes=5)))
    assert stale["updated"] == ["stale 5m"]


def test_malformed_values_are_dropped_and_counted_never_fatal() -> None:
    state = WatchState(SEGMENT, ("1h",))
    channel = f"kpi-updates:1h:{SEGMENT}"
    bad = snapshot(orders="seventeen", revenue=1204.5, churn_rate=True, watermark="yesterday")
    assert state.apply_message(channel, orjson.dumps(bad))
    text = frame_text(state, AT)
    rows = table_rows(text)
    assert rows["orders"] == [""]
    assert rows["revenue"] == [""]
    assert rows["churn_rate"] == [""]
    assert rows["watermark"] == [NULL]
    assert rows["aov"] == ["70.85"]  # the rest of the snapshot is shown
    assert "4 malformed field(s) skipped" in text
    # Not a snapshot at all: counted, nothing else changes.
    for data in (b"not json", b"[1, 2]", b'"text"', b"{}"):
        assert not state.apply_message(channel, data)
    assert state.malformed_messages == 4
    assert "4 malformed snapshot message(s) skipped" in frame_text(state, AT)
    # Another segment's or window's channel is not ours.
    assert not state.apply_message("kpi-updates:1h:region:EU", orjson.dumps(snapshot()))
    assert not state.apply_message(f"kpi-updates:7d:{SEGMENT}", orjson.dumps(snapshot("7d")))


def test_clean_value_follows_the_contract_types() -> None:
    assert clean_value("orders", 3) == (True, 3)
    assert clean_value("orders", True)[0] is False
    assert clean_value("orders", 3.0)[0] is False
    assert clean_value("revenue", "12.30") == (True, "12.30")
    assert clean_value("revenue", "12,30")[0] is False
    assert clean_value("revenue", 12.3)[0] is False
    assert clean_value("roas", 2) == (True, 2.0)
    assert clean_value("roas", "2")[0] is False
    assert clean_value("nps", None) == (True, None)
    assert clean_value("watermark", "2026-11-02T10:00:00+09:00") == (
        True,
        datetime(2026, 11, 2, 1, 0, tzinfo=UTC),
    )
    assert clean_value("watermark", "2026-11-02T10:00:00")[0] is False  # no offset


def alert(n: int, **overrides: Any) -> bytes:
    data = {
        "alert_id": f"watchtest-{n}",
        "kind": "churn_spike",
        "status": "firing",
        "rule": "churn-spike",
        "kpi": "churned_customers",
        "window": None,
        "segment": SEGMENT,
        "bucket_start": "2026-11-02T09:00:00Z",
        "bucket_end": "2026-11-02T10:00:00Z",
        "observed": 40,
        "baseline_mean": 4.0,
        "baseline_std": 1.5,
        "z_score": 24.0,
        "threshold": None,
        "severity": "critical",
        "summary": f"churn spike number {n}",
        "fired_at": f"2026-11-02T10:00:{n:02d}Z",
    }
    data.update(overrides)
    return orjson.dumps(data)


def test_alert_feed_keeps_the_last_eight_newest_first_once_each() -> None:
    state = WatchState(SEGMENT, ("1h",))
    assert "alerts: no alerts" in frame_text(state, AT)
    for n in range(10):
        assert state.apply_alert(alert(n))
    assert not state.apply_alert(alert(9))  # the stream and the channel both deliver it
    assert state.apply_alert(alert(9, status="resolved", severity="warning"))
    assert not state.apply_alert(b"{broken")
    assert not state.apply_alert(b'{"no": "summary"}')
    text = frame_text(state, AT)
    newest_first = (9, 9, 8, 7, 6, 5, 4, 3)
    assert [a.summary for a in state.alerts] == [f"churn spike number {n}" for n in newest_first]
    assert "churn spike number 2" not in text
    assert "no alerts" not in text
    assert "2 malformed alert(s) skipped" in text
    # A newer producer's extra field does not hide the alert.
    lenient = parse_alert(alert(1, extra_field=1))
    assert lenient is not None
    assert lenient.summary == "churn spike number 1"


# ----------------------------------------------------------- against the real Redis


@pytest.fixture
def watch_url(redis_url: str) -> Iterator[str]:
    """The test Redis, database WATCH_DB; every key written under SEGMENT is removed after."""
    url = redis_url.rsplit("/", 1)[0] + f"/{WATCH_DB}"
    client = redis.Redis.from_url(url)
    stream_existed = bool(client.exists("kpi-alerts"))
    alert_ids_before = {entry_id for entry_id, _ in client.xrange("kpi-alerts")}
    yield url
    for key in client.scan_iter(match=f"kpi:*:{SEGMENT}"):
        client.delete(key)
    added = [i for i, _ in client.xrange("kpi-alerts") if i not in alert_ids_before]
    if added:
        client.xdel("kpi-alerts", *added)
    if not stream_existed and client.xlen("kpi-alerts") == 0:
        client.delete("kpi-alerts")
    client.close()


@pytest.fixture
def kpi_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    # Values only unless a test asks for the band marks.
    monkeypatch.setenv("KPI_BENCHMARK_PROFILE", "none")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.integration
def test_once_shows_exactly_what_redis_holds(
    watch_url: str, kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(watch_url)
    hour = snapshot("1h", updated_at=datetime.now(UTC).isoformat())
    day = snapshot(
        "24h",
        window_start="2026-11-01T11:00:00Z",
        window_end="2026-11-02T11:00:00Z",
        orders=402,
        revenue="98765.43",
        churn_rate=None,
        retention_rate=None,
        nps=-12.5,
        updated_at=datetime.now(UTC).isoformat(),
    )
    client.hset(f"kpi:1h:{SEGMENT}", mapping=as_hash(hour))
    client.hset(f"kpi:24h:{SEGMENT}", mapping=as_hash(day))
    client.xadd("kpi-alerts", {"data": alert(1)})
    client.close()

    argv = ["watch", "--once", "--segment", SEGMENT, "--windows", "1h,24h,30d"]
    code = main([*argv, "--redis-url", watch_url])

    out = capsys.readouterr().out
    assert code == 0
    rows = table_rows(out)
    day_shown = {
        **SHOWN,
        "orders": "402",
        "revenue": "98765.43",
        "churn_rate": NULL,
        "retention_rate": NULL,
        "nps": "-12.5",
    }
    for name in SEGMENT_KPIS:
        assert rows[name] == [SHOWN[name], day_shown[name], ""], name
    assert rows["window start"] == ["11-02 09:05", "11-01 11:00", ""]
    assert rows["window end"] == ["11-02 10:05", "11-02 11:00", ""]
    assert rows["watermark"] == ["11-02 10:04", "11-02 10:04", ""]
    assert rows["updated"][2] == "no snapshot"
    assert "stale" not in rows["updated"][0]
    assert f"segment {SEGMENT}" in out
    assert "churn spike number 1" in out


@pytest.mark.integration
def test_once_skips_malformed_hash_fields(
    watch_url: str, kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(watch_url)
    fields = as_hash(snapshot("1h"))
    fields["orders"] = b"{not json"
    fields["revenue"] = b"1204.5"  # a number where the contract says a decimal string
    fields["nps"] = b"\xff\xfe"
    client.hset(f"kpi:1h:{SEGMENT}", mapping=fields)
    client.close()

    argv = ["watch", "--once", "--segment", SEGMENT, "--windows", "1h"]
    assert main([*argv, "--redis-url", watch_url]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["orders"] == [""]
    assert rows["revenue"] == [""]
    assert rows["nps"] == [""]
    assert rows["aov"] == ["70.85"]
    assert "3 malformed field(s) skipped" in out


@pytest.mark.integration
async def test_live_updates_from_the_channel(watch_url: str) -> None:
    setup = aioredis.Redis.from_url(watch_url)
    await setup.hset(f"kpi:1h:{SEGMENT}", mapping=as_hash(snapshot("1h")))
    state = WatchState(SEGMENT, ("1h", "24h"))
    watcher = Watcher(state, client_factory(watch_url, None), poll_s=0.1)
    stop = asyncio.Event()
    changes: list[bool] = []
    task = asyncio.create_task(watcher.run(stop, changes.append))
    try:
        await asyncio.wait_for(watcher.live.wait(), 15)
        assert state.status is None
        view = state.views["1h"]
        assert view.current is not None
        assert view.current["orders"] == 17  # read from the hash first

        newer = snapshot("1h", orders=25, updated_at="2026-11-23T12:00:05Z", churn_rate=0.001)
        receivers = await setup.publish(f"kpi-updates:1h:{SEGMENT}", orjson.dumps(newer))
        assert receivers >= 1
        await setup.publish(f"kpi-updates:1h:{SEGMENT}", b"garbage")
        await setup.publish("kpi-updates:1h:region:OTHER", orjson.dumps(snapshot(orders=99)))
        await setup.publish("kpi-alerts", alert(7))
        await _until(lambda: state.alerts and state.malformed_messages, 15)

        assert view.current["orders"] == 25
        assert view.previous is not None
        assert view.previous["orders"] == 17
        rows = table_rows(frame_text(state, AT))
        assert rows["orders"] == ["25 " + UP, ""]
        assert rows["churn_rate"] == ["0.10% " + DOWN, ""]
        assert state.malformed_messages == 1
        assert [a.summary for a in state.alerts] == ["churn spike number 7"]
        assert True in changes
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await setup.aclose()
    assert not watcher.live.is_set()
    assert watcher.failures == 0


async def _until(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def unreachable_port(artifacts_dir: Path) -> AsyncIterator[tuple[int, DevStack]]:
    stack = DevStack(log_dir=artifacts_dir / "watch-redis")
    yield free_port(), stack
    stack.stop()


@pytest.mark.integration
async def test_an_unreachable_redis_is_retried_until_it_answers(
    unreachable_port: tuple[int, DevStack],
) -> None:
    port, stack = unreachable_port
    url = f"redis://127.0.0.1:{port}/0"
    state = WatchState(SEGMENT, ("1h",))
    watcher = Watcher(state, client_factory(url, None), poll_s=0.1, first_backoff_s=0.05)
    watcher.max_backoff_s = 0.2
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop, lambda changed: None))
    try:
        await _until(lambda: watcher.failures >= 3, 20)
        assert state.status is not None
        assert state.status.startswith("Redis unreachable (ConnectionError); retrying in")
        assert not task.done()
        assert "Redis unreachable" in frame_text(state, AT)
        # A private redis-server comes up on that port: the watcher connects by itself.
        await asyncio.to_thread(stack.start_redis, port)
        await asyncio.wait_for(watcher.live.wait(), 20)
        assert state.status is None
        assert "· live" in frame_text(state, AT)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.mark.integration
def test_once_with_redis_unreachable_exits_2_with_a_message(
    kpi_env: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["watch", "--once", "--redis-url", url]) == 2
    assert f"cannot read Redis at {url}" in caplog.text
    assert capsys.readouterr().out == ""


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_live_view_cleanly(watch_url: str, sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_app",
            "watch",
            "--segment",
            SEGMENT,
            "--windows",
            "1h",
            "--redis-url",
            watch_url,
            "--refresh",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    client = redis.Redis.from_url(watch_url)
    try:
        # Subscribed once a message on its pattern (for a window it does not show) has a
        # receiver; the view ignores it.
        deadline = time.monotonic() + 60
        channel = f"kpi-updates:zz:{SEGMENT}"
        while client.publish(channel, b"{}") < 1:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "kpi watch never subscribed"
            time.sleep(0.2)
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert b"Traceback" not in err + out
    assert f"segment {SEGMENT}".encode() in out  # the last frame is left on screen


def test_help_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["watch", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("HGETALL kpi:<window>:<segment>", "PSUBSCRIBE", "--once", "kpi-alerts"):
        assert phrase in text
    for bad in (["--windows", "1h,,24h"], ["--refresh", "0"], ["--segment", ""], ["--x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["watch", *bad])
        assert exit_info.value.code == 2


def test_the_subscription_pattern_escapes_glob_characters() -> None:
    assert segment_updates_pattern("region:EU") == "kpi-updates:*:region:EU"
    assert segment_updates_pattern("campaign:a*b?[c]") == r"kpi-updates:*:campaign:a\*b\?\[c\]"


@pytest.mark.integration
def test_a_key_of_the_wrong_type_is_skipped(
    watch_url: str, kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(watch_url)
    client.set(f"kpi:1h:{SEGMENT}", b"not a hash")
    client.xadd("kpi-alerts", {"data": b"{broken"})
    client.xadd("kpi-alerts", {"data": alert(4)})
    client.close()
    argv = ["watch", "--once", "--segment", SEGMENT, "--windows", "1h"]
    assert main([*argv, "--redis-url", watch_url]) == 0
    out = capsys.readouterr().out
    assert table_rows(out)["updated"] == ["no snapshot"]
    assert "churn spike number 4" in out
    assert "1 malformed alert(s) skipped" in out


@pytest.mark.integration
def test_once_marks_each_kpi_against_its_benchmark_band(
    watch_url: str,
    kpi_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KPI_BENCHMARK_PROFILE", "ecommerce")
    # The default profile (ecommerce): NPS 28-55 on every window, AOV 50-192, CAC 53-91 on
    # 7d and 30d only, conversion 1-4 % on 7d and 30d, LTV/CAC 3-5 on 30d.
    client = redis.Redis.from_url(watch_url)
    month = snapshot(
        "30d",
        window_start="2026-10-03T00:00:00Z",
        window_end="2026-11-02T00:00:00Z",
        nps=12.0,
        cac="60.00",
        conversion_rate=0.05,
        updated_at=datetime.now(UTC).isoformat(),
    )
    hour = snapshot("1h", updated_at=datetime.now(UTC).isoformat())
    client.hset(f"kpi:30d:{SEGMENT}", mapping=as_hash(month))
    client.hset(f"kpi:1h:{SEGMENT}", mapping=as_hash(hour))
    client.close()

    argv = ["watch", "--once", "--segment", SEGMENT, "--windows", "1h,30d"]
    assert main([*argv, "--redis-url", watch_url]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["nps"] == ["28.6  ·", "12.0  ↓"]
    assert rows["aov"] == ["70.85  ·", "70.85  ·"]
    assert rows["cac"] == ["2.14", "60.00  ·"]  # no 1h band for CAC: nothing to mark
    assert rows["conversion_rate"] == ["5.00%", "5.00%  ↑"]
    assert rows["csat"] == ["—", "—"]  # no value, nothing to place
    assert "benchmark ecommerce: ↑ above, · within, ↓ below the band" in out
