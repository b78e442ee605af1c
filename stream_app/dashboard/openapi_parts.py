"""Parts of the OpenAPI document (``openapi.py``): how a schema is referred to, and the
benchmark schemas (``Position``, ``Band``, ``Standing``) of ``/api/v1/benchmarks*``."""

from __future__ import annotations

from typing import Any, Final

REF: Final = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


BENCHMARK_SCHEMAS: Final[dict[str, Any]] = {
    "Position": {
        "type": "string",
        "enum": ["below", "within", "above"],
        "description": "Where a KPI's value lies against its benchmark band.",
    },
    "Band": {
        "type": "object",
        "required": ["kpi", "windows", "low", "high", "higher_is_better", "source"],
        "properties": {
            "kpi": {"type": "string"},
            "windows": {
                "description": "The windows it applies to; null: every window.",
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
            },
            "low": {"type": "number"},
            "high": {"type": "number"},
            "higher_is_better": {"type": "boolean"},
            "note": {"type": ["string", "null"]},
            "source": {
                "type": "object",
                "required": ["title", "publisher", "year", "url"],
                "properties": {
                    "title": {"type": "string"},
                    "publisher": {"type": "string"},
                    "year": {"type": "integer"},
                    "url": {"type": "string"},
                },
            },
        },
    },
    "Standing": {
        "type": "object",
        "required": ["kpi", "label", "value", "position", "score", "band"],
        "properties": {
            "kpi": {"type": "string"},
            "label": {"type": "string"},
            "value": {"description": "As published (money a decimal string)."},
            "position": ref("Position"),
            "score": {
                "type": "number",
                "description": "Band widths outside the band: positive better, "
                "negative worse, 0 within.",
            },
            "band": ref("Band"),
        },
    },
}
