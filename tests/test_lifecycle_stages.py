"""Lifecycle stages: the rules, the instants time alone changes them, and one partition's book."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from schemas.lifecycle import Stage
from stream_app.customers.lifecycle_io import message_of
from stream_app.customers.timeline import CANCELLATION, PURCHASE, SIGNUP
from stream_app.lifecycle.ledger import ChangeLedger, sent_identity
from stream_app.lifecycle.profile import Profile
from stream_app.lifecycle.stages import Rules, classify, next_change
from stream_app.lifecycle.tracker import StageBook, decode_state
from stream_app.settings import Settings

DAY = 86_400_000_000
RULES = Rules.from_settings(Settings())
T0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp()) * 1_000_000


def _profile(*purchases_at_days: int, signup: int = 0) -> Profile:
    profile = Profile()
    profile.signup(T0 + signup * DAY)
    for day in purchases_at_days:
        profile.purchase(T0 + day * DAY, 100_000_000)  # 100.00
    return profile


def test_the_defaults_give_each_stage_in_its_turn() -> None:
    profile = _profile(1, 10, 20, 35)
    assert classify(profile, T0 + 5 * DAY, RULES)[0] is Stage.NEW
    assert classify(profile, T0 + 36 * DAY, RULES)[0] is Stage.LOYAL  # 4 purchases, 400.00
    assert classify(_profile(1), T0 + 36 * DAY, RULES)[0] is Stage.ACTIVE
    assert classify(profile, T0 + (35 + 45) * DAY, RULES)[0] is Stage.AT_RISK
    assert classify(profile, T0 + (35 + 120) * DAY, RULES)[0] is Stage.DORMANT
    profile.cancellation(T0 + 200 * DAY)
    assert classify(profile, T0 + 201 * DAY, RULES) == (Stage.CHURNED, "cancelled")
    assert classify(Profile(), T0, RULES)[0] is Stage.CHURNED  # never signed up


def test_next_change_is_the_first_instant_the_stage_differs() -> None:
    profile = _profile(1)
    assert next_change(profile, T0 + 2 * DAY, RULES) == T0 + 30 * DAY  # new ends
    assert next_change(profile, T0 + 30 * DAY, RULES) == T0 + (1 + 45) * DAY  # at risk
    assert next_change(profile, T0 + 50 * DAY, RULES) == T0 + (1 + 120) * DAY  # dormant
    assert next_change(profile, T0 + 130 * DAY, RULES) is None
    # Loyal until the month of the first purchases leaves the 12-month window.
    loyal = _profile(1, 2, 3, 25)  # purchases in January and at the end of January
    change = next_change(loyal, T0 + 40 * DAY, RULES)
    assert change == T0 + (25 + 45) * DAY  # recency passes first
    for t in range(40, 400, 7):
        now = T0 + t * DAY
        due = next_change(loyal, now, RULES)
        if due is not None:
            assert classify(loyal, due, RULES)[0] != classify(loyal, now, RULES)[0]
            assert classify(loyal, due - 1, RULES)[0] == classify(loyal, now, RULES)[0]


def _event(day: float, rank: int, n: int) -> list[object]:
    t = T0 + int(day * DAY)
    if rank == PURCHASE:
        return [t, rank, f"e{n}", 100_000_000]
    if rank == SIGNUP:
        return [t, rank, f"e{n}", "EU", None]
    return [t, rank, f"e{n}"]


def _changes(book: StageBook) -> list[tuple[str, str, str, int]]:
    return [change.identity for change in book.take()]


def test_the_watermark_moves_customers_without_their_events() -> None:
    book = StageBook(RULES)
    book.observe("c1", [_event(0, SIGNUP, 1), _event(1, PURCHASE, 2)])
    assert _changes(book) == [("c1", "", "new", T0)]
    book.advance(T0 + 29 * DAY)
    assert _changes(book) == []
    book.advance(T0 + 200 * DAY)  # three thresholds in one step: each at its own instant
    assert _changes(book) == [
        ("c1", "new", "active", T0 + 30 * DAY),
        ("c1", "active", "at_risk", T0 + 46 * DAY),
        ("c1", "at_risk", "dormant", T0 + 121 * DAY),
    ]
    book.observe("c1", [_event(201, CANCELLATION, 3)])
    assert _changes(book) == [("c1", "dormant", "churned", T0 + 201 * DAY)]


def test_changes_do_not_depend_on_how_events_are_batched() -> None:
    events = [
        _event(0, SIGNUP, 1), _event(3, PURCHASE, 2), _event(60, PURCHASE, 3),
        _event(70, PURCHASE, 4), _event(80, PURCHASE, 5), _event(90, PURCHASE, 6),
        _event(300, CANCELLATION, 7),
    ]  # fmt: skip
    whole = StageBook(RULES)
    whole.observe("c", events)
    whole.advance(T0 + 400 * DAY)
    piecewise = StageBook(RULES)
    for event in events:
        piecewise.advance(event[0] - DAY)  # type: ignore[operator]
        piecewise.observe("c", [event])
    piecewise.advance(T0 + 400 * DAY)
    expected = _changes(whole)
    assert [to for _, _, to, _ in expected] == [
        "new", "active", "at_risk", "active", "loyal", "at_risk", "dormant", "churned",
    ]  # fmt: skip
    assert _changes(piecewise) == expected


def test_a_recovered_book_carries_on_where_it_was() -> None:
    book = StageBook(RULES)
    book.observe("c1", [_event(0, SIGNUP, 1), _event(1, PURCHASE, 2)])
    book.take()
    again = StageBook(RULES)
    for customer, value in book.changed_records():
        again.load(customer, value)
    again.finish_recovery()
    again.advance(T0 + 50 * DAY)
    book.advance(T0 + 50 * DAY)
    assert _changes(again) == _changes(book) != []
    assert book.forget("c1")
    assert not book.forget("c1")


def test_the_at_risk_board_is_scored_when_asked_not_at_every_event() -> None:
    from stream_app.lifecycle.atrisk import AtRiskBoard
    from stream_app.lifecycle.risk import ChurnRisk

    book = StageBook(RULES, risk=ChurnRisk(), board=AtRiskBoard(10))
    assert book.board is not None
    book.observe("c1", [_event(0, SIGNUP, 1), _event(1, PURCHASE, 2)], "EU")
    book.observe("c2", [_event(0, SIGNUP, 3)], "US")
    book.observe("c3", [_event(0, SIGNUP, 4), _event(2, CANCELLATION, 5)], "EU")
    assert book.board.scores == {}
    book.score()
    assert book.board.scores == {
        "c1": (book.risk_of("c1", T0 + DAY), "region:EU"),
        "c2": (book.risk_of("c2", T0), "region:US"),
    }
    book.observe("c2", [_event(3, CANCELLATION, 6)], "US")  # no longer active: dropped
    book.forget("c1")
    book.score()
    assert book.board.scores == {}


def test_a_stored_state_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="not a stored lifecycle state"):
        decode_state(b"\x93\x01", RULES)
    book = StageBook(RULES)
    book.observe("c1", [_event(0, SIGNUP, 1)])
    ((_, value),) = book.changed_records()
    with pytest.raises(ValueError, match="format 2 is unknown"):
        decode_state(msgspec.msgpack.encode([2, *msgspec.msgpack.decode(value)[1:]]), RULES)


def test_a_message_read_back_has_the_identity_of_its_change() -> None:
    book = StageBook(RULES)
    book.observe("c1", [_event(0.123456789, SIGNUP, 1)])
    (change,) = book.take()
    assert sent_identity(message_of(change, None)) == change.identity
    for junk in (b"", b"[]", b'{"customer_id": 1}', b'{"customer_id":"a","to":"new","at":"x"}'):
        assert sent_identity(junk) is None


def test_the_ledger_skips_what_an_earlier_owner_sent_and_marks_the_rest() -> None:
    ledger = ChangeLedger()
    assert ledger.mark(None) is None
    ledger.recovered([(5, ("c", "", "new", 10)), (7, ("d", "new", "active", 20))], 9)
    assert ledger.mark(None) == 5
    assert not ledger.take(("c", "", "new", 10))
    assert ledger.take(("c", "", "new", 10))  # only once
    assert ledger.mark(None) == 7
    assert ledger.mark(21) == 9  # past the lateness horizon: never decided again
    ledger.record(12)
    assert ledger.mark(None) == 13


def test_the_churn_model_and_stages_survive_a_restart() -> None:
    from stream_app.customers.changelog import ChangelogReplay, checkpoint_records
    from stream_app.customers.partition import PartitionState
    from tests.test_changelog_replay import SETTINGS, _batches, _clock

    settings = SETTINGS.model_copy(update={"lifecycle_enabled": True})
    state = PartitionState(0, settings, _clock)
    for batch in _batches(3):
        state.ingest(batch)
    assert state.lifecycle is not None
    assert state.lifecycle.risk is not None
    assert state.lifecycle.risk.pending > 0
    tag, records = checkpoint_records(state.checkpoint(), "g1", 1)
    recovered = PartitionState(0, settings, _clock)
    replay = ChangelogReplay(recovered)
    for key, value in records:
        replay.feed(key, value, tag)
    replay.finish()
    assert recovered.lifecycle is not None
    assert recovered.lifecycle.risk is not None
    assert recovered.lifecycle.risk.pending == state.lifecycle.risk.pending
    assert recovered.lifecycle.risk.stats == state.lifecycle.risk.stats
    assert recovered.lifecycle.customers.keys() == state.lifecycle.customers.keys()
    for customer, stage in state.lifecycle.customers.items():
        assert recovered.lifecycle.customers[customer].stage == stage.stage
        assert recovered.lifecycle.customers[customer].end == stage.end
        at = stage.newest_us or 0
        assert recovered.lifecycle.risk_of(customer, at) == state.lifecycle.risk_of(customer, at)
