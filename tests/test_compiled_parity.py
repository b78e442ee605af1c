"""The modules mypyc compiles give exactly what the same source gives interpreted.

setup.py compiles them where a C compiler exists; elsewhere the same files run as Python.
Here each compiled module (when built) and a fresh interpreted copy of its source run the
same random inputs, and every result must be equal.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import random
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from schemas import rules
from schemas.events import Amount, Cost
from stream_app.kpis import formulas, windows

ROOT = Path(__file__).resolve().parent.parent
COMPILED = (windows, formulas, rules)


def _interpreted(module: ModuleType) -> ModuleType:
    """The source of ``module`` loaded as plain Python, beside the (maybe compiled) original."""
    path = str(ROOT / (module.__name__.replace(".", "/") + ".py"))
    loader = importlib.machinery.SourceFileLoader(module.__name__ + "_interpreted", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    copy_of = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = copy_of  # dataclasses look their module up while defined
    loader.exec_module(copy_of)
    return copy_of


PLAIN = {module.__name__: _interpreted(module) for module in COMPILED}


@pytest.mark.parametrize("module", COMPILED, ids=lambda module: module.__name__)
def test_the_install_compiled_the_module(module: ModuleType) -> None:
    # The suite runs on an install with a compiler: a silent fallback would hide a slow worker.
    assert not str(module.__file__).endswith(".py"), module.__file__
    assert str(PLAIN[module.__name__].__file__).endswith(".py")


def _vector(rng: random.Random, width: int = 18) -> list[int]:
    # Mostly zeros, as facts are; both signs and sums past 64 bits.
    return [rng.choice([0, 0, 0, 1, -1, 7, 2**70, -(2**63)]) for _ in range(width)]


@pytest.mark.parametrize("seed", range(20))
def test_window_arithmetic_agrees(seed: int) -> None:
    rng = random.Random(seed)
    plain = PLAIN[windows.__name__]
    for _ in range(50):
        total, delta = _vector(rng), _vector(rng)
        sign = rng.choice([1, -1])
        a, b = list(total), list(total)
        windows.add_into(a, delta, sign)
        plain.add_into(b, delta, sign)
        assert a == b
    points: dict[tuple[str, int], list[int]] = {
        (rng.choice(["all", "region:EU"]), rng.randrange(10**12)): _vector(rng) for _ in range(40)
    }
    step = rng.choice([60_000_000, 3_600_000_000])
    assert windows.coarsen_points(points, step) == plain.coarsen_points(points, step)
    compiled_array, plain_array = windows.DiffArray(), plain.DiffArray()
    for _ in range(30):
        changes = {rng.randrange(-5, 60): _vector(rng) for _ in range(rng.randrange(1, 6))}
        compiled_array.add_vectors({k: list(v) for k, v in changes.items()})
        plain_array.add_vectors({k: list(v) for k, v in changes.items()})
        k = rng.randrange(-5, 70)
        assert compiled_array.value_at(k) == plain_array.value_at(k)
    assert compiled_array.compact(20) == plain_array.compact(20)
    assert list(compiled_array.entries()) == list(plain_array.entries())


@pytest.mark.parametrize("seed", range(10))
def test_kpi_arithmetic_agrees(seed: int) -> None:
    rng = random.Random(seed)
    plain = PLAIN[formulas.__name__]
    for _ in range(500):
        num, den = rng.randrange(-(10**20), 10**20), rng.randrange(1, 10**9)
        value: Any = rng.choice([plain.Rational(num, den), Decimal(num) / Decimal(den), num])
        compiled_value = formulas.Rational(num, den) if isinstance(value, plain.Rational) else value
        assert formulas.money(compiled_value) == plain.money(value)
        assert formulas.ratio(num, den, 100) == plain.ratio(num, den, 100)


def _text(rng: random.Random) -> str:
    alphabet = "0123456789.-+ _eEaZ\u00e9\u0085\x07\u0660"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 14)))


def _outcome(function: Any, *args: Any) -> Any:
    # Each copy raises its own RuleError class: compare what they say.
    try:
        return ("ok", function(*args))
    except ValueError as exc:
        return (type(exc).__name__, getattr(exc, "reason", None), getattr(exc, "phrase", None))


@pytest.mark.parametrize("seed", range(10))
def test_field_rules_agree(seed: int) -> None:
    rng = random.Random(seed)
    plain = PLAIN[rules.__name__]
    for _ in range(2_000):
        text = _text(rng)
        for kind, places, exclusive in ((Amount, 4, True), (Cost, 6, False)):
            args = (kind, text, places, exclusive)
            assert _outcome(rules.money, *args) == _outcome(plain.money, *args), text
        assert _outcome(rules.check_id, text) == _outcome(plain.check_id, text)
        args = (str, text, "unknown")
        assert _outcome(rules.region, *args) == _outcome(plain.region, *args)
