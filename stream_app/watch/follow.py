"""Following Redis for a terminal view: load the current state, then apply live messages.

``Follower`` is the loop ``kpi watch`` and ``kpi watch --cohorts`` share: subscribe first,
then load (so nothing published in between is missed; a message that repeats what was read
changes nothing), apply each message, and reconnect with backoff whenever Redis fails.
What is subscribed, loaded and applied is the subclass's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Final, Generic, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

logger = logging.getLogger("kpi.watch")

MAX_BACKOFF_S: Final = 10.0
FIRST_BACKOFF_S: Final = 0.5

Connect = Callable[[], "aioredis.Redis"]


class Shown(Protocol):
    """What a follower needs of the state it keeps: where it reads, and a status line."""

    source: str
    status: str | None


S = TypeVar("S", bound=Shown)


class Follower(ABC, Generic[S]):
    """Keeps ``state`` current from Redis; ``run`` returns once ``stop`` is set."""

    def __init__(
        self,
        state: S,
        connect: Connect,
        *,
        poll_s: float = 1.0,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.state = state
        self.connect = connect
        self.poll_s = poll_s
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.attempts = 0
        self.failures = 0
        self._down = False
        # Set while subscribed and loaded: live messages are being applied.
        self.live = asyncio.Event()

    @abstractmethod
    async def subscribe(self, pubsub: PubSub) -> None:
        """Subscribe to the channels whose messages ``apply`` takes."""

    @abstractmethod
    async def load(self, client: aioredis.Redis) -> bool:
        """Read the current state; True if the view changed."""

    @abstractmethod
    def apply(self, channel: str, data: bytes | str) -> bool:
        """Apply one message of ``channel``; True if the view changed."""

    def handle(self, message: dict[str, Any]) -> bool:
        """Apply one pub/sub message; True if the view changed."""
        if message.get("type") not in ("message", "pmessage"):
            return False
        channel = message.get("channel")
        data = message.get("data")
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if not isinstance(channel, str) or not isinstance(data, bytes | str):
            return False
        return self.apply(channel, data)

    async def run(self, stop: asyncio.Event, on_change: Callable[[bool], None]) -> None:
        """Follow Redis until ``stop`` is set; ``on_change(changed)`` after every wake-up."""
        backoff = self.first_backoff_s
        while not stop.is_set():
            self.attempts += 1
            try:
                await self._session(stop, on_change)
            except (RedisError, OSError) as exc:
                self.live.clear()
                self.failures += 1
                detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
                if not self._down:
                    self._down = True
                    logger.warning(
                        "Redis at %s is unreachable (%s); retrying with backoff",
                        self.state.source,
                        detail,
                    )
                else:
                    logger.debug("Redis still unreachable: %s", detail)
                self.state.status = (
                    f"Redis unreachable ({exc.__class__.__name__}); retrying in {backoff:g}s"
                )
                on_change(True)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            else:
                backoff = self.first_backoff_s
        self.live.clear()

    async def _session(self, stop: asyncio.Event, on_change: Callable[[bool], None]) -> None:
        client = self.connect()
        pubsub = client.pubsub()
        try:
            await self.subscribe(pubsub)
            await self.load(client)
            if self._down:
                logger.info("Redis at %s answers again", self.state.source)
                self._down = False
            self.state.status = None
            self.live.set()
            on_change(True)
            while not stop.is_set():
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=self.poll_s
                )
                on_change(message is not None and self.handle(message))
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def client_factory(url: str, password: str | None) -> Connect:
    def connect() -> aioredis.Redis:
        return aioredis.Redis.from_url(
            url,
            password=password,
            socket_connect_timeout=3.0,
            socket_timeout=10.0,
            health_check_interval=15,
        )

    return connect
