"""The JSONL event log: one Kafka message per line, written by the simulator, read by replay."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from schemas import TOPIC_SUFFIXES, EventType

EVENT_TYPES: frozenset[str] = frozenset(TOPIC_SUFFIXES)


@dataclass(frozen=True)
class LogRecord:
    """One message for an input topic: its event type, key and raw value bytes.

    On disk a line is ``{"event_type": ..., "key": ..., "value": {...}}`` when the value is a
    JSON object, or ``{"event_type": ..., "key": ..., "value_b64": "..."}`` for any other
    bytes (malformed input kept byte for byte). ``key`` is a string or null.
    """

    event_type: EventType
    key: bytes | None
    value: bytes | None

    def to_line(self) -> bytes:
        line: dict[str, Any] = {
            "event_type": self.event_type,
            "key": self.key.decode("utf-8", "surrogateescape") if self.key is not None else None,
        }
        parsed = _as_object(self.value)
        if parsed is not None:
            line["value"] = parsed
        else:
            line["value_b64"] = (
                base64.b64encode(self.value).decode() if self.value is not None else None
            )
        return orjson.dumps(line) + b"\n"

    @classmethod
    def from_line(cls, line: bytes | str) -> LogRecord:
        data = orjson.loads(line)
        if not isinstance(data, dict):
            raise ValueError("a log line must be a JSON object")
        event_type = data.get("event_type")
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event_type {event_type!r}")
        key = data.get("key")
        if "value" in data:
            value: bytes | None = orjson.dumps(data["value"])
        else:
            encoded = data.get("value_b64")
            value = base64.b64decode(encoded) if encoded is not None else None
        return cls(
            event_type=event_type,
            key=key.encode("utf-8", "surrogateescape") if isinstance(key, str) else None,
            value=value,
        )


def _as_object(value: bytes | None) -> dict[str, Any] | None:
    """The value as a JSON object if re-encoding it loses nothing a parser could see."""
    if value is None:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and orjson.dumps(parsed) == value:
        return parsed
    return None


def write_log(records: Iterable[LogRecord], out: IO[bytes]) -> int:
    count = 0
    for record in records:
        out.write(record.to_line())
        count += 1
    return count


def read_log(path: Path) -> Iterator[LogRecord]:
    """Records of a JSONL log in file order; a broken line raises ValueError naming its number."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield LogRecord.from_line(line)
            except (ValueError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
