"""Write the models' JSON Schemas to ``schemas/json`` or, with ``--check``, report drift."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from schemas.alert import Alert
from schemas.cohort import CohortUpdate
from schemas.dead_letter import DeadLetter
from schemas.events import CampaignClick, Cancellation, Event, Purchase, Signup, Survey
from schemas.kpi import CampaignSnapshot, SegmentSnapshot
from schemas.lifecycle import LifecycleChange

logger = logging.getLogger(__name__)

SCHEMA_DIR: Final = Path(__file__).resolve().parent / "json"
SUFFIX: Final = ".schema.json"
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

# Inputs (msgspec Structs) are described as producers may send them, outputs (Pydantic
# models) as consumers will read them.
DOCUMENTS: Final[dict[str, tuple[type[BaseModel] | type[Event], JsonSchemaMode]]] = {
    "signup": (Signup, "validation"),
    "purchase": (Purchase, "validation"),
    "cancellation": (Cancellation, "validation"),
    "campaign_click": (CampaignClick, "validation"),
    "survey": (Survey, "validation"),
    "dead_letter": (DeadLetter, "serialization"),
    "segment_snapshot": (SegmentSnapshot, "serialization"),
    "campaign_snapshot": (CampaignSnapshot, "serialization"),
    "alert": (Alert, "serialization"),
    "cohort": (CohortUpdate, "serialization"),
    "customer_lifecycle": (LifecycleChange, "serialization"),
}


def render(model: type[BaseModel] | type[Event], mode: JsonSchemaMode) -> str:
    """The schema document of ``model``: pretty, sorted keys, trailing newline."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        body = model.model_json_schema(mode=mode)
    else:
        body = _event_schema(model)
    schema = {"$schema": DIALECT, **body}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _event_schema(model: type[Event]) -> dict[str, Any]:
    """msgspec's schema of an event Struct, inlined (it is a ``$ref`` into ``$defs``)."""
    generated = msgspec.json.schema(model)
    body: dict[str, Any] = generated["$defs"][model.__name__]
    # Rules across fields have no msgspec.Meta; the Struct declares their schema beside them.
    body.update(getattr(model, "json_schema_extra", {}))
    return body


def generate() -> dict[str, str]:
    """Every schema document by file name."""
    return {f"{name}{SUFFIX}": render(model, mode) for name, (model, mode) in DOCUMENTS.items()}


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """File names that are missing, differ from the models, or belong to no model."""
    expected = generate()
    stale = {path.name for path in directory.glob(f"*{SUFFIX}")} - expected.keys()
    changed = {
        name
        for name, text in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    }
    return sorted(changed | stale)


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Bring ``directory`` in line with the models; the names of the files changed."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = generate()
    changes = drifted(directory)
    for name in changes:
        path = directory / name
        if name in expected:
            path.write_text(expected[name], encoding="utf-8")
            logger.info("wrote %s", path)
        else:
            path.unlink()
            logger.info("removed stale %s", path)
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m schemas.jsonschema [--check] [--dir DIR]``; exit 1 on drift with --check."""
    parser = argparse.ArgumentParser(prog="python -m schemas.jsonschema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report drifted files")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schema directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        stale = drifted(args.dir)
        if stale:
            sys.stdout.write(
                "JSON Schemas out of date (run `python -m schemas.jsonschema`):\n"
                + "".join(f"  {args.dir / name}\n" for name in stale)
            )
            return 1
        sys.stdout.write(f"JSON Schemas up to date in {args.dir}\n")
        return 0
    changes = write(args.dir)
    sys.stdout.write(f"{len(changes)} JSON Schema file(s) updated in {args.dir}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
