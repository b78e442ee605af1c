"""Layering held by tests: imports point one way, tools stay out of the worker, one keys module.

Imports are read from the source (AST), so an import inside a function counts as much as
one at the top; the worker's import graph is measured in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stream_app"
KEYS_MODULE = PACKAGE / "redis_keys.py"

# Literals that start like a Redis name but are none, each with what it is instead.
NOT_REDIS_NAMES = {
    # The Kafka output topics (before KPI_TOPIC_PREFIX), named with the other topics.
    ("settings.py", "kpi-updates"),
    ("settings.py", "kpi-alerts"),
    ("settings.py", "kpi-cohorts"),
    # The temporary directory of a benchmark run.
    ("bench/cli.py", "kpi-bench-"),
}
# ``kpi:`` or ``kpi-`` then a name, or the end of an f-string part; not ``kpi: message``.
REDIS_NAME = re.compile(r"^kpi[:-](?!\s)")


def modules(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py")) if under.is_dir() else [under]


def imported(source: str, package: str) -> Iterator[str]:
    """Every module ``source`` imports, at any depth of its code; relative ones resolved
    against ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def imports_of(paths: list[Path], forbidden: str) -> list[str]:
    found = []
    for path in paths:
        package = ".".join(path.relative_to(ROOT).parts[:-1])
        for name in imported(path.read_text(), package):
            if name == forbidden or name.startswith(forbidden + "."):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_the_customer_stage_does_not_import_alerts() -> None:
    found = modules(PACKAGE / "customers")
    assert len(found) >= 3
    assert imports_of(found, "stream_app.alerts") == []


def test_the_web_does_not_import_the_terminal_view() -> None:
    found = modules(PACKAGE / "dashboard") + modules(PACKAGE / "web.py")
    assert len(found) >= 5
    assert imports_of(found, "stream_app.watch") == []


def test_the_import_scan_sees_relative_and_nested_imports() -> None:
    # The two tests above pass only because this scan would have seen a violation.
    source = "from ..watch import view\ndef f():\n    import stream_app.watch.cli\n"
    names = list(imported(source, "stream_app.dashboard"))
    assert "stream_app.watch.view" in names
    assert "stream_app.watch.cli" in names


WORKER_IMPORTS = """
import json, sys
import stream_app.cli as cli

ran = []
cli.cmd_worker = lambda settings, args: ran.append(args.command) or 0
status = cli.main(["worker"])
# What cmd_worker imports before it starts Faust.
import faust
import stream_app.alerts.rules
import stream_app.app
print(json.dumps({"status": status, "ran": ran, "modules": sorted(sys.modules)}))
"""
TOOLS = (
    "stream_app.bench",
    "stream_app.simulate",
    "stream_app.verify",
    "stream_app.alerts.fprate",
    "stream_app.replay",
    "stream_app.watch",
    "stream_app.forget",
    "stream_app.lifecycle.evaluate",
)


def test_the_worker_does_not_load_the_tools() -> None:
    out = subprocess.run(
        [sys.executable, "-c", WORKER_IMPORTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["status"], report["ran"]) == (0, ["worker"])
    loaded = report["modules"]
    assert "stream_app.app" in loaded
    tools = [m for m in loaded if any(m == t or m.startswith(t + ".") for t in TOOLS)]
    assert tools == []


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def redis_names(path: Path) -> list[str]:
    """String constants and f-string parts of ``path`` that look like a Redis name."""
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and id(node) not in skip and REDIS_NAME.match(text):
            found.append(text)
    return found


def test_only_the_keys_module_spells_out_redis_names() -> None:
    stray = []
    for path in modules(PACKAGE):
        if path == KEYS_MODULE:
            continue
        where = path.relative_to(PACKAGE).as_posix()
        stray += [
            f"{where}: {name!r}"
            for name in redis_names(path)
            if (where, name) not in NOT_REDIS_NAMES
        ]
    assert stray == []


def test_the_keys_module_holds_the_contract_names() -> None:
    names = redis_names(KEYS_MODULE)
    for name in ("kpi:", "kpi-history:", "kpi-updates:", "kpi-updates", "kpi-alerts"):
        assert name in names


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('key = f"kpi:{window}:{segment}"', ["kpi:"]),
        ('STREAM = "kpi-updates"', ["kpi-updates"]),
        ('"""Writes kpi:<window>:<segment>."""\nmessage = f"kpi: {error}"', []),
    ],
)
def test_the_name_scan_sees_literals_and_f_strings(
    tmp_path: Path, source: str, expected: list[str]
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert redis_names(probe) == expected
