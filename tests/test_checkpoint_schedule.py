"""When the customer stage checkpoints: intervals, and at once when a backlog is worked off."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from stream_app.customers.engine import BACKLOG_END_S, MAX_BATCH_RECORDS, CustomerEngine


def _engine(every_s: float = 0.25, backlog_every_s: float = 2.0) -> Any:
    engine = SimpleNamespace(
        _checkpoint_every_s=every_s,
        _backlog_checkpoint_every_s=backlog_every_s,
        _last_checkpoint=time.monotonic(),
        _in_backlog=False,
        _backlog_low_since=None,
        _lag_mark=None,
        _backlog_eta_s=None,
        lag=0,
    )
    engine._lag = lambda: engine.lag
    return engine


def _due(engine: Any, lag: int) -> bool:
    engine.lag = lag
    return bool(CustomerEngine._checkpoint_due(engine))


def test_a_backlog_read_to_its_end_checkpoints_at_once_and_only_once() -> None:
    # Intervals long enough that only the end of the backlog can make a checkpoint due.
    engine = _engine(every_s=3600, backlog_every_s=3600)
    assert not _due(engine, MAX_BATCH_RECORDS * 3)
    assert not _due(engine, MAX_BATCH_RECORDS)  # nearly read, but events still wait
    assert _due(engine, 0)
    assert not _due(engine, 0)  # once: steady traffic keeps the interval


def test_without_a_backlog_a_lag_of_zero_waits_for_the_interval() -> None:
    engine = _engine(every_s=3600, backlog_every_s=3600)
    assert not _due(engine, 5)
    assert not _due(engine, 0)
    engine._last_checkpoint -= 3601
    assert _due(engine, 0)


def test_while_a_backlog_lasts_the_backlog_interval_applies() -> None:
    engine = _engine(every_s=0.25, backlog_every_s=2.0)
    engine._last_checkpoint -= 1.0  # past the interval, not past the backlog one
    assert not _due(engine, MAX_BATCH_RECORDS + 1)
    assert _due(engine, MAX_BATCH_RECORDS)  # a batch or less waits: the short interval
    engine._last_checkpoint -= 1.5
    assert _due(engine, MAX_BATCH_RECORDS * 10)


def test_a_backlog_that_never_reaches_zero_ends_after_a_while_below_a_batch() -> None:
    """Steady traffic keeps a little input waiting: the backlog (and with it the publisher's
    hold, which the watermark ticks carry) ends all the same."""
    engine = _engine(every_s=3600, backlog_every_s=3600)
    _due(engine, MAX_BATCH_RECORDS * 2)
    assert engine._in_backlog
    _due(engine, 500)
    assert engine._in_backlog  # just below a batch: not over yet
    _due(engine, MAX_BATCH_RECORDS + 1)  # above again: the wait starts over
    _due(engine, 500)
    assert engine._backlog_low_since is not None
    engine._backlog_low_since -= BACKLOG_END_S
    assert not _due(engine, 500)  # no checkpoint of its own: events still wait
    assert not engine._in_backlog


def _estimate(engine: Any, lag: int, seconds_since_last: float) -> float | None:
    """The estimate at a checkpoint ``seconds_since_last`` after the previous one."""
    engine.lag = lag
    when, marked = engine._lag_mark
    engine._lag_mark = (when - seconds_since_last, marked)
    CustomerEngine._estimate_backlog_end(engine)
    eta: float | None = engine._backlog_eta_s
    return eta


def test_a_backlog_expects_its_end_at_the_rate_it_shrinks() -> None:
    """What the watermark ticks carry as ``eta_ms``: the lag left over the rate it fell."""
    engine = _engine()
    _due(engine, 100_000)  # the backlog starts: the first mark
    assert engine._lag_mark[1] == 100_000
    eta = _estimate(engine, 60_000, 2.0)  # 40,000 read in 2 s: 3 s for the rest
    assert eta is not None
    assert 2.95 < eta < 3.05
    # Traffic arriving faster than it is read: no end in sight, so no estimate.
    assert _estimate(engine, 70_000, 1.0) is None
    eta = _estimate(engine, 35_000, 1.0)
    assert eta is not None
    assert 0.95 < eta < 1.05
    _due(engine, 0)  # read to its end
    assert not engine._in_backlog
    CustomerEngine._estimate_backlog_end(engine)
    assert engine._backlog_eta_s is None
    assert engine._lag_mark is None
