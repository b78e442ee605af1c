"""The OpenAPI 3.1 document of the HTTP API, generated from the contract's models and the settings.

Served at ``GET /api/v1/openapi.json``. The snapshot and alert schemas are the models of
``schemas`` (the same as ``schemas/json``), the window names those configured, so the
document cannot drift from what the server answers. docs/api.md is the prose version.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic.json_schema import models_json_schema

from schemas import Alert, CampaignSnapshot, SegmentSnapshot
from stream_app.settings import Settings

from . import atrisk, params
from .params import ALERTS_LIMIT, API, HISTORY_LIMIT

REF: Final = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, description: str, schema: dict[str, Any], *, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


_ERRORS: Final = {
    "400": _json(_ref("Error"), "A query parameter is missing or invalid; `error` says which."),
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "503": _json(_ref("Error"), "Redis cannot be read right now (`Retry-After: 2`)."),
}


def build(settings: Settings) -> dict[str, Any]:
    """The document for a server with these settings (windows, limits, auth)."""
    windows = [w.name for w in settings.windows]
    _keys, definitions = models_json_schema(
        [
            (SegmentSnapshot, "serialization"),
            (CampaignSnapshot, "serialization"),
            (Alert, "serialization"),
            (atrisk.AtRiskList, "serialization"),
        ],
        ref_template=REF,
    )
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    snapshot = {"oneOf": [_ref("SegmentSnapshot"), _ref("CampaignSnapshot")]}
    schemas.update(
        {
            "Snapshot": snapshot,
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "WindowPair": {
                "type": "object",
                "required": ["current", "previous"],
                "properties": {
                    "current": {"anyOf": [snapshot, {"type": "null"}]},
                    "previous": {
                        "description": "The history entry of the step before `current`.",
                        "anyOf": [snapshot, {"type": "null"}],
                    },
                    "positions": {
                        "description": "KPI -> where `current`'s value lies against its band "
                        "in the benchmark profile; KPIs without a band or a value are absent.",
                        "type": "object",
                        "additionalProperties": _ref("Position"),
                    },
                },
            },
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
                    "position": _ref("Position"),
                    "score": {
                        "type": "number",
                        "description": "Band widths outside the band: positive better, "
                        "negative worse, 0 within.",
                    },
                    "band": _ref("Band"),
                },
            },
            "HistoryPoint": {
                "type": "object",
                "description": "A snapshot of one past step; only `window_start`, "
                "`window_end` and the KPIs of `fields` when it is given.",
                "required": list(params.POINT_META),
                "additionalProperties": True,
            },
        }
    )
    window = {"type": "string", "enum": windows}
    segment = {
        "type": "string",
        "maxLength": params.MAX_SEGMENT_CHARS,
        "description": "`all`, `region:<REGION>` or `campaign:<campaign_id>`",
        "examples": ["all", "region:EU", "campaign:spring-sale"],
    }

    def get(summary: str, description: str, responses: dict[str, Any], *args: Any) -> Any:
        return {
            "get": {
                "summary": summary,
                "description": description,
                "parameters": list(args),
                "responses": {
                    **responses,
                    **{k: v for k, v in _ERRORS.items() if k not in responses},
                },
            }
        }

    not_found = _json(_ref("Error"), "The segment is well-formed but has no data.")
    paths = {
        "/": get(
            "The dashboard page",
            "HTML; loads only `/assets/*` of this server.",
            {"200": {"description": "HTML", "content": {"text/html": {}}}},
        ),
        "/assets/{name}": {
            "get": {
                "summary": "A file of the page",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The file"},
                    "404": not_found,
                    "401": _ERRORS["401"],
                },
            }
        },
        f"{API}/meta": get(
            "Windows, KPI catalogue and display settings",
            "What the page needs: the configured windows (sizes and steps in seconds), every "
            "KPI with its label, kind (`count`, `money`, `percent`, `score`, `ratio`) and "
            "direction, the headline tiles, the reporting currency.",
            {"200": _json({"type": "object"}, "The metadata")},
        ),
        f"{API}/segments": get(
            "Segments with data",
            "Every segment that has a snapshot of a configured window (a SCAN of `kpi:*`, "
            "cached for 5 s): `all` first, then regions, then campaigns.",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "segments": {"type": "array", "items": {"type": "string"}},
                            "regions": {"type": "array", "items": {"type": "string"}},
                            "campaigns": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "The segments",
                )
            },
        ),
        f"{API}/snapshot": get(
            "The current snapshot of one window and segment",
            "The hash `kpi:<window>:<segment>` as one JSON object (values as published).",
            {"200": _json(snapshot, "The snapshot"), "404": not_found},
            _param("window", "Window name", window, required=True),
            _param("segment", "Segment", segment, required=True),
        ),
        f"{API}/snapshots": get(
            "Every window of a segment, with the previous step",
            "Per window: the current snapshot and the history entry of the step before it "
            "(for the change since the previous step); null where there is none.",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "segment": {"type": "string"},
                            "windows": {
                                "type": "object",
                                "additionalProperties": _ref("WindowPair"),
                            },
                        },
                    },
                    "Snapshots by window",
                ),
                "404": not_found,
            },
            _param("segment", "Segment", segment, required=True),
            _param("windows", "Comma-separated window names (default: all)", {"type": "string"}),
        ),
        f"{API}/history": get(
            "The history of a window and segment",
            "Entries of `kpi-history:<window>:<segment>`, oldest first: the newest `limit` "
            "steps whose window end is within `[since, until]`.",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "window": {"type": "string"},
                            "segment": {"type": "string"},
                            "count": {"type": "integer"},
                            "points": {"type": "array", "items": _ref("HistoryPoint")},
                        },
                    },
                    "History points",
                ),
                "404": not_found,
            },
            _param("window", "Window name", window, required=True),
            _param("segment", "Segment", segment, required=True),
            _param(
                "limit",
                "Steps at most",
                {
                    "type": "integer",
                    "minimum": HISTORY_LIMIT[1],
                    "maximum": HISTORY_LIMIT[2],
                    "default": HISTORY_LIMIT[0],
                },
            ),
            _param("since", "Window end at or after: Unix seconds or RFC 3339", {"type": "string"}),
            _param(
                "until", "Window end at or before: Unix seconds or RFC 3339", {"type": "string"}
            ),
            _param(
                "fields", "Comma-separated KPI names to keep (default: all)", {"type": "string"}
            ),
        ),
        f"{API}/alerts": get(
            "The latest alerts",
            "Entries of the stream `kpi-alerts`, newest first.",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "count": {"type": "integer"},
                            "alerts": {"type": "array", "items": _ref("Alert")},
                        },
                    },
                    "Alerts",
                )
            },
            _param(
                "limit",
                "Alerts at most",
                {
                    "type": "integer",
                    "minimum": ALERTS_LIMIT[1],
                    "maximum": ALERTS_LIMIT[2],
                    "default": ALERTS_LIMIT[0],
                },
            ),
        ),
        f"{API}/at-risk": atrisk.openapi_path(segment, _ERRORS),
        f"{API}/benchmarks": get(
            "The benchmark profile",
            "The profile of KPI_BENCHMARK_PROFILE: `name`, `title` and its `bands`, each with "
            "its public source. 404 when the setting is `none`.",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "title": {"type": "string"},
                            "bands": {"type": "array", "items": _ref("Band")},
                        },
                    },
                    "The profile",
                ),
                "404": _json(_ref("Error"), "No benchmark profile is configured."),
            },
        ),
        f"{API}/benchmarks/strengths-weaknesses": get(
            "Strengths and weaknesses of a window and segment",
            "The current snapshot's KPIs against their bands: `strengths` (above the band "
            "where higher is better, or below it where lower is), best first; `weaknesses`, "
            "worst first; `within`, in snapshot order.",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "window": {"type": "string"},
                            "segment": {"type": "string"},
                            "profile": {"type": "string"},
                            "window_end": {"type": "string"},
                            **{
                                key: {"type": "array", "items": _ref("Standing")}
                                for key in ("strengths", "weaknesses", "within")
                            },
                        },
                    },
                    "Strengths and weaknesses",
                ),
                "404": _json(_ref("Error"), "No snapshot there, or no benchmark profile."),
            },
            _param("window", "Window name", window, required=True),
            _param("segment", "Segment (default: all)", segment),
        ),
        f"{API}/stream": get(
            "Live snapshots and alerts (server-sent events)",
            "`text/event-stream`. Events: `hello` (on connect: segment, server_time, redis), "
            "`snapshot` (a new snapshot of the segment, any window), `alert` (any alert), "
            "`status` (Redis went down or came back: reload), `reset` (the client fell "
            "behind: reload), `ping` (every 5 s). Each `data` is one line of JSON.",
            {"200": {"description": "An event stream", "content": {"text/event-stream": {}}}},
            _param("segment", "Segment (default: all)", segment),
        ),
        f"{API}/openapi.json": get(
            "This document", "OpenAPI 3.1.", {"200": _json({"type": "object"}, "OpenAPI")}
        ),
        "/health": get(
            "Health",
            "200 when healthy, 503 when not; `status` always, the details only with the "
            "token when one is configured. See docs/api.md for the checks.",
            {
                "200": _json({"type": "object"}, "Healthy"),
                "503": _json({"type": "object"}, "Unhealthy: `problems` names the failed checks"),
            },
        ),
        "/metrics": get(
            "Prometheus metrics",
            "Prometheus text format 0.0.4.",
            {"200": {"description": "Metrics", "content": {"text/plain": {}}}},
        ),
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "crm-kpi",
            "version": "1",
            "description": "Read-only HTTP API of the live CRM KPIs (docs/api.md). Every "
            'response is JSON unless stated; errors are `{"error": "..."}`.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Unauthorized": _json(
                    _ref("Error"),
                    "KPI_API_TOKEN is set and the request does not carry it "
                    "(`WWW-Authenticate: Basic`).",
                )
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }
    if settings.api_token is not None:
        document["security"] = [{"bearer": []}, {"basic": []}]
    return document
