"""How long a worker holding many customers takes to come back after a SIGKILL.

One worker (default settings, private broker and Redis) takes ``--customers`` customers,
one signup and one purchase each. Once every event is counted and checkpointed, the worker
is killed with SIGKILL and a new one started at once, as a supervisor would; one new signup
is produced right away. Reported: seconds from the kill until the new worker owns every
partition again (``/health``) and until the new signup shows in Redis (``new_customers`` of
segment ``all``, window ``30d``). docs/operations.md has the figures.

    .venv/bin/python scripts/restart_time.py --customers 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import redis

from stream_app.bench.runner import (
    Deployment,
    Worker,
    produce,
    signups,
    start_workers,
    wait_accepted,
    wait_split,
)
from stream_app.devstack import DevStack, DevStackError, free_port
from stream_app.kafka import ensure_topics, input_topics
from stream_app.redis_keys import snapshot_key
from stream_app.settings import Settings

logger = logging.getLogger("restart_time")


def purchases(
    settings: Settings, count: int, start: datetime
) -> Iterator[tuple[str, bytes | None, bytes | None]]:
    """One purchase per customer of ``signups(..., prefix="mem")``, a second after it."""
    topic = input_topics(settings)["purchase"]
    for i in range(count):
        customer = f"mem-{i}"
        occurred = start + timedelta(seconds=i + 1)
        value = {
            "event_id": f"{customer}-purchase",
            "customer_id": customer,
            "order_id": f"{customer}-order",
            "occurred_at": occurred.isoformat(),
            "amount": "19.99",
            "currency": "USD",
            "schema_version": 1,
        }
        yield topic, customer.encode(), orjson.dumps(value)


def new_customers(client: redis.Redis, window: str = "30d") -> int:
    value = client.hget(snapshot_key(window, "all"), "new_customers")
    return int(json.loads(value)) if value else 0


def wait_until(what: str, check: object, timeout_s: float, every_s: float = 0.1) -> float:
    """Poll ``check()`` until true; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(every_s)
    raise DevStackError(f"{what}: not within {timeout_s:.0f}s")


def owns_all(worker: Worker, partitions: int) -> bool:
    health = worker.health()
    return bool(health) and len(health.get("customer_partitions", [])) >= partitions  # type: ignore[union-attr]


def measure(
    customers: int, partitions: int, log_dir: Path, env: dict[str, str]
) -> dict[str, float]:
    stack = DevStack(log_dir=log_dir)
    try:
        bootstrap = stack.start_broker(free_port())
        redis_url = stack.start_redis(free_port())
        deployment = Deployment(bootstrap, redis_url, partitions, Path(tempfile.mkdtemp()))
        deployment_env = deployment.env
        deployment.env = lambda port: {**deployment_env(port), **env}  # type: ignore[method-assign]
        settings = deployment.settings()
        asyncio.run(ensure_topics(settings))
        client = redis.Redis.from_url(redis_url)
        first = start_workers(stack, deployment, 1)
        wait_split(first, partitions)
        start = datetime.now(UTC) - timedelta(days=20)
        logger.info("producing %d customers, a signup and a purchase each", customers)
        asyncio.run(produce(bootstrap, signups(settings, customers, start)))
        asyncio.run(produce(bootstrap, purchases(settings, customers, start)))
        wait_accepted(first, 2 * customers, timeout_s=1800)
        wait_until("snapshot of every customer", lambda: new_customers(client) >= customers, 120)
        time.sleep(3)  # a few checkpoints: everything counted is in the changelog
        rss_mb = first[0].rss_bytes() / 2**20
        logger.info("worker RSS %.0f MB; SIGKILL", rss_mb)
        first[0].process.popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first[0].process.popen.wait(30)
        log = first[0].process.log_path
        if log is not None:
            log.rename(log.with_name(f"{log.stem}-killed.log"))
        second = start_workers(stack, deployment, 1)
        probe_at = start + timedelta(seconds=customers + 10)
        asyncio.run(produce(bootstrap, signups(settings, 1, probe_at, prefix="probe")))
        recovered = wait_until("all partitions owned", lambda: owns_all(second[0], partitions), 300)
        logger.info("owns every partition after %.1fs", recovered - killed)
        seen = wait_until("new signup in Redis", lambda: new_customers(client) > customers, 300)
        logger.info("new event in Redis after %.1fs", seen - killed)
        return {
            "customers": customers,
            "rss_mb": rss_mb,
            "recovered_s": recovered - killed,
            "event_in_redis_s": seen - killed,
        }
    finally:
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--log-dir", type=Path, default=Path("var/restart-time"))
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the workers (repeatable)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    env = dict(item.split("=", 1) for item in args.env)
    try:
        figures = measure(args.customers, args.partitions, args.log_dir, env)
    except DevStackError as exc:
        logger.error("failed: %s", exc)
        return 1
    print(json.dumps(figures, indent=2))  # noqa: T201 - the script's result
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
