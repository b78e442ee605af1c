"""Retrying with exponential backoff: when to try again, when to say so, when to give up.

Pure logic on an injected monotonic clock; the I/O that retries (waiting for a broker)
only asks it and sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Monotonic seconds; time.monotonic in production, a fake in tests.
Seconds = Callable[[], float]


@dataclass(frozen=True)
class RetryStep:
    """What to do after a failed attempt."""

    attempt: int  # failed attempts so far, this one included
    elapsed_s: float  # since the first attempt started
    wait_s: float  # sleep this long before the next attempt (0 when giving up)
    report: bool  # log this failure (the first, then at most one per report interval)
    give_up: bool  # the deadline has passed: stop trying


class Backoff:
    """Waits of ``first_s``, doubled after each failure up to ``cap_s``, until ``deadline_s``.

    A wait never runs past the deadline, so the last attempt happens at it. ``report`` is true
    for the first failure and then at most once per ``report_every_s``: an operator sees that
    the process waits and why, without a line per attempt.
    """

    def __init__(
        self,
        deadline_s: float,
        *,
        first_s: float = 0.5,
        cap_s: float = 10.0,
        report_every_s: float = 5.0,
        clock: Seconds = time.monotonic,
    ) -> None:
        if not 0 < first_s <= cap_s:
            raise ValueError("backoff: need 0 < first_s <= cap_s")
        self.deadline_s = deadline_s
        self.first_s = first_s
        self.cap_s = cap_s
        self.report_every_s = report_every_s
        self.clock = clock
        self.started = clock()
        self.attempt = 0
        self._next_wait = first_s
        self._last_report: float | None = None

    def failed(self) -> RetryStep:
        """Record a failed attempt and say what comes next."""
        now = self.clock()
        self.attempt += 1
        elapsed = now - self.started
        remaining = self.deadline_s - elapsed
        report = self._last_report is None or now - self._last_report >= self.report_every_s
        if report:
            self._last_report = now
        if remaining <= 0:
            return RetryStep(self.attempt, elapsed, 0.0, report=report, give_up=True)
        wait = min(self._next_wait, remaining)
        self._next_wait = min(self._next_wait * 2, self.cap_s)
        return RetryStep(self.attempt, elapsed, wait, report=report, give_up=False)
