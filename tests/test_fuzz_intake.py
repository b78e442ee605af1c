"""Hostile messages through the real partition path: nothing raises, nothing is lost, KPIs exact."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from schemas import EventType
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.settings import Settings
from tests.fuzz_intake import fuzz_settings, fuzzed_records, run

TYPES: tuple[EventType, ...] = ("signup", "purchase", "cancellation", "campaign_click", "survey")


@pytest.mark.parametrize("seed", [11, 12])
def test_mutated_messages_are_all_accounted_for_and_kpis_stay_exact(seed: int) -> None:
    records = list(fuzzed_records(seed, 12_000))
    report = run(records, fuzz_settings())
    assert report.offered == len(records)
    assert report.accounted == report.offered, "a message was neither applied nor rejected"
    assert report.accepted > 1_000
    # The mutations reach the deep reasons, not only the JSON parser.
    assert {"invalid_json", "invalid_field", "invalid_encoding"} <= set(report.dead_letters)
    assert report.windows_checked > 100
    assert not report.mismatches, report.mismatches[:3]


@pytest.mark.parametrize("event_type", TYPES)
def test_a_huge_exponent_is_a_dead_letter_and_the_partition_goes_on(event_type: EventType) -> None:
    state = PartitionState(0, Settings(), lambda: datetime.now(UTC))
    hostile = b'{"event_id":1E+1000000000000000000}'
    valid = orjson.dumps(
        {"event_id": "e-1", "customer_id": "c-1", "occurred_at": "2026-11-02T09:15:00Z"}
    )
    result = state.ingest(
        [
            RawMessage(event_type, "t", 0, 0, b"c-1", hostile),
            RawMessage("cancellation", "t.c", 0, 0, b"c-1", valid),
        ]
    )
    assert [letter.source_offset for letter in result.dead_letters] == [0]
    assert result.dead_letters[0].source_topic == "t"
    assert result.accepted == {"cancellation": 1}
