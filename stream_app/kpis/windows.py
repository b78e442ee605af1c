"""Window bookkeeping as difference arrays over window-end indexes, one per window spec and segment.

A window spec (size, step) has a window ending at every multiple of ``step``; index ``k`` is
the window ``[k*step - size, k*step)``. Every fact the customer stage emits adds a value to a
contiguous run of window ends (an event at ``t`` is in the windows ending in
``(t, t + size]``; a customer active from ``t`` is in ``active_end`` of every window ending
after ``t``). Storing ``+v`` at the first index and ``-v`` after the last makes each fact two
dictionary updates, and the value of any window is the prefix sum up to its index. Index 0
holds everything folded out of the retained range, so prefix sums stay exact.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from operator import add
from typing import Any

from stream_app.kpis.formulas import BASE_COUNTS, BASE_INDEX
from stream_app.settings import WindowSpec

WIDTH = len(BASE_COUNTS)
ACTIVE_START = BASE_INDEX["active_start"]
ACTIVE_END = BASE_INDEX["active_end"]
PURCHASING = BASE_INDEX["purchasing_customers"]
REPEAT = BASE_INDEX["repeat_customers"]
BASE_K = 0  # the folded-away past

# Facts, spec independent (times in epoch microseconds):
#   ("pt", segment, metric, t)      value v: metric += v for the windows containing t (the
#                                   customer stage carries these as one count vector per
#                                   (segment, t), see ``coarsen_points``)
#   ("act", segment, t)             value v: the customer is active (v=+1) / not (-1) from t on
#   ("dp", segment, p, q)           value 1: purchase p is a customer's first purchase of the
#                                   windows containing p but not q (its previous purchase)
#   ("dr", segment, p, q, q2)       value 1: p is the second purchase of the windows that
#                                   contain p and q but not q2
Fact = tuple[Any, ...]


@dataclass(frozen=True)
class Spec:
    """The integer form of a window spec the hot path uses."""

    name: str
    size_us: int
    step_us: int

    @classmethod
    def from_window(cls, window: WindowSpec) -> Spec:
        return cls(window.name, window.size_ms * 1000, window.step_ms * 1000)

    @property
    def steps(self) -> int:
        return self.size_us // self.step_us

    def end_index(self, t_us: int) -> int:
        """Index of the first window end strictly after ``t_us`` (the window containing it)."""
        return t_us // self.step_us + 1

    def current_index(self, watermark_us: int) -> int:
        """The current window: it ends at the first step boundary strictly after the watermark."""
        return self.end_index(watermark_us)

    def oldest_kept(self, watermark_us: int, frozen_us: int, history_steps: int) -> int:
        """The oldest window end index that stays exact in memory.

        Windows ending before ``watermark - frozen`` can no longer change (events that old
        are too late), and the newest ``history_steps`` windows must stay computable so the
        history of each window can be rewritten whenever late data reaches it.
        """
        return min(
            self.end_index(watermark_us - frozen_us),
            self.current_index(watermark_us) - history_steps + 1,
        )

    def bounds_us(self, k: int) -> tuple[int, int]:
        """``(start, end)`` of the window with end index ``k``."""
        end = k * self.step_us
        return end - self.size_us, end


def fact_grain_us(specs: Iterable[Spec]) -> int:
    """The largest grain that divides every step: the greatest common divisor."""
    return math.gcd(*(spec.step_us for spec in specs))


def coarsen(facts: dict[Fact, int], step_us: int) -> dict[Fact, int]:
    """Span facts (all kinds but "pt") with every time floored to ``step_us``, zero sums dropped.

    ``fact_ranges`` reads a time only as ``t // step``, which this flooring leaves unchanged
    for a spec of that step: a spec with a coarse step gets far fewer facts to apply.
    """
    merged: dict[Fact, int] = {}
    for fact, value in facts.items():
        kind = fact[0]
        if kind == "act":
            key: Fact = (kind, fact[1], fact[2] // step_us * step_us)
        elif kind == "dp":
            q = fact[3]
            key = (
                kind,
                fact[1],
                fact[2] // step_us * step_us,
                None if q is None else q // step_us * step_us,
            )
        else:
            q2 = fact[4]
            key = (
                kind,
                fact[1],
                fact[2] // step_us * step_us,
                fact[3] // step_us * step_us,
                None if q2 is None else q2 // step_us * step_us,
            )
        merged[key] = merged.get(key, 0) + value
    return {fact: value for fact, value in merged.items() if value}


def coarsen_points(
    points: dict[tuple[str, int], list[int]], step_us: int
) -> dict[tuple[str, int], list[int]]:
    """Per-time count vectors (``(segment, t)`` keys) with every time floored to ``step_us``."""
    merged: dict[tuple[str, int], list[int]] = {}
    for (segment, t), vector in points.items():
        key = (segment, t // step_us * step_us)
        total = merged.get(key)
        if total is None:
            merged[key] = list(vector)
        else:
            total[:] = map(add, total, vector)
    return merged


Range = tuple[int, int, int | None]


def fact_ranges(fact: Fact, spec: Spec) -> tuple[Range, ...]:
    """(metric, first index, last index or None for open-ended) runs that ``fact`` adds to."""
    # A tuple, not a generator: called for every fact of every window, a generator's set-up
    # cost more than its arithmetic.
    kind = fact[0]
    n = spec.steps
    step = spec.step_us
    if kind == "pt":
        b = int(fact[3]) // step
        return ((int(fact[2]), b + 1, b + n),)
    if kind == "act":
        b = int(fact[2]) // step
        return ((ACTIVE_END, b + 1, None), (ACTIVE_START, b + 1 + n, None))
    if kind == "dp":
        bp = int(fact[2]) // step
        q = fact[3]
        lo = bp if q is None else max(bp, int(q) // step + n)
        return ((PURCHASING, lo + 1, bp + n),) if lo < bp + n else ()
    if kind == "dr":
        bp = int(fact[2]) // step
        bq = int(fact[3]) // step
        q2 = fact[4]
        lo = bp if q2 is None else max(bp, int(q2) // step + n)
        return ((REPEAT, lo + 1, bq + n),) if lo < bq + n else ()
    raise ValueError(f"unknown fact kind {kind!r}")


class DiffArray:
    """Difference array of base-count vectors over window-end indexes, with prefix queries.

    Prefix sums are cached and recomputed only from the earliest changed index, so the
    usual case (changes and queries near the newest windows) costs a few vector additions.
    """

    __slots__ = ("_keys", "_prefix", "_stale_k", "_valid", "diffs", "dirty_from")

    def __init__(self) -> None:
        self.diffs: dict[int, list[int]] = {}
        self._keys: list[int] = []
        self._prefix: list[list[int]] = []
        self._valid = 0
        # The smallest index changed since the last query; turned into a position only then,
        # so that a write to an existing entry (the common case) needs no search.
        self._stale_k: int | None = None
        # Earliest index changed since the last ``take_dirty``: every window from it moved.
        self.dirty_from: int | None = None

    def _entry(self, k: int) -> list[int]:
        vector = self.diffs.get(k)
        if vector is None:
            vector = self._insert(k)
        self._changed_from(k)
        return vector

    def _insert(self, k: int) -> list[int]:
        vector = self.diffs[k] = [0] * WIDTH
        i = bisect_left(self._keys, k)
        self._keys.insert(i, k)
        self._prefix.insert(i, vector)
        return vector

    def _changed_from(self, k: int) -> None:
        if self._stale_k is None or k < self._stale_k:
            self._stale_k = k
        if self.dirty_from is None or k < self.dirty_from:
            self.dirty_from = k

    def add(self, k: int, metric: int, value: int) -> None:
        self._entry(k)[metric] += value

    def add_range(self, metric: int, first: int, last: int | None, value: int) -> None:
        """Add ``value`` to ``metric`` of every window from ``first`` to ``last`` (None: on)."""
        start = [0] * WIDTH
        start[metric] = value
        changes = {first: start}
        if last is not None:
            end = [0] * WIDTH
            end[metric] = -value
            changes[last + 1] = end
        self.add_vectors(changes)

    def add_vectors(self, changes: dict[int, list[int]]) -> None:
        """Add a difference vector at each index: the ends of many ranges, summed by the caller.

        The customer stage sums a batch's facts per index first (a few hundred indexes), so
        each entry takes one vector addition however many facts touched it.
        """
        if not changes:
            return
        diffs = self.diffs
        for k, delta in changes.items():
            vector = diffs.get(k)
            if vector is None:
                vector = self._insert(k)
            # In place: the prefix cache may hold this very list.
            vector[:] = map(add, vector, delta)
        self._changed_from(min(changes))

    def set_entry(self, k: int, vector: list[int]) -> None:
        """Overwrite one entry (absolute values from a partial); all zeros removes it."""
        if any(vector):
            self._entry(k)[:] = vector
        elif k in self.diffs:
            i = bisect_left(self._keys, k)
            del self.diffs[k]
            del self._keys[i]
            del self._prefix[i]
            self._valid = min(self._valid, i)
            if self.dirty_from is None or k < self.dirty_from:
                self.dirty_from = k

    def value_at(self, k: int) -> list[int]:
        """The base counts of the window with end index ``k``."""
        if self._stale_k is not None:
            self._valid = min(self._valid, bisect_left(self._keys, self._stale_k))
            self._stale_k = None
        i = bisect_right(self._keys, k)
        if i == 0:
            return [0] * WIDTH
        if self._valid < i:
            running = self._prefix[self._valid - 1] if self._valid else [0] * WIDTH
            for j in range(self._valid, i):
                running = [a + b for a, b in zip(running, self.diffs[self._keys[j]], strict=True)]
                self._prefix[j] = running
            self._valid = i
        return list(self._prefix[i - 1])

    def take_dirty(self) -> int | None:
        dirty, self.dirty_from = self.dirty_from, None
        return dirty

    def load_entry(self, k: int, vector: list[int]) -> None:
        """Set one entry as recovered from a changelog."""
        self._entry(k)[:] = vector

    def compact(self, below: int) -> list[int]:
        """Fold every entry with index < ``below`` into index 0; returns the touched indexes."""
        start = 1 if self._keys and self._keys[0] == BASE_K else 0
        if start >= len(self._keys) or self._keys[start] >= below:
            return []
        old = self._keys[start : bisect_left(self._keys, below)]
        base = self.diffs.get(BASE_K, [0] * WIDTH)
        for k in old:
            base = [a + b for a, b in zip(base, self.diffs.pop(k), strict=True)]
        self.diffs.pop(BASE_K, None)
        if any(base):
            self.diffs[BASE_K] = base
        self._keys = sorted(self.diffs)
        self._prefix = [self.diffs[k] for k in self._keys]
        self._valid = 0
        return [BASE_K, *old]

    def entries(self) -> Iterable[tuple[int, list[int]]]:
        return self.diffs.items()

    def __len__(self) -> int:
        return len(self.diffs)
