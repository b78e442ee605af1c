"""The dead-letter record: what a rejected message becomes on the ``crm.dead-letters`` topic."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.parse import Rejection, RejectReason
from schemas.timestamps import UtcDatetime, to_utc


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


class DeadLetter(BaseModel):
    """One rejected input message with its origin and the reason, as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_topic: str = Field(min_length=1, description="Topic the message was read from.")
    source_partition: int = Field(ge=0, description="Partition the message was read from.")
    source_offset: int = Field(ge=0, description="Offset of the message in its partition.")
    key_b64: str | None = Field(
        description="The original message key, standard base64 with padding; null if none."
    )
    value_b64: str | None = Field(
        description="The original message value, standard base64 with padding; null if none."
    )
    reason: RejectReason = Field(description="Machine-readable reason of the rejection.")
    message: str = Field(description="One human sentence naming the field and the problem.")
    field: str | None = Field(description="The offending field, null for whole-message reasons.")
    event_id: str | None = Field(
        description="The event_id of the message when it could be read, for operators."
    )
    rejected_at: UtcDatetime = Field(description="When the message was rejected (UTC).")

    @classmethod
    def from_rejection(
        cls,
        rejection: Rejection,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        now: datetime,
    ) -> DeadLetter:
        """The dead letter of ``rejection`` for the message at ``topic[partition]@offset``."""
        return cls(
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            key_b64=_b64(key),
            value_b64=_b64(value),
            reason=rejection.reason,
            message=rejection.message,
            field=rejection.field,
            event_id=rejection.event_id,
            rejected_at=to_utc(now),
        )

    def original_key(self) -> bytes | None:
        """The source message key as it was received."""
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)

    def original_value(self) -> bytes | None:
        """The source message value as it was received."""
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)
