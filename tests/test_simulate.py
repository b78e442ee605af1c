"""The traffic simulator: determinism, validity, faults, realism, scenarios, sinks and CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import Event, Rejection, Survey, parse_event
from stream_app.eventlog import LogRecord, read_log, write_log
from stream_app.settings import Settings
from stream_app.simulate import (
    Behaviour,
    ChurnSpike,
    ConversionCollapse,
    Emission,
    Region,
    Simulation,
    SimulationConfig,
    SimulationStats,
    TrafficSurge,
    generate,
    parse_scenario,
)
from stream_app.simulate.cli import add_parser, build_config, run
from stream_app.simulate.runner import LogProgress, Pacer, Pacing, send_to_kafka, write_jsonl

START = datetime(2026, 11, 1, tzinfo=UTC)
# The processor's max lateness: anything this far behind the newest event is too late.
MAX_LATENESS = timedelta(days=31)
# Re-sends trail the original by at most an hour of event time; seconds are truncated.
ON_TIME_SLACK = timedelta(hours=1, seconds=2)

FAULTS: dict[str, Any] = {"inject_bad": 0.03, "duplicates": 0.03, "late": 0.05}
FAULTY = SimulationConfig(
    seed=7, customers=300, duration=timedelta(days=40), events_target=6000, **FAULTS
)


def _log_bytes(config: SimulationConfig) -> bytes:
    out = io.BytesIO()
    write_log(generate(config), out)
    return out.getvalue()


def _parse(record: LogRecord) -> Event | Rejection:
    return parse_event(record.event_type, record.value, record.key)


@dataclass
class Run:
    """One simulation, consumed once, with every emission and its parse result."""

    stats: SimulationStats
    emissions: list[Emission]
    parsed: list[Event | Rejection]
    plan_expected: float
    events: list[Event] = field(default_factory=list)

    @classmethod
    def of(cls, config: SimulationConfig) -> Run:
        simulation = Simulation(config)
        emissions = list(simulation.emissions())
        parsed = [_parse(e.record) for e in emissions]
        events = [
            p
            for e, p in zip(emissions, parsed, strict=True)
            if e.kind == "event" and not isinstance(p, Rejection)
        ]
        return cls(simulation.stats, emissions, parsed, simulation.plan.expected_records, events)


@pytest.fixture(scope="module")
def faulty() -> Run:
    return Run.of(FAULTY)


@pytest.fixture(scope="module")
def big() -> Run:
    """The reference volume: 20,000 records over 40 simulated days."""
    return Run.of(SimulationConfig(seed=11, duration=timedelta(days=40), events_target=20_000))


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes() -> None:
    assert _log_bytes(FAULTY) == _log_bytes(FAULTY)


def test_different_seed_gives_different_output() -> None:
    other = SimulationConfig(**{**FAULTY.__dict__, "seed": 8})
    assert _log_bytes(FAULTY) != _log_bytes(other)


def test_an_injected_random_source_replaces_the_seed() -> None:
    first = list(Simulation(FAULTY, rng=random.Random(99)).records())
    second = list(Simulation(FAULTY, rng=random.Random(99)).records())
    assert first == second
    assert first != list(generate(FAULTY))


def test_faults_do_not_change_the_valid_events() -> None:
    # Without a volume target the activity scale does not depend on the fault ratios.
    natural = SimulationConfig(seed=4, customers=200, duration=timedelta(days=40))
    faulty = SimulationConfig(seed=4, customers=200, duration=timedelta(days=40), **FAULTS)
    events = [e.record for e in Simulation(faulty).emissions() if e.kind == "event"]
    assert events == list(generate(natural))


def test_a_simulation_runs_once() -> None:
    simulation = Simulation(SimulationConfig(customers=5, duration=timedelta(days=1)))
    list(simulation.records())
    with pytest.raises(RuntimeError):
        list(simulation.records())


# -- validity and faults ---------------------------------------------------------------------


def test_every_good_event_parses_with_its_type_and_key(faulty: Run) -> None:
    good = 0
    for emission, parsed in zip(faulty.emissions, faulty.parsed, strict=True):
        if emission.kind == "bad":
            continue
        assert not isinstance(parsed, Rejection), (emission.record, parsed)
        assert parsed.event_type == emission.record.event_type
        assert emission.record.key == parsed.customer_id.encode()
        assert parsed.customer_id.startswith("cust-")
        good += 1
    assert good == faulty.stats.good + faulty.stats.duplicates + faulty.stats.late


def test_event_ids_and_order_ids_are_unique(faulty: Run) -> None:
    ids = Counter(e.event_id for e in faulty.events)
    assert ids.most_common(1)[0][1] == 1
    orders = Counter(getattr(e, "order_id", None) for e in faulty.events)
    orders.pop(None)
    assert orders
    assert orders.most_common(1)[0][1] == 1


def test_injected_bad_messages_are_rejected_and_counted(faulty: Run) -> None:
    rejected = [p for p in faulty.parsed if isinstance(p, Rejection)]
    assert len(rejected) == faulty.stats.bad_total > 0
    kinds = Counter(e.detail for e in faulty.emissions if e.kind == "bad")
    assert kinds == faulty.stats.bad
    reasons = {r.reason.value for r in rejected}
    assert {
        "invalid_json",
        "not_an_object",
        "naive_timestamp",
        "wrong_currency",
        "invalid_field",
        "invalid_encoding",
        "too_large",
        "missing_field",
        "empty_message",
        "unknown_schema_version",
        "key_mismatch",
    } <= reasons


def test_bad_messages_survive_the_event_log(tmp_path: Path) -> None:
    config = SimulationConfig(customers=50, duration=timedelta(days=5), inject_bad=1.0)
    records = list(generate(config))
    path = tmp_path / "bad.jsonl"
    with path.open("wb") as out:
        write_log(records, out)
    assert list(read_log(path)) == records
    assert any(r.value is not None and len(r.value) > 64 * 1024 for r in records)
    assert any(r.value is None for r in records)


def test_duplicates_are_exact_copies_soon_after_the_original(faulty: Run) -> None:
    first_seen: dict[tuple[str, bytes | None, bytes | None], int] = {}
    copies = 0
    for index, (emission, parsed) in enumerate(zip(faulty.emissions, faulty.parsed, strict=True)):
        if isinstance(parsed, Rejection):
            continue
        record = emission.record
        identity = (record.event_type, record.key, record.value)
        if identity in first_seen:
            copies += 1
            assert emission.kind == "duplicate"
            assert index - first_seen[identity] <= 400
        else:
            assert emission.kind != "duplicate"
            first_seen[identity] = index
    assert copies == faulty.stats.duplicates > 0


def test_late_events_are_far_behind_and_on_time_events_are_not(faulty: Run) -> None:
    newest: datetime | None = None
    late = 0
    disorder = FAULTY.disorder + ON_TIME_SLACK
    for emission, parsed in zip(faulty.emissions, faulty.parsed, strict=True):
        if isinstance(parsed, Rejection):
            continue
        if newest is not None and parsed.occurred_at < newest - MAX_LATENESS:
            late += 1
            assert emission.kind == "late"
            assert newest - parsed.occurred_at >= timedelta(days=35)
            assert parsed.occurred_at >= START
            continue
        assert emission.kind != "late"
        if newest is not None:
            assert newest - parsed.occurred_at <= disorder, emission
        newest = parsed.occurred_at if newest is None else max(newest, parsed.occurred_at)
    assert late == faulty.stats.late > 0
    # No late event before 36 days of simulated time have passed.
    assert faulty.stats.late_by_type.total() == faulty.stats.late


def test_events_of_one_customer_keep_their_order(faulty: Run) -> None:
    latest: dict[str, datetime] = {}
    for event in faulty.events:
        previous = latest.get(event.customer_id)
        assert previous is None or event.occurred_at >= previous
        latest[event.customer_id] = event.occurred_at


def test_disorder_zero_gives_event_time_order() -> None:
    config = SimulationConfig(customers=100, duration=timedelta(days=3), disorder=timedelta(0))
    times = [
        p.occurred_at for p in (_parse(r) for r in generate(config)) if not isinstance(p, Rejection)
    ]
    # Seconds are truncated for some customers: order holds to the second.
    assert all(b >= a - timedelta(seconds=1) for a, b in itertools.pairwise(times))


def test_the_stream_clock_follows_the_model_so_real_time_runs_send_evenly() -> None:
    """A real-time player sends each record at its ``stream_ms``: never early, never bunched.

    When the clock was the newest ``occurred_at`` emitted, it stood still while reordered
    events came out minutes late, then jumped: here 52 records shared one instant, and a
    live demo went 30 s without a single event.
    """
    config = SimulationConfig(
        seed=3, customers=2000, duration=timedelta(days=1), events_target=20_000, **FAULTS
    )
    emissions = list(Simulation(config).emissions())
    stream = [e.stream_ms for e in emissions]
    assert stream == sorted(stream)
    for emission in emissions:
        parsed = _parse(emission.record)
        if emission.kind == "event" and not isinstance(parsed, Rejection):
            assert parsed.occurred_at <= config.start + timedelta(milliseconds=emission.stream_ms)
    sharing = Counter(stream)
    del sharing[stream[-1]]  # what the reorderer still holds at the end leaves at once
    assert max(sharing.values()) <= 20
    assert len(stream) / len(sharing) < 3


def test_offsets_vary_and_amounts_are_decimal_strings(faulty: Run) -> None:
    offsets: Counter[str] = Counter()
    for emission in faulty.emissions:
        if emission.kind != "event":
            continue
        text = emission.record.value or b""
        stamp = str(_json(text)["occurred_at"])
        offsets["Z" if stamp.endswith("Z") else stamp[-6:]] += 1
        if emission.record.event_type == "purchase":
            amount = _json(text)["amount"]
            assert isinstance(amount, str)
            assert len(amount.split(".")[1]) == 2
        if emission.record.event_type == "campaign_click":
            cost = _json(text)["cost"]
            assert isinstance(cost, str)
            assert Decimal(cost) >= 0
            assert len(cost.split(".")[1]) <= 4
    assert offsets["Z"] > 0
    assert len(offsets) >= 5


def _json(value: bytes) -> dict[str, Any]:
    data = orjson.loads(value)
    assert isinstance(data, dict)
    return data


# -- realism at the reference volume ---------------------------------------------------------


def test_reference_volume_is_roughly_as_requested(big: Run) -> None:
    total = len(big.emissions)
    assert 15_000 <= total <= 25_000
    assert abs(total - big.plan_expected) / big.plan_expected < 0.25


@pytest.mark.parametrize(
    ("customers", "days", "target"),
    [(100, 40, 20_000), (2000, 10, 20_000), (300, 7, 3_000)],
)
def test_volume_target_holds_across_shapes(customers: int, days: int, target: int) -> None:
    config = SimulationConfig(
        customers=customers, duration=timedelta(days=days), events_target=target
    )
    total = sum(1 for _ in generate(config))
    assert abs(total - target) / target < 0.25, total


def test_rate_per_day_sets_the_volume() -> None:
    config = SimulationConfig(customers=200, duration=timedelta(days=10), rate_per_day=500)
    total = sum(1 for _ in generate(config))
    assert abs(total - 5000) / 5000 < 0.25, total


def test_reference_run_has_every_type_region_and_campaign(big: Run) -> None:
    types = Counter(e.event_type for e in big.events)
    assert set(types) == {"signup", "purchase", "cancellation", "campaign_click", "survey"}
    regions = {getattr(e, "region", None) for e in big.events} - {None}
    assert len(regions) >= 3
    acquired = {getattr(e, "campaign_id", None) for e in big.events if e.event_type == "signup"}
    assert len(acquired - {None}) >= 3
    assert None in acquired
    clicked = {getattr(e, "campaign_id", None) for e in big.events} - {None}
    assert len(clicked) >= 3


def test_reference_run_has_heavy_tailed_orders_and_sane_surveys(big: Run) -> None:
    amounts = [
        Decimal(str(getattr(e, "amount", 0))) for e in big.events if e.event_type == "purchase"
    ]
    assert min(amounts) > 0
    assert max(amounts) > 1000
    assert sorted(amounts)[len(amounts) // 2] < 100  # the median order is small
    scores: defaultdict[str, list[int]] = defaultdict(list)
    for event in big.events:
        if isinstance(event, Survey):
            scores[event.survey_type].append(event.score)
    assert set(scores["nps"]) <= set(range(11))
    assert len(set(scores["nps"])) >= 6
    assert set(scores["csat"]) <= set(range(1, 6))
    assert len(set(scores["csat"])) >= 3


def test_churned_customers_come_back(big: Run) -> None:
    history: defaultdict[str, list[str]] = defaultdict(list)
    for event in big.events:
        if event.event_type in ("signup", "cancellation"):
            history[event.customer_id].append(event.event_type)
    returned = [
        c for c, steps in history.items() if "signup,cancellation,signup" in ",".join(steps)
    ]
    assert len(returned) >= 5
    assert big.stats.resignups >= len(returned)


def test_purchases_follow_clicks_within_days(big: Run) -> None:
    last_click: dict[str, datetime] = {}
    following = purchases = 0
    for event in big.events:
        if event.event_type == "campaign_click":
            last_click[event.customer_id] = event.occurred_at
        elif event.event_type == "purchase":
            purchases += 1
            clicked = last_click.get(event.customer_id)
            if clicked is not None and timedelta(0) <= event.occurred_at - clicked <= timedelta(7):
                following += 1
    assert following >= 0.3 * purchases


def test_activity_follows_local_time_of_day_and_week() -> None:
    config = SimulationConfig(
        customers=400, duration=timedelta(days=28), regions=(Region("EU", 1.0, ("+01:00",)),)
    )
    local = [
        p.occurred_at + timedelta(hours=1)
        for p in (_parse(r) for r in generate(config))
        if not isinstance(p, Rejection) and p.event_type != "signup"
    ]
    by_hour = Counter(moment.hour for moment in local)
    by_weekday = Counter(moment.weekday() for moment in local)
    assert sum(by_hour[h] for h in (18, 19, 20)) > 4 * sum(by_hour[h] for h in (2, 3, 4))
    assert by_weekday[5] > by_weekday[0]  # Saturdays are busier than Mondays


# -- scenarios ---------------------------------------------------------------------------------


def _values(config: SimulationConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """Event type and JSON object of each record (all valid here: no faults injected)."""
    for record in generate(config):
        yield record.event_type, orjson.loads(record.value or b"")


def _at(value: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(value["occurred_at"])


def _cancellations(config: SimulationConfig, lo: datetime, hi: datetime) -> Counter[str]:
    """Cancellations in [lo, hi) by the region of the customer's latest signup."""
    regions: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for event_type, value in _values(config):
        if event_type == "signup":
            regions[value["customer_id"]] = value["region"].upper()
        elif event_type == "cancellation" and lo <= _at(value) < hi:
            counts[regions[value["customer_id"]]] += 1
    return counts


def test_churn_spike_raises_cancellations_in_its_region_and_period() -> None:
    at = START + timedelta(days=7)
    spike = ChurnSpike(region="EU", at=at, duration=timedelta(hours=48), factor=10)
    shape: dict[str, Any] = {"seed": 3, "customers": 600, "duration": timedelta(days=14)}
    window = (at, at + timedelta(hours=48))
    baseline = _cancellations(SimulationConfig(**shape), *window)
    spiked = _cancellations(SimulationConfig(**shape, scenarios=(spike,)), *window)
    assert spiked["EU"] >= 3 * max(baseline["EU"], 2), (baseline, spiked)
    assert spiked["NA"] < spiked["EU"]  # other regions are not hit


def _conversion_share(config: SimulationConfig, campaign: str, lo: datetime, hi: datetime) -> float:
    """Last touch: the share of the campaign's clicks in [lo, hi) that a purchase converted."""
    latest: dict[str, list[Any]] = {}
    clicks: list[list[Any]] = []
    for event_type, value in _values(config):
        customer = value["customer_id"]
        if event_type == "campaign_click":
            entry: list[Any] = [_at(value), False]
            latest[customer] = entry
            if value["campaign_id"] == campaign and lo <= entry[0] < hi:
                clicks.append(entry)
        elif event_type == "purchase" and customer in latest and not latest[customer][1]:
            age = _at(value) - latest[customer][0]
            latest[customer][1] = timedelta(0) <= age <= timedelta(days=7)
    assert len(clicks) >= 50
    return sum(1 for _, converted in clicks if converted) / len(clicks)


def test_conversion_collapse_stops_purchases_after_that_campaigns_clicks() -> None:
    at = START + timedelta(days=7)
    collapse = ConversionCollapse(
        campaign="spring-sale", at=at, duration=timedelta(hours=96), factor=0
    )
    shape: dict[str, Any] = {"seed": 1, "customers": 600, "duration": timedelta(days=14)}
    window = (at, at + timedelta(hours=96))
    base = _conversion_share(SimulationConfig(**shape), "spring-sale", *window)
    hit = _conversion_share(
        SimulationConfig(**shape, scenarios=(collapse,)), "spring-sale", *window
    )
    assert hit < 0.6 * base, (base, hit)


def test_traffic_surge_raises_activity() -> None:
    at = START + timedelta(days=3)
    surge = TrafficSurge(at=at, duration=timedelta(hours=12), factor=4)
    shape: dict[str, Any] = {"customers": 300, "duration": timedelta(days=5)}

    def busy(config: SimulationConfig) -> int:
        return sum(1 for _, v in _values(config) if at <= _at(v) < at + timedelta(hours=12))

    assert busy(SimulationConfig(**shape, scenarios=(surge,))) > 2 * busy(SimulationConfig(**shape))


def test_parse_scenario() -> None:
    spike = parse_scenario("churn_spike:region=EU,at=2026-11-10T00:00:00Z,hours=6,factor=8")
    assert spike == ChurnSpike(
        region="EU", at=datetime(2026, 11, 10, tzinfo=UTC), duration=timedelta(hours=6), factor=8
    )
    collapse = parse_scenario(
        "conversion_collapse:campaign=spring-sale,at=2026-11-10T01:00:00+01:00,duration=2d,factor=0"
    )
    assert isinstance(collapse, ConversionCollapse)
    assert collapse.duration == timedelta(days=2)
    assert collapse.factor == 0
    assert parse_scenario(spike.describe()) == spike
    surge = parse_scenario("traffic_surge:at=2026-11-10T00:00:00Z,minutes=90,factor=3")
    assert surge == TrafficSurge(
        at=datetime(2026, 11, 10, tzinfo=UTC), duration=timedelta(minutes=90), factor=3
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope:region=EU", "unknown scenario"),
        ("churn_spike:region=EU,at=2026-11-10T00:00:00Z,factor=8", "missing option"),
        ("churn_spike:region=EU,at=2026-11-10T00:00:00,hours=6,factor=8", "no UTC offset"),
        ("churn_spike:region=EU,at=2026-11-10T00:00:00Z,hours=6,factor=8,x=1", "unknown option"),
        ("churn_spike:region=EU,at=2026-11-10T00:00:00Z,hours=6,factor=-1", "factor"),
        ("churn_spike:region=EU,at=2026-11-10T00:00:00Z,hours=6,factor=lots", "factor"),
        ("churn_spike:region", "key=value"),
    ],
)
def test_parse_scenario_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scenario(text)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"start": datetime(2026, 11, 1)}, "timezone-aware"),  # noqa: DTZ001 - under test
        ({"duration": timedelta(0)}, "duration"),
        ({"customers": 0}, "customers"),
        ({"events_target": 10, "rate_per_day": 10.0}, "not both"),
        ({"disorder": timedelta(hours=4)}, "disorder"),
        ({"inject_bad": 1.5}, "inject_bad"),
        ({"regions": ()}, "region"),
        ({"history_events": 100}, "go together"),
        ({"history": timedelta(days=1)}, "go together"),
        ({"history": timedelta(days=40), "history_events": 100}, "shorter than the duration"),
        ({"history": timedelta(days=1), "history_events": 0}, "at least 1"),
    ],
)
def test_config_rejects_nonsense(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"churn_rate": -1}, "churn_rate"), ({"organic_share": 2}, "organic_share")],
)
def test_behaviour_rejects_nonsense(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Behaviour(**overrides)


# -- pacing and sinks ----------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_limits_the_rate_and_plays_simulated_time_faster() -> None:
    clock = FakeClock()
    pacer = Pacer(Pacing(rate=10), clock)
    assert pacer.delay(0, 0) == 0
    assert pacer.delay(5, 0) == pytest.approx(0.5)
    clock.now += 0.5
    assert pacer.delay(5, 0) == pytest.approx(0.0)

    clock = FakeClock()
    pacer = Pacer(Pacing(speedup=3600), clock)
    assert pacer.delay(0, 0) == 0
    assert pacer.delay(1, 2 * 3_600_000) == pytest.approx(2.0)  # two simulated hours
    assert not Pacer(Pacing(), clock).limited


def test_write_jsonl_paces_and_matches_generate(tmp_path: Path) -> None:
    config = SimulationConfig(customers=20, duration=timedelta(days=1))
    clock = FakeClock()
    out = io.BytesIO()
    result = write_jsonl(
        Simulation(config), out, pacing=Pacing(speedup=3600), monotonic=clock, sleep=clock.sleep
    )
    records = list(generate(config))
    assert result.sent == len(records)
    assert not result.interrupted
    assert [LogRecord.from_line(line) for line in out.getvalue().splitlines()] == records
    # One simulated day at 3600x is 24 wall-clock seconds.
    assert 20 <= clock.now - 100.0 <= 24.5


def test_log_progress_logs_at_intervals(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = LogProgress(interval=5, monotonic=clock)
    with caplog.at_level("INFO", logger="stream_app.simulate.runner"):
        progress.update(10, START)
        clock.now += 6
        progress.update(20, START)
        progress.update(30, START)
    assert len(caplog.records) == 1
    assert "20 records" in caplog.text


class FakeProducer:
    """Records what an AIOKafkaProducer would send; can set ``stop`` after N sends."""

    def __init__(self, stop: asyncio.Event | None = None, stop_after: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.started = self.stopped = False
        self._stop = stop
        self._stop_after = stop_after

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes | None, key: bytes | None) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        if self._stop is not None and len(self.sent) == self._stop_after:
            self._stop.set()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_send_to_kafka_keys_by_customer_into_the_five_topics() -> None:
    config = SimulationConfig(customers=30, duration=timedelta(days=2), inject_bad=0.05)
    settings = Settings(topic_prefix="sim.")
    producer = FakeProducer()
    result = await send_to_kafka(
        Simulation(config), settings, batch_size=7, producer_factory=lambda _: producer
    )
    records = list(generate(config))
    assert result.sent == len(records)
    assert producer.started
    assert producer.stopped
    suffixes = {
        "signup": "signups",
        "purchase": "purchases",
        "cancellation": "cancellations",
        "campaign_click": "campaign-clicks",
        "survey": "surveys",
    }
    assert producer.sent == [(f"sim.{suffixes[r.event_type]}", r.key, r.value) for r in records]


async def test_send_to_kafka_stops_cleanly() -> None:
    config = SimulationConfig(customers=30, duration=timedelta(days=2))
    stop = asyncio.Event()
    producer = FakeProducer(stop, stop_after=26)
    result = await send_to_kafka(
        Simulation(config), Settings(), stop=stop, producer_factory=lambda _: producer
    )
    assert result.interrupted
    assert result.sent == 26 == len(producer.sent)
    assert producer.stopped


# -- CLI -----------------------------------------------------------------------------------------


def _cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kpi")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["simulate", *argv])


def test_cli_writes_a_log_that_reads_back_identically(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    argv = [
        "--seed",
        "5",
        "--customers",
        "80",
        "--days",
        "3",
        "--events",
        "1500",
        "--inject-bad",
        "0.02",
        "--duplicates",
        "0.02",
        "--disorder",
        "5m",
        "--scenario",
        "churn_spike:region=EU,at=2026-11-02T00:00:00Z,hours=6,factor=8",
        "--out",
        str(path),
    ]
    args = _cli_args(*argv)
    assert args.func is run
    assert run(Settings(), args) == 0
    config, _ = build_config(Settings(), args)
    assert config.disorder == timedelta(minutes=5)
    assert config.customers == 80
    assert list(read_log(path)) == list(generate(config))


def test_cli_realtime_anchors_the_start_to_now() -> None:
    now = datetime(2027, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
    config, pacing = build_config(
        Settings(), _cli_args("--realtime", "--kafka", "--warmup", "1h"), clock=lambda: now
    )
    assert config.start == now.replace(microsecond=0) - timedelta(hours=1)
    assert config.duration == timedelta(days=40, hours=1)  # --days counts from now
    assert pacing.speedup == 1.0
    # Records due before now (the warm-up) go out at once, later ones as they fall due.
    assert pacing.elapsed_at_start == pytest.approx(3600.89)
    clock = FakeClock()
    pacer = Pacer(pacing, clock)
    assert pacer.delay(0, 1_800_000) <= 0
    assert pacer.delay(1, 3_610_890) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="realtime"):
        build_config(Settings(), _cli_args("--realtime", "--speedup", "10", "--kafka"))


@pytest.mark.parametrize(
    "argv",
    [
        ["--inject-bad", "2", "--out", "x"],
        ["--events", "10", "--rate-per-day", "5", "--out", "x"],
        ["--scenario", "bogus:x=1", "--out", "x"],
        ["--start", "2026-11-01T00:00:00", "--out", "x"],
        ["--disorder", "soon", "--out", "x"],
        ["--customers", "0", "--out", "x"],
        [],
    ],
)
def test_cli_rejects_bad_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli_args(*argv)
    assert "error" in capsys.readouterr().err


def test_cli_reports_an_invalid_combination(tmp_path: Path) -> None:
    args = _cli_args("--disorder", "5h", "--out", str(tmp_path / "x.jsonl"))
    assert run(Settings(), args) == 2


def _split_counts(config: SimulationConfig) -> tuple[int, int]:
    """Records that leave before the end of the history, and after it."""
    split = config.history / timedelta(milliseconds=1)
    before = after = 0
    for emission in Simulation(config).emissions():
        if emission.stream_ms < split:
            before += 1
        else:
            after += 1
    return before, after


def test_a_history_gets_its_own_volume_and_the_rest_keeps_its_rate() -> None:
    history = SimulationConfig(
        seed=3,
        customers=300,
        duration=timedelta(days=11),
        rate_per_day=20_000,
        history=timedelta(days=10),
        history_events=3_000,
        inject_bad=0.01,
        duplicates=0.01,
    )
    before, after = _split_counts(history)
    # Ten days in about 3,000 records, then the last day at about 20,000 a day.
    assert abs(before - 3_000) / 3_000 < 0.25, before
    assert abs(after - 20_000) / 20_000 < 0.25, after
    plan = Simulation(history).plan
    assert plan.history_activity_scale is not None
    assert plan.history_activity_scale < plan.activity_scale
    assert abs(plan.expected_records - 23_000) / 23_000 < 0.02
    # Deterministic for a seed, like any other run.
    assert _log_bytes(history) == _log_bytes(history)
    # Without a history, one rate covers the whole run.
    flat = SimulationConfig(seed=3, customers=300, duration=timedelta(days=11), rate_per_day=20_000)
    flat_plan = Simulation(flat).plan
    assert flat_plan.history_activity_scale is None
    assert abs(flat_plan.expected_records - 220_000) / 220_000 < 0.02


def test_cli_warmup_events_sizes_the_history_of_a_realtime_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)
    argv = ("--realtime", "--kafka", "--warmup", "36d", "--days", "1", "--customers", "300")
    config, pacing = build_config(
        Settings(),
        _cli_args(*argv, "--warmup-events", "4000", "--rate-per-day", "30000"),
        clock=lambda: now,
    )
    assert config.start == now - timedelta(days=36)
    assert config.history == timedelta(days=36)
    assert config.history_events == 4000
    assert config.rate_per_day == 30_000
    assert pacing.elapsed_at_start == pytest.approx(36 * 86_400)
    before, after = _split_counts(config)
    assert abs(before - 4_000) / 4_000 < 0.25, before
    assert abs(after - 30_000) / 30_000 < 0.25, after
    # Without --warmup-events the warmup keeps the live rate: no separate history.
    config, _ = build_config(
        Settings(), _cli_args(*argv, "--rate-per-day", "30000"), clock=lambda: now
    )
    assert config.history == timedelta(0)
    assert config.history_events is None
    with pytest.raises(ValueError, match="needs --realtime"):
        build_config(Settings(), _cli_args("--warmup-events", "10", "--out", "x"))
    with pytest.raises(SystemExit):
        _cli_args("--help")
    assert "--warmup-events N" in capsys.readouterr().out
