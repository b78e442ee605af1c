"""Live updates for the page: one Redis subscription per process, fanned out to every client.

``LiveHub`` holds one pub/sub connection (``PSUBSCRIBE kpi-updates:*``,
``PSUBSCRIBE kpi-cohort-updates:*`` and ``SUBSCRIBE kpi-alerts``) while at least one client
listens, and hands each client the snapshots of its segment, the changed cohorts (both
grains) of its cohort segment and every alert through a bounded queue. A client that falls
behind gets one ``reset`` (reload everything over the REST endpoints) instead of an
ever-growing queue. When Redis goes away every client is told (``status``), the hub
reconnects with backoff (0.5 s doubling up to 10 s), and tells them again when it is back,
since messages sent meanwhile are lost.

Messages are untrusted: one that is not a snapshot of its channel's window and segment, a
cohort of its channel's grain and segment, or an alert, is left out and counted
(``kpi_dashboard_malformed_total{record="message"}``), and an unexpected error on one never
ends the hub; ``check`` tells ``/health`` if it is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from stream_app.metrics import MalformedReads
from stream_app.published import (
    decode_cohort_update,
    decode_snapshot,
    describes,
    parse_alert,
    split_cohort_name,
)
from stream_app.redis_keys import (
    ALERTS,
    COHORT_UPDATES_PATTERN,
    COHORT_UPDATES_PREFIX,
    UPDATES_CHANNEL_PREFIX,
    UPDATES_PATTERN,
    split_name,
)

logger = logging.getLogger(__name__)

QUEUE_SIZE: Final = 256
FIRST_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 10.0
# The hub closes its Redis subscription this long after its last client left.
IDLE_CLOSE_S: Final = 5.0

# (SSE event name, JSON payload); None tells the client's stream to end.
LiveEvent = tuple[str, bytes]
Connect = Callable[[], aioredis.Redis]


@dataclass(eq=False)
class Subscriber:
    """One client: the segment it follows (and its cohort segment) and its queue of events."""

    segment: str
    cohort_segment: str = ""  # "" follows the cohorts of ``segment``
    queue: asyncio.Queue[LiveEvent | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )
    resets: int = 0

    def __post_init__(self) -> None:
        self.cohort_segment = self.cohort_segment or self.segment

    def offer(self, event: LiveEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Behind by a full queue: drop what it has not read and ask it to reload.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.resets += 1
            self.queue.put_nowait(("reset", b'{"reason":"client too slow"}'))

    def end(self) -> None:
        """Make the client's stream end after what it is writing now."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class LiveHub:
    """Shared subscription to Redis pub/sub; ``subscribe`` and ``unsubscribe`` per client."""

    def __init__(
        self,
        connect: Connect,
        *,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        idle_close_s: float = IDLE_CLOSE_S,
        poll_s: float = 1.0,
        malformed: MalformedReads | None = None,
    ) -> None:
        self._connect = connect
        self.malformed = malformed or MalformedReads()
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.idle_close_s = idle_close_s
        self.poll_s = poll_s
        self.subscribers: set[Subscriber] = set()
        # None until the first connection attempt, then whether the subscription is up.
        self.redis_up: bool | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.messages = 0
        # The class name of the unexpected error the last session ended with; None once up.
        self.failure: str | None = None
        # Set while subscribed: a client told "hello" after it misses nothing published later.
        self.subscribed = asyncio.Event()

    @property
    def clients(self) -> int:
        return len(self.subscribers)

    def check(self) -> dict[str, Any]:
        """For ``/health``: not ok while clients wait on a hub that is not running or failing.

        Redis being down is not counted here: the ``redis`` check reports that.
        """
        check: dict[str, Any] = {"ok": True, "clients": self.clients, **self.status()}
        if self._closed or not self.subscribers:
            return check
        task = self._task
        if task is None or task.done():
            ended = task.exception() if task is not None and not task.cancelled() else None
            cause = f" ({ended.__class__.__name__})" if ended is not None else ""
            check.update(ok=False, error=f"live updates not running{cause}")
        elif self.failure is not None:
            check.update(ok=False, error=f"live updates failing ({self.failure})")
        return check

    def status(self) -> dict[str, Any]:
        state = "connecting" if self.redis_up is None else ("up" if self.redis_up else "down")
        return {"redis": state}

    def subscribe(self, segment: str, cohort_segment: str = "") -> Subscriber:
        subscriber = Subscriber(segment, cohort_segment)
        self.subscribers.add(subscriber)
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-hub")
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def close(self) -> None:
        """End every client's stream and the subscription (server shutdown)."""
        self._closed = True
        for subscriber in list(self.subscribers):
            subscriber.end()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the subscription ---------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.first_backoff_s
        while not self._closed:
            try:
                await self._session()
            except (RedisError, OSError) as exc:
                if self.redis_up is not False:
                    logger.warning(
                        "live updates: Redis unavailable (%s); retrying with backoff",
                        exc.__class__.__name__,
                    )
                self._set_up(False)
            except Exception as exc:  # a bug of ours must not end live updates for good
                if self.failure is None:
                    logger.exception("live updates: unexpected error; retrying with backoff")
                self.failure = exc.__class__.__name__
                self.subscribed.clear()
            else:
                backoff = self.first_backoff_s
                if not self.subscribers:
                    return  # idle; the next subscribe starts a new task
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            if not self.subscribers:
                return

    async def _session(self) -> None:
        client = self._connect()
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(UPDATES_PATTERN, COHORT_UPDATES_PATTERN)
            await pubsub.subscribe(ALERTS)
            if self.redis_up is False:
                logger.info("live updates: Redis answers again")
            self.failure = None
            self._set_up(True)
            idle_since: float | None = None
            loop = asyncio.get_running_loop()
            while not self._closed:
                if not self.subscribers:
                    idle_since = idle_since or loop.time()
                    if loop.time() - idle_since >= self.idle_close_s:
                        return
                else:
                    idle_since = None
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.poll_s
                )
                if message is not None:
                    self.dispatch(message)
        finally:
            self.subscribed.clear()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait until the subscription is up (or ``timeout_s``); whether it is."""
        try:
            await asyncio.wait_for(self.subscribed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _set_up(self, up: bool) -> None:
        if up:
            self.subscribed.set()
        else:
            self.subscribed.clear()
        if self.redis_up is up:
            return
        first, self.redis_up = self.redis_up is None, up
        if first and up:
            return  # the first connection: clients learn it from "hello"
        event = ("status", orjson.dumps(self.status()))
        for subscriber in list(self.subscribers):
            subscriber.offer(event)

    def dispatch(self, message: dict[str, Any]) -> int:
        """Hand one pub/sub message to the clients it concerns; returns how many got it.

        Any message is survived: one that is no alert or snapshot of its channel, or that
        fails in an unforeseen way, is left out and counted.
        """
        if message.get("type") not in ("message", "pmessage"):
            return 0
        channel = message.get("channel")
        data = message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if not isinstance(channel, str) or not isinstance(data, bytes | str):
            return 0
        self.messages += 1
        try:
            routed = self._route(channel, data)
        except Exception:  # unforeseen: counted like any bad message, traceback at debug level
            logger.debug("live updates: a message on %r failed", channel[:200], exc_info=True)
            routed = None
        if routed is None:
            self.malformed.skipped("message", channel)
            return 0
        event, targets = routed
        for subscriber in targets:
            subscriber.offer(event)
        return len(targets)

    def _route(self, channel: str, data: bytes | str) -> tuple[LiveEvent, list[Subscriber]] | None:
        """The event and its clients; None if the message is not what its channel carries."""
        if channel == ALERTS:
            if parse_alert(data) is None:
                return None
            # Re-encoded: one line of JSON whatever the producer sent (SSE frames are lines).
            return ("alert", orjson.dumps(orjson.loads(data))), list(self.subscribers)
        if channel.startswith(COHORT_UPDATES_PREFIX):
            return self._route_cohort(channel, data)
        parts = split_name(channel, UPDATES_CHANNEL_PREFIX)
        if parts is None:
            return None
        window, segment = parts
        decoded = decode_snapshot(data, as_published=True)
        if decoded is None or not describes(decoded[0], window, segment):
            return None
        if decoded[1]:
            self.malformed.skipped("field", channel, decoded[1])
        targets = [s for s in self.subscribers if s.segment == segment]
        return ("snapshot", orjson.dumps(decoded[0])), targets

    def _route_cohort(
        self, channel: str, data: bytes | str
    ) -> tuple[LiveEvent, list[Subscriber]] | None:
        """A changed cohort, for the clients that follow its segment's cohorts (``cohort``)."""
        parts = split_cohort_name(channel, COHORT_UPDATES_PREFIX)
        if parts is None:
            return None
        grain, segment = parts
        update = decode_cohort_update(data, grain, segment)
        if update is None:
            return None
        targets = [s for s in self.subscribers if s.cohort_segment == segment]
        return ("cohort", update.model_dump_json().encode()), targets
