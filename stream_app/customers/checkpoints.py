"""When the customer stage checkpoints, and what it tells downstream about a backlog.

Pure policy: the engine reports the consumer lag and each checkpoint it made, and asks when
the next one is due and how long a fetch may wait. The clock is injected, so tests walk time
forward instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Records fetched per batch; more than this waiting means the stage is in a backlog.
MAX_BATCH_RECORDS = 20_000
# The longest a fetch waits for input while nothing is due (stop requests are seen as often).
FETCH_WAIT_MS = 200
# A floor, so that a lag that grows between the wait and the check cannot spin the loop.
MIN_FETCH_WAIT_MS = 5
# A backlog whose lag stayed at or below a batch this long is over, even if never zero.
BACKLOG_END_S = 1.0


@dataclass
class CheckpointPolicy:
    """Checkpoint every ``every_s``; while a backlog lasts, every ``backlog_every_s``.

    And at once when a backlog has just been read to its end: its last events waited out up
    to an interval before anyone could see them. A backlog starts when more than a batch
    waits and ends when nothing does, or when no more than a batch has waited for
    ``BACKLOG_END_S``; the watermark ticks carry it (``in_backlog``, ``eta_s``) to the
    publisher, which holds snapshots that are about to move a lot.
    """

    every_s: float
    backlog_every_s: float
    clock: Callable[[], float] = time.monotonic
    in_backlog: bool = False
    # How long the rest of the backlog should take, from the rate it shrank (None: unknown).
    eta_s: float | None = None
    _last_checkpoint: float = field(init=False)
    _low_since: float | None = field(default=None, init=False)
    # (time, lag) when the backlog was last measured, for the rate it shrinks at.
    _lag_mark: tuple[float, int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._last_checkpoint = self.clock()

    def due(self, lag: int) -> bool:
        """Whether to checkpoint now, with ``lag`` records still waiting."""
        now = self.clock()
        elapsed = now - self._last_checkpoint
        if lag > MAX_BATCH_RECORDS:
            if not self.in_backlog:
                self._lag_mark = (now, lag)
            self.in_backlog = True
            self._low_since = None
        elif self.in_backlog:
            if lag == 0:
                self.in_backlog = False
                return True
            if self._low_since is None:
                self._low_since = now
            elif now - self._low_since >= BACKLOG_END_S:
                # Steady traffic keeps a little input waiting: the backlog is over all the same.
                self.in_backlog = False
        if elapsed < self.every_s:
            return False
        return elapsed >= self.backlog_every_s or lag <= MAX_BATCH_RECORDS

    def fetch_wait_ms(self, lag: int, work_pending: bool) -> int:
        """How long a fetch may wait for input: no longer than until a checkpoint is due.

        With nothing new to read, a checkpoint of work already done waited out the whole
        fetch (up to 200 ms): the last events of a burst reached Redis that much later.
        """
        if not work_pending:
            return FETCH_WAIT_MS
        every_s = self.every_s if lag <= MAX_BATCH_RECORDS else self.backlog_every_s
        due_in_s = every_s - (self.clock() - self._last_checkpoint)
        return max(MIN_FETCH_WAIT_MS, min(FETCH_WAIT_MS, math.ceil(due_in_s * 1000)))

    def estimate_backlog_end(self, lag: int) -> None:
        """Update ``eta_s``: the lag left over the rate it shrank since the last estimate (so
        traffic still arriving counts against it); None until it has shrunk."""
        if not self.in_backlog:
            self._lag_mark = self.eta_s = None
            return
        now = self.clock()
        mark, self._lag_mark = self._lag_mark, (now, lag)
        if mark is None:
            return
        elapsed_s, worked_off = now - mark[0], mark[1] - lag
        self.eta_s = lag * elapsed_s / worked_off if elapsed_s > 0 and worked_off > 0 else None

    def checkpointed(self) -> None:
        """A checkpoint has just completed: the intervals count from now."""
        self._last_checkpoint = self.clock()
