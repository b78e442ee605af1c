"""``GET /api/v1/at-risk``: the customers most likely to cancel (``kpi-at-risk:<segment>``).

The sorted set's members are customer ids and its scores churn risks in [0, 1] (contract
section 7); the worker writes it. Redis is untrusted: the read asks only for scores in
[0, 1] (an infinite or out-of-range score is never returned), and a member that is not a
customer id (not UTF-8, too long, control characters) is left out and counted in
``kpi_dashboard_malformed_total{record="at_risk"}``, never a 500.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Final

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ResponseError

from schemas.rules import is_identifier
from stream_app.metrics import MalformedReads
from stream_app.redis_keys import at_risk_key

# default, lowest, highest (the worker keeps 1,000 per segment by default)
AT_RISK_LIMIT: Final = (20, 1, 1000)
RECORD: Final = "at_risk"
# A churn risk is a probability: what the response allows and the read asks Redis for.
RISK_LOW: Final = 0.0
RISK_HIGH: Final = 1.0


class AtRiskCustomer(BaseModel):
    """One customer of an at-risk set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customer_id: Annotated[str, Field(min_length=1, max_length=128)]
    risk: Annotated[
        float,
        Field(
            ge=RISK_LOW,
            le=RISK_HIGH,
            description="Probability of cancelling within 30 days of event time",
        ),
    ]


class AtRiskList(BaseModel):
    """The answer of ``GET /api/v1/at-risk``: highest risk first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    segment: str
    count: int
    customers: list[AtRiskCustomer]


async def read_at_risk(
    redis: aioredis.Redis, segment: str, limit: int, malformed: MalformedReads
) -> AtRiskList:
    """The ``limit`` highest risks of the segment's set.

    No set is no customer at risk, not an error: Redis deletes a sorted set whose last
    member goes, so a segment whose at-risk customers all left has no key either.
    """
    key = at_risk_key(segment)
    try:
        entries = await redis.zrevrangebyscore(
            key, RISK_HIGH, RISK_LOW, start=0, num=limit, withscores=True
        )
    except ResponseError:  # WRONGTYPE: not a sorted set
        malformed.skipped(RECORD, key)
        entries = []
    customers: list[AtRiskCustomer] = []
    skipped = 0
    for entry in entries:
        customer = (
            _customer(*entry) if isinstance(entry, list | tuple) and len(entry) == 2 else None
        )
        if customer is None:
            skipped += 1
        else:
            customers.append(customer)
    malformed.skipped(RECORD, key, skipped)
    return AtRiskList(segment=segment, count=len(customers), customers=customers)


def _customer(member: Any, score: Any) -> AtRiskCustomer | None:
    try:
        customer_id = member.decode("utf-8") if isinstance(member, bytes) else member
    except UnicodeDecodeError:
        return None
    if not is_identifier(customer_id):
        return None
    if not isinstance(score, float) or not math.isfinite(score):
        return None
    if not RISK_LOW <= score <= RISK_HIGH:
        return None
    return AtRiskCustomer(customer_id=customer_id, risk=score)


def openapi_path(segment: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    """The path item of ``GET /api/v1/at-risk`` (``errors``: the shared error responses); the
    document's components carry ``AtRiskList`` (``openapi.build`` adds the model)."""
    default, low, high = AT_RISK_LIMIT
    return {
        "get": {
            "summary": "The customers most likely to cancel",
            "description": "Members of the sorted set `kpi-at-risk:<segment>`, highest churn "
            "risk first (ties: customer id descending); an entry whose score is not in [0, 1] "
            "or whose member is not a customer id is left out. No set: an empty list.",
            "parameters": [
                {
                    "name": "segment",
                    "in": "query",
                    "required": False,
                    "description": "Segment (default: all)",
                    "schema": segment,
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "Customers at most",
                    "schema": {
                        "type": "integer",
                        "minimum": low,
                        "maximum": high,
                        "default": default,
                    },
                },
            ],
            "responses": {
                "200": {
                    "description": "At-risk customers",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/AtRiskList"}}
                    },
                },
                **errors,
            },
        }
    }
