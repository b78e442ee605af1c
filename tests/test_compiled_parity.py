"""The modules mypyc compiles give exactly what the same source gives interpreted.

setup.py compiles them where a C compiler exists; elsewhere the same files run as Python.
Here the compiled module (when built) and a fresh interpreted copy of its source run the
same random histories, and every state and fact must be equal.
"""

from __future__ import annotations

import copy
import importlib.util
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stream_app.customers import timeline

MINUTE_US = 60_000_000
GRAINS = [1, MINUTE_US, 60 * MINUTE_US, 86_400_000_000]


ROOT = Path(__file__).resolve().parent.parent


def _interpreted(module: ModuleType) -> ModuleType:
    """The source of ``module`` loaded as plain Python, beside the (maybe compiled) original."""
    path = str(ROOT / (module.__name__.replace(".", "/") + ".py"))
    loader = importlib.machinery.SourceFileLoader(module.__name__ + "_interpreted", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    copy_of = importlib.util.module_from_spec(spec)
    loader.exec_module(copy_of)
    return copy_of


INTERPRETED = _interpreted(timeline)


def _history(rng: random.Random, length: int, start_us: int) -> list[list[Any]]:
    events: list[list[Any]] = []
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
            # Past 64 bits too: sums must grow as Python ints do.
            events.append([t, 2, event_id, rng.choice([1, 10**6, 10**15, 2**70])])
        elif rank == 3:
            events.append([t, 3, event_id, rng.choice(["n", "c"]), rng.randrange(11)])
        else:
            events.append([t, 4, event_id])
    events.sort()
    return events


def _both(
    state: list[Any], events: list[list[Any]], attribution_us: int, sign: int, grain_us: int
) -> None:
    before = copy.deepcopy(state)
    expected_facts, facts = INTERPRETED.Facts(), timeline.Facts()
    expected = INTERPRETED.fold(state, events, attribution_us, expected_facts, sign, grain_us)
    got = timeline.fold(state, events, attribution_us, facts, sign, grain_us)
    assert got == expected
    assert dict(facts.points) == dict(expected_facts.points)
    assert facts.spans == expected_facts.spans
    assert timeline.fold(state, events, attribution_us, None, sign, grain_us) == expected
    assert state == before  # neither changes the state it is given
    # The result shares no mutable part with the input: a later fold may change it.
    assert got[3] is None or got[3] is not state[3]
    assert got[4] is not state[4]


def test_the_install_compiled_the_fold_where_it_could() -> None:
    # The suite runs on an install with a compiler: a silent fallback would hide a slow worker.
    assert timeline.COMPILED
    assert not INTERPRETED.COMPILED


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_fold_alike(seed: int) -> None:
    rng = random.Random(seed)
    start = rng.choice([1_790_000_000_000_000, -2_000_000_000_000_000, 0])  # pre-1970 too
    events = _history(rng, rng.randrange(1, 120), start)
    attribution_us = rng.choice([0, MINUTE_US * 30, 86_400_000_000 * 7])
    grain_us = rng.choice(GRAINS)
    # From the start, and from the state after a prefix (a click, purchases, an activity).
    cut = rng.randrange(len(events))
    _both(timeline.initial_state(), events, attribution_us, 1, grain_us)
    middle = INTERPRETED.fold(INTERPRETED.initial_state(), events[:cut], attribution_us)
    _both(middle, events[cut:], attribution_us, 1, grain_us)
    _both(middle, events[cut:], attribution_us, -1, grain_us)


@pytest.mark.parametrize("seed", range(10))
def test_records_apply_late_events_alike(seed: int) -> None:
    rng = random.Random(seed)
    events = _history(rng, 60, 1_790_000_000_000_000)
    arrival = events[:]
    rng.shuffle(arrival)
    records = [module.CustomerRecord.new() for module in (INTERPRETED, timeline)]
    sinks = [INTERPRETED.Facts(), timeline.Facts()]
    for start in range(0, len(arrival), 7):
        for record, sink in zip(records, sinks, strict=True):
            record.apply([list(e) for e in arrival[start : start + 7]], MINUTE_US * 60, sink)
    assert records[0].events == records[1].events == events
    assert records[0].end == records[1].end
    assert dict(sinks[0].points) == dict(sinks[1].points)
    assert sinks[0].spans == sinks[1].spans


@pytest.mark.parametrize(
    ("state", "events"),
    [
        ([False, "unknown", None, None], []),  # a state of 4
        (timeline.initial_state(), [[1]]),
        (timeline.initial_state(), [[1, 1, "e", "c"]]),  # a click without its cost
        (timeline.initial_state(), [["t", 1, "e", "c", 1]]),
        (timeline.initial_state(), "not a list"),
    ],
)
def test_malformed_input_raises_in_both(state: list[Any], events: Any) -> None:
    # Only validated events reach the fold; a malformed one must still raise, not corrupt.
    for module in (INTERPRETED, timeline):
        with pytest.raises((TypeError, IndexError)):
            module.fold(state, events, 0, module.Facts())
