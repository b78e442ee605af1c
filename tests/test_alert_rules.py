"""Alert rules files: TOML and YAML, validated, errors that say where; bad files stop the worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.alerts.rules import RulesError, ThresholdRule, load_rules, parse_rules

WINDOWS = ["1h", "24h", "7d", "30d"]

VALID_TOML = """\
# Ops alert rules
[[rules]]
name = "nps-low"
kpi = "nps"
window = "7d"
segment = "region:*"
op = "<"
value = 20
min_volume = 30
description = "NPS of a region under 20 over a week"

[[rules]]
name = "campaign-conversion"
kpi = "conversion_rate"
window = "24h"
segment = "campaign:*"
op = "<"
value = 0.01
min_volume = 200
severity = "critical"
grace = "2h"

[[rules]]
name = "aov-drop"
kpi = "aov"
window = "24h"
op = "<="
value = 12.5
"""

VALID_YAML = """\
# Ops alert rules
rules:
  - name: nps-low
    kpi: nps
    window: 7d
    segment: "region:*"
    op: "<"
    value: 20
    min_volume: 30
    description: NPS of a region under 20 over a week
  - name: campaign-conversion
    kpi: conversion_rate
    window: 24h
    segment: "campaign:*"
    op: "<"
    value: 0.01
    min_volume: 200
    severity: critical
    grace: 2h
  - name: aov-drop
    kpi: aov
    window: 24h
    op: "<="
    value: 12.5
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_valid_toml_file(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, "alerts.toml", VALID_TOML), WINDOWS)
    assert [r.name for r in rules] == ["nps-low", "campaign-conversion", "aov-drop"]
    nps, conversion, aov = rules
    assert (nps.kpi, nps.window, nps.segment, nps.op, nps.value) == (
        "nps",
        "7d",
        "region:*",
        "<",
        20,
    )
    assert nps.volume_metric == "nps_responses"
    assert nps.severity == "warning"
    assert conversion.volume_metric == "clicks"
    assert conversion.grace is not None
    assert conversion.grace.total_seconds() == 7200
    assert conversion.severity == "critical"
    assert aov.segment == "all"
    assert aov.volume_metric == "orders"
    # Which segments each rule watches.
    assert nps.matches("region:EU", "segment")
    assert not nps.matches("all", "segment")
    assert conversion.matches("campaign:spring-sale", "campaign")
    assert not conversion.matches("region:EU", "segment")
    # Comparisons, money as exact decimals, and no value means no verdict.
    assert nps.breached(19.9) is True
    assert nps.breached(20.0) is False
    assert aov.breached("12.50") is True
    assert aov.breached("12.51") is False
    assert conversion.breached(None) is None


def test_yaml_says_the_same(tmp_path: Path) -> None:
    toml = load_rules(write(tmp_path, "a.toml", VALID_TOML), WINDOWS)
    for name in ("a.yaml", "a.yml"):
        assert load_rules(write(tmp_path, name, VALID_YAML), WINDOWS) == toml


def test_an_empty_file_has_no_rules(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, "none.toml", "# nothing yet\n"), WINDOWS) == ()
    assert load_rules(write(tmp_path, "none.yaml", ""), WINDOWS) == ()


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.toml", '[[rules]]\nname = "x"\nkpi = "nps\nwindow = "7d"\n')
    with pytest.raises(RulesError) as info:
        load_rules(path, WINDOWS)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 3" in message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "rules:\n  - name: a\n   kpi: [\n")
    with pytest.raises(RulesError, match=rf"^{path}:3: not valid YAML"):
        load_rules(path, WINDOWS)


NPS = "rule #1 'nps-low': "


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        ('kpi = "nps"', 'kpi = "nsp"', 4, NPS + "kpi: unknown KPI 'nsp' (did you mean 'nps'?)"),
        (
            'window = "7d"',
            'window = "week"',
            5,
            NPS + "window: unknown window 'week'; configured windows (KPI_WINDOWS): "
            "1h, 24h, 7d, 30d",
        ),
        ('op = "<"\nvalue = 20', 'op = "below"\nvalue = 20', 7, NPS + "op: Input should be"),
        ("value = 20", 'value = "low"', 8, NPS + "value:"),
        ("min_volume = 30", "min_volume = -1", 9, NPS + "min_volume: Input should be greater"),
        ("min_volume = 30", "min_volum = 30", 9, NPS + "min_volum: unknown key (did you mean"),
        ('segment = "region:*"', 'segment = "country:*"', 6, NPS + "segment: 'country:*' is not"),
        (
            'segment = "region:*"',
            'segment = "campaign:*"',
            2,
            NPS + "KPI 'nps' is not published for segments like 'campaign:*'",
        ),
        (
            'name = "aov-drop"',
            'name = "nps-low"',
            24,
            "rule #3 'nps-low': name: already used by rule #1; names must be unique",
        ),
        ('name = "aov-drop"', 'name = "churn_spike"', 24, "rule #3 'churn_spike': name:"),
        ('name = "aov-drop"\n', "", 23, "rule #3: name: required key is missing"),
        ('grace = "2h"', 'grace = "60d"', 21, "rule #2 'campaign-conversion': grace: must be"),
    ],
)
def test_an_invalid_rule_names_file_line_and_rule(
    tmp_path: Path, old: str, new: str, line: int, expected: str
) -> None:
    assert old in VALID_TOML
    path = write(tmp_path, "alerts.toml", VALID_TOML.replace(old, new, 1))
    with pytest.raises(RulesError) as info:
        load_rules(path, WINDOWS)
    message = str(info.value)
    assert message.startswith("invalid alert rules:\n  ")
    assert f"{path}:{line}: {expected}" in message, message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = VALID_TOML.replace('kpi = "nps"', 'kpi = "nsp"').replace(
        'window = "24h"\nop = "<="', 'window = "2d"\nop = "<="'
    )
    with pytest.raises(RulesError) as info:
        load_rules(write(tmp_path, "two.toml", text), WINDOWS)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 2
    assert ":4: rule #1 'nps-low': kpi:" in lines[0]
    assert ":26: rule #3 'aov-drop': window:" in lines[1]


def test_yaml_errors_have_lines_too(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", VALID_YAML.replace("kpi: aov", "kpi: aovv"))
    with pytest.raises(RulesError, match=rf"{path}:21: rule #3 'aov-drop': kpi: unknown KPI"):
        load_rules(path, WINDOWS)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("rules.json", "{}", "end in .toml, .yaml or .yml"),
        ("missing.toml", None, "cannot read the rules file"),
        ("list.yaml", "- 1\n- 2\n", "must be a table with a 'rules' list"),
        ("top.toml", 'rule = "x"\n', ":1: rule: unknown key"),
        ("rules.toml", 'rules = "x"\n', "rules: Input should be a valid"),
    ],
)
def test_unusable_files(tmp_path: Path, name: str, text: str | None, expected: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(RulesError, match=str(path)) as info:
        load_rules(path, WINDOWS)
    assert expected in str(info.value)


def test_parse_rules_without_a_file() -> None:
    rules = parse_rules(VALID_TOML, fmt="toml", source="inline")
    assert all(isinstance(rule, ThresholdRule) for rule in rules)


def test_the_worker_refuses_a_bad_rules_file_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.toml"
    bad.write_text(VALID_TOML.replace('window = "7d"', 'window = "7days"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env["KPI_ALERT_RULES_FILE"] = str(bad)
    # Nothing listens there: the check must come before any wait for Kafka.
    env["KPI_KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:9"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "stream_app", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert f"{bad}:5: rule #1 'nps-low': window: unknown window '7days'" in done.stderr
    assert time.monotonic() - started < 30


def test_the_check_rules_command(tmp_path: Path) -> None:
    good = write(tmp_path, "good.toml", VALID_TOML)
    bad = write(tmp_path, "bad.yaml", VALID_YAML.replace('op: "<="', 'op: "=<"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    ok = subprocess.run(
        [sys.executable, "-m", "stream_app.alerts", "check-rules", str(good)],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "3 rule(s) valid" in ok.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "stream_app.alerts", "check-rules", str(bad)],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 2
    assert f"{bad}:23: rule #3 'aov-drop': op:" in failed.stderr
