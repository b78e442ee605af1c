"""Side by side: µs per message to validate the input events with msgspec and with pydantic-core.

    .venv/bin/python scripts/intake_validators.py [--number N]

Three contenders on the same messages (docs/benchmarks.md, "Input validation"):

* ``msgspec``: Structs with ``msgspec.Meta`` constraints, plus in Python the rules msgspec
  cannot express (id characters by ``str.isprintable``, region, exact decimal strings),
  as a stand-alone sketch of the shape ``schemas/events.py`` uses;
* ``pydantic-core``: one ``SchemaValidator`` per event built from ``core_schema``, every rule
  in Rust (regex patterns included), no Python validator;
* ``parse_event``: the project's ``schemas.parse_event`` as it is in this checkout.
"""

from __future__ import annotations

import argparse
import re
import sys
import timeit
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from msgspec import Meta
from pydantic_core import SchemaValidator, ValidationError, core_schema

from schemas import parse_event

ID_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
REGION_PATTERN = r"^[A-Za-z0-9_-]{2,8}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
MAX_AMOUNT = 1_000_000_000
msgspec_id_regex = re.compile(ID_PATTERN)
msgspec_decimal_regex = re.compile(DECIMAL_PATTERN)

BASE = b'"event_id":"ev-1","customer_id":"cust-1","occurred_at":"2026-11-02T09:15:00+09:00"'
VALID: dict[str, bytes] = {
    "purchase": b'{%s,"order_id":"o-1","amount":"19.99","currency":"USD"}' % BASE,
    "campaign_click": b'{%s,"campaign_id":"spring-1","cost":"0.125"}' % BASE,
    "signup": b'{%s,"region":"emea","campaign_id":"spring-1","channel":"web"}' % BASE,
    "survey": b'{%s,"survey_type":"nps","score":9}' % BASE,
    "cancellation": b'{%s,"reason":"too expensive"}' % BASE,
}
INVALID: dict[str, tuple[str, bytes]] = {
    "naive timestamp": ("purchase", VALID["purchase"].replace(b"+09:00", b"")),
    "amount '1_0'": ("purchase", VALID["purchase"].replace(b'"19.99"', b'"1_0"')),
    "missing order_id": ("purchase", VALID["purchase"].replace(b'"order_id":"o-1",', b"")),
    "score 11": ("survey", VALID["survey"].replace(b":9}", b":11}")),
    "not JSON": ("signup", b'{"event_id": '),
}

# --- msgspec: Meta constraints in C, the rest in a few lines of Python ---------------------

Id = Annotated[str, Meta(min_length=1, max_length=128)]
Stamp = Annotated[datetime, Meta(tz=True)]


def _check_id(value: str) -> None:
    # isprintable() refuses every control character; only then does the exact regex run.
    if not value.isprintable() and not msgspec_id_regex.fullmatch(value):
        raise ValueError("control characters")


class _Base(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    event_id: Id
    customer_id: Id
    occurred_at: Stamp
    schema_version: Literal[1] = 1

    def __post_init__(self) -> None:
        _check_id(self.event_id)
        _check_id(self.customer_id)


class _Purchase(_Base, frozen=True, kw_only=True, gc=False):
    order_id: Id
    amount: str | int
    currency: Annotated[str, Meta(min_length=3, max_length=3)]

    def __post_init__(self) -> None:
        super().__post_init__()
        amount = self.amount
        if type(amount) is str and not msgspec_decimal_regex.fullmatch(amount):
            raise ValueError("amount")
        value = Decimal(amount)
        if not 0 < value <= MAX_AMOUNT or value != value.quantize(Decimal("0.0001")):
            raise ValueError("amount")


class _Click(_Base, frozen=True, kw_only=True, gc=False):
    campaign_id: Id
    cost: str | int | None = None


class _Signup(_Base, frozen=True, kw_only=True, gc=False):
    region: Annotated[str, Meta(min_length=2, max_length=8)] | None = None
    campaign_id: Id | None = None
    channel: str | None = None


class _Survey(_Base, frozen=True, kw_only=True, gc=False):
    survey_type: Literal["nps", "csat"]
    score: Annotated[int, Meta(ge=0, le=10)]


class _Cancellation(_Base, frozen=True, kw_only=True, gc=False):
    reason: str | None = None


MSGSPEC = {
    name: msgspec.json.Decoder(cls)
    for name, cls in {
        "purchase": _Purchase,
        "campaign_click": _Click,
        "signup": _Signup,
        "survey": _Survey,
        "cancellation": _Cancellation,
    }.items()
}

# --- pydantic-core: the same rules, all in Rust --------------------------------------------

_cs = core_schema
_id = _cs.str_schema(min_length=1, max_length=128, pattern=ID_PATTERN)


def _money(places: int, **bound: int) -> _cs.CoreSchema:
    exact = _cs.decimal_schema(le=MAX_AMOUNT, decimal_places=places, allow_inf_nan=False, **bound)
    text = _cs.chain_schema([_cs.str_schema(pattern=DECIMAL_PATTERN), exact])
    return _cs.union_schema([text, exact])


def _fields(**extra: _cs.TypedDictField) -> _cs.CoreSchema:
    return _cs.typed_dict_schema(
        {
            "event_id": _cs.typed_dict_field(_id),
            "customer_id": _cs.typed_dict_field(_id),
            "occurred_at": _cs.typed_dict_field(_cs.datetime_schema(tz_constraint="aware")),
            "schema_version": _cs.typed_dict_field(
                _cs.with_default_schema(_cs.literal_schema([1]), default=1), required=False
            ),
            **extra,
        }
    )


def _optional(schema: _cs.CoreSchema) -> _cs.TypedDictField:
    return _cs.typed_dict_field(
        _cs.with_default_schema(_cs.nullable_schema(schema), default=None), required=False
    )


PYDANTIC_CORE = {
    "purchase": SchemaValidator(
        _fields(
            order_id=_cs.typed_dict_field(_id),
            amount=_cs.typed_dict_field(_money(4, gt=0)),
            currency=_cs.typed_dict_field(_cs.str_schema(pattern=CURRENCY_PATTERN)),
        )
    ),
    "campaign_click": SchemaValidator(
        _fields(campaign_id=_cs.typed_dict_field(_id), cost=_optional(_money(6, ge=0)))
    ),
    "signup": SchemaValidator(
        _fields(
            region=_optional(_cs.str_schema(pattern=REGION_PATTERN, to_upper=True)),
            campaign_id=_optional(_id),
            channel=_optional(_cs.str_schema()),
        )
    ),
    "survey": SchemaValidator(
        _fields(
            survey_type=_cs.typed_dict_field(_cs.literal_schema(["nps", "csat"])),
            score=_cs.typed_dict_field(_cs.int_schema(ge=0, le=10, strict=True)),
        )
    ),
    "cancellation": SchemaValidator(_fields(reason=_optional(_cs.str_schema()))),
}


def _msgspec(event_type: str, value: bytes) -> object:
    try:
        return MSGSPEC[event_type].decode(value)
    except (msgspec.DecodeError, ValueError) as exc:
        return exc


def _pydantic_core(event_type: str, value: bytes) -> object:
    try:
        return PYDANTIC_CORE[event_type].validate_json(value)
    except ValidationError as exc:
        return exc


def _parse_event(event_type: str, value: bytes) -> object:
    return parse_event(event_type, value, b"cust-1")  # type: ignore[arg-type]


CONTENDERS: dict[str, Callable[[str, bytes], object]] = {
    "msgspec": _msgspec,
    "pydantic-core": _pydantic_core,
    "parse_event": _parse_event,
}


def measure(number: int) -> list[tuple[str, dict[str, float]]]:
    """µs per message for every message and contender (best of 5 repeats)."""
    rows: list[tuple[str, dict[str, float]]] = []
    cases: list[tuple[str, str, bytes]] = [(f"valid {t}", t, v) for t, v in VALID.items()]
    cases += [(f"invalid: {label}", t, v) for label, (t, v) in INVALID.items()]
    for label, event_type, value in cases:
        figures: dict[str, float] = {}
        for name, run in CONTENDERS.items():
            best = min(
                timeit.repeat(
                    lambda run=run, t=event_type, v=value: run(t, v), number=number, repeat=5
                )
            )
            figures[name] = best / number * 1e6
        rows.append((label, figures))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per repeat")
    args = parser.parse_args(argv)
    header = f"| message | {' | '.join(f'{name} µs' for name in CONTENDERS)} |"
    lines = [header, "|" + " --- |" * (len(CONTENDERS) + 1)]
    for label, figures in measure(args.number):
        cells = " | ".join(f"{figures[name]:.2f}" for name in CONTENDERS)
        lines.append(f"| {label} | {cells} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
