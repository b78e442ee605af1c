"""The facts of the ``lifecycle:<stage>`` segments, from the customer stage's own fold. Pure.

Definition (docs/metrics.md, "Lifecycle segments"): an event counts in the stage the
customer had just before it, read from the profile of the customer's earlier events at the
event's time (``stages.classify``); a customer's first event counts in the stage it gives.
A conversion counts in the stage of its click (as it counts in the click's region). A
customer is active in a stage segment while active and in that stage: when the stage
changes (at an event, or at an instant the rules name with no event), the activity moves
from the old stage's segment to the new one's at that instant.

No second copy of the KPI fact rules: the events of each run of equal stage are folded by
the customer stage's fold (``timeline.fold``) with the stage in the place of the region, so
its ``region:<x>`` facts are the ``lifecycle:<x>`` facts (``as_lifecycle`` renames them; the
``all`` and campaign facts of this pass are dropped, the main fold has them). The fold's
per-segment state (the last two purchases per segment, the last click and its segment)
then holds per stage, which keeps distinct purchasing customers and conversions exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from schemas.lifecycle import LIFECYCLE_SEGMENT_PREFIX, Stage
from stream_app.customers.timeline import (
    CANCELLATION,
    CLICK,
    PURCHASE,
    SIGNUP,
    SURVEY,
    Facts,
    State,
    StoredEvent,
    fold,
    initial_state,
)
from stream_app.lifecycle.profile import Profile
from stream_app.lifecycle.stages import Rules, classify, next_change

_REGION = "region:"
# Event ranks that change neither a stage nor when it changes (the rules read no clicks and
# no survey answers), nor whether the customer is active.
QUIET_RANKS: Final = frozenset((CLICK, SURVEY))
# ``stage.value`` without the enum's descriptor, a tenth of the fold calls' cost here.
STAGE_VALUES: Final = {stage: stage.value for stage in Stage}


def update_profile(profile: Profile, event: StoredEvent) -> None:
    """Add one stored event to a profile (clicks do not change it)."""
    rank = event[1]
    if rank == PURCHASE:
        profile.purchase(event[0], event[3])
    elif rank == SIGNUP:
        profile.signup(event[0])
    elif rank == CANCELLATION:
        profile.cancellation(event[0])
    elif rank == SURVEY:
        profile.survey(event[0], "nps" if event[3] == "n" else "csat", event[4])


@dataclass(slots=True)
class Position:
    """The lifecycle pass after some prefix of a customer's events: its fold state, the
    profile of that prefix, and the stage and time of the prefix's last event."""

    state: State
    profile: Profile
    stage: Stage | None = None
    time_us: int | None = None

    @classmethod
    def start(cls) -> Position:
        return cls(initial_state(), Profile())

    def copy(self) -> Position:
        # The fold never changes the state it is given; the profile changes in place.
        return Position(self.state, msgspec.structs.replace(self.profile), self.stage, self.time_us)

    def to_list(self) -> list[Any]:
        return [self.state, self.stage.value if self.stage else None, self.time_us]


def _move(
    spans: dict[tuple[Any, ...], int], old: Stage, new: Stage, t: int, sign: int, grain_us: int
) -> None:
    tc = t - t % grain_us
    for stage, delta in ((old, -sign), (new, sign)):
        key = ("act", _REGION + stage.value, tc)
        spans[key] = spans.get(key, 0) + delta


Move = tuple[int, Stage, Stage]


def _moves_until(
    at: Position,
    until_us: int | None,
    rules: Rules,
    facts: Facts | None,
    sign: int,
    grain_us: int,
    made: list[Move] | None = None,
) -> Stage | None:
    """Move an active customer's activity through the stages time gives it after ``at``'s
    last event, up to ``until_us`` (inclusive; None: for ever); the stage reached. The
    moves made are appended to ``made`` if given."""
    if at.time_us is None or at.stage is None:
        return at.stage
    stage = at.stage
    t = at.time_us
    profile = at.profile
    moving = facts is not None and at.state[0]
    while True:
        now, _ = classify(profile, t, rules)
        if now != stage:
            if moving:
                assert facts is not None
                _move(facts.spans, stage, now, t, sign, grain_us)
                if made is not None:
                    made.append((t, stage, now))
            stage = now
        due = next_change(profile, t, rules, now)
        if due is None or (until_us is not None and due > until_us):
            return stage
        t = due


def advance(
    at: Position,
    events: list[StoredEvent],
    rules: Rules,
    attribution_us: int,
    facts: Facts | None,
    sign: int,
    grain_us: int,
    *,
    in_place: bool = False,
) -> Position:
    """The pass over ``events`` (sorted, after ``at``'s), their facts times ``sign`` added to
    ``facts`` (None: none wanted); ``at`` is not changed unless ``in_place``."""
    position = at if in_place else at.copy()
    profile = position.profile
    for event in events:
        t = event[0]
        if position.time_us is None:
            update_profile(profile, event)
            stage = classify(profile, t, rules)[0]  # a first event counts in what it gives
        else:
            # The stages time gave the customer since the last event, up to this one.
            stage = _moves_until(position, t, rules, facts, sign, grain_us) or Stage.CHURNED
            update_profile(profile, event)
        if event[1] == SIGNUP:
            event = [*event[:3], STAGE_VALUES[stage], *event[4:]]  # the fold's region
        position.state = _fold_stage(
            position.state, [event], stage, attribution_us, facts, sign, grain_us
        )
        position.stage, position.time_us = stage, t
    return position


def quiet(
    at: Position,
    events: list[StoredEvent],
    rules: Rules,
    attribution_us: int,
    facts: Facts,
    grain_us: int,
) -> None:
    """``advance`` in place over clicks and surveys after ``at``'s last event, which move no
    stage: each counts in the stage at its time, and no activity moves (those the time
    between brings are the tail's, already counted)."""
    profile = at.profile
    first, last = events[0][0], events[-1][0]
    stage = classify(profile, first, rules)[0]
    # Time alone takes a stage through the others one way only (``stages.next_change``):
    # the same stage at both ends holds in between, so the events are one run.
    if last == first or classify(profile, last, rules)[0] is stage:
        for event in events:
            if event[1] == SURVEY:
                update_profile(profile, event)
        at.state = _fold_stage(at.state, events, stage, attribution_us, facts, 1, grain_us)
    else:
        for event in events:
            stage = classify(profile, event[0], rules)[0]
            update_profile(profile, event)
            at.state = _fold_stage(at.state, [event], stage, attribution_us, facts, 1, grain_us)
    at.stage, at.time_us = stage, last


def _fold_stage(
    state: State,
    events: list[StoredEvent],
    stage: Stage,
    attribution_us: int,
    facts: Facts | None,
    sign: int,
    grain_us: int,
) -> State:
    """Events of one stage through the customer stage's fold, in ``stage`` as their region."""
    state = [state[0], STAGE_VALUES[stage], *state[2:]]
    return fold(
        state, events, attribution_us, facts if facts is not None else Facts(), sign, grain_us
    )


def tail(at: Position, rules: Rules, facts: Facts, sign: int, grain_us: int) -> list[Move]:
    """The moves time gives the customer after the last event, for ever (a few at most)."""
    made: list[Move] = []
    _moves_until(at, None, rules, facts, sign, grain_us, made)
    return made


def take_back(moves: list[Move], facts: Facts, grain_us: int) -> None:
    """Take back the moves a ``tail`` made (its result, kept instead of walking again)."""
    for t, old, new in moves:
        _move(facts.spans, old, new, t, -1, grain_us)


def as_lifecycle(facts: Facts, into: Facts) -> None:
    """Add the ``region:<stage>`` facts of a lifecycle pass to ``into`` as ``lifecycle:<stage>``."""
    points = into.points
    for (segment, t), vector in facts.points.items():
        if segment.startswith(_REGION) and any(vector):
            target = points[(LIFECYCLE_SEGMENT_PREFIX + segment[len(_REGION) :], t)]
            target[:] = [a + b for a, b in zip(target, vector, strict=True)]
    spans = into.spans
    for fact, value in facts.spans.items():
        segment = fact[1]
        if value and segment.startswith(_REGION):
            key = (fact[0], LIFECYCLE_SEGMENT_PREFIX + segment[len(_REGION) :], *fact[2:])
            spans[key] = spans.get(key, 0) + value
