"""Alert delivery: once-only publication to Redis, then Kafka and webhooks.

Redis decides "once": a Lua script sets the marker ``kpi-alert-sent:<alert_id>:<status>``
with ``SET NX EX`` and, only if it was not there, adds the alert to the stream and publishes
it on the channel, atomically. It refuses while ``kpi-alerts-restored`` is missing: that Redis
lost its data, and the markers are rebuilt from Kafka first (``restore.py``). The worker
whose script set the marker then sends the alert to Kafka and to the webhooks. Any other
worker (a second owner during a rebalance, a restarted worker evaluating the same bucket
again) finds the marker and sends nothing.

Webhooks run in background tasks, one per URL, each with a bounded queue: a slow, failing
or dead endpoint delays only its own queue, and a full queue drops alerts (with a log line
and a metric) instead of holding anything else up. URLs may carry tokens: they are never
logged, only their position in ``KPI_ALERT_WEBHOOKS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import aiohttp
from pydantic import SecretStr

from stream_app.metrics import Metrics, RateLimitedLog

logger = logging.getLogger(__name__)

# KEYS: marker, stream, restored. ARGV: ttl seconds, stream maxlen, payload, channel.
# -1 while the alert record is not restored in this Redis (alerts/restore.py): a Redis that
# lost its markers would let every alert fire again.
PUBLISH_ONCE = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[3])
  redis.call('PUBLISH', ARGV[4], ARGV[3])
  return 1
end
return 0
"""

# KEYS: restored, state hash. ARGV: field, value, field, value, ... The same condition: a
# cursor saved into a Redis that lost the alert record would skip the alerts it lost.
SAVE_STATES = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return 1
"""


class WebhookSender:
    """POSTs alert JSON to each configured URL from background tasks; never blocks the caller."""

    def __init__(
        self,
        urls: Sequence[SecretStr],
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        queue_size: int,
        metrics: Metrics,
    ) -> None:
        self._urls = list(urls)
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._queue_size = queue_size
        self._metrics = metrics
        self._queues: list[asyncio.Queue[bytes]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._log = RateLimitedLog(logger)

    def __len__(self) -> int:
        return len(self._urls)

    def start(self) -> None:
        """Start one delivery task per URL on the running loop."""
        if self._tasks or not self._urls:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={"Content-Type": "application/json", "User-Agent": "crm-kpi-alerts"},
        )
        for index in range(len(self._urls)):
            queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=self._queue_size)
            self._queues.append(queue)
            self._tasks.append(
                asyncio.create_task(self._run(index, queue), name=f"webhook-{index + 1}")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def submit(self, payload: bytes) -> None:
        """Queue one alert for every URL; a full queue drops it for that URL."""
        for index, queue in enumerate(self._queues):
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                self._metrics.webhook_dropped.inc()
                self._log.warning(
                    f"full-{index}",
                    "webhook #%d: queue full (%d alerts waiting); alert dropped for it",
                    index + 1,
                    queue.qsize(),
                )

    def pending(self) -> int:
        return sum(queue.qsize() for queue in self._queues)

    async def _run(self, index: int, queue: asyncio.Queue[bytes]) -> None:
        while True:
            payload = await queue.get()
            try:
                await self.deliver(index, payload)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the task: log, go on
                logger.exception("webhook #%d: unexpected error", index + 1)
            finally:
                queue.task_done()

    async def deliver(self, index: int, payload: bytes) -> bool:
        """POST with retries and exponential backoff; True once an endpoint accepted it."""
        assert self._session is not None
        url = self._urls[index].get_secret_value()
        attempts = self._retries + 1
        for attempt in range(1, attempts + 1):
            problem: str
            try:
                async with self._session.post(url, data=payload) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self._metrics.webhook_deliveries.labels("ok").inc()
                        return True
                    problem = f"HTTP {response.status}"
                    retryable = response.status >= 500 or response.status in (408, 429)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # The exception text can contain the URL: log its class only.
                problem = exc.__class__.__name__
                retryable = True
            if not retryable or attempt == attempts:
                self._metrics.webhook_deliveries.labels("failed").inc()
                self._log.warning(
                    f"failed-{index}",
                    "webhook #%d: giving up on an alert after %d attempt(s) (%s)",
                    index + 1,
                    attempt,
                    problem,
                )
                return False
            self._metrics.webhook_deliveries.labels("retry").inc()
            await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        return False  # pragma: no cover - the loop always returns
