"""The compiled offer and drain loops leave a partition as the Python loops do."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas import EventType
from stream_app.customers import intake, partition
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.settings import Settings

pytestmark = pytest.mark.skipif(
    intake.offer_run is None or intake.drain_run is None, reason="the compiled intake is not built"
)

SETTINGS = Settings(max_lateness="1h")
START = datetime(2026, 11, 2, tzinfo=UTC)
TOPICS: dict[EventType, list[str]] = {
    "signup": ["crm.signups"],
    "purchase": ["crm.purchases"],
    "cancellation": ["crm.cancellations"],
    # Two topics of one event type: the loop must hand over at each change of topic.
    "campaign_click": ["crm.campaign-clicks", "crm.campaign-clicks-b"],
    "survey": ["crm.surveys"],
}


def _clock() -> datetime:
    return START


def _payload(event_type: EventType, rng: random.Random) -> dict[str, Any]:
    if event_type == "signup":
        return {"region": rng.choice(["eu", "us", None]), "campaign_id": "spring"}
    if event_type == "purchase":
        return {"order_id": "o", "amount": rng.choice(["1.50", 3]), "currency": "USD"}
    if event_type == "cancellation":
        return {}
    if event_type == "campaign_click":
        return {"campaign_id": rng.choice(["spring", "fall"]), "cost": "0.25"}
    return {"survey_type": "nps", "score": rng.randrange(11)}


def _value(
    event_type: EventType, rng: random.Random, n: int, minutes: int, sent: list[bytes]
) -> bytes | None:
    roll = rng.random()
    if roll > 0.9 and sent:
        return rng.choice(sent[-20:])  # a copy of a recent message: a duplicate
    if roll < 0.03:
        return b'{"event_id": broken'  # a dead letter
    if roll < 0.04:
        return None  # a tombstone: a dead letter too
    customer = f"c{rng.randrange(30)}"
    # Mostly fresh ids; some repeated (duplicates), within and across batches.
    event_id = f"e{n}"
    data = {
        "event_id": event_id,
        "customer_id": customer,
        "occurred_at": (START + timedelta(minutes=minutes)).isoformat(),
        **_payload(event_type, rng),
    }
    if rng.random() < 0.05:
        data["customer_id"] = customer + "é"  # valid, but for the Python fast path only
    raw = orjson.dumps(data)
    if rng.random() < 0.05:
        raw = raw.replace(b'"event_id"', b'"event\\u005fid"')  # an escape: full validation
    sent.append(raw)
    return raw


def _batches(seed: int) -> list[list[tuple[EventType, list[RawMessage]]]]:
    rng = random.Random(seed)
    offsets: dict[str, int] = {}
    sent: dict[EventType, list[bytes]] = {event_type: [] for event_type in TOPICS}
    batches = []
    n = 0
    for _ in range(8):
        runs = []
        for event_type, topics in TOPICS.items():
            messages = []
            for _ in range(rng.randrange(0, 40)):
                topic = rng.choice(topics)
                offset = offsets.get(topic, 0)
                # Now and then a range delivered again (a seek), or the clock far behind.
                if rng.random() < 0.05 and offset > 3:
                    offset -= 3
                offsets[topic] = offset + 1
                n += 1
                minutes = n // 4 - (200 if rng.random() < 0.05 else 0)
                # Surveys lag: in time on their own topic, but too late for the watermark
                # the others set, which the drain finds.
                if event_type == "survey":
                    minutes -= 90
                value = _value(event_type, rng, n, minutes, sent[event_type])
                key = None if rng.random() < 0.5 else (orjson.loads(value)["customer_id"].encode()
                    if value and value.startswith(b'{"event_id":"') else b"k")  # fmt: skip
                messages.append(RawMessage(event_type, topic, 0, offset, key, value))
            if messages:
                runs.append((event_type, messages))
        batches.append(runs)
    return batches


def _view(state: PartitionState) -> dict[str, Any]:
    return {
        "buffer": [
            (t, seq, ident, event, id(message)) for t, seq, ident, event, message in state._buffer
        ],
        "buffered_ids": set(state._buffered_ids),
        "fetched": dict(state._fetched),
        "heads": dict(state.heads),
        "seq": state._seq,
        "customers": {c: r.to_json() for c, r in state.customers.items()},
        "partials": {k: dict(a.diffs) for k, a in state.partials.items() if any(a.diffs)},
        "watermark": state.watermark_us,
    }


@pytest.mark.parametrize("seed", range(12))
def test_random_batches_leave_the_same_partition(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled_state = PartitionState(0, SETTINGS, _clock)
    python_state = PartitionState(0, SETTINGS, _clock)
    loops = {
        id(compiled_state): (intake.offer_run, intake.drain_run),
        id(python_state): (None, None),
    }
    taken = dead = late = duplicates = 0
    for runs in _batches(seed):
        offered, drained = [], []
        for state in (compiled_state, python_state):
            offer_loop, drain_loop = loops[id(state)]
            monkeypatch.setattr(partition, "offer_run", offer_loop)
            monkeypatch.setattr(partition, "drain_run", drain_loop)
            offered.append(state.offer_runs(runs))
            if state is compiled_state:
                taken += len(state._buffer)
            drained.append(state.drain())
        for got, expected in (offered, drained):
            assert got.duplicates == expected.duplicates
            assert got.accepted == expected.accepted
            assert [d.model_dump() for d in got.dead_letters] == [
                d.model_dump() for d in expected.dead_letters
            ]
        assert _view(compiled_state) == _view(python_state)
        dead += len(offered[0].dead_letters)
        late += len(drained[0].dead_letters)
        duplicates += offered[0].duplicates + drained[0].duplicates
    # The streams hold all kinds: taken, dead letters (malformed, too late when offered, too
    # late for the watermark) and duplicates.
    assert taken > 50
    assert dead > 3
    assert late > 3
    assert duplicates > 3


def test_the_compiled_loops_are_in_use() -> None:
    assert partition.offer_run is intake.offer_run is not None
    assert partition.drain_run is intake.drain_run is not None


def test_arguments_are_checked() -> None:
    assert intake.offer_run is not None
    with pytest.raises(TypeError):
        intake.offer_run([], 0, "t", "survey", "USD", 0, None, 0, {}, set(), [])  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        intake.offer_run((), 0, "t", "survey", "USD", 0, None, 0, {}, set(), [], 0)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        intake.offer_run([], 0, "t", "refund", "USD", 0, None, 0, {}, set(), [], 0)  # type: ignore[arg-type]
    # Nothing to do: the start comes back, with what was passed in.
    assert intake.offer_run([], 0, "t", "survey", "USD", 5, 9, 0, {}, set(), [], 3) == (
        0, 5, 9, 3, 0,
    )  # fmt: skip


def test_drain_arguments_are_checked() -> None:
    assert intake.drain_run is not None
    with pytest.raises(TypeError):
        intake.drain_run([], 0, set(), {}, {}, [0] * 5, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        intake.drain_run([("not", "a", "buffer", "entry")], 0, set(), {}, {}, [0] * 5, None, 0)
    entry = (1, 1, ("c", "e"), [1, 9, "e"], None)  # a rank past the five
    with pytest.raises(IndexError):
        intake.drain_run([entry], 0, set(), {}, {}, [0] * 5, None, 0)
    assert intake.drain_run([], 0, set(), {}, {}, [0] * 5, 7, 0) == (0, 7, 0)
