"""The intake agents: parse every message of the five input topics, dead-letter what is bad."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import faust

from schemas import DeadLetter, Event, EventType, Rejection, RejectReason, parse_event
from stream_app.context import AppContext
from stream_app.intake.dead_letters import DeadLetterSink
from stream_app.kafka import input_topics
from stream_app.metrics import RateLimitedLog

logger = logging.getLogger(__name__)

EventHandler = Callable[[Event, Any], Awaitable[None]]


def register(app: faust.App, ctx: AppContext, on_event: EventHandler | None = None) -> None:
    """Declare the input topics and one intake agent per topic on ``app``.

    ``on_event`` receives each valid event with its Faust event (for the source
    partition and offset); the KPI engine plugs in there.
    """
    settings = ctx.settings
    sink = DeadLetterSink(app, ctx)
    for event_type, topic_name in input_topics(settings).items():
        topic = app.topic(
            topic_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )
        agent = _intake_agent(ctx, event_type, sink, on_event)  # type: ignore[arg-type]
        app.agent(topic, name=f"intake-{event_type}")(agent)


def _intake_agent(
    ctx: AppContext,
    event_type: EventType,
    sink: DeadLetterSink,
    on_event: EventHandler | None,
) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
    settings = ctx.settings
    events_counter = ctx.metrics.events.labels(event_type)
    log = RateLimitedLog(logger)

    async def intake(stream: faust.StreamT[bytes]) -> None:
        events: AsyncIterable[Any] = stream.events()
        async for fevent in events:
            message = fevent.message
            try:
                result = parse_event(
                    event_type,
                    message.value,
                    message.key,
                    reporting_currency=settings.reporting_currency,
                )
            except Exception:  # the parser must never take the agent down
                logger.exception(
                    "parser failed on %s[%d]@%d", message.topic, message.partition, message.offset
                )
                result = Rejection(
                    reason=RejectReason.INVALID_FIELD,
                    message="the message could not be parsed (internal parser error)",
                    field=None,
                    event_id=None,
                )
            if isinstance(result, Rejection):
                log.warning(
                    result.reason.value,
                    "dead letter %s from %s[%d]@%d: %s",
                    result.reason.value,
                    message.topic,
                    message.partition,
                    message.offset,
                    result.message,
                )
                await sink.send(
                    DeadLetter.from_rejection(
                        result,
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=message.key,
                        value=message.value,
                        now=ctx.clock(),
                    )
                )
                continue
            events_counter.inc()
            if on_event is not None:
                await on_event(result, fevent)

    intake.__name__ = f"intake_{event_type}"
    return intake
