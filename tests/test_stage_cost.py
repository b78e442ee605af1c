"""scripts/stage_cost.py, the in-process cost harness, processes the benchmark's data whole."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import pytest

from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "stage_cost.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stage_cost", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_record_is_offered_drained_and_checkpointed() -> None:
    stage_cost = _script()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    records = list(generate(SimulationConfig(customers=100, events_target=3_000, inject_bad=0.0)))
    queues = stage_cost._queues(records, settings)
    assert sum(len(queue) for queue in queues.values()) == len(records)
    seconds, states = stage_cost.run_once(queues, settings)
    assert seconds > 0
    assert all(state.buffered == 0 for state in states)
    # Every queued offset was read, and every customer with an event has a record.
    for (partition, event_type), queue in queues.items():
        topic = queue[0].topic
        assert states[partition].next_fetch(topic) == len(queue), event_type
    customers = {record.key.decode() for record in records if record.key}
    assert customers == {c for state in states for c in state.customers}


def test_the_script_reports_the_cost_per_event(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stage_cost"):
        assert _script().main(["--events", "2000", "--runs", "1"]) == 0
    assert "us per event" in caplog.text
