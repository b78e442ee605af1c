"""Which lifecycle messages a partition has sent, so that a crash does not send them twice.

The same protocol as dead letters (``customers/deadletters.py``), without transactions:
stage changes go out as soon as they are decided, before the checkpoint that persists the
stages they lead to. Every checkpoint marker records (``"lc"``) the end of the partition's
lifecycle topic partition once every change decided so far is acknowledged: messages past
that point belong to changes the checkpointed state has not seen yet. A new owner reads
them back (``customers/recovery.sent_lifecycle_changes``) and, as it decides those changes
again from the same input, sends none of them twice (``take``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from stream_app.customers.timeline import to_us

# (customer, from stage or "", to stage, at in microseconds): what a change decided again
# after a crash has in common with the message sent before it.
Identity = tuple[str, str, str, int]
# The Kafka header naming a message's source partition (lifecycle partitions may be fewer).
SOURCE_HEADER = "src"


@dataclass
class ChangeLedger:
    """The lifecycle messages of one partition sent past its last checkpoint."""

    # The lifecycle partition's end after the last message sent (None: not known yet).
    end: int | None = None
    # Messages an earlier owner sent that this one will decide again: identity -> offset.
    already_sent: dict[Identity, int] = field(default_factory=dict)
    # The mark of the last checkpoint recovered (None: none had one: read from the start).
    recovered_mark: int | None = None

    def record(self, offset: int) -> None:
        """A message of this partition was written at ``offset``."""
        if self.end is None or offset >= self.end:
            self.end = offset + 1

    def recovered(self, found: list[tuple[int, Identity]], end: int) -> None:
        """What a new owner found its predecessors sent past the recovered mark, up to ``end``."""
        for offset, identity in found:
            self.already_sent.setdefault(identity, offset)
        self.end = end

    def take(self, identity: Identity) -> bool:
        """Whether this change still has to be sent (False: an earlier owner sent it)."""
        return self.already_sent.pop(identity, None) is None

    def mark(self, horizon_us: int | None) -> int | None:
        """Where a next owner starts looking for messages already sent.

        A found message not decided again by ``horizon_us`` (the watermark minus the maximum
        lateness: no event can bring it back) never will be; it is let go.
        """
        if horizon_us is not None:
            self.already_sent = {
                identity: offset
                for identity, offset in self.already_sent.items()
                if identity[3] >= horizon_us
            }
        if self.already_sent:
            return min(self.already_sent.values())
        return self.end


def sent_identity(value: bytes | None) -> Identity | None:
    """The identity of a lifecycle message's JSON; None if it is none (it is never trusted)."""
    try:
        message = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    customer, before, after, at = (message.get(k) for k in ("customer_id", "from", "to", "at"))
    if not (
        isinstance(customer, str)
        and (before is None or isinstance(before, str))
        and isinstance(after, str)
        and isinstance(at, str)
    ):
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (customer, before or "", after, to_us(moment.astimezone(UTC)))
