"""A fuzzer for the customer stage's intake: hostile bytes through the real partition path.

Valid simulated messages are interleaved with mutations of them (byte flips, truncation at
every length, huge exponents, deep nesting, out-of-range dates, lone surrogates, duplicate
keys, BOMs, wrong JSON types) and fed to ``PartitionState`` as the engine feeds it. Checked:
nothing raises; every message is accounted for exactly once (accepted, duplicate or dead
letter with a known reason and its source offset); and the window counts equal the
independent reference's recount over the same messages.

The suite runs a short version (``tests/test_fuzz_intake.py``); the long one is
``make fuzz`` (``python -m tests.fuzz_intake --messages 1000000``).
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from schemas import EventType, RejectReason
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.eventlog import LogRecord
from stream_app.kpis.formulas import counts_from_vector
from stream_app.kpis.windows import DiffArray, Spec
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate
from stream_app.verify.reference import filter_records, reference_from_intake

logger = logging.getLogger("fuzz_intake")

Mutation = Callable[[random.Random, bytes], bytes]

# The base counts a campaign segment carries.
_CAMPAIGN_COUNTS = (
    "clicks",
    "spend_micros",
    "converted_clicks",
    "attributed_revenue_micros",
    "new_customers",
)
_HUGE = (b"1E+1000000000000000000", b"-1e-999999999", b"1e400", b"9" * 5000, b"-0", b"1.0e1")
_DATES = (
    b'"0001-01-01T00:00:00+01:00"',
    b'"9999-12-31T23:59:59-01:00"',
    b'"2026-02-30T00:00:00Z"',
    b'"2026-11-02T24:00:00Z"',
    b'"2026-11-02T09:15:00+24:00"',
    b'"1900-01-01T00:00:00.999999999Z"',
)
_STRINGS = (b'"\\ud800"', b'"\\udfff x"', b'"\\u0000"', b'"\xed\xa0\x80"', b'""', b'"\\u0085"')


def _flip(rnd: random.Random, value: bytes) -> bytes:
    data = bytearray(value)
    for _ in range(rnd.randint(1, 3)):
        data[rnd.randrange(len(data))] = rnd.randrange(256)
    return bytes(data)


def _truncate(rnd: random.Random, value: bytes) -> bytes:
    return value[: rnd.randrange(len(value))]


def _replace_value(rnd: random.Random, value: bytes, replacement: bytes) -> bytes:
    """``value`` with one of its field values (after a ``":``) replaced, JSON-shape kept."""
    starts = [i + 2 for i in range(len(value) - 1) if value[i : i + 2] == b'":']
    if not starts:
        return value + replacement
    start = rnd.choice(starts)
    end = start
    if value[start : start + 1] == b'"':
        end = value.index(b'"', start + 1) + 1
    else:
        while end < len(value) and value[end : end + 1] not in (b",", b"}"):
            end += 1
    return value[:start] + replacement + value[end:]


def _huge_number(rnd: random.Random, value: bytes) -> bytes:
    return _replace_value(rnd, value, rnd.choice(_HUGE))


def _bad_date(rnd: random.Random, value: bytes) -> bytes:
    return _replace_value(rnd, value, rnd.choice(_DATES))


def _bad_string(rnd: random.Random, value: bytes) -> bytes:
    return _replace_value(rnd, value, rnd.choice(_STRINGS))


def _wrong_type(rnd: random.Random, value: bytes) -> bytes:
    return _replace_value(rnd, value, rnd.choice((b"true", b"null", b"[]", b"{}", b"[1,{}]")))


def _deep(rnd: random.Random, value: bytes) -> bytes:
    depth = rnd.choice((10, 100, 300, 3000, 30000))
    return _replace_value(rnd, value, b"[" * depth + b"]" * depth)


def _duplicate_key(rnd: random.Random, value: bytes) -> bytes:
    # The first key again, with another value: JSON parsers keep the last.
    end = value.index(b'":') + 2
    other = rnd.choice((f'"dup-{rnd.random()}"'.encode(), b"1", b"null"))
    return value[:-1] + b"," + value[1:end] + other + b"}"


def _bom(rnd: random.Random, value: bytes) -> bytes:
    return rnd.choice((b"\xef\xbb\xbf", b"\xff\xfe", b"\x00")) + value


MUTATIONS: tuple[Mutation, ...] = (
    _flip,
    _truncate,
    _huge_number,
    _bad_date,
    _bad_string,
    _wrong_type,
    _deep,
    _duplicate_key,
    _bom,
)


def fuzzed_records(seed: int, messages: int, hostile_share: float = 0.5) -> Iterator[LogRecord]:
    """About ``messages`` records: simulated traffic, each followed by mutations of it."""
    rnd = random.Random(seed)
    config = SimulationConfig(
        seed=seed,
        duration=timedelta(days=3),
        customers=max(50, messages // 40),
        events_target=max(100, int(messages * (1 - hostile_share))),
    )
    emitted = 0
    for record in generate(config):
        yield record
        emitted += 1
        while rnd.random() < hostile_share and emitted < messages:
            mutated = rnd.choice(MUTATIONS)(rnd, _renamed(record.value, emitted))
            yield LogRecord(record.event_type, record.key, mutated)
            emitted += 1
        if emitted >= messages:
            return


def _renamed(value: bytes | None, serial: int) -> bytes:
    """``value`` with an event_id of its own, where it has one.

    A mutated copy that keeps the original's id is a duplicate whose occurred_at may be
    years off; the engine and the reference define the watermark differently for such
    copies (per topic partition, against the whole log), so each mutant is a new event.
    """
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return value or b"{}"
    if isinstance(data, dict) and "event_id" in data:
        data["event_id"] = f"fz-{serial}"
    return orjson.dumps(data)


@dataclass
class FuzzReport:
    """What the partition path made of the fuzzed messages."""

    offered: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)
    windows_checked: int = 0

    @property
    def accounted(self) -> int:
        return self.accepted + self.duplicates + sum(self.dead_letters.values())


def fuzz_settings() -> Settings:
    """Settings under which the engine and the reference must agree on every message.

    A mutated timestamp can move the watermark years ahead. The engine judges lateness per
    topic partition and the reference over the whole log, which agree only for events that
    are clearly late, so here nothing is late and both count every valid event.
    """
    century = timedelta(days=36_500)
    return Settings(max_lateness=century, dedupe_horizon=century)


def run(records: list[LogRecord], settings: Settings) -> FuzzReport:
    """Feed ``records`` one by one to one partition, in log order, and compare with the reference.

    One partition and a drain after every message apply events in log order, as the
    reference reads them.
    """
    report = FuzzReport()
    state = PartitionState(0, settings, lambda: datetime.now(UTC))
    store = SegmentStore()
    offsets: Counter[EventType] = Counter()
    for record in records:
        offset = offsets[record.event_type]
        offsets[record.event_type] += 1
        topic = f"fuzz.{record.event_type}"
        message = RawMessage(record.event_type, topic, 0, offset, record.key, record.value)
        offered = state.offer([message])
        drained = state.drain()
        report.offered += 1
        report.accepted += sum(drained.accepted.values())
        report.duplicates += offered.duplicates + drained.duplicates
        for letter in (*offered.dead_letters, *drained.dead_letters):
            assert letter.source_topic == topic
            assert letter.source_offset == offset
            assert letter.original_value() == record.value
            report.dead_letters[RejectReason(letter.reason).value] += 1
        if report.offered % 5_000 == 0:
            _send(state, store)
    _send(state, store)
    _compare(records, settings, state, store, report)
    return report


def _send(state: PartitionState, store: SegmentStore) -> None:
    for update in state.checkpoint().updates:
        store.apply_update(orjson.loads(update.to_bytes()), 0)


def _compare(
    records: list[LogRecord],
    settings: Settings,
    state: PartitionState,
    store: SegmentStore,
    report: FuzzReport,
) -> None:
    intake = filter_records(records, settings)
    reference = reference_from_intake(intake, settings)
    # Windows at the watermark, and around the simulated traffic where a mutated date did
    # not move the watermark so far ahead that the engine no longer keeps those windows.
    times = sorted(event.occurred_at for event in intake.events)
    anchor = times[len(times) * 9 // 10] if times else datetime.now(UTC)
    anchor_us = (anchor - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    watermark_us = state.watermark_us or 0
    for window in settings.windows:
        spec = Spec.from_window(window)
        current = spec.current_index(watermark_us)
        indexes = set(range(current - 24, current + 1, 3))
        around = spec.current_index(anchor_us)
        if around >= current - settings.history_steps // 2:
            indexes.update(range(around - 24, around + 1, 3))
        for segment, aggregate in store.aggregates.items():
            # A segment gets a spec's sums with its first fact there (a campaign with only
            # a mutated, too-late click may have none).
            totals = aggregate.totals.get(spec.name, DiffArray())
            for k in sorted(indexes):
                start_us, end_us = spec.bounds_us(k)
                expected = reference.counts_for(segment, start_us // 1000, end_us // 1000)
                actual = counts_from_vector(totals.value_at(k))
                if segment.startswith("campaign:"):
                    expected = {name: expected[name] for name in _CAMPAIGN_COUNTS}
                    actual = {name: actual[name] for name in _CAMPAIGN_COUNTS}
                report.windows_checked += 1
                if expected != actual:
                    diff = {
                        n: (expected[n], actual[n]) for n in expected if expected[n] != actual[n]
                    }
                    report.mismatches.append(f"{window.name} {segment} k={k}: {diff}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fuzz the customer stage's intake with mutated messages (make fuzz)."
    )
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages in all")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=50_000, help="messages per reference check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = fuzz_settings()
    failures = 0
    done = 0
    seed = args.seed
    while done < args.messages:
        records = list(fuzzed_records(seed, min(args.chunk, args.messages - done)))
        report = run(records, settings)
        done += report.offered
        lost = report.offered - report.accounted
        failures += bool(lost) + len(report.mismatches)
        logger.info(
            "%d/%d messages (seed %d): %d accepted, %d duplicates, %d dead letters %s, "
            "%d unaccounted, %d of %d windows differ",
            done,
            args.messages,
            seed,
            report.accepted,
            report.duplicates,
            sum(report.dead_letters.values()),
            dict(report.dead_letters),
            lost,
            len(report.mismatches),
            report.windows_checked,
        )
        seed += 1
    logger.info("fuzz: %s", "no failure" if not failures else f"{failures} FAILURES")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
