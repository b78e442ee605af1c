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
from stream_app.kpis import formulas

ROOT = Path(__file__).resolve().parent.parent
COMPILED = (formulas, rules)


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
