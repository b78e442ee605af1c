"""One customer partition's churn risks, and what the publisher must write of them. Pure.

The Redis sorted set ``kpi-at-risk:<segment>`` (``all`` and ``region:<R>``) holds the
customers with the highest risk across every partition. Each partition offers its own top
``size`` of each segment (``plan``): the members to add or rescore, and those it wrote before
that dropped out of its top (or stopped being active, or were forgotten); the publisher
adds, removes, then trims the set to the ``size`` highest, so the set is the global top.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

ALL = "all"


@dataclass
class SegmentPlan:
    """The writes of one segment's set: members with their scores, and members to remove."""

    segment: str
    add: dict[str, float]
    remove: list[str]


@dataclass
class AtRiskBoard:
    """Scores of the partition's active customers (customer -> (risk, region segment))."""

    size: int
    scores: dict[str, tuple[float, str]] = field(default_factory=dict)
    changed: bool = False
    # What this partition last wrote to each segment's set: member -> score.
    written: dict[str, dict[str, float]] = field(default_factory=dict)

    def set(self, customer: str, risk: float, region_segment: str) -> None:
        if self.scores.get(customer) != (risk, region_segment):
            self.scores[customer] = (risk, region_segment)
            self.changed = True

    def drop(self, customer: str) -> None:
        """The customer is no longer active, or was forgotten."""
        if self.scores.pop(customer, None) is not None:
            self.changed = True

    def rewrite_all(self) -> None:
        """Redis may have lost the sets: the next plan writes everything again."""
        self.written.clear()
        self.changed = True

    def plan(self) -> list[SegmentPlan]:
        """What to write since the last plan (nothing if nothing changed)."""
        if not self.changed:
            return []
        self.changed = False
        by_segment: dict[str, list[tuple[float, str]]] = {ALL: []}
        for customer, (risk, region) in self.scores.items():
            by_segment[ALL].append((risk, customer))
            by_segment.setdefault(region, []).append((risk, customer))
        plans = []
        for segment in sorted(by_segment.keys() | self.written.keys()):
            top = {c: r for r, c in heapq.nlargest(self.size, by_segment.get(segment, []))}
            before = self.written.get(segment, {})
            add = {c: r for c, r in top.items() if before.get(c) != r}
            remove = sorted(c for c in before if c not in top)
            if add or remove:
                plans.append(SegmentPlan(segment, add, remove))
            if top:
                self.written[segment] = top
            else:
                self.written.pop(segment, None)
        return plans
