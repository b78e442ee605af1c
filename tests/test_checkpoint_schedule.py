"""When the customer stage checkpoints: intervals, and at once when a backlog is worked off.

The policy takes its clock as an argument: each test walks a fake clock through a sequence
of lags and reads the decisions off, without sleeping.
"""

from __future__ import annotations

import pytest

from stream_app.customers.checkpoints import (
    BACKLOG_END_S,
    FETCH_WAIT_MS,
    MAX_BATCH_RECORDS,
    MIN_FETCH_WAIT_MS,
    CheckpointPolicy,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _policy(every_s: float, backlog_every_s: float) -> tuple[CheckpointPolicy, FakeClock]:
    clock = FakeClock()
    return CheckpointPolicy(every_s, backlog_every_s, clock), clock


def _walk(policy: CheckpointPolicy, clock: FakeClock, steps: list[tuple[float, int]]) -> list[bool]:
    """``due`` after each (seconds later, lag) step."""
    decisions = []
    for seconds, lag in steps:
        clock.now += seconds
        decisions.append(policy.due(lag))
    return decisions


def test_a_backlog_read_to_its_end_checkpoints_at_once_and_only_once() -> None:
    # Intervals long enough that only the end of the backlog can make a checkpoint due.
    policy, clock = _policy(3600, 3600)
    steps = [(0, MAX_BATCH_RECORDS * 3), (1, MAX_BATCH_RECORDS), (0.1, 0), (0.1, 0)]
    # Nearly read, but events still wait; then read: once; steady traffic keeps the interval.
    assert _walk(policy, clock, steps) == [False, False, True, False]


def test_without_a_backlog_a_lag_of_zero_waits_for_the_interval() -> None:
    policy, clock = _policy(3600, 3600)
    assert _walk(policy, clock, [(0, 5), (1, 0), (3600, 0)]) == [False, False, True]


def test_while_a_backlog_lasts_the_backlog_interval_applies() -> None:
    policy, clock = _policy(0.25, 2.0)
    steps = [
        (1.0, MAX_BATCH_RECORDS + 1),  # past the interval, not past the backlog one
        (0, MAX_BATCH_RECORDS),  # a batch or less waits: the short interval
        (1.5, MAX_BATCH_RECORDS * 10),  # past the backlog interval too
    ]
    assert _walk(policy, clock, steps) == [False, True, True]


def test_the_intervals_count_from_the_last_checkpoint() -> None:
    policy, clock = _policy(0.25, 2.0)
    assert _walk(policy, clock, [(0.3, 0)]) == [True]
    policy.checkpointed()
    assert _walk(policy, clock, [(0.2, 0), (0.1, 0)]) == [False, True]


def test_a_backlog_that_never_reaches_zero_ends_after_a_while_below_a_batch() -> None:
    """Steady traffic keeps a little input waiting: the backlog (and with it the publisher's
    hold, which the watermark ticks carry) ends all the same."""
    policy, clock = _policy(3600, 3600)
    states = []
    for seconds, lag in [
        (0, MAX_BATCH_RECORDS * 2),
        (0.5, 500),  # just below a batch: not over yet
        (0.5, MAX_BATCH_RECORDS + 1),  # above again: the wait starts over
        (0.5, 500),
        (BACKLOG_END_S / 2, 500),
        (BACKLOG_END_S / 2, 500),  # a whole BACKLOG_END_S below a batch: over
    ]:
        clock.now += seconds
        # No checkpoint of its own when it ends this way: events still wait.
        assert not policy.due(lag)
        states.append(policy.in_backlog)
    assert states == [True, True, True, True, True, False]


def test_a_backlog_expects_its_end_at_the_rate_it_shrinks() -> None:
    """What the watermark ticks carry as ``eta_ms``: the lag left over the rate it fell."""
    policy, clock = _policy(0.25, 2.0)
    policy.due(100_000)  # the backlog starts: the first mark
    etas = []
    for seconds, lag in [(2.0, 60_000), (1.0, 70_000), (1.0, 35_000)]:
        clock.now += seconds
        policy.estimate_backlog_end(lag)
        etas.append(policy.eta_s)
    # 40,000 read in 2 s: 3 s for the rest; then traffic arriving faster than it is read (no
    # end in sight, so no estimate); then 35,000 read in 1 s: 1 s for the rest.
    assert etas == [pytest.approx(3.0), None, pytest.approx(1.0)]
    policy.due(0)  # read to its end
    policy.estimate_backlog_end(0)
    assert policy.eta_s is None
    assert not policy.in_backlog


def test_a_fetch_waits_no_longer_than_until_a_checkpoint_is_due() -> None:
    policy, clock = _policy(0.25, 2.0)
    assert policy.fetch_wait_ms(0, work_pending=False) == FETCH_WAIT_MS
    clock.now += 0.1
    assert policy.fetch_wait_ms(0, work_pending=True) == 150
    assert policy.fetch_wait_ms(MAX_BATCH_RECORDS + 1, work_pending=True) == FETCH_WAIT_MS
    clock.now += 0.2
    assert policy.fetch_wait_ms(0, work_pending=True) == MIN_FETCH_WAIT_MS  # overdue
