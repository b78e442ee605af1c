"""Every Redis name the processor writes or reads: keys, channels, streams and their patterns.

The public ones are the contract's (section 5) and must not change; the alert ones are
documented in docs/alerts.md. Only this module spells them out, so a name is changed, or
looked up, in one place (tests/test_layering.py holds every other module to that).

Per-window names are ``<prefix><window>:<segment>``. Window names never contain ':'
(settings allow ``[A-Za-z0-9_-]``), segments may (``region:EU``), so such a name splits at
the first ':' after its prefix.
"""

from __future__ import annotations

import re
from typing import Final

# --- KPI snapshots (the publisher writes them; the dashboard, kpi watch and verify read)
SNAPSHOT_PREFIX: Final = "kpi:"  # hash: the current snapshot, one JSON value per field
HISTORY_PREFIX: Final = "kpi-history:"  # sorted set: score = window end (s), member = JSON
UPDATES_CHANNEL_PREFIX: Final = "kpi-updates:"  # pub/sub: each snapshot as JSON
UPDATES_STREAM: Final = "kpi-updates"  # stream: each snapshot as JSON in field ``data``

# --- cohort retention (contract section 6)
COHORTS_PREFIX: Final = "kpi-cohorts:"  # hash per grain and segment: field = cohort start
COHORT_UPDATES_PREFIX: Final = "kpi-cohort-updates:"  # pub/sub: each changed cohort as JSON
COHORTS_PATTERN: Final = COHORTS_PREFIX + "*"
COHORT_UPDATES_PATTERN: Final = COHORT_UPDATES_PREFIX + "*"

# --- churn risk (contract section 7): sorted set per segment, member = customer id,
# score = churn risk 0..1 (the only Redis keys that hold customer ids)
AT_RISK_PREFIX: Final = "kpi-at-risk:"
AT_RISK_PATTERN: Final = AT_RISK_PREFIX + "*"

# string with a TTL, one per running publisher: gone means Redis lost its data (restarted empty)
PUBLISHER_ALIVE_PREFIX: Final = "kpi-publisher-alive:"

SNAPSHOT_PATTERN: Final = SNAPSHOT_PREFIX + "*"
HISTORY_PATTERN: Final = HISTORY_PREFIX + "*"
UPDATES_PATTERN: Final = UPDATES_CHANNEL_PREFIX + "*"  # every window and segment

# --- alerts (docs/alerts.md)
ALERTS: Final = "kpi-alerts"  # both the stream and the pub/sub channel
ALERT_STATE: Final = "kpi-alert-state"  # hash: per "<rule>|<segment>", cursor and state
ALERT_SENT_PREFIX: Final = "kpi-alert-sent:"  # string, SET NX EX: "this alert went out"
# string: set once the alert history, markers and states were restored from Kafka into this
# Redis; no alert is published while it is missing (docs/alerts.md)
ALERTS_RESTORED: Final = "kpi-alerts-restored"
ALERTS_RESTORE_LOCK: Final = "kpi-alerts-restoring"  # string, SET NX EX: one worker rebuilds

_GLOB_SPECIAL: Final = re.compile(r"([\\*?\[\]])")


def snapshot_key(window: str, segment: str) -> str:
    return f"{SNAPSHOT_PREFIX}{window}:{segment}"


def history_key(window: str, segment: str) -> str:
    return f"{HISTORY_PREFIX}{window}:{segment}"


def updates_channel(window: str, segment: str) -> str:
    return f"{UPDATES_CHANNEL_PREFIX}{window}:{segment}"


def cohorts_key(grain: str, segment: str) -> str:
    return f"{COHORTS_PREFIX}{grain}:{segment}"


def cohort_updates_channel(grain: str, segment: str) -> str:
    return f"{COHORT_UPDATES_PREFIX}{grain}:{segment}"


def at_risk_key(segment: str) -> str:
    return f"{AT_RISK_PREFIX}{segment}"


def publisher_alive_key(token: str) -> str:
    return f"{PUBLISHER_ALIVE_PREFIX}{token}"


def alert_sent_key(alert_id: str, status: str) -> str:
    """The once-only marker of one alert transition (``fired`` or ``resolved``)."""
    return f"{ALERT_SENT_PREFIX}{alert_id}:{status}"


def segment_updates_pattern(segment: str) -> str:
    """``kpi-updates:*:<segment>`` (every window of one segment), glob characters escaped."""
    return UPDATES_CHANNEL_PREFIX + "*:" + _GLOB_SPECIAL.sub(r"\\\1", segment)


def split_name(name: str, prefix: str) -> tuple[str, str] | None:
    """``<prefix><window>:<segment>`` as (window, segment); None if it is not one."""
    if not name.startswith(prefix):
        return None
    window, sep, segment = name.removeprefix(prefix).partition(":")
    return (window, segment) if sep else None
