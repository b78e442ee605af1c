"""The lifecycle stages of one partition's customers, and the changes they go through. Pure.

Each customer has a profile (``profile.py``), a current stage and the instant its stage
would next change with no event (``stages.next_change``). A heap keyed by that instant lets
the partition move every customer whose instant the watermark passed, without looking at
the others. Changes are decided in event-time order per customer: before an event at ``t``
the customer's own timers up to ``t`` fire, then the event updates the profile and the
stage is read at ``t``. So a change's ``(customer, from, to, at)`` is a function of the
events alone (for events that arrive within their customer's order), which is what lets a
new owner recognise the changes a crashed one already sent (``ChangeLedger``).

A late event (older than the customer's newest) updates the profile (its updates do not
depend on order) and the stage is read at the customer's newest time: stages already
announced are not revised.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

from schemas.lifecycle import Stage
from stream_app.customers.timeline import CANCELLATION, CLICK, SURVEY, Facts, StoredEvent
from stream_app.lifecycle.atrisk import AtRiskBoard
from stream_app.lifecycle.profile import Profile, decode_profile, encode_profile
from stream_app.lifecycle.segments import (
    QUIET_RANKS,
    Move,
    Position,
    advance,
    quiet,
    tail,
    take_back,
    update_profile,
)
from stream_app.lifecycle.stages import Rules, classify, next_change

if TYPE_CHECKING:  # river is imported only by a worker with lifecycle on (partition.py)
    from stream_app.lifecycle.risk import ChurnRisk

# Bump when ``StoredStage``'s shape changes; ``decode_state`` refuses versions it does not know.
STAGE_FORMAT: Final = 1


class StageFormatError(ValueError):
    """Stored lifecycle state this version cannot read."""


class StoredStage(msgspec.Struct, array_like=True):
    """A customer's lifecycle state as persisted: the live stage (``profile`` to
    ``newest_us``), then the segment pass's positions before and after the retained events
    (fold state, profile, stage, time each; ``segments.Position``)."""

    format: int
    profile: bytes
    stage: str | None
    since_us: int | None
    newest_us: int | None
    base: tuple[list[Any], bytes, str | None, int | None]
    end: tuple[list[Any], bytes, str | None, int | None]


def _stored_position(position: Position) -> tuple[list[Any], bytes, str | None, int | None]:
    stage = None if position.stage is None else position.stage.value
    return (position.state, encode_profile(position.profile), stage, position.time_us)


def _position(stored: tuple[list[Any], bytes, str | None, int | None]) -> Position:
    state, profile, stage, time_us = stored
    return Position(
        state, decode_profile(profile), None if stage is None else Stage(stage), time_us
    )


@dataclass(slots=True)
class CustomerStage:
    """One customer's lifecycle: profile, stage since when, newest event time, next change."""

    profile: Profile
    stage: Stage | None = None
    since_us: int | None = None
    newest_us: int | None = None
    due_us: int | None = None
    # The segment pass before the retained events (after the pruned ones) and after them all.
    base: Position = field(default_factory=Position.start)
    end: Position = field(default_factory=Position.start)
    # The moves ``tail`` made after ``end`` (None: not known, e.g. after recovery: walk).
    tail_moves: list[Move] | None = None

    def encode(self) -> bytes:
        stored = StoredStage(
            STAGE_FORMAT,
            encode_profile(self.profile),
            None if self.stage is None else self.stage.value,
            self.since_us,
            self.newest_us,
            _stored_position(self.base),
            _stored_position(self.end),
        )
        return _ENCODER.encode(stored)


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(StoredStage)


def decode_state(data: bytes, rules: Rules) -> CustomerStage:
    """``CustomerStage.encode``'s bytes back; StageFormatError for anything else."""
    try:
        stored = _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise StageFormatError(f"not a stored lifecycle state: {exc}") from None
    if stored.format != STAGE_FORMAT:
        raise StageFormatError(
            f"lifecycle state format {stored.format} is unknown to this version (it reads "
            f"format {STAGE_FORMAT}); upgrade the worker or rebuild the state from the input"
        )
    try:
        stage = None if stored.stage is None else Stage(stored.stage)
        base, end = _position(stored.base), _position(stored.end)
    except ValueError:
        raise StageFormatError(f"unknown lifecycle stage in {stored!r:.200}") from None
    state = CustomerStage(
        decode_profile(stored.profile), stage, stored.since_us, stored.newest_us, None, base, end
    )
    if state.since_us is not None:
        state.due_us = next_change(state.profile, state.since_us, rules)
    return state


@dataclass(frozen=True, slots=True)
class Change:
    """One stage change, before it becomes a ``schemas.lifecycle.LifecycleChange``."""

    customer_id: str
    from_stage: Stage | None
    to: Stage
    at_us: int
    reason: str

    @property
    def identity(self) -> tuple[str, str, str, int]:
        """What a re-decided change has in common with the one sent before a crash."""
        before = "" if self.from_stage is None else self.from_stage.value
        return (self.customer_id, before, self.to.value, self.at_us)


@dataclass
class StageBook:
    """The lifecycle of every customer of one partition."""

    rules: Rules
    # The churn model (``risk.py``) and the partition's scores for the at-risk sets; None
    # when not wanted (tests of the stages alone).
    risk: ChurnRisk | None = None
    board: AtRiskBoard | None = None
    customers: dict[str, CustomerStage] = field(default_factory=dict)
    # (due, customer); an entry is stale when the customer's due time moved since.
    _heap: list[tuple[int, str]] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)
    # Changes decided since the runtime last took them (``take``).
    outbox: list[Change] = field(default_factory=list)
    # Customers observed since the board was last scored (``score``), with their region.
    unscored: dict[str, str] = field(default_factory=dict)

    def observe(self, customer: str, events: list[list[Any]], region: str = "unknown") -> None:
        """Apply a customer's new events (stored form, sorted) and decide its changes; the
        churn model takes its examples, and the customer waits to be scored (``score``)."""
        state = self.customers.get(customer)
        if state is None:
            state = self.customers[customer] = CustomerStage(Profile())
        before = state.due_us
        profile = state.profile
        risk = self.risk
        for event in events:
            t, rank = event[0], event[1]
            newest = state.newest_us
            if newest is not None and t < newest:
                t = newest  # late: read at the newest time, history is not revised
            elif state.due_us is not None and state.due_us < t:
                self._fire(customer, state, t, inclusive=False)
            if rank != CLICK:  # a click changes no profile
                update_profile(profile, event)
            if rank in QUIET_RANKS and state.stage is not None:
                # Neither changes the stage nor when it would change: the timers fired.
                state.newest_us = t
                if rank == SURVEY and risk is not None and profile.active:
                    risk.observe(customer, t, profile)
                continue
            if risk is not None:
                if rank == CANCELLATION:
                    risk.cancelled(customer, event[0])
                if profile.active:
                    risk.observe(customer, t, profile)
            state.newest_us = t
            self._decide(customer, state, t)
        if self.board is not None:
            self.unscored[customer] = region
        if state.due_us is not None and state.due_us != before:
            heapq.heappush(self._heap, (state.due_us, customer))
            if len(self._heap) > 2 * len(self.customers) + 1024:
                self._rebuild_heap()  # stale entries would otherwise wait for their time
        self.dirty.add(customer)

    def score(self) -> None:
        """Score the customers observed since the last call for the at-risk board (at every
        checkpoint: a board's score is at most one checkpoint old), one model call per
        distinct input."""
        board, risk, unscored = self.board, self.risk, self.unscored
        if board is None or not unscored:
            return
        self.unscored = {}
        scored: list[tuple[str, str]] = []
        rows: list[dict[str, float]] = []
        for customer, region in unscored.items():
            state = self.customers.get(customer)
            if risk is None or state is None or not state.profile.active:
                board.drop(customer)
            else:
                scored.append((customer, "region:" + region))
                rows.append(state.profile.features(state.newest_us or 0))
        if risk is not None:
            for (customer, segment), value in zip(scored, risk.risks(rows), strict=True):
                board.set(customer, value, segment)

    def risk_of(self, customer: str, at_us: int) -> float | None:
        """The churn risk of an active customer at ``at_us``; None if inactive or no model."""
        state = self.customers.get(customer)
        if self.risk is None or state is None or not state.profile.active:
            return None
        return self.risk.risk(state.profile.features(at_us))  # the model selects its own

    def advance(self, watermark_us: int) -> None:
        """Move every customer whose next change is at or before ``watermark_us``; examples
        whose 30 days have passed are learnt."""
        if self.risk is not None:
            self.risk.advance(watermark_us)
        heap = self._heap
        while heap and heap[0][0] <= watermark_us:
            due, customer = heapq.heappop(heap)
            state = self.customers.get(customer)
            if state is None or state.due_us != due:
                continue  # stale: the customer moved on, or was forgotten
            self._fire(customer, state, watermark_us, inclusive=True)
            self.dirty.add(customer)
            if state.due_us is not None:
                heapq.heappush(heap, (state.due_us, customer))

    def _fire(self, customer: str, state: CustomerStage, until_us: int, inclusive: bool) -> None:
        """Apply the customer's timed changes due before (or at) ``until_us``."""
        while state.due_us is not None and (
            state.due_us <= until_us if inclusive else state.due_us < until_us
        ):
            at = state.due_us
            state.newest_us = max(at, state.newest_us or at)
            self._decide(customer, state, at)

    def _decide(self, customer: str, state: CustomerStage, at_us: int) -> None:
        stage, reason = classify(state.profile, at_us, self.rules)
        if stage != state.stage:
            self.outbox.append(Change(customer, state.stage, stage, at_us, reason))
            state.stage = stage
        state.since_us = at_us
        state.due_us = next_change(state.profile, at_us, self.rules, stage)

    # -- lifecycle segments (segments.py) ---------------------------------------------

    def segment_facts(
        self,
        customer: str,
        retained: list[StoredEvent],
        new_events: list[StoredEvent],
        attribution_us: int,
        facts: Facts,
        grain_us: int,
    ) -> None:
        """Add the change of the customer's lifecycle-pass facts to ``facts`` (``region:<stage>``
        keys; ``segments.as_lifecycle`` renames them), before the events join ``retained``."""
        state = self.customers.get(customer)
        if state is None:
            state = self.customers[customer] = CustomerStage(Profile())
        if len(new_events) > 1:
            new_events.sort()  # in place, as ``CustomerRecord.apply`` sorts them next
        events = new_events
        rules = self.rules
        in_order = not retained or retained[-1] < events[0]
        if in_order and state.end.time_us is not None and all(e[1] in QUIET_RANKS for e in events):
            # Clicks and surveys change neither the stages nor the active flag: the moves
            # the tail would take back, walk again and add back cancel out. Only their own
            # facts, in the stage at their time.
            quiet(state.end, events, rules, attribution_us, facts, grain_us)
            moves = state.tail_moves
            if moves and moves[0][0] <= events[-1][0]:
                now = events[-1][0]
                state.tail_moves = [move for move in moves if move[0] > now]
            return
        if in_order:
            if state.tail_moves is None:
                tail(state.end, rules, facts, -1, grain_us)
            else:
                take_back(state.tail_moves, facts, grain_us)
            advance(state.end, events, rules, attribution_us, facts, 1, grain_us, in_place=True)
        else:
            pos = bisect_left(retained, events[0])
            start = advance(state.base, retained[:pos], rules, attribution_us, None, 1, grain_us)
            old = advance(start, retained[pos:], rules, attribution_us, facts, -1, grain_us)
            tail(old, rules, facts, -1, grain_us)
            suffix = sorted(retained[pos:] + events)
            state.end = advance(start, suffix, rules, attribution_us, facts, 1, grain_us)
        state.tail_moves = tail(state.end, rules, facts, 1, grain_us)

    def pruned(self, customer: str, dropped: list[StoredEvent], attribution_us: int) -> None:
        """The customer stage folded ``dropped`` into its base state: the pass's base follows."""
        state = self.customers.get(customer)
        if state is not None and dropped:
            state.base = advance(state.base, dropped, self.rules, attribution_us, None, 1, 1)
            self.dirty.add(customer)

    def take(self) -> list[Change]:
        changes, self.outbox = self.outbox, []
        return changes

    def forget(self, customer: str) -> bool:
        """Drop a customer (``kpi forget``); True if it was known. Its heap entry goes stale."""
        self.dirty.discard(customer)
        self.outbox = [change for change in self.outbox if change.customer_id != customer]
        self.unscored.pop(customer, None)
        if self.risk is not None:
            self.risk.forget(customer)
        if self.board is not None:
            self.board.drop(customer)
        return self.customers.pop(customer, None) is not None

    # -- persistence -----------------------------------------------------------------

    def changed_records(self) -> list[tuple[str, bytes]]:
        """Every customer changed since the last call, encoded (``CustomerStage.encode``)."""
        records = [(c, self.customers[c].encode()) for c in self.dirty if c in self.customers]
        self.dirty.clear()
        return records

    def load(self, customer: str, value: bytes | None) -> None:
        """One recovered record (None: a tombstone)."""
        if value is None:
            self.customers.pop(customer, None)
        else:
            self.customers[customer] = decode_state(value, self.rules)

    def finish_recovery(self) -> None:
        self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = [(s.due_us, c) for c, s in self.customers.items() if s.due_us is not None]
        heapq.heapify(self._heap)
