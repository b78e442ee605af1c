"""Public data contract of the CRM KPI processor: input events, dead letters, snapshots, alerts."""

from schemas.alert import Alert
from schemas.dead_letter import DeadLetter
from schemas.events import (
    EVENT_MODELS,
    TOPIC_SUFFIXES,
    BaseEvent,
    CampaignClick,
    Cancellation,
    Event,
    EventType,
    Purchase,
    Signup,
    Survey,
)
from schemas.kpi import (
    CAMPAIGN_KPIS,
    MONEY_KPIS,
    SEGMENT_KPIS,
    SNAPSHOT_META,
    CampaignSnapshot,
    SegmentSnapshot,
    format_money,
)
from schemas.parse import DEFAULT_MAX_BYTES, Rejection, RejectReason, parse_event
from schemas.rules import UNKNOWN_REGION
from schemas.timestamps import UtcDatetime

__all__ = [
    "CAMPAIGN_KPIS",
    "DEFAULT_MAX_BYTES",
    "EVENT_MODELS",
    "MONEY_KPIS",
    "SEGMENT_KPIS",
    "SNAPSHOT_META",
    "TOPIC_SUFFIXES",
    "UNKNOWN_REGION",
    "Alert",
    "BaseEvent",
    "CampaignClick",
    "CampaignSnapshot",
    "Cancellation",
    "DeadLetter",
    "Event",
    "EventType",
    "Purchase",
    "RejectReason",
    "Rejection",
    "SegmentSnapshot",
    "Signup",
    "Survey",
    "UtcDatetime",
    "format_money",
    "parse_event",
]
