"""Alert evaluation: churn spikes and threshold rules, on the worker that owns each segment.

Every tick (1 s) the service looks at the segments of the segment-stage partitions this
worker owns, exactly like the publisher. For each (rule, segment) it keeps a *cursor*, the
last bucket (or window) it evaluated, and whether an alert is firing. Buckets that closed
since the cursor are evaluated oldest first; a breach fires an alert, the first bucket back
to normal resolves it. The cursor and the firing state live in the Redis hash
``kpi-alert-state``, written in the same round trip as the alerts, so a restarted worker, or
the next owner after a rebalance, carries on where the last one stopped.

A bucket closes when the *closing watermark* passes its end plus ``KPI_ALERT_GRACE``. That
watermark is the minimum, over the customer partitions feeding this segment partition, of
the watermark each confirmed after sending all its counts; one not heard from yet (its
worker died, or this worker has just taken the segment partition over) holds every bucket
open. A partition whose watermark has not moved, or that has not been heard from, for
``KPI_ALERT_IDLE_TIMEOUT`` of wall-clock time is left out (it has no traffic, so it holds no
counts back). The maximum would let the fastest partition close a bucket
while the others' counts for it are still on the way, which is what a backlog looks like.

Nothing here can slow the KPI path: evaluation is budgeted per tick, Redis trouble only
pauses alerting (with backoff; buckets are evaluated later from the kept counts), Kafka
failures are retried from a bounded queue, and webhooks run in their own tasks.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schemas import Alert
from stream_app.alerts.delivery import PUBLISH_ONCE, SAVE_STATES, WebhookSender
from stream_app.alerts.detector import (
    DetectorParams,
    Severity,
    Status,
    evaluate,
    last_closed,
    transition,
)
from stream_app.alerts.restore import AlertLog, LoggedAlert, ensure_restored, last_states
from stream_app.alerts.rules import CHURN_RULE, ThresholdRule
from stream_app.clock import Clock
from stream_app.customers.timeline import EPOCH
from stream_app.kpis.formulas import BASE_INDEX, KpiValue, counts_from_vector
from stream_app.kpis.registry import segment_kind, value_of
from stream_app.kpis.specs import HOUR_US, HourlySource, hourly_source
from stream_app.kpis.windows import Spec
from stream_app.metrics import Metrics, RateLimitedLog
from stream_app.redis_keys import ALERT_STATE, ALERTS, ALERTS_RESTORED, alert_sent_key
from stream_app.segments.store import SegmentAggregate, SegmentStore
from stream_app.settings import Settings, duration_ms

logger = logging.getLogger(__name__)

KafkaSend = Callable[[bytes, bytes], Awaitable[Any]]
# Buckets evaluated per tick at most, so catching up on a backlog never stalls the loop.
EVALUATIONS_PER_TICK = 5_000
# Alerts kept for a Kafka retry at most (they are in Redis already).
KAFKA_RETRY_LIMIT = 1_000
CHURNED = BASE_INDEX["churned_customers"]


@dataclass(frozen=True)
class Observation:
    """One closed bucket or window of one segment, as a rule sees it."""

    k: int
    status: Status
    observed: KpiValue
    mean: float | None = None
    std: float | None = None
    z: float | None = None
    severity: Severity | None = None


def alert_id(rule: str, segment: str, bucket_end_us: int) -> str:
    """Deterministic: the same rule, segment and first bucket give the same id everywhere."""
    text = f"{rule}\x1f{segment}\x1f{bucket_end_us}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def to_datetime(t_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_us)


def _hhmm(t_us: int) -> str:
    return to_datetime(t_us).strftime("%Y-%m-%d %H:%M")


class ChurnWatcher:
    """The churn-spike detector on hourly buckets, for ``all`` and every region."""

    name = CHURN_RULE
    kind: Literal["churn_spike", "threshold"] = "churn_spike"
    kpi = "churned_customers"
    window: str | None = None
    threshold: float | None = None
    step_us = HOUR_US

    def __init__(
        self, source: HourlySource, params: DetectorParams, grace_us: int, baseline: str
    ) -> None:
        self.source = source
        self.params = params
        self.grace_us = grace_us
        self.baseline_label = baseline
        self.spec_name = source.spec.name

    def applies(self, segment: str) -> bool:
        return segment == "all" or segment.startswith("region:")

    def oldest_start(self, oldest_kept: int) -> int:
        """The oldest bucket whose whole baseline is still exact in memory."""
        first_exact_hour = -(-oldest_kept // self.source.stride)
        return first_exact_hour + self.params.baseline_buckets

    def bounds_us(self, k: int) -> tuple[int, int]:
        return (k - 1) * HOUR_US, k * HOUR_US

    def observe(self, aggregate: SegmentAggregate, lo: int, hi: int) -> list[Observation]:
        totals = aggregate.totals.get(self.spec_name)
        first = None if totals is None else self.source.first_hour(totals)
        if totals is None or first is None:
            return [Observation(k, "insufficient", None) for k in range(lo, hi + 1)]
        start = max(first, lo - self.params.baseline_buckets)
        counts = {h: totals.value_at(self.source.index(h))[CHURNED] for h in range(start, hi + 1)}
        observations = []
        for h in range(lo, hi + 1):
            history = [counts[j] for j in range(max(start, h - self.params.baseline_buckets), h)]
            count = counts.get(h, 0)
            verdict = evaluate(count, history, self.params)
            observations.append(
                Observation(
                    h,
                    verdict.status,
                    count,
                    verdict.mean,
                    verdict.std,
                    verdict.z,
                    verdict.severity,
                )
            )
        return observations

    def summary(self, segment: str, obs: Observation, firing: bool) -> str:
        start, end = self.bounds_us(obs.k)
        when = f"{_hhmm(start)}-{_hhmm(end)[-5:]} UTC"
        stats = ""
        if obs.mean is not None and obs.z is not None:
            stats = (
                f", z={obs.z:.1f} against a {self.baseline_label} hourly mean of {obs.mean:.2f}"
                f" (sd {obs.std or 0:.2f})"
            )
        if firing:
            return f"Churn spike in {segment}: {obs.observed} customers churned {when}{stats}"
        return f"Churn back to normal in {segment}: {obs.observed} churned {when}{stats}"


class ThresholdWatcher:
    """One rule of the rules file: a KPI of a window crossing a value."""

    kind: Literal["churn_spike", "threshold"] = "threshold"

    def __init__(self, rule: ThresholdRule, spec: Spec, settings: Settings) -> None:
        self.rule = rule
        self.name = rule.name
        self.kpi = rule.kpi
        self.window: str | None = rule.window
        self.threshold: float | None = rule.value
        self.spec = spec
        self.spec_name = spec.name
        self.step_us = spec.step_us
        grace = rule.grace if rule.grace is not None else settings.alert_grace
        self.grace_us = duration_ms(grace) * 1000
        self.gross_margin = settings.gross_margin
        self._volume = rule.volume_metric

    def applies(self, segment: str) -> bool:
        return self.rule.matches(segment, segment_kind(segment))

    def oldest_start(self, oldest_kept: int) -> int:
        return oldest_kept

    def bounds_us(self, k: int) -> tuple[int, int]:
        return self.spec.bounds_us(k)

    def observe(self, aggregate: SegmentAggregate, lo: int, hi: int) -> list[Observation]:
        totals = aggregate.totals.get(self.spec_name)
        observations = []
        for k in range(lo, hi + 1):
            if totals is None:
                observations.append(Observation(k, "insufficient", None))
                continue
            counts = counts_from_vector(totals.value_at(k))
            value = value_of(self.kpi, counts, self.gross_margin)
            enough = self._volume is None or counts[self._volume] >= self.rule.min_volume
            breached = self.rule.breached(value) if enough else None
            status: Status = "insufficient" if breached is None else "breach" if breached else "ok"
            severity = self.rule.severity if breached else None
            observations.append(Observation(k, status, value, severity=severity))
        return observations

    def summary(self, segment: str, obs: Observation, firing: bool) -> str:
        rule = self.rule
        _start, end = self.bounds_us(obs.k)
        condition = f"{rule.op} {rule.value:g}"
        if firing:
            return (
                f"{rule.kpi} on {rule.window} for {segment} is {obs.observed} ({condition}, "
                f"rule {rule.name}) in the window ending {_hhmm(end)} UTC"
            )
        return (
            f"{rule.kpi} on {rule.window} for {segment} is back at {obs.observed} (rule "
            f"{rule.name}: {condition}) in the window ending {_hhmm(end)} UTC"
        )


Watcher = ChurnWatcher | ThresholdWatcher


@dataclass(frozen=True)
class _State:
    """Per (rule, segment): the last evaluated index and the firing alert, if any."""

    cursor: int | None = None
    alert_id: str | None = None
    severity: Severity | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"cursor": self.cursor, "alert_id": self.alert_id, "severity": self.severity}
        )

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> _State:
        if not raw:
            return cls()
        try:
            data = orjson.loads(raw)
            return cls(data.get("cursor"), data.get("alert_id"), data.get("severity"))
        except (orjson.JSONDecodeError, AttributeError):
            logger.warning("unreadable alert state %r; starting that rule afresh", raw[:80])
            return cls()


@dataclass
class _Plan:
    key: tuple[str, str]
    state: _State
    alerts: list[Alert]


def build_watchers(
    settings: Settings, rules: Sequence[ThresholdRule], source: HourlySource | None = None
) -> list[Watcher]:
    watchers: list[Watcher] = []
    if settings.churn_enabled:
        watchers.append(
            ChurnWatcher(
                source or hourly_source(settings),
                DetectorParams.from_settings(settings),
                duration_ms(settings.alert_grace) * 1000,
                _span(settings.churn_baseline),
            )
        )
    specs = {window.name: Spec.from_window(window) for window in settings.windows}
    for rule in rules:
        watchers.append(ThresholdWatcher(rule, specs[rule.window], settings))
    return watchers


class AlertService:
    """Evaluates every watcher on the owned segments and delivers what fires or resolves."""

    def __init__(
        self,
        settings: Settings,
        store: SegmentStore,
        redis: aioredis.Redis,
        kafka_send: KafkaSend,
        owned: Callable[[], set[int]],
        metrics: Metrics,
        clock: Clock,
        rules: Sequence[ThresholdRule] = (),
        webhooks: WebhookSender | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        alert_log: AlertLog | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.kafka_send = kafka_send
        self.owned = owned
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self.watchers = build_watchers(settings, rules)
        self.webhooks = webhooks
        self.lookback_us = duration_ms(settings.alert_lookback) * 1000
        self.idle_s = settings.alert_idle_timeout.total_seconds()
        self.frozen_us = (
            duration_ms(settings.max_lateness) + duration_ms(settings.attribution_window)
        ) * 1000
        self.marker_ttl_s = int(settings.alert_marker_ttl.total_seconds())
        self._states: dict[tuple[str, str], _State] = {}
        self._progress: dict[tuple[int, int], tuple[int | None, float]] = {}
        self._kafka_retry: deque[tuple[bytes, bytes]] = deque(maxlen=KAFKA_RETRY_LIMIT)
        self._backoff_until = 0.0
        self._backoff_s = 0.5
        self._log = RateLimitedLog(logger)
        self.last_tick_at: datetime | None = None
        # Reads crm.kpi-alerts whole, to rebuild what a Redis that lost its data forgot.
        self.alert_log = alert_log
        self._token = secrets.token_hex(8)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()

    async def stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()

    @property
    def firing(self) -> list[tuple[str, str]]:
        """(rule, segment) pairs with an alert firing, among the segments this worker owns."""
        return sorted(key for key, state in self._states.items() if state.alert_id)

    # -- the tick ----------------------------------------------------------------------

    async def tick(self) -> int:
        """Evaluate what closed, deliver transitions; returns how many alerts this worker sent."""
        now = self.monotonic()
        if now < self._backoff_until or not self.watchers:
            return 0
        await self._retry_kafka()
        try:
            restored = await ensure_restored(
                self.redis,
                self.alert_log,
                self._restored_states,
                token=self._token,
                marker_ttl_s=self.marker_ttl_s,
                maxlen=self.settings.alert_stream_maxlen,
            )
        except (RedisError, OSError) as exc:
            return self._redis_failed(now, exc)
        except Exception as exc:  # the alert topic could not be read: try again next tick
            self._log.warning(
                "restore",
                "cannot rebuild the alert record from Kafka yet (%s)",
                exc.__class__.__name__,
            )
            return 0
        if restored is None:
            return 0  # another worker rebuilds it: nothing may fire before it is back
        if not restored:
            # Redis lost the states too: reload them as rebuilt, and evaluate again from there.
            self._states.clear()
        owned = self.owned()
        self._forget_unowned(owned)
        plans: list[_Plan] = []
        missing: list[tuple[str, str]] = []
        budget = EVALUATIONS_PER_TICK
        closing: dict[int, int | None] = {}
        for aggregate in self.store.owned(owned):
            partition = aggregate.partition
            if partition not in closing:
                closing[partition] = self.closing_watermark(partition, now)
            closing_us = closing[partition]
            watermark = self.store.watermark(partition)
            if closing_us is None or watermark is None:
                continue
            for watcher in self.watchers:
                if budget <= 0 or not watcher.applies(aggregate.segment):
                    continue
                key = (watcher.name, aggregate.segment)
                state = self._states.get(key)
                if state is None:
                    missing.append(key)
                    continue
                plan = self._plan(watcher, aggregate, state, closing_us, watermark, budget)
                if plan is not None:
                    budget -= plan[1]
                    plans.append(plan[0])
        try:
            if missing:
                await self._load(missing)
            sent = await self._commit(plans) if plans else 0
        except (RedisError, OSError) as exc:
            return self._redis_failed(now, exc)
        self._backoff_s = 0.5
        self.last_tick_at = self.clock()
        return sent

    def _redis_failed(self, now: float, exc: BaseException) -> int:
        self._backoff_until = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, 10.0)
        self._log.warning(
            "redis",
            "Redis unavailable for alerts (%s); evaluation resumes when it is back",
            exc.__class__.__name__,
        )
        return 0

    def _restored_states(self, alerts: list[LoggedAlert]) -> dict[str, bytes]:
        """The state of each (rule, segment) as its newest alert in Kafka leaves it."""
        steps = {watcher.name: watcher.step_us for watcher in self.watchers}
        states: dict[str, bytes] = {}
        for (rule, segment), (cursor, firing, severity) in last_states(alerts, steps).items():
            level: Severity | None = None
            if severity is not None:
                level = "critical" if severity == "critical" else "warning"
            states[f"{rule}|{segment}"] = _State(cursor, firing, level).to_json()
        return states

    def closing_watermark(self, partition: int, now: float) -> int | None:
        """Minimum confirmed watermark over the partition's non-idle sources (see module doc).

        Every customer partition is a source, heard from or not: a worker that has just
        taken this partition over knows only the sources that confirmed since, and a source
        whose worker died has not confirmed yet. Counting without it closed buckets before
        its counts were in (an alert resolved early and fired again after a SIGKILL). A
        source unheard for ``KPI_ALERT_IDLE_TIMEOUT`` is left out, like an idle one.
        """
        confirmed = self.store.confirmed_watermarks(partition)
        if not confirmed:
            return None
        active: list[int] = []
        unheard = False
        for source in sorted(set(range(self.settings.topic_partitions)) | set(confirmed)):
            wm = confirmed.get(source)
            key = (partition, source)
            seen = self._progress.get(key)
            if seen is None or seen[0] != wm:
                self._progress[key] = (wm, now)
            elif now - seen[1] >= self.idle_s:
                continue  # idle, or silent since this worker took the partition
            if wm is None:
                unheard = True
            else:
                active.append(wm)
        if unheard:
            return None
        return min(active) if active else max(confirmed.values())

    def _forget_unowned(self, owned: set[int]) -> None:
        """A segment that moved to another worker is reloaded from Redis if it comes back."""
        for key in list(self._states):
            aggregate = self.store.aggregates.get(key[1])
            if aggregate is None or aggregate.partition not in owned:
                del self._states[key]
        for progress_key in [k for k in self._progress if k[0] not in owned]:
            del self._progress[progress_key]

    def _plan(
        self,
        watcher: Watcher,
        aggregate: SegmentAggregate,
        state: _State,
        closing_us: int,
        watermark_us: int,
        budget: int,
    ) -> tuple[_Plan, int] | None:
        newest = last_closed(closing_us, watcher.grace_us, watcher.step_us)
        if state.cursor is not None:
            lo = state.cursor + 1
        else:
            lo = newest - self.lookback_us // watcher.step_us
        if lo > newest:
            return None
        spec_k = self._oldest_kept(watcher, watermark_us)
        lo = max(lo, watcher.oldest_start(spec_k))
        hi = min(newest, lo + budget - 1)
        segment = aggregate.segment
        if lo > hi:
            return _Plan(
                (watcher.name, segment), _State(newest, state.alert_id, state.severity), []
            ), 1
        observations = watcher.observe(aggregate, lo, hi)
        self.metrics.alert_evaluations.inc(len(observations))
        alerts: list[Alert] = []
        current = state
        for obs in observations:
            move = transition(current.alert_id is not None, obs.status)
            if move == "fire":
                new_id = alert_id(watcher.name, segment, watcher.bounds_us(obs.k)[1])
                assert obs.severity is not None
                alerts.append(self._alert(watcher, segment, obs, new_id, "firing", obs.severity))
                current = _State(obs.k, new_id, obs.severity)
            elif move == "resolve":
                assert current.alert_id is not None
                severity = current.severity or "warning"
                alerts.append(
                    self._alert(watcher, segment, obs, current.alert_id, "resolved", severity)
                )
                current = _State(obs.k)
        final = _State(hi, current.alert_id, current.severity)
        return _Plan((watcher.name, segment), final, alerts), max(1, hi - lo + 1)

    def _oldest_kept(self, watcher: Watcher, watermark_us: int) -> int:
        spec = watcher.source.spec if isinstance(watcher, ChurnWatcher) else watcher.spec
        return spec.oldest_kept(watermark_us, self.frozen_us, self.settings.history_steps)

    def _alert(
        self,
        watcher: Watcher,
        segment: str,
        obs: Observation,
        identity: str,
        status: Literal["firing", "resolved"],
        severity: Severity,
    ) -> Alert:
        start_us, end_us = watcher.bounds_us(obs.k)
        observed = obs.observed
        return Alert(
            alert_id=identity,
            kind=watcher.kind,
            status=status,
            rule=watcher.name,
            kpi=watcher.kpi,
            window=watcher.window,
            segment=segment,
            bucket_start=to_datetime(start_us),
            bucket_end=to_datetime(end_us),
            observed=float(observed) if isinstance(observed, int) else observed,
            baseline_mean=_rounded(obs.mean),
            baseline_std=_rounded(obs.std),
            z_score=_rounded(obs.z),
            threshold=watcher.threshold,
            severity=severity,
            summary=watcher.summary(segment, obs, status == "firing"),
            fired_at=self.clock().astimezone(UTC),
        )

    # -- Redis and delivery ------------------------------------------------------------

    async def _load(self, keys: Iterable[tuple[str, str]]) -> None:
        keys = list(dict.fromkeys(keys))
        fields = [f"{rule}|{segment}" for rule, segment in keys]
        values = await self.redis.hmget(ALERT_STATE, fields)
        for key, raw in zip(keys, values, strict=True):
            self._states[key] = _State.from_json(raw)

    async def _commit(self, plans: list[_Plan]) -> int:
        """Publish each transition once (Redis decides), save the states, then fan out."""
        pipe = self.redis.pipeline(transaction=False)
        outgoing: list[tuple[Alert, bytes]] = []
        maxlen = self.settings.alert_stream_maxlen
        for plan in plans:
            for alert in plan.alerts:
                payload = alert.model_dump_json().encode()
                outgoing.append((alert, payload))
                pipe.eval(
                    PUBLISH_ONCE,
                    3,
                    alert_sent_key(alert.alert_id, alert.status),
                    ALERTS,
                    ALERTS_RESTORED,
                    self.marker_ttl_s,
                    maxlen,
                    payload,
                    ALERTS,
                )
        changed = {
            f"{plan.key[0]}|{plan.key[1]}": plan.state.to_json()
            for plan in plans
            if plan.state != self._states.get(plan.key)
        }
        if changed:
            pairs = [part for field, value in changed.items() for part in (field, value)]
            pipe.eval(SAVE_STATES, 2, ALERTS_RESTORED, ALERT_STATE, *pairs)
        results = await pipe.execute() if (outgoing or changed) else []
        if any(int(result) == -1 for result in results):
            # Redis lost its data since this tick began: nothing of it was written. Rebuild
            # at the next tick, then evaluate again from the rebuilt states.
            self._states.clear()
            return 0
        for plan in plans:
            self._states[plan.key] = plan.state
        sent = 0
        for (alert, payload), result in zip(outgoing, results, strict=False):
            if int(result) != 1:
                self.metrics.alerts_suppressed.inc()
                logger.info("alert %s %s was already sent; not again", alert.alert_id, alert.status)
                continue
            sent += 1
            self.metrics.alerts.labels(alert.kind, alert.status).inc()
            logger.warning("ALERT %s [%s] %s", alert.status, alert.severity, alert.summary)
            await self._send_kafka(alert.alert_id.encode(), payload)
            if self.webhooks is not None:
                self.webhooks.submit(payload)
        return sent

    async def _send_kafka(self, key: bytes, payload: bytes) -> None:
        try:
            await self.kafka_send(key, payload)
        except Exception as exc:  # the producer's errors are many; Redis has the alert
            self._log.warning(
                "kafka", "alert to Kafka failed (%s); will retry", exc.__class__.__name__
            )
            self._kafka_retry.append((key, payload))

    async def _retry_kafka(self) -> None:
        while self._kafka_retry:
            key, payload = self._kafka_retry[0]
            try:
                await self.kafka_send(key, payload)
            except Exception:
                return  # still failing: next tick
            self._kafka_retry.popleft()


def _span(value: timedelta) -> str:
    """``7-day`` or ``36-hour``: how summaries name the baseline."""
    hours = int(value.total_seconds()) // 3600
    return f"{hours // 24}-day" if hours % 24 == 0 else f"{hours}-hour"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
