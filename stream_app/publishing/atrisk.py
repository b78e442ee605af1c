"""Writing the at-risk sets ``kpi-at-risk:<segment>`` (contract section 7) to Redis.

Each owned customer partition's board (``lifecycle/atrisk.py``) says which of its
customers to add or rescore and which to remove; one pipeline applies them and trims every
touched set to its ``size`` highest scores, so the sets hold the top across partitions and
workers. A write that fails makes every board write everything again next time, as does
Redis coming back empty (``Publisher._restore_all``).
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stream_app.lifecycle.atrisk import AtRiskBoard
from stream_app.redis_keys import at_risk_key

Boards = Callable[[], list[AtRiskBoard]]


async def write_at_risk(redis: aioredis.Redis, boards: list[AtRiskBoard], size: int) -> int:
    """Apply every board's plan; returns how many sets were written."""
    plans = [plan for board in boards for plan in board.plan()]
    if not plans:
        return 0
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for plan in plans:
                key = at_risk_key(plan.segment)
                if plan.remove:
                    pipe.zrem(key, *plan.remove)
                if plan.add:
                    pipe.zadd(key, plan.add)
                pipe.zremrangebyrank(key, 0, -(size + 1))
            await pipe.execute()
    except (RedisError, OSError):
        for board in boards:
            board.rewrite_all()
        raise
    return len({plan.segment for plan in plans})
