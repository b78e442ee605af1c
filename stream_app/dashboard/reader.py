"""Everything the API reads from Redis, and nothing it writes: snapshots, history, segments, alerts.

The layouts are the contract's (section 5) and the publisher's:

- ``kpi:<window>:<segment>``: hash, one JSON-encoded value per snapshot field;
- ``kpi-history:<window>:<segment>``: sorted set, score = window end (Unix seconds), member =
  the snapshot as JSON;
- ``kpi-alerts``: stream, each alert as JSON in field ``data``;
- ``kpi-cohorts:<grain>:<segment>``: hash, one cohort's JSON per field named by its start
  (contract section 6).

Values are checked with the same code as ``kpi watch`` (``stream_app.published``), against
the contract's models: a field that is not what the contract says is left out, a snapshot
whose ``window`` or ``segment`` is not its key's, a history entry without a valid window end,
an alert that is not one and a key that names no segment are left out whole. Never passed
on, never fatal, each counted in ``kpi_dashboard_malformed_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from schemas.cohort import GRAINS, Cohort, Grain
from stream_app.metrics import MalformedReads
from stream_app.published import (
    cohort_segments,
    decode_hash,
    decode_snapshot,
    describes,
    is_segment,
    parse_alert,
    parse_time,
    read_cohorts,
)
from stream_app.redis_keys import (
    ALERTS,
    SNAPSHOT_PATTERN,
    SNAPSHOT_PREFIX,
    cohorts_key,
    history_key,
    snapshot_key,
    split_name,
)

from .params import POINT_META

# At most this many segments are listed (a SCAN of kpi:* beyond it stops).
MAX_SEGMENTS: Final = 10_000
SEGMENTS_TTL_S: Final = 5.0
_SCAN_COUNT: Final = 1000

Snapshot = dict[str, Any]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def segment_order(segment: str) -> tuple[int, str]:
    """``all`` first, then regions, then campaigns, each alphabetically."""
    kind = segment.partition(":")[0]
    return ({"all": 0, "region": 1, "campaign": 2}.get(kind, 3), segment)


class KpiReader:
    """Reads published KPIs and alerts; every method may raise ``RedisError``/``OSError``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        windows: Sequence[str],
        *,
        segments_ttl_s: float = SEGMENTS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        malformed: MalformedReads | None = None,
    ) -> None:
        self.redis = redis
        self.malformed = malformed or MalformedReads()
        self.windows = tuple(windows)
        self.segments_ttl_s = segments_ttl_s
        self._clock = clock
        self._segments: tuple[float, list[str]] | None = None
        self._cohort_segments: tuple[float, dict[Grain, list[str]]] | None = None
        self._segments_lock = asyncio.Lock()

    async def ping(self) -> float:
        """Round trip of a PING in seconds."""
        started = time.perf_counter()
        await self.redis.ping()
        return time.perf_counter() - started

    async def snapshot(self, window: str, segment: str) -> Snapshot | None:
        """The current snapshot, or None when there is none (or nothing valid in it)."""
        key = snapshot_key(window, segment)
        try:
            fields = await self.redis.hgetall(key)
        except ResponseError:  # WRONGTYPE: not a snapshot hash
            return None
        if not fields:
            return None
        snapshot, bad = decode_hash(fields, as_published=True)
        if not describes(snapshot, window, segment):
            self.malformed.skipped("snapshot", key)
            return None
        self.malformed.skipped("field", key, bad)
        return snapshot

    async def previous(self, window: str, segment: str, before: str | None) -> Snapshot | None:
        """The history entry of the step before the window ending at ``before`` (RFC 3339)."""
        end = _epoch(before)
        if end is None:
            return None
        try:
            members = await self.redis.zrevrangebyscore(
                history_key(window, segment), f"({end}", "-inf", start=0, num=1
            )
        except ResponseError:
            return None
        points = self._points(window, segment, members)
        return points[0] if points else None

    async def snapshots(self, segment: str, windows: Sequence[str]) -> dict[str, Any]:
        """Per window: the current snapshot and the one of the previous step (or None)."""
        currents = await asyncio.gather(*(self.snapshot(w, segment) for w in windows))
        previous = await asyncio.gather(
            *(
                self.previous(w, segment, current.get("window_end") if current else None)
                for w, current in zip(windows, currents, strict=True)
            )
        )
        return {
            w: {"current": current, "previous": prev}
            for w, current, prev in zip(windows, currents, previous, strict=True)
        }

    async def has_data(self, segment: str) -> bool:
        """Whether any window of the segment has a snapshot hash."""
        keys = [snapshot_key(w, segment) for w in self.windows]
        return bool(await self.redis.exists(*keys))

    async def history(
        self,
        window: str,
        segment: str,
        *,
        since: float | None,
        until: float | None,
        limit: int,
        fields: Sequence[str] | None,
    ) -> list[Snapshot]:
        """The newest ``limit`` steps with window end in ``[since, until]``, oldest first."""
        low = "-inf" if since is None else repr(since)
        high = "+inf" if until is None else repr(until)
        try:
            members = await self.redis.zrevrangebyscore(
                history_key(window, segment), high, low, start=0, num=limit
            )
        except ResponseError:
            return []
        points = self._points(window, segment, reversed(members))
        if fields is None:
            return points
        keep = (*POINT_META, *fields)
        return [{name: point[name] for name in keep if name in point} for point in points]

    def _points(self, window: str, segment: str, members: Iterable[Any]) -> list[Snapshot]:
        """The history members that are this key's snapshots with a window end, in order."""
        key = history_key(window, segment)
        points: list[Snapshot] = []
        skipped = fields = 0
        for member in members:
            decoded = (
                decode_snapshot(member, as_published=True)
                if isinstance(member, bytes | str)
                else None
            )
            if decoded is None or not describes(decoded[0], window, segment):
                skipped += 1
            elif "window_end" not in decoded[0]:
                skipped += 1  # a chart point needs its time
            else:
                points.append(decoded[0])
                fields += decoded[1]
        self.malformed.skipped("history", key, skipped)
        self.malformed.skipped("field", key, fields)
        return points

    async def segments(self) -> list[str]:
        """Every segment with a snapshot of a configured window; cached ``segments_ttl_s``."""
        async with self._segments_lock:
            cached = self._segments
            now = self._clock()
            if cached is not None and now - cached[0] < self.segments_ttl_s:
                return cached[1]
            found = await self._scan_segments()
            self._segments = (self._clock(), found)
            return found

    async def _scan_segments(self) -> list[str]:
        windows = set(self.windows)
        found: set[str] = set()
        malformed: list[str] = []
        async for key in self.redis.scan_iter(
            match=SNAPSHOT_PATTERN, count=_SCAN_COUNT, _type="hash"
        ):
            name = _text(key)
            parts = split_name(name, SNAPSHOT_PREFIX)
            if parts is None or not is_segment(parts[1]):
                malformed.append(name)
            elif parts[0] in windows:
                found.add(parts[1])
                if len(found) >= MAX_SEGMENTS:
                    break
        if malformed:
            self.malformed.skipped("key", malformed[0], len(malformed))
        return sorted(found, key=segment_order)

    async def cohorts(self, grain: Grain, segment: str) -> list[Cohort] | None:
        """The published cohorts, newest first; None when the segment has none of ``grain``."""
        found = await read_cohorts(self.redis, grain, segment)
        if found is None:
            return None
        self.malformed.skipped("cohort", cohorts_key(grain, segment), found[1])
        return found[0]

    async def cohort_segments(self) -> dict[Grain, list[str]]:
        """Per grain, every segment with cohorts, in ``segment_order``; cached like
        ``segments``."""
        async with self._segments_lock:
            cached = self._cohort_segments
            if cached is not None and self._clock() - cached[0] < self.segments_ttl_s:
                return cached[1]
            found, malformed = await cohort_segments(self.redis)
            if malformed:
                self.malformed.skipped("key", malformed[0], len(malformed))
            ordered = {grain: sorted(found[grain], key=segment_order) for grain in GRAINS}
            self._cohort_segments = (self._clock(), ordered)
            return ordered

    async def alerts(self, limit: int) -> list[dict[str, Any]]:
        """The latest alerts of the stream, newest first; entries that are no alert skipped."""
        try:
            entries = await self.redis.xrevrange(ALERTS, count=limit)
        except ResponseError:  # not a stream
            return []
        alerts: list[dict[str, Any]] = []
        skipped = 0
        for _entry_id, fields in entries or []:
            data = (fields or {}).get(b"data")
            if data is None or parse_alert(data) is None:
                skipped += 1
                continue
            alerts.append(orjson.loads(data))
        self.malformed.skipped("alert", ALERTS, skipped)
        return alerts


def _epoch(rfc3339: Any) -> int | None:
    """Unix seconds of a published RFC 3339 time (the history's score), or None."""
    if not isinstance(rfc3339, str):
        return None
    moment = parse_time(rfc3339)
    return None if moment is None else int(moment.timestamp())
