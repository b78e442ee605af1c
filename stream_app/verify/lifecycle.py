"""The reference's own walk through a customer's lifecycle stages (docs/metrics.md,
"Lifecycle segments"): the stage each event counts in, and the instants an active customer's
activity moves from one stage segment to another.

It shares with the engine only the declared rules (``stages.classify``, ``next_change``) and
the profile they read; the engine derives the same segments from its fold's state instead
(``lifecycle/segments.py``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from schemas.lifecycle import Stage, lifecycle_segment
from stream_app.lifecycle.profile import Profile
from stream_app.lifecycle.stages import Rules, classify, next_change


@dataclass
class StageWalk:
    """One customer's stages, event by event in fold order."""

    rules: Rules
    profile: Profile = field(default_factory=Profile)
    stage: Stage | None = None  # where the customer's activity is, as of ``time_us``
    time_us: int | None = None

    def before(
        self,
        time_us: int,
        active: bool,
        update: tuple[str, int, int | str | None, int | None],
        activity: defaultdict[str, list[tuple[int, int]]],
        segments: set[str],
    ) -> str:
        """The segment of the event at ``time_us`` (its stage just before it); moves the
        activity of an ``active`` customer through the stages time gave it since the last
        event. ``update`` is the event as the profile takes it: (kind, time, value, score)."""
        if self.time_us is None:
            self._update(update)
            stage = classify(self.profile, time_us, self.rules)[0]
        else:
            stage = self._walk(time_us, active, activity, segments)
            self._update(update)
        self.stage, self.time_us = stage, time_us
        return lifecycle_segment(stage)

    def finish(
        self,
        active: bool,
        activity: defaultdict[str, list[tuple[int, int]]],
        segments: set[str],
    ) -> None:
        """The moves time gives the customer after the last event."""
        if self.time_us is not None:
            self._walk(None, active, activity, segments)

    def _walk(
        self,
        until_us: int | None,
        active: bool,
        activity: defaultdict[str, list[tuple[int, int]]],
        segments: set[str],
    ) -> Stage:
        assert self.stage is not None
        assert self.time_us is not None
        stage, t = self.stage, self.time_us
        while True:
            now = classify(self.profile, t, self.rules)[0]
            if now != stage:
                if active:
                    activity[lifecycle_segment(stage)].append((t, -1))
                    activity[lifecycle_segment(now)].append((t, +1))
                    segments.update((lifecycle_segment(stage), lifecycle_segment(now)))
                stage = now
            due = next_change(self.profile, t, self.rules)
            if due is None or (until_us is not None and due > until_us):
                return stage
            t = due

    def _update(self, update: tuple[str, int, int | str | None, int | None]) -> None:
        kind, t, value, score = update
        if kind == "signup":
            self.profile.signup(t)
        elif kind == "cancellation":
            self.profile.cancellation(t)
        elif kind == "purchase":
            assert isinstance(value, int)
            self.profile.purchase(t, value)
        elif kind == "survey":
            assert score is not None
            self.profile.survey(t, "nps" if value == "nps" else "csat", score)
