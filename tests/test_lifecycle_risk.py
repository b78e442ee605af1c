"""The churn-risk model's bookkeeping of examples, its learning and its stored form."""

from __future__ import annotations

import os
import pickle
import random

import msgspec
import pytest

from stream_app.lifecycle.profile import DAY_US, Profile
from stream_app.lifecycle.risk import (
    HORIZON_US,
    RISK_FORMAT,
    RIVER_VERSION,
    ChurnRisk,
    RiskFormatError,
)


def profile(nps: int) -> Profile:
    """An active customer whose one NPS answer was ``nps``."""
    customer = Profile()
    customer.signup(0)
    customer.survey(0, "nps", nps)
    return customer


def features(nps: int) -> dict[str, float]:
    return profile(nps).features(0)


def test_an_example_is_a_positive_when_the_customer_cancels_within_30_days() -> None:
    risk = ChurnRisk()
    assert risk.observe("a", 0, profile(2))
    assert not risk.observe("a", 5, profile(2)), "one pending example per customer"
    assert risk.observe("b", 0, profile(9))
    risk.cancelled("a", HORIZON_US)  # on the 30th day: inside (t, t + 30 d]
    assert (risk.stats.positives, risk.stats.negatives, risk.pending) == (1, 0, 1)
    # Due at 30 days; settled once the watermark is past it (a cancellation at that very
    # instant may still come).
    assert risk.advance(HORIZON_US) == 0
    assert risk.advance(HORIZON_US + 1) == 1
    assert (risk.stats.positives, risk.stats.negatives, risk.pending) == (1, 1, 0)
    # Settled: the customer can be observed again.
    assert risk.observe("a", HORIZON_US + 1, profile(2))


def test_a_cancellation_at_or_before_the_snapshot_or_after_30_days() -> None:
    risk = ChurnRisk()
    risk.observe("late", 10 * DAY_US, profile(5))
    risk.cancelled("late", 10 * DAY_US)  # not after the snapshot: no example
    risk.observe("slow", 0, profile(5))
    risk.cancelled("slow", HORIZON_US + 1)  # advance not called yet: its 30 days had passed
    assert (risk.stats.positives, risk.stats.negatives, risk.pending) == (0, 1, 0)
    risk.cancelled("nobody", 3)
    assert risk.examples_learnt == 1


def test_forget_drops_the_pending_example_and_it_is_never_learnt() -> None:
    risk = ChurnRisk()
    risk.observe("a", 0, profile(1))
    risk.observe("b", 0, profile(1))
    assert risk.forget("a")
    assert not risk.forget("a")
    loaded = ChurnRisk.load(risk.dump())
    assert (loaded.has_pending("a"), loaded.has_pending("b")) == (False, True)
    assert loaded.advance(2 * HORIZON_US) == 1
    assert loaded.examples_learnt == 1


def test_pending_examples_are_bounded() -> None:
    risk = ChurnRisk(max_pending=2)
    assert [risk.observe(c, 0, profile(5)) for c in "abc"] == [True, True, False]
    assert risk.stats.dropped_full == 1
    with pytest.raises(ValueError, match="at least 1"):
        ChurnRisk(max_pending=0)


def run(risk: ChurnRisk, seed: int, days: int) -> None:
    """Customers with a low NPS cancel more often; the model sees their stream."""
    rng = random.Random(seed)
    for day in range(days):
        now = day * DAY_US
        risk.advance(now)
        for i in range(40):
            customer = f"c{day}-{i}"
            nps = rng.randrange(11)
            risk.observe(customer, now, profile(nps))
            if rng.random() < (0.6 if nps < 4 else 0.05):
                risk.cancelled(customer, now + rng.randrange(1, HORIZON_US))


def test_it_learns_that_unhappy_customers_leave_and_is_deterministic() -> None:
    risk = ChurnRisk()
    assert risk.risk(features(0)) == pytest.approx(0.5)
    run(risk, seed=1, days=60)
    assert risk.examples_learnt > 1000
    assert risk.risk(features(1)) > 0.4 > 0.1 > risk.risk(features(9))
    again = ChurnRisk()
    run(again, seed=1, days=60)
    assert again.dump() == risk.dump()


def test_scoring_many_rows_gives_each_row_its_own_risk() -> None:
    risk = ChurnRisk()
    run(risk, seed=3, days=20)
    rows = [profile(nps).features(day * DAY_US) for day in range(3) for nps in (0, 4, 9, 4)]
    twice = Profile()
    twice.signup(0)
    twice.survey(0, "nps", 2)
    twice.survey(DAY_US, "nps", 8)  # the same last answer as profile(8), another mean
    rows += [twice.features(DAY_US), profile(8).features(DAY_US)]
    assert risk.risks(rows) == [risk.risk(row) for row in rows]
    assert risk.risks(rows)[-1] != risk.risks(rows)[-2]
    assert risk.risks([]) == []


def test_dump_and_load_continue_the_same_model() -> None:
    risk = ChurnRisk()
    run(risk, seed=2, days=20)
    loaded = ChurnRisk.load(risk.dump())
    assert loaded.pending == risk.pending > 0
    assert loaded.stats == risk.stats
    probes = [features(nps) for nps in range(11)]
    assert [loaded.risk(f) for f in probes] == [risk.risk(f) for f in probes]
    # The same continuation from the loaded model and the original gives the same model.
    risk.advance(60 * DAY_US)
    loaded.advance(60 * DAY_US)
    assert loaded.stats == risk.stats
    assert loaded.pending == risk.pending == 0
    assert [loaded.risk(f) for f in probes] == [risk.risk(f) for f in probes]


def test_load_refuses_unknown_formats_and_foreign_pickles() -> None:
    dumped = msgspec.msgpack.decode(ChurnRisk().dump())
    future = [RISK_FORMAT + 1, *dumped[1:]]
    with pytest.raises(RiskFormatError, match="format 2 is unknown"):
        ChurnRisk.load(msgspec.msgpack.encode(future))
    other_river = [RISK_FORMAT, "0.1.0", *dumped[2:]]
    with pytest.raises(RiskFormatError, match=r"saved by river 0\.1\.0"):
        ChurnRisk.load(msgspec.msgpack.encode(other_river))

    def dump_of(model: bytes) -> bytes:
        return msgspec.msgpack.encode([RISK_FORMAT, RIVER_VERSION, model, [], [0, 0, 0]])

    for bad in [b"", b"\x93\x01", dump_of(b"x"), dump_of(b"\x80\x05K\x01")]:
        with pytest.raises(RiskFormatError):
            ChurnRisk.load(bad)
    # A pickle naming anything but river's classes is refused before it runs.
    with pytest.raises(RiskFormatError, match=r"may not load builtins\.print"):
        ChurnRisk.load(dump_of(pickle.dumps(print)))
    with pytest.raises(RiskFormatError, match=r"may not load posix\.system"):
        ChurnRisk.load(dump_of(pickle.dumps(os.system)))
    with pytest.raises(RiskFormatError, match="not the expected model"):
        ChurnRisk.load(dump_of(pickle.dumps({"a": 1.0})))
