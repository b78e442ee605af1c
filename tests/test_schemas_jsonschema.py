"""The committed JSON Schemas match the models, and describe what the parser accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import EVENT_MODELS, EventType, Rejection, parse_event
from schemas.jsonschema import DOCUMENTS, SCHEMA_DIR, SUFFIX, drifted, generate, main


def test_committed_schemas_match_models() -> None:
    stale = drifted()
    assert not stale, (
        f"JSON Schemas in {SCHEMA_DIR} differ from the models: {', '.join(stale)}. "
        "Run `python -m schemas.jsonschema` and commit the result."
    )


def test_every_property_is_described() -> None:
    for name, text in generate().items():
        schema = json.loads(text)
        assert schema["description"], name
        for field, spec in schema["properties"].items():
            assert spec.get("description"), f"{name}: {field} has no description"


def test_check_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert "python -m schemas.jsonschema" in capsys.readouterr().out
    assert main(["--dir", str(tmp_path)]) == 0
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / f"old{SUFFIX}").write_text("{}\n", encoding="utf-8")
    (tmp_path / f"alert{SUFFIX}").write_text("{}\n", encoding="utf-8")
    assert drifted(tmp_path) == [f"alert{SUFFIX}", f"old{SUFFIX}"]
    assert main(["--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}{SUFFIX}" for n in DOCUMENTS)


BASE = {"event_id": "e-1", "customer_id": "c-1", "occurred_at": "2026-11-02T09:15:00+09:00"}
SAMPLES: list[tuple[EventType, dict[str, Any], bool]] = [
    ("signup", {**BASE, "region": "eu", "campaign_id": "spring", "channel": "web"}, True),
    ("signup", {**BASE, "region": None, "schema_version": 1}, True),
    ("purchase", {**BASE, "order_id": "o-1", "amount": "19.99", "currency": "USD"}, True),
    ("purchase", {**BASE, "order_id": "o-1", "amount": 19.99, "currency": "USD"}, True),
    ("cancellation", {**BASE, "reason": "moved"}, True),
    ("campaign_click", {**BASE, "campaign_id": "spring", "cost": "0.25"}, True),
    ("campaign_click", {**BASE, "campaign_id": "spring", "cost": None}, True),
    ("survey", {**BASE, "survey_type": "nps", "score": 0}, True),
    ("survey", {**BASE, "survey_type": "csat", "score": 5}, True),
    ("signup", {**BASE, "occurred_at": "2026-11-02T09:15:00"}, False),
    ("signup", {**BASE, "schema_version": 2}, False),
    ("signup", {**BASE, "region": "eu west"}, False),
    ("signup", {**BASE, "event_id": ""}, False),
    ("purchase", {**BASE, "order_id": "o-1", "amount": "1 9", "currency": "USD"}, False),
    ("purchase", {**BASE, "order_id": "o-1", "amount": 0, "currency": "USD"}, False),
    ("purchase", {**BASE, "order_id": "o-1", "amount": "1", "currency": "usd"}, False),
    ("campaign_click", {**BASE, "campaign_id": "spring sale"}, False),
    ("survey", {**BASE, "survey_type": "csat", "score": 6}, False),
    ("survey", {**BASE, "survey_type": "nps", "score": 11}, False),
    ("survey", {**BASE, "survey_type": "nps", "score": "9"}, False),
]


@pytest.mark.parametrize(("name", "sample", "valid"), SAMPLES)
def test_samples_against_generated_schema(
    name: EventType, sample: dict[str, Any], valid: bool
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(generate()[f"{name}{SUFFIX}"])
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(sample) is valid, list(validator.iter_errors(sample))
    # The schema and the parser must agree on these samples.
    parsed = parse_event(name, json.dumps(sample).encode())
    assert isinstance(parsed, EVENT_MODELS[name]) is valid, parsed
    assert isinstance(parsed, Rejection) is not valid


def test_generated_schemas_are_valid_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for text in generate().values():
        jsonschema.Draft202012Validator.check_schema(json.loads(text))
