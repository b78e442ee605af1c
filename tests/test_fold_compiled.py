"""The compiled fold (``_fold.c``) gives the states and facts of the Python fold, exactly."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from stream_app.customers import timeline
from stream_app.customers.timeline import Facts, StoredEvent, fold_python, initial_state
from tests.messages import allocations_grown

pytestmark = pytest.mark.skipif(not timeline.COMPILED_FOLD, reason="the compiled fold is not built")

MINUTE_US = 60_000_000
GRAINS = [1, MINUTE_US, 60 * MINUTE_US, 86_400_000_000]


def compiled(
    state: list[Any],
    events: list[StoredEvent],
    attribution_us: int,
    facts: Facts | None = None,
    sign: int = 1,
    grain_us: int = 1,
) -> list[Any]:
    assert timeline.fold is not fold_python
    return timeline.fold(state, events, attribution_us, facts, sign, grain_us)


def _history(rng: random.Random, length: int, start_us: int) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    t = start_us
    for n in range(length):
        t += rng.choice([0, 1, 999, MINUTE_US // 2, MINUTE_US * 7, 86_400_000_000 * 3])
        rank = rng.choices(range(5), weights=[2, 6, 4, 2, 1])[0]
        event_id = f"e{n}"
        if rank == 0:
            campaign = rng.choice([None, "spring", "x y"])
            events.append([t, 0, event_id, rng.choice(["EU", "US", "unknown"]), campaign])
        elif rank == 1:
            events.append([t, 1, event_id, rng.choice(["spring", "fall"]), rng.randrange(10**7)])
        elif rank == 2:
            events.append([t, 2, event_id, rng.choice([1, 10**6, 10**15])])
        elif rank == 3:
            events.append([t, 3, event_id, rng.choice(["n", "c"]), rng.randrange(11)])
        else:
            events.append([t, 4, event_id])
    events.sort()
    return events


def _both(
    state: list[Any], events: list[StoredEvent], attribution_us: int, sign: int, grain_us: int
) -> None:
    before = copy.deepcopy(state)
    reference, facts = Facts(), Facts()
    expected = fold_python(state, events, attribution_us, reference, sign, grain_us)
    got = compiled(state, events, attribution_us, facts, sign, grain_us)
    assert got == expected
    assert dict(facts.points) == dict(reference.points)
    assert facts.spans == reference.spans
    assert compiled(state, events, attribution_us, None, sign, grain_us) == expected
    assert state == before  # neither changes the state it is given
    # The result shares no mutable part with the input: a later fold may change it.
    assert got[3] is None or got[3] is not state[3]
    assert got[4] is not state[4]


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_fold_alike(seed: int) -> None:
    rng = random.Random(seed)
    start = rng.choice([1_790_000_000_000_000, -2_000_000_000_000_000, 0])  # pre-1970 too
    events = _history(rng, rng.randrange(1, 120), start)
    attribution_us = rng.choice([0, MINUTE_US * 30, 86_400_000_000 * 7])
    grain_us = rng.choice(GRAINS)
    # From the start, and from the state after a prefix (a click, purchases, an activity).
    cut = rng.randrange(len(events))
    _both(initial_state(), events, attribution_us, 1, grain_us)
    middle = fold_python(initial_state(), events[:cut], attribution_us)
    _both(middle, events[cut:], attribution_us, 1, grain_us)
    _both(middle, events[cut:], attribution_us, -1, grain_us)


def test_facts_add_to_what_is_there_even_past_64_bits() -> None:
    rng = random.Random(3)
    events = _history(rng, 80, 1_790_000_000_000_000)
    reference, facts = Facts(), Facts()
    fold_python(initial_state(), events, MINUTE_US * 60, reference)
    compiled(initial_state(), events, MINUTE_US * 60, facts)
    for sink in (reference, facts):
        for vector in sink.points.values():
            # At the edge, and beyond it: the next addition leaves 64 bits.
            vector[:] = [2**63 - 1 if i % 2 else 2**64 for i in range(len(vector))]
        for key in sink.spans:
            sink.spans[key] = -(2**70)
    fold_python(initial_state(), events, MINUTE_US * 60, reference)
    compiled(initial_state(), events, MINUTE_US * 60, facts)
    assert dict(facts.points) == dict(reference.points)
    assert facts.spans == reference.spans
    assert any(2**63 <= value < 2**64 for vector in facts.points.values() for value in vector)


def test_the_fold_in_use_is_the_compiled_one() -> None:
    # CustomerRecord.apply goes through ``fold``; it must reach the compiled twin.
    events = _history(random.Random(5), 30, 1_790_000_000_000_000)
    calls = []
    original = timeline.fold
    assert original is not fold_python

    def spy(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    record = timeline.CustomerRecord.new()
    try:
        timeline.fold = spy
        record.apply(list(events), MINUTE_US * 60, Facts(), MINUTE_US)
    finally:
        timeline.fold = original
    assert calls
    assert record.end == fold_python(initial_state(), events, MINUTE_US * 60)


@pytest.mark.parametrize(
    ("state", "events", "error"),
    [
        ([False, "unknown", None, None], [], TypeError),  # a state of 4
        (initial_state(), [[1]], IndexError),
        (initial_state(), [[1, 1, "e", "c"]], IndexError),  # a click without its cost
        (initial_state(), [["t", 1, "e", "c", 1]], TypeError),
        (initial_state(), [[1, 2, "e", 2**70]], OverflowError),
        (initial_state(), "not a list", TypeError),
    ],
)
def test_malformed_input_raises(state: list[Any], events: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        compiled(state, events, 0, Facts())


def test_no_references_leak() -> None:
    rng = random.Random(9)
    events = _history(rng, 60, 1_790_000_000_000_000)
    middle = fold_python(initial_state(), events[:20], MINUTE_US * 60)

    def run(times: int) -> None:
        for _ in range(times):
            compiled(middle, events[20:], MINUTE_US * 60, Facts(), 1, MINUTE_US)
            compiled(middle, events[20:], MINUTE_US * 60, None, -1, MINUTE_US)
            with pytest.raises(IndexError):
                compiled(middle, [*events[20:], [events[-1][0], 1, "e"]], 0, Facts())

    grown = allocations_grown(run, 3000)
    assert grown < 100_000, grown


def test_a_wrong_layout_is_refused_and_changes_nothing() -> None:
    from stream_app.customers import _fold
    from stream_app.kpis.formulas import BASE_INDEX

    with pytest.raises(KeyError):
        _fold.configure({"orders": 0}, 9, 7, 4)
    with pytest.raises(ValueError, match="outside"):
        _fold.configure({**BASE_INDEX, "clicks": len(BASE_INDEX)}, 9, 7, 4)
    events: list[StoredEvent] = [[1, 1, "e", "spring", 5]]
    reference, facts = Facts(), Facts()
    fold_python(initial_state(), events, 0, reference)
    compiled(initial_state(), events, 0, facts)
    assert dict(facts.points) == dict(reference.points)


def test_facts_of_the_wrong_kind_raise() -> None:
    class NotFacts:
        points: Any = []
        spans: Any = {}

    with pytest.raises(TypeError):
        timeline.fold(initial_state(), [[1, 4, "e"]], 0, NotFacts())  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        timeline.fold(initial_state(), [[1, 4, "e"]], 0, object())  # type: ignore[arg-type]
