"""Which dead letters a partition has sent, so that a crash does not send them twice.

Dead letters go out as soon as their input is rejected, before the checkpoint that moves
the input offsets past it. After a crash the next owner reads that input again and rejects
it again. To send each dead letter once, every checkpoint marker records where in its
dead-letter partition the letters of inputs still to be read again begin (``mark``); the
next owner reads the dead-letter partition from there (``stream_app/customers/recovery``)
and skips the inputs it finds (``already_sent``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DeadLetterLedger:
    """The dead letters of one partition whose input lies at or past the committed offsets."""

    # (dead-letter offset, source topic, source offset), in the order they were sent.
    sent: list[tuple[int, str, int]] = field(default_factory=list)
    # The dead-letter partition's end after the last letter sent (None: not known yet).
    end: int | None = None
    # Inputs an earlier owner dead-lettered that this one will read again: not sent twice.
    already_sent: set[tuple[str, int]] = field(default_factory=set)
    # The mark of the last checkpoint recovered (None: none had one: read from the start).
    recovered_mark: int | None = None

    def record(self, dead_letter_offset: int, topic: str, source_offset: int) -> None:
        """A dead letter of this partition was written at ``dead_letter_offset``."""
        self.sent.append((dead_letter_offset, topic, source_offset))
        if self.end is None or dead_letter_offset >= self.end:
            self.end = dead_letter_offset + 1

    def recovered(self, found: list[tuple[int, str, int]], end: int) -> None:
        """What a new owner found its predecessors sent (as ``sent``) up to ``end``: those
        inputs will be read and rejected again, and their letters not sent twice."""
        self.sent.extend(found)
        self.already_sent.update((topic, offset) for _, topic, offset in found)
        self.end = end

    def take(self, topic: str, source_offset: int) -> bool:
        """Whether the letter of this input still has to be sent (False: sent before)."""
        key = (topic, source_offset)
        if key in self.already_sent:
            self.already_sent.discard(key)
            return False
        return True

    def mark(self, committed: dict[str, int]) -> int | None:
        """Where a next owner starts looking for letters already sent, given the offsets this
        checkpoint commits; forgets the letters whose input will not be read again."""
        self.sent = [entry for entry in self.sent if entry[2] >= committed.get(entry[1], 0)]
        self.already_sent = {
            (topic, offset)
            for topic, offset in self.already_sent
            if offset >= committed.get(topic, 0)
        }
        if self.sent:
            return min(entry[0] for entry in self.sent)
        return self.end
