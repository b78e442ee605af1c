"""``kpi forget`` requests as they travel on the internal topic ``<app_id>-customer-forget``.

One request per partition of that topic, keyed by the customer: the customer stage consumes
the topic with its input, so partition ``p``'s request reaches the owner of input partition
``p`` and is applied in that partition's order, and its offset is committed by the same
checkpoint that writes the customer's tombstones. Sent to every partition because the
input's producers choose the customer's partition, not this project.
"""

from __future__ import annotations

from typing import Final

import orjson

# Bump when a request's shape changes; readers skip (and log) what they cannot read.
FORGET_FORMAT: Final = 1


def forget_message(customer_id: str) -> bytes:
    return orjson.dumps({"v": FORGET_FORMAT, "customer_id": customer_id})


def forget_request(value: bytes | None) -> str | None:
    """The customer a request names; None for anything else (the topic is read, not trusted)."""
    try:
        request = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict) or request.get("v") != FORGET_FORMAT:
        return None
    customer = request.get("customer_id")
    if isinstance(customer, str) and 1 <= len(customer) <= 128:
        return customer
    return None
