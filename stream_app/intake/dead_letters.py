"""The dead-letter sink: rejected messages go to ``<prefix>dead-letters``, counted by reason."""

from __future__ import annotations

import base64
import logging

import faust

from schemas import DeadLetter
from stream_app.context import AppContext

logger = logging.getLogger(__name__)

# Dead letters carry the original bytes in base64 (4/3 larger); the producer and the
# dead-letter topic allow this much so that any message the broker accepted fits.
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024


class DeadLetterSink:
    """Sends dead letters; keyed like the source message so one customer's stay together."""

    def __init__(self, app: faust.App, ctx: AppContext) -> None:
        self._metrics = ctx.metrics
        self._topic = app.topic(
            ctx.settings.dead_letter_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=ctx.settings.topic_partitions,
        )

    async def send(self, letter: DeadLetter) -> None:
        payload = letter.model_dump_json().encode()
        key = base64.b64decode(letter.key_b64) if letter.key_b64 else None
        await self._topic.send(key=key, value=payload)
        self._metrics.dead_letters.labels(letter.reason).inc()
