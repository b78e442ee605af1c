"""Snapshots and alerts written to Redis exactly the way the worker writes them.

The layouts are the publisher's (``stream_app/publishing/publisher.py``): the hash
``kpi:<window>:<segment>`` (one JSON-encoded value per field), the channel
``kpi-updates:<window>:<segment>``, the history ``kpi-history:<window>:<segment>`` (score =
window end in Unix seconds), and the alert stream and channel ``kpi-alerts``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis

from schemas import CAMPAIGN_KPIS, SEGMENT_KPIS


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def snapshot(
    window: str,
    segment: str,
    end: datetime,
    *,
    size: timedelta,
    updated_at: datetime | None = None,
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """A complete snapshot of the segment's kind, every KPI value distinct and typed right."""
    campaign = segment.startswith("campaign:")
    data: dict[str, Any] = {
        "window": window,
        "segment": segment,
        "window_start": rfc3339(end - size),
        "window_end": rfc3339(end),
        "watermark": rfc3339(end - timedelta(seconds=1)),
        "updated_at": rfc3339(updated_at or datetime.now(UTC)),
    }
    values: dict[str, Any] = {
        "active_start": 1200 + seed,
        "active_end": 1210 + seed,
        "new_customers": 40 + seed,
        "churned_customers": 30 + seed,
        "churn_rate": 0.025 + seed / 10_000,
        "retention_rate": 0.9758 - seed / 10_000,
        "orders": 321 + seed,
        "revenue": f"{10234.5 + seed:.2f}",
        "aov": f"{31.88 + seed / 100:.2f}",
        "purchasing_customers": 250 + seed,
        "repeat_customers": 60 + seed,
        "repeat_purchase_rate": 0.24,
        "purchase_frequency": 1.284,
        "clv": f"{1636.88 + seed:.2f}",
        "clicks": 900 + seed,
        "converted_clicks": 27 + seed,
        "conversion_rate": 0.03,
        "spend": f"{450.25 + seed:.2f}",
        "cac": f"{11.26 + seed / 100:.2f}",
        "attributed_revenue": f"{2750.00 + seed:.2f}",
        "roas": 6.1077,
        "ltv_cac_ratio": 145.3712,
        "nps_responses": 70 + seed,
        "promoters": 35,
        "passives": 20,
        "detractors": 15,
        "nps": 28.571428571428573,
        "csat_responses": 44,
        "csat_satisfied": 37,
        "csat": 84.0909090909091,
    }
    names = CAMPAIGN_KPIS if campaign else SEGMENT_KPIS
    data.update({name: values[name] for name in names})
    data.update(overrides)
    return data


def write_snapshot(client: redis.Redis, data: dict[str, Any], *, publish: bool = True) -> None:
    """HSET the current snapshot, add it to the history, PUBLISH it: one pipelined round."""
    window, segment = data["window"], data["segment"]
    end = datetime.fromisoformat(data["window_end"])
    pipe = client.pipeline(transaction=False)
    pipe.hset(
        f"kpi:{window}:{segment}",
        mapping={field: orjson.dumps(value) for field, value in data.items()},
    )
    score = int(end.timestamp())
    history = f"kpi-history:{window}:{segment}"
    pipe.zremrangebyscore(history, score, score)
    pipe.zadd(history, {orjson.dumps(data): score})
    if publish:
        pipe.publish(f"kpi-updates:{window}:{segment}", orjson.dumps(data))
    pipe.execute()


def write_history(client: redis.Redis, data: dict[str, Any]) -> None:
    """Only a history entry (a past step)."""
    end = datetime.fromisoformat(data["window_end"])
    key = f"kpi-history:{data['window']}:{data['segment']}"
    score = int(end.timestamp())
    client.zremrangebyscore(key, score, score)
    client.zadd(key, {orjson.dumps(data): score})


def alert(n: int, *, segment: str = "region:EU", status: str = "firing") -> dict[str, Any]:
    fired = datetime(2026, 11, 3, 13, 15, 2, tzinfo=UTC) + timedelta(hours=n)
    return {
        "alert_id": f"{n:032x}",
        "kind": "churn_spike",
        "status": status,
        "rule": "churn_spike",
        "kpi": "churned_customers",
        "window": None,
        "segment": segment,
        "bucket_start": rfc3339(fired - timedelta(minutes=75)),
        "bucket_end": rfc3339(fired - timedelta(minutes=15)),
        "observed": 10.0 + n,
        "baseline_mean": 0.08,
        "baseline_std": 0.33,
        "z_score": 9.92,
        "threshold": None,
        "severity": "critical",
        "summary": f"Churn spike #{n} in {segment}",
        "fired_at": rfc3339(fired),
    }


def write_alert(client: redis.Redis, data: dict[str, Any], *, publish: bool = True) -> None:
    encoded = orjson.dumps(data)
    client.xadd("kpi-alerts", {"data": encoded})
    if publish:
        client.publish("kpi-alerts", encoded)
