"""Benchmark profiles (contract section 8): the shipped files, bad files, and the API's reading.

The loader and the comparison are exercised through their public functions; the API through
HTTP on the standalone dashboard app against a real Redis (a database of its own, 10).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from stream_app.benchmarks.compare import position, positions, strengths_and_weaknesses
from stream_app.benchmarks.profile import (
    ProfileError,
    load_profile,
    parse_profile,
    profile_from_settings,
    shipped_profiles,
)
from stream_app.cli import main
from stream_app.kpis.registry import KPI_BY_NAME
from tests.kpi_data import snapshot, write_snapshot
from tests.test_api import get, serve, settings_for

WINDOWS = ("1h", "24h", "7d", "30d")
DB = 10
END = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SOURCE = 'source = { title = "T", publisher = "P", year = 2025, url = "https://example.org/t" }'


def _profile_text(*bands: str) -> str:
    return 'name = "mine"\ntitle = "My targets"\n' + "".join(
        f"\n[[bands]]\n{band}\n{SOURCE}\n" for band in bands
    )


# ---------------------------------------------------------------- the shipped profiles


@pytest.mark.parametrize("name", ["ecommerce", "subscription"])
def test_every_shipped_band_has_a_public_source(name: str) -> None:
    profile = load_profile(name, WINDOWS)
    assert profile.name == name
    assert profile.bands
    for band in profile.bands:
        source = band.source
        assert source.title, band.kpi
        assert source.publisher, band.kpi
        assert 2000 <= source.year <= datetime.now(UTC).year, band.kpi
        assert source.url.startswith("https://"), band.kpi
        # The direction is the registry's: one declaration per KPI.
        assert band.better_high == KPI_BY_NAME[band.kpi].higher_is_better


def test_ecommerce_and_subscription_ship_and_ecommerce_is_the_default() -> None:
    assert {"ecommerce", "subscription"} <= set(shipped_profiles())
    default = profile_from_settings(settings_for("redis://127.0.0.1:1/0"))
    assert default is not None
    assert default.name == "ecommerce"
    off = settings_for("redis://127.0.0.1:1/0", benchmark_profile="none")
    assert profile_from_settings(off) is None


def test_a_bad_profile_names_file_line_band_and_key(tmp_path: Path) -> None:
    text = _profile_text(
        'kpi = "nps"\nlow = 50\nhigh = 20',
        'kpi = "churn_rat"\nlow = 0.1\nhigh = 0.2\ncolour = "red"',
        'kpi = "cac"\nwindows = ["2h"]\nlow = 1\nhigh = 2\nhigher_is_better = true',
    )
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_profile(str(path), WINDOWS)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid benchmark profile:"
    assert f"  {path}:4: band #1 'nps': low (50) must be below high (20)" in lines
    assert any(
        line.startswith(f"  {path}:11: band #2 'churn_rat': kpi: unknown KPI 'churn_rat'")
        and "did you mean 'churn_rate'" in line
        for line in lines
    )
    assert any(f"{path}:14: band #2 'churn_rat': colour: unknown key" in line for line in lines)
    assert any(f"{path}:19: band #3 'cac': windows: unknown window '2h'" in line for line in lines)
    assert any(
        f"{path}:19: band #3 'cac'" in line or "contradicts the KPI registry" in line
        for line in lines
    )


def test_other_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile("name = ", source="x.toml")
    with pytest.raises(ProfileError, match=r"x.toml:10: band #2 'nps': another band of nps"):
        parse_profile(
            _profile_text('kpi = "nps"\nlow = 1\nhigh = 2', 'kpi = "nps"\nlow = 3\nhigh = 4'),
            source="x.toml",
        )
    with pytest.raises(ProfileError, match="contradicts the KPI registry"):
        parse_profile(
            _profile_text('kpi = "cac"\nlow = 1\nhigh = 2\nhigher_is_better = true'), source="x"
        )
    with pytest.raises(ProfileError, match="is a count"):
        parse_profile(_profile_text('kpi = "orders"\nlow = 1\nhigh = 2'), source="x")
    with pytest.raises(ProfileError, match="not a shipped benchmark profile"):
        load_profile("retail")
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(str(tmp_path / "missing.toml"))


def test_a_worker_with_a_bad_profile_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(_profile_text('kpi = "nps"\nlow = 5\nhigh = 1'))
    monkeypatch.setenv("KPI_BENCHMARK_PROFILE", str(path))
    assert main(["worker"]) == 2
    assert f"{path}:4: band #1 'nps': low (5) must be below high (1)" in capsys.readouterr().err


# ---------------------------------------------------------------- reading values


def test_positions_and_the_ranking_follow_which_way_is_better() -> None:
    profile = parse_profile(
        _profile_text(
            'kpi = "churn_rate"\nlow = 0.10\nhigh = 0.15',  # lower is better
            'kpi = "nps"\nlow = 28\nhigh = 55',
            'kpi = "aov"\nlow = 50\nhigh = 100',
            'kpi = "cac"\nwindows = ["30d"]\nlow = 50\nhigh = 90',
            'kpi = "csat"\nlow = 75\nhigh = 85',
        ),
        source="x",
        windows=WINDOWS,
    )
    nps = profile.band("nps", "1h")
    assert nps is not None
    assert [position(v, nps) for v in (27.9, 28, 40, 55, 55.1, None)] == [
        "below", "within", "within", "within", "above", None,
    ]  # fmt: skip
    values = {"churn_rate": 0.05, "nps": 15.5, "aov": "400.00", "cac": "45.00", "csat": 80.0}
    assert positions(values, "30d", profile) == {
        "churn_rate": "below",
        "aov": "above",
        "cac": "below",
        "nps": "below",
        "csat": "within",
    }
    assert "cac" not in positions(values, "24h", profile)  # its band is for 30d only
    ranked = strengths_and_weaknesses(values, "30d", profile)
    # aov 6 band widths above; churn 1 width below (good); cac 0.125 below (good).
    assert [s["kpi"] for s in ranked["strengths"]] == ["aov", "churn_rate", "cac"]
    assert [s["kpi"] for s in ranked["weaknesses"]] == ["nps"]
    assert [s["kpi"] for s in ranked["within"]] == ["csat"]
    assert ranked["strengths"][0]["score"] == 6.0
    assert ranked["weaknesses"][0]["score"] == pytest.approx(-12.5 / 27, abs=1e-4)
    assert ranked["strengths"][0]["band"]["source"]["publisher"] == "P"


# ---------------------------------------------------------------- the API


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DB}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _write(rdb: redis.Redis, window: str, size: timedelta, **values: Any) -> dict[str, Any]:
    # Only the KPIs given have a value: the others a band could rank are null.
    banded = {band.kpi: None for band in load_profile("ecommerce", WINDOWS).bands}
    data = snapshot(window, "all", END, size=size, seed=1) | banded | values
    write_snapshot(rdb, data, publish=False)
    return data


@pytest.mark.integration
async def test_the_api_serves_the_profile_positions_and_strengths(
    rdb: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    _write(rdb, "30d", timedelta(days=30), churn_rate=0.2, nps=60.0, aov="75.00", csat=80.0)
    _write(rdb, "1h", timedelta(hours=1), churn_rate=0.0, nps=None, aov="75.00")
    async with serve(settings_for(url)) as base:
        status, body, _ = await get(f"{base}/api/v1/benchmarks")
        assert status == 200
        assert body["name"] == "ecommerce"
        assert {band["kpi"] for band in body["bands"]} >= {"churn_rate", "nps", "csat"}
        assert all(band["source"]["url"] for band in body["bands"])

        status, body, _ = await get(f"{base}/api/v1/snapshots?segment=all")
        assert status == 200
        month = body["windows"]["30d"]["positions"]
        assert month["churn_rate"] == "above"  # 20 % a month: worse than 10-15 %
        assert month["nps"] == "above"
        assert month["aov"] == "within"
        assert month["csat"] == "within"
        hour = body["windows"]["1h"]["positions"]
        assert "churn_rate" not in hour  # the churn band is monthly
        assert "nps" not in hour  # null: nothing to place
        assert body["windows"]["7d"]["positions"] == {}

        status, body, _ = await get(
            f"{base}/api/v1/benchmarks/strengths-weaknesses?window=30d&segment=all"
        )
        assert status == 200
        assert body["profile"] == "ecommerce"
        assert [s["kpi"] for s in body["strengths"]][:1] == ["nps"]
        assert [s["kpi"] for s in body["weaknesses"]][:1] == ["churn_rate"]
        assert body["weaknesses"][0]["position"] == "above"
        assert body["weaknesses"][0]["score"] < 0

        status, body, _ = await get(f"{base}/api/v1/benchmarks/strengths-weaknesses")
        assert status == 400
        assert "window" in body["error"]
        status, _, _ = await get(f"{base}/api/v1/benchmarks/strengths-weaknesses?window=7d")
        assert status == 404

    own = tmp_path / "mine.toml"
    own.write_text(_profile_text('kpi = "nps"\nlow = 70\nhigh = 90'))
    async with serve(settings_for(url, benchmark_profile=str(own))) as base:
        _, body, _ = await get(f"{base}/api/v1/benchmarks/strengths-weaknesses?window=30d")
        assert [s["kpi"] for s in body["weaknesses"]] == ["nps"]
        assert body["strengths"] == []
        assert body["within"] == []
    async with serve(settings_for(url, benchmark_profile="none")) as base:
        status, body, _ = await get(f"{base}/api/v1/benchmarks")
        assert status == 404
        assert "none" in body["error"]
        _, body, _ = await get(f"{base}/api/v1/snapshots?segment=all")
        assert body["windows"]["30d"]["positions"] == {}
