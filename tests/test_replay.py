"""``kpi replay``: CSV mapping, dry run, option errors, and sends to the real broker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer

from schemas import Purchase, Rejection, Signup, Survey, parse_event
from stream_app.cli import build_parser, main
from stream_app.eventlog import LogRecord, write_log
from stream_app.kafka import aiokafka_options, input_topics
from stream_app.replay.cli import build_source
from stream_app.replay.dryrun import dry_run
from stream_app.replay.records import ReplayRecord, Source, Unroutable
from stream_app.settings import Settings
from stream_app.simulate import SimulationConfig, generate
from stream_app.simulate.config import Behaviour
from tests.conftest import StackEnv, unique_name

# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def kpi_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment for ``kpi`` in-process: no KPI_* variables, no .env, wide output."""
    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # Rich wraps tables at the terminal width: keep every rejected row on one line.
    monkeypatch.setenv("COLUMNS", "300")
    return tmp_path


def replay_args(*argv: str | Path) -> Any:
    return build_parser().parse_args(["replay", *(str(a) for a in argv)])


def source_of(*argv: str | Path) -> Source:
    return build_source(replay_args(*argv))


def expected_id(file_name: str, row: int) -> str:
    """The documented derivation, computed here independently of the code under test."""
    return "replay-" + hashlib.sha256(f"{file_name}\x00{row}".encode()).hexdigest()[:32]


def records(source: Source) -> list[ReplayRecord]:
    items = list(source)
    assert all(isinstance(item, ReplayRecord) for item in items), items
    return [item for item in items if isinstance(item, ReplayRecord)]


REJECTED_ROW = re.compile(r"^│\s*(\d+)\s*│\s*(\S+)\s*│\s*(\S+)\s*│\s*(\S+)\s*│")


def rejected_rows_in(output: str) -> set[tuple[int, str, str, str]]:
    """(line, event type, reason, field) of every row of the printed rejected-rows table."""
    rows = set()
    for text in output.splitlines():
        match = REJECTED_ROW.match(text)
        if match:
            rows.add((int(match[1]), match[2], match[3], match[4]))
    return rows


# ------------------------------------------------------------------- (1) CSV mapping

MIXED_CSV = (
    "kind,cust,ts,total,order_ref,country,camp,survey_kind,rating,cost,note\n"
    "signups,c-1,2026-11-02T09:00:00Z,,,eu,spring,,,,private note\n"
    "order,c-1,2026-11-02T10:15:00+01:00,1234567.1234,o-1,,,,,,x\n"
    "\n"
    "order, c-2 ,2026-11-02T10:16:00Z,0.0001,o-2,,,,,,\n"
    "survey,c-1,2026-11-02T11:00:00Z,,,,,nps,9,,\n"
    "campaign_click,c-3,2026-11-02T08:00:00Z,,,,spring,,,0.123456,\n"
    'churn,c-2,2026-11-03T00:00:00Z,,,,,,,,"too\nexpensive"\n'
    "refund,c-9,2026-11-03T00:00:00Z,,,,,,,,\n"
)
MIXED_OPTIONS = (
    "--type-column",
    "kind",
    "--type-map",
    "order=purchase",
    "--type-map",
    "churn=cancellation",
    "--map",
    "customer_id=cust",
    "--map",
    "occurred_at=ts",
    "--map",
    "amount=total",
    "--map",
    "order_id=order_ref",
    "--map",
    "region=country",
    "--map",
    "campaign_id=camp",
    "--map",
    "survey_type=survey_kind",
    "--map",
    "score=rating",
    "--map",
    "reason=note",
    "--set",
    "currency=USD",
)


def test_csv_with_type_column_maps_every_row_to_the_expected_event(tmp_path: Path) -> None:
    path = tmp_path / "crm-export-2026-11-02.csv"
    path.write_text(MIXED_CSV)
    name = path.name

    items = list(source_of(path, *MIXED_OPTIONS))

    assert len(items) == 7
    *sent, skipped = items
    # The unknown type is skipped with its line (the quoted cell above spans lines 8-9).
    assert isinstance(skipped, Unroutable)
    assert (skipped.line, skipped.reason, skipped.field) == (10, "unknown_event_type", "kind")
    assert "'refund'" in skipped.message
    assert all(isinstance(item, ReplayRecord) for item in sent)
    got = [
        (item.line, item.event_type, item.key, orjson.loads(item.value or b"null"))
        for item in sent
        if isinstance(item, ReplayRecord)
    ]
    assert got == [
        (
            2,
            "signup",
            b"c-1",
            {
                "event_id": expected_id(name, 1),
                "customer_id": "c-1",
                "occurred_at": "2026-11-02T09:00:00Z",
                "region": "eu",
                "campaign_id": "spring",
            },
        ),
        (
            3,
            "purchase",
            b"c-1",
            {
                "event_id": expected_id(name, 2),
                "customer_id": "c-1",
                "occurred_at": "2026-11-02T10:15:00+01:00",
                "order_id": "o-1",
                "amount": "1234567.1234",
                "currency": "USD",
            },
        ),
        (
            5,  # line 4 is blank and is not a row
            "purchase",
            b"c-2",  # cells are stripped
            {
                "event_id": expected_id(name, 3),
                "customer_id": "c-2",
                "occurred_at": "2026-11-02T10:16:00Z",
                "order_id": "o-2",
                "amount": "0.0001",
                "currency": "USD",
            },
        ),
        (
            6,
            "survey",
            b"c-1",
            {
                "event_id": expected_id(name, 4),
                "customer_id": "c-1",
                "occurred_at": "2026-11-02T11:00:00Z",
                "survey_type": "nps",
                "score": 9,
            },
        ),
        (
            7,
            "campaign_click",
            b"c-3",
            {
                "event_id": expected_id(name, 5),
                "customer_id": "c-3",
                "occurred_at": "2026-11-02T08:00:00Z",
                "campaign_id": "spring",
                "cost": "0.123456",
            },
        ),
        (
            8,
            "cancellation",
            b"c-2",
            {
                "event_id": expected_id(name, 6),
                "customer_id": "c-2",
                "occurred_at": "2026-11-03T00:00:00Z",
                "reason": "too\nexpensive",
            },
        ),
    ]
    # Types on the wire: the score is a JSON integer, amounts are exact decimal strings.
    by_line = {item.line: item for item in sent if isinstance(item, ReplayRecord)}
    assert b'"score":9' in (by_line[6].value or b"")
    assert b'"amount":"1234567.1234"' in (by_line[3].value or b"")
    # And the processor's parser reads them exactly as intended.
    purchase = parse_event("purchase", by_line[3].value, by_line[3].key)
    assert isinstance(purchase, Purchase)
    assert purchase.amount == Decimal("1234567.1234")
    assert str(purchase.amount) == "1234567.1234"
    assert purchase.occurred_at.isoformat() == "2026-11-02T09:15:00+00:00"
    tiny = parse_event("purchase", by_line[5].value, by_line[5].key)
    assert isinstance(tiny, Purchase)
    assert tiny.amount == Decimal("0.0001")
    survey = parse_event("survey", by_line[6].value, by_line[6].key)
    assert isinstance(survey, Survey)
    assert survey.score == 9
    assert type(survey.score) is int
    signup = parse_event("signup", by_line[2].value, by_line[2].key)
    assert isinstance(signup, Signup)
    assert signup.region == "EU"
    # Columns nobody mapped for the type stay private: the signup's note is not sent.
    assert b"private" not in (by_line[2].value or b"")


def test_derived_event_ids_are_stable_per_file_name_and_row(tmp_path: Path) -> None:
    first = tmp_path / "customers-2026-11-02.csv"
    first.write_text("customer_id,occurred_at\nc1,2026-11-02T09:00:00Z\nc2,2026-11-02T09:01:00Z\n")
    second = tmp_path / "customers-2026-11-03.csv"
    second.write_bytes(first.read_bytes())

    def ids(path: Path) -> list[str]:
        return [
            orjson.loads(r.value or b"")["event_id"]
            for r in records(source_of(path, "--event-type", "signup"))
        ]

    assert ids(first) == [expected_id(first.name, 1), expected_id(first.name, 2)]
    assert ids(first) == ids(first)  # a second replay of the same file: the same ids
    assert ids(second) == [expected_id(second.name, 1), expected_id(second.name, 2)]
    assert set(ids(first)).isdisjoint(ids(second))


def test_event_type_option_event_id_column_and_integer_conversion(tmp_path: Path) -> None:
    path = tmp_path / "surveys.csv"
    path.write_text(
        "id;who;when;kind;score;version\n"
        "s1;c1;2026-11-02T09:00:00Z;csat;+5;1\n"
        "s2;c2;2026-11-02T09:00:00Z;nps;07;\n"
        "s3;c3;2026-11-02T09:00:00Z;nps;9.0;1\n"
    )
    got = [
        orjson.loads(r.value or b"")
        for r in records(
            source_of(
                path,
                "--event-type",
                "survey",
                "--event-id-column",
                "id",
                "--map",
                "customer_id=who",
                "--map",
                "occurred_at=when",
                "--map",
                "survey_type=kind",
                "--map",
                "schema_version=version",
                "--delimiter",
                ";",
            )
        )
    ]
    assert got == [
        {
            "event_id": "s1",
            "customer_id": "c1",
            "occurred_at": "2026-11-02T09:00:00Z",
            "schema_version": 1,
            "survey_type": "csat",
            "score": 5,
        },
        {
            "event_id": "s2",
            "customer_id": "c2",
            "occurred_at": "2026-11-02T09:00:00Z",
            "survey_type": "nps",
            "score": 7,
        },
        # Not a whole number: sent as it is, so the processor rejects it (never rounded).
        {
            "event_id": "s3",
            "customer_id": "c3",
            "occurred_at": "2026-11-02T09:00:00Z",
            "schema_version": 1,
            "survey_type": "nps",
            "score": "9.0",
        },
    ]


# ------------------------------------------------------------------------ (2) dry run

BIG = "x" * 70_000
BAD_ROWS_CSV = (
    "type,event_id,customer_id,occurred_at,order_id,amount,currency,survey_type,score,channel\n"
    "purchase,e1,c1,2026-11-02T09:00:00Z,o1,19.99,USD,,,\n"  # 2 ok
    "purchase,e2,c2,2026-11-02T09:00:00Z,o2,19.99,EUR,,,\n"  # 3 wrong currency
    "purchase,e3,c3,2026-11-02T09:00:00,o3,5.00,USD,,,\n"  # 4 naive timestamp
    "purchase,e4,,2026-11-02T09:00:00Z,o4,5.00,USD,,,\n"  # 5 missing customer_id
    "survey,e5,c5,2026-11-02T09:00:00Z,,,,nps,nine,\n"  # 6 non-numeric score
    f"signup,e6,c6,2026-11-02T09:00:00Z,,,,,,{BIG}\n"  # 7 over 64 KiB
    "purchase,e7,c7,2026-11-02T09:00:00Z,o7,12.34567,USD,,,\n"  # 8 five decimal places
    "purchase,e8,c8,2026-11-02,o8,1.00,USD\n"  # 9 date only (and a short row)
    "refund,e9,c9,2026-11-02T09:00:00Z,,,,,,\n"  # 10 no such event type
    "survey,e10,c10,2026-11-02T09:00:00Z,,,,csat,5,\n"  # 11 ok
    "survey,e11,c11,2026-11-02T09:00:00Z,,,,nps,11,\n"  # 12 out of range
    "purchase,e1,c1,2026-11-02T09:00:00Z,o1,19.99,USD,,,\n"  # 13 ok, a repeated id
    'purchase,e12,c12,2026-11-02T09:00:00Z,o12,"12,50",USD,,,\n'  # 14 malformed amount
    "survey,e13,c13,2026-11-02T09:00:00Z,,,,nps,9.0,\n"  # 15 not an integer
    "signup,e14,c14,2026-11-02T09:00:00Z,,,,,,web\n"  # 16 ok
)
BAD_ROWS = {
    (3, "purchase", "wrong_currency", "currency"),
    (4, "purchase", "naive_timestamp", "occurred_at"),
    (5, "purchase", "missing_field", "customer_id"),
    (6, "survey", "invalid_field", "score"),
    (7, "signup", "too_large", "—"),
    (8, "purchase", "invalid_field", "amount"),
    (9, "purchase", "invalid_field", "occurred_at"),
    (10, "—", "unknown_event_type", "type"),
    (12, "survey", "invalid_field", "score"),
    (14, "purchase", "invalid_field", "amount"),
    (15, "survey", "invalid_field", "score"),
}


def test_dry_run_reports_exactly_the_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad-rows.csv"
    path.write_text(BAD_ROWS_CSV)
    source = source_of(path, "--type-column", "type")

    report = dry_run(source, reporting_currency="USD")

    found = {(r.line, r.event_type or "—", r.reason, r.field or "—") for r in report.rejected}
    assert found == BAD_ROWS
    assert report.rejected_total == len(BAD_ROWS)
    assert report.records == 15
    assert report.unroutable == 1
    assert report.duplicates == 1  # line 13 repeats e1: accepted, but worth a warning
    assert {t: (c.accepted, c.rejected) for t, c in report.totals.items() if c.records} == {
        "purchase": (2, 6),
        "survey": (1, 3),
        "signup": (1, 1),
    }
    assert report.by_reason == Counter(
        {
            "invalid_field": 6,
            "wrong_currency": 1,
            "naive_timestamp": 1,
            "missing_field": 1,
            "too_large": 1,
            "unknown_event_type": 1,
        }
    )
    # The oversized value is measured, never echoed.
    too_large = next(r for r in report.rejected if r.reason == "too_large")
    assert BIG not in too_large.message


def test_dry_run_command_lists_the_bad_rows_and_exits_1(
    kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kpi_env / "bad-rows.csv"
    path.write_text(BAD_ROWS_CSV)

    code = main(["replay", str(path), "--type-column", "type", "--dry-run"])

    out = capsys.readouterr().out
    assert code == 1
    assert rejected_rows_in(out) == BAD_ROWS
    assert "11 record(s) would be rejected" in out
    assert "repeat an earlier event_id" in out


def test_dry_run_max_rows_limits_the_listing_not_the_count(
    kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kpi_env / "bad-rows.csv"
    path.write_text(BAD_ROWS_CSV)

    code = main(["replay", str(path), "--type-column", "type", "--dry-run", "--max-rows", "3"])

    out = capsys.readouterr().out
    assert code == 1
    assert {row[0] for row in rejected_rows_in(out)} == {3, 4, 5}
    assert "... and 8 more" in out


def test_dry_run_of_a_clean_csv_exits_0(kpi_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = kpi_env / "orders.csv"
    path.write_text(
        "id,cust_id,created,total\n"
        "o1,c1,2026-11-02T09:15:00Z,19.99\n"
        "o2,c2,2026-11-02T09:16:00+09:00,1000000000\n"
    )
    argv = ["replay", str(path), "--event-type", "purchase", "--dry-run"]
    argv += ["--map", "customer_id=cust_id", "--map", "occurred_at=created"]
    argv += ["--map", "amount=total", "--map", "order_id=id", "--set", "currency=USD"]

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Every record would be accepted." in out
    assert rejected_rows_in(out) == set()


def test_dry_run_uses_the_reporting_currency_setting(
    kpi_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kpi_env / "orders.csv"
    path.write_text(
        "order_id,customer_id,occurred_at,amount,currency\no1,c1,2026-11-02T09:15:00Z,5,EUR\n"
    )
    argv = ["replay", str(path), "--event-type", "purchase", "--dry-run"]
    assert main(argv) == 1
    assert rejected_rows_in(capsys.readouterr().out) == {
        (2, "purchase", "wrong_currency", "currency")
    }
    monkeypatch.setenv("KPI_REPORTING_CURRENCY", "EUR")
    assert main(argv) == 0


def _line(event_type: str, key: str | None, **value: Any) -> bytes:
    return orjson.dumps({"event_type": event_type, "key": key, "value": value}) + b"\n"


def _b64_line(event_type: str, key: str | None, raw: bytes | None) -> bytes:
    encoded = base64.b64encode(raw).decode() if raw is not None else None
    return orjson.dumps({"event_type": event_type, "key": key, "value_b64": encoded}) + b"\n"


SIGNUP = {"event_id": "s1", "customer_id": "c1", "occurred_at": "2026-11-02T09:00:00Z"}

JSONL_LINES = [
    _line("signup", "c1", **SIGNUP),  # 1 ok
    b"\n",  # 2 blank: skipped, but still counted as a line
    b"this is not json\n",  # 3
    orjson.dumps({"event_type": "refund", "key": "c1", "value": SIGNUP}) + b"\n",  # 4
    _b64_line("signup", "c1", b'{"event_id": "x", '),  # 5
    _b64_line("signup", "c1", b"\xff\xfe{}"),  # 6
    orjson.dumps({"event_type": "signup", "key": "c1", "value": [1, 2]}) + b"\n",  # 7
    _line("signup", "someone-else", **{**SIGNUP, "event_id": "s8"}),  # 8
    _b64_line("signup", "c1", None),  # 9
    _line("signup", "c1", **{**SIGNUP, "event_id": "s10", "schema_version": 2}),  # 10
    b'{"event_type": "signup", "key": "c1", "value_b64": 123}\n',  # 11
    _line(
        "purchase",
        "c1",
        event_id="p1",
        customer_id="c1",
        occurred_at="2026-11-02T09:00:00Z",
        order_id="o1",
        amount="5.00",
        currency="GBP",
    ),  # 12
    _line("signup", None, **{**SIGNUP, "event_id": "s13", "customer_id": "c13"}),  # 13 ok
    _line("signup", "c1", **SIGNUP),  # 14 ok, repeats s1
]
JSONL_BAD = {
    (3, "—", "invalid_line", "—"),
    (4, "—", "invalid_line", "—"),
    (5, "signup", "invalid_json", "—"),
    (6, "signup", "invalid_encoding", "—"),
    (7, "signup", "not_an_object", "—"),
    (8, "signup", "key_mismatch", "customer_id"),
    (9, "signup", "empty_message", "—"),
    (10, "signup", "unknown_schema_version", "schema_version"),
    (11, "—", "invalid_line", "—"),
    (12, "purchase", "wrong_currency", "currency"),
}


def test_jsonl_dry_run_reports_exactly_the_bad_lines(
    kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kpi_env / "events.jsonl"
    path.write_bytes(b"".join(JSONL_LINES))

    report = dry_run(source_of(path), reporting_currency="USD")
    found = {(r.line, r.event_type or "—", r.reason, r.field or "—") for r in report.rejected}
    assert found == JSONL_BAD
    assert report.duplicates == 1
    assert report.totals["signup"].accepted == 3

    assert main(["replay", str(path), "--dry-run"]) == 1
    assert rejected_rows_in(capsys.readouterr().out) == JSONL_BAD


def test_jsonl_dry_run_of_a_clean_log_exits_0(
    kpi_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kpi_env / "events.jsonl"
    path.write_bytes(JSONL_LINES[0] + JSONL_LINES[12])
    assert main(["replay", str(path), "--dry-run"]) == 0
    assert "Every record would be accepted." in capsys.readouterr().out


def test_a_null_key_is_replaced_by_the_customer_id(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(JSONL_LINES[12])
    (record,) = records(source_of(path))
    assert record.key == b"c13"


# ------------------------------------------------------------------- (3) bad options


@pytest.mark.parametrize(
    ("file_name", "content", "extra", "message"),
    [
        ("e.jsonl", b"", ["--event-type", "signup"], "--event-type applies only to CSV"),
        ("e.jsonl", b"", ["--map", "customer_id=c"], "--map applies only to CSV"),
        ("e.jsonl", b"", ["--delimiter", "tab"], "--delimiter applies only to CSV"),
        ("e.jsonl", b"", ["--set", "currency=USD", "--type-column", "t"], "--set apply only"),
        ("e.csv", b"customer_id\n", [], "a CSV needs --event-type TYPE or --type-column COL"),
        ("e.csv", b"a,b\n", ["--event-type", "signup", "--map", "customer_id=c"], "'c' not in"),
        ("e.csv", b"a\n", ["--event-type", "signup", "--map", "colour=a"], "unknown event field"),
        ("e.csv", b"", ["--event-type", "signup"], "is empty: a CSV needs a header row"),
        ("e.csv", b"a\n", ["--event-type", "signup", "--type-map", "x=signup"], "type column"),
        ("e.csv", b"t\n", ["--type-column", "t", "--type-map", "x=refund"], "'refund' is not"),
        ("e.csv", b"a\n", ["--event-type", "signup", "--encoding", "klingon"], "unknown encoding"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(
    kpi_env: Path,
    caplog: pytest.LogCaptureFixture,
    file_name: str,
    content: bytes,
    extra: list[str],
    message: str,
) -> None:
    path = kpi_env / file_name
    path.write_bytes(content)
    assert main(["replay", str(path), "--dry-run", *extra]) == 2
    assert message in caplog.text


@pytest.mark.parametrize("dry_run_flag", [["--dry-run"], []])
@pytest.mark.parametrize("name", ["missing.jsonl", "missing.csv", "a-directory.jsonl"])
def test_an_unreadable_file_exits_2_before_any_send(
    kpi_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    dry_run_flag: list[str],
) -> None:
    (kpi_env / "a-directory.jsonl").mkdir()
    # Nothing answers here: reaching for Kafka would log a broker error instead.
    monkeypatch.setenv("KPI_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    argv = ["replay", str(kpi_env / name), *dry_run_flag]
    if name.endswith(".csv"):
        argv += ["--event-type", "signup"]
    started = time.monotonic()
    assert main(argv) == 2
    assert f"cannot read {kpi_env / name}" in caplog.text
    assert "Kafka" not in caplog.text
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "extra",
    [
        ["--event-type", "refund"],
        ["--event-type", "signup", "--type-column", "t"],
        ["--rate", "0"],
        ["--rate", "fast"],
        ["--batch-size", "-1"],
        ["--max-rows", "-2"],
        ["--map", "no-equals-sign"],
        ["--format", "xml"],
    ],
)
def test_invalid_option_values_are_usage_errors(
    kpi_env: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(kpi_env / "e.csv"), *extra])
    assert exit_info.value.code == 2
    assert "kpi replay: error:" in capsys.readouterr().err


# ------------------------------------------------------- (4) the real embedded broker


async def _consume(
    settings: Settings, count: int, timeout_s: float = 60.0
) -> list[tuple[str, bytes | None, bytes | None, int]]:
    consumer = AIOKafkaConsumer(
        *input_topics(settings).values(),
        auto_offset_reset="earliest",
        group_id=None,
        **aiokafka_options(settings),
    )
    await consumer.start()
    received: list[tuple[str, bytes | None, bytes | None, int]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(received) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                received.extend((m.topic, m.key, m.value, m.timestamp) for m in messages)
        # Anything beyond the expected count would be a duplicate send: look a little longer.
        extra = await consumer.getmany(timeout_ms=1000)
        for messages in extra.values():
            received.extend((m.topic, m.key, m.value, m.timestamp) for m in messages)
    finally:
        await consumer.stop()
    return received


@pytest.fixture
def broker_env(kpi_env: Path, broker: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """KPI_* variables for ``kpi replay`` against the session broker, on fresh topics."""
    prefix = unique_name("rp") + "."
    app_id = unique_name("replay")
    monkeypatch.setenv("KPI_KAFKA_BOOTSTRAP_SERVERS", broker)
    monkeypatch.setenv("KPI_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("KPI_APP_ID", app_id)
    monkeypatch.setenv("KPI_TOPIC_PARTITIONS", "4")
    return Settings(
        kafka_bootstrap_servers=broker, topic_prefix=prefix, app_id=app_id, topic_partitions=4
    )


@pytest.mark.integration
def test_jsonl_replay_delivers_every_record_byte_identical_and_keyed(
    broker_env: Settings, kpi_env: Path
) -> None:
    settings = broker_env
    config = SimulationConfig(
        seed=7,
        customers=60,
        duration=timedelta(days=3),
        events_target=400,
        inject_bad=0.05,
        # Churnier than the default population, so that cancellations are among the topics.
        behaviour=Behaviour(churn_rate=0.02),
    )
    logged = list(generate(config))
    path = kpi_env / "events.jsonl"
    with path.open("wb") as handle:
        write_log(logged, handle)
        # A keyless line: replay keys it by the value's customer_id.
        handle.write(_line("signup", None, **{**SIGNUP, "event_id": "k1", "customer_id": "c-k"}))
    on_disk = [LogRecord.from_line(line) for line in path.read_bytes().splitlines()]

    assert main(["replay", str(path)]) == 0

    received = asyncio.run(_consume(settings, len(on_disk)))
    topics = input_topics(settings)
    want = Counter(
        (topics[r.event_type], r.key if r.key is not None else b"c-k", r.value) for r in on_disk
    )
    got = Counter((topic, key, value) for topic, key, value, _ in received)
    assert len(received) == len(on_disk)
    assert got == want
    assert {topic for topic, _, _ in got} == set(topics.values())
    # Every message that is a valid event is keyed by its customer id, except the faults
    # the simulator injects on purpose (key_mismatch keeps its wrong key).
    by_topic = {topic: event_type for event_type, topic in topics.items()}
    keyed = mismatched = 0
    for topic, key, value, _ in received:
        parsed = parse_event(by_topic[topic], value, None)
        if isinstance(parsed, Rejection):
            continue
        if key == parsed.customer_id.encode():
            keyed += 1
        else:
            mismatched += 1
    assert keyed > 300
    assert mismatched == sum(
        1
        for r in logged
        if not isinstance(p := parse_event(r.event_type, r.value, None), Rejection)
        and r.key != p.customer_id.encode()
    )


@pytest.mark.integration
def test_csv_replay_sends_each_row_to_its_topic_keyed_by_customer(
    broker_env: Settings, kpi_env: Path
) -> None:
    settings = broker_env
    path = kpi_env / "crm-export-2026-11-02.csv"
    path.write_text(MIXED_CSV)
    expected = [item for item in source_of(path, *MIXED_OPTIONS) if isinstance(item, ReplayRecord)]
    assert len(expected) == 6

    # The unroutable 'refund' row is skipped: everything else is sent, and the exit says 1.
    assert main(["replay", str(path), *MIXED_OPTIONS]) == 1

    received = asyncio.run(_consume(settings, len(expected)))
    topics = input_topics(settings)
    assert Counter((t, k, v) for t, k, v, _ in received) == Counter(
        (topics[r.event_type], r.key, r.value) for r in expected
    )
    for topic, key, value, _ in received:
        assert key is not None
        assert orjson.loads(value or b"")["customer_id"].encode() == key
        assert topic != topics["signup"] or key == b"c-1"


@pytest.mark.integration
def test_rate_spaces_the_records_out(broker_env: Settings, kpi_env: Path) -> None:
    settings = broker_env
    path = kpi_env / "slow.jsonl"
    path.write_bytes(
        b"".join(
            _line("signup", f"c{i}", **{**SIGNUP, "event_id": f"r{i}", "customer_id": f"c{i}"})
            for i in range(10)
        )
    )
    started = time.monotonic()
    assert main(["replay", str(path), "--rate", "5"]) == 0
    elapsed = time.monotonic() - started

    received = asyncio.run(_consume(settings, 10))
    assert len(received) == 10
    # At 5 per second the 10th record is due 1.8 s after the first. Generous lower bounds
    # only: a shared machine makes everything slower, never faster.
    assert elapsed >= 1.5
    stamps = sorted(timestamp for _, _, _, timestamp in received)
    assert stamps[-1] - stamps[0] >= 1500


@pytest.mark.integration
def test_a_replayed_csv_is_processed_without_losing_anything(
    stack: StackEnv, monkeypatch: pytest.MonkeyPatch, kpi_env: Path
) -> None:
    """Signups and purchases from CSV exports reach the KPIs; the bad row is dead-lettered."""
    for name, value in stack.env().items():
        if name.startswith("KPI_"):
            monkeypatch.setenv(name, value)
    settings = Settings(
        app_id=stack.app_id,
        topic_prefix=stack.prefix,
        kafka_bootstrap_servers=stack.bootstrap,
        topic_partitions=4,
    )
    customers = kpi_env / "customers-2026-11-01.csv"
    customers.write_text(
        "cust_id,signed_up_at,country\n"
        + "".join(f"c{i},2026-11-01T0{i}:00:00Z,EU\n" for i in range(1, 6))
    )
    orders = kpi_env / "orders-2026-11-02.csv"
    orders.write_text(
        "id,cust_id,created,total,cur\n"
        "o1,c1,2026-11-02T09:00:00Z,19.99,USD\n"
        "o2,c1,2026-11-02T10:00:00Z,0.01,USD\n"
        "o3,c2,2026-11-02T11:00:00Z,1000.0050,USD\n"
        "o4,c3,2026-11-02T12:00:00Z,5.0050,USD\n"
        "o5,c4,2026-11-02T13:00:00Z,7.00,EUR\n"
    )
    signup_map = ["--map", "customer_id=cust_id", "--map", "occurred_at=signed_up_at"]
    signup_map += ["--map", "region=country"]
    order_map = ["--event-type", "purchase", "--map", "customer_id=cust_id"]
    order_map += ["--map", "occurred_at=created", "--map", "amount=total"]
    order_map += ["--map", "order_id=id", "--map", "currency=cur"]
    assert main(["replay", str(customers), "--event-type", "signup", *signup_map]) == 0
    assert main(["replay", str(orders), *order_map]) == 0
    # The worker publishes to a Redis database of its own (this test reads the snapshots from
    # Kafka): the engine tests compare every kpi:* key of database 13 with what they expect.
    redis_url = stack.redis_url.rsplit("/", 1)[0] + "/15"
    client = redis.Redis.from_url(redis_url)
    keys_before = set(client.keys("*"))
    worker = stack.start_worker(KPI_REDIS_URL=redis_url)
    try:
        snapshot, dead = asyncio.run(_wait_for_kpis(settings, worker_alive=worker.popen.poll))
    finally:
        worker.stop()
        new_keys = set(client.keys("*")) - keys_before
        if new_keys:
            client.delete(*new_keys)
        client.close()

    assert snapshot is not None, worker.log_tail()
    assert snapshot["new_customers"] == 5
    assert snapshot["orders"] == 4
    assert snapshot["revenue"] == "1025.01"  # 19.99 + 0.01 + 1000.0050 + 5.0050, exact
    assert snapshot["purchasing_customers"] == 3
    assert snapshot["repeat_customers"] == 1
    # Exactly one input message is dead-lettered, with its original bytes. Compared as a set
    # of source positions: the worker may write the same dead letter more than once (seen on
    # a fresh start: the customer stage re-reads its first batch), which loses nothing.
    assert {
        (d["source_topic"], d["source_offset"], d["reason"], base64.b64decode(d["value_b64"]))
        for d in dead
    } == {
        (
            settings.topic("purchases"),
            0,
            "wrong_currency",
            _csv_row_value(orders, order_map, line=6),
        )
    }


def _csv_row_value(path: Path, options: list[str], line: int) -> bytes | None:
    for item in source_of(path, *options):
        if isinstance(item, ReplayRecord) and item.line == line:
            return item.value
    raise AssertionError(f"no record on line {line}")


async def _wait_for_kpis(
    settings: Settings, worker_alive: Any, timeout_s: float = 180.0
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The newest 30d:all snapshot with 4 orders from crm.kpi-updates, and the dead letters."""
    consumer = AIOKafkaConsumer(
        settings.kpi_updates_topic,
        settings.dead_letter_topic,
        auto_offset_reset="earliest",
        group_id=None,
        **aiokafka_options(settings),
    )
    await consumer.start()
    snapshot: dict[str, Any] | None = None
    dead: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (snapshot is None or not dead):
            assert worker_alive() is None, "the worker exited"
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                for m in messages:
                    data = orjson.loads(m.value or b"")
                    if m.topic == settings.dead_letter_topic:
                        dead.append(data)
                    elif m.key == b"30d:all" and data["orders"] == 4:
                        snapshot = data
        # A late extra dead letter would show up here.
        batch = await consumer.getmany(timeout_ms=2000)
        for messages in batch.values():
            dead.extend(
                orjson.loads(m.value or b"")
                for m in messages
                if m.topic == settings.dead_letter_topic
            )
    finally:
        await consumer.stop()
    return snapshot, dead
