"""Each rejected input gives one dead letter, also when its worker dies before a checkpoint.

Dead letters go out at once, checkpoints later: a SIGKILL in between makes the next owner
read the rejected inputs again. It must find their letters and send none twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from stream_app.customers.changelog import ChangelogReplay, checkpoint_records
from stream_app.customers.deadletters import DeadLetterLedger
from stream_app.customers.partition import PartitionState
from tests.conftest import StackEnv
from tests.test_changelog_replay import SETTINGS, _batches, _clock
from tests.test_intake_integration import _consume, _produce, _valid

# No checkpoint may come between the letters and the kill: the longest intervals allowed.
NO_CHECKPOINT = {"KPI_CHECKPOINT_INTERVAL": "1m", "KPI_CHECKPOINT_INTERVAL_BACKLOG": "1m"}
TOPICS = ["signups", "purchases", "cancellations", "campaign-clicks", "surveys"]


def _accepted(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kpi_events_total{")
    )


@pytest.mark.integration
def test_a_worker_killed_before_its_checkpoint_sends_no_dead_letter_twice(
    stack: StackEnv,
) -> None:
    worker = stack.start_worker(**NO_CHECKPOINT)
    worker.wait_assigned(partitions=4)
    bad = [
        (stack.topic(TOPICS[n % 5]), f"bad{n}".encode(), b"{not json " + str(n).encode())
        for n in range(40)
    ]
    good = [
        (stack.topic("signups"), f"c{n}".encode(), json.dumps(_valid("signups", n)).encode())
        for n in range(40)
    ]
    asyncio.run(_produce(stack.bootstrap, bad + good))
    first = asyncio.run(_consume(stack.bootstrap, stack.topic("dead-letters"), 40, 60))
    assert len(first) == 40, worker.log_tail()
    worker.stop(signal.SIGKILL)

    again = stack.start_worker(**NO_CHECKPOINT)
    again.wait_assigned(partitions=4)
    # One more valid event: once it is counted, the inputs before it were read again.
    asyncio.run(
        _produce(
            stack.bootstrap,
            [(stack.topic("signups"), b"c99", json.dumps(_valid("signups", 99)).encode())],
        )
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _accepted(again.get_text("/metrics")) < 41:
        time.sleep(0.5)
    assert _accepted(again.get_text("/metrics")) == 41, again.log_tail()
    letters = asyncio.run(_consume(stack.bootstrap, stack.topic("dead-letters"), 80, 5))
    sources = {
        (letter["source_topic"], letter["source_partition"], letter["source_offset"])
        for letter in (json.loads(record.value) for record in letters)
    }
    assert len(letters) == 40, f"{len(letters)} dead letters for 40 rejected inputs"
    assert len(sources) == 40


def test_the_ledger_marks_where_letters_of_inputs_read_again_begin() -> None:
    ledger = DeadLetterLedger()
    assert ledger.mark({}) is None  # nothing known: the next owner reads from the start
    ledger.record(7, "t", 100)
    ledger.record(8, "t", 105)
    ledger.record(9, "u", 3)
    # Input of t is committed up to 101: the letter at 7 will not be needed again.
    assert ledger.mark({"t": 101, "u": 0}) == 8
    assert ledger.mark({"t": 200, "u": 4}) == 10  # all passed: the partition's end
    ledger.already_sent.update({("t", 300), ("t", 301)})
    assert not ledger.take("t", 300)  # sent by an earlier owner
    assert ledger.take("t", 300)  # ...but only once
    assert ledger.take("t", 302)
    ledger.mark({"t": 302})
    assert ledger.already_sent == set()


def test_the_mark_travels_in_the_checkpoint_marker() -> None:
    state = PartitionState(0, SETTINGS, _clock)
    state.ingest(_batches(2)[0])
    state.dead_letters.record(41, "crm.signups", 10**9)  # an input not committed yet
    tag, records = checkpoint_records(state.checkpoint(), "g1", 1)
    recovered = PartitionState(0, SETTINGS, _clock)
    replay = ChangelogReplay(recovered)
    for key, value in records:
        replay.feed(key, value, tag)
    replay.finish()
    assert recovered.dead_letters.recovered_mark == 41
