"""Files of entries (``[[rules]]``, ``[[bands]]``) checked with pydantic: errors with line numbers.

tomllib and PyYAML parse without keeping positions, and pydantic reports where a problem is
as a path (``("bands", 2, "low")``). ``Lines`` maps such a path back to the line where that
entry, or that key of it, starts; ``describe`` turns a ``ValidationError`` into one line per
problem, each naming the file, the line, the entry and the key. The alert rules file and the
benchmark profiles use the same code, so their errors read alike.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def read_text(path: Path, what: str, error: type[Exception]) -> str:
    """A UTF-8 file's text; ``error`` says why it cannot be had (``what``: "the rules file")."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None


def suggest(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match among ``choices``, else empty."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Lines:
    """Where each entry of the list ``table`` (and each key of it) starts in the file, 1-based."""

    def __init__(
        self, table: str, entries: list[int], keys: list[dict[str, int]], top: dict[str, int]
    ) -> None:
        self.table = table
        self.entries = entries
        self.keys = keys
        self.top = top

    def of(self, loc: tuple[int | str, ...]) -> int | None:
        if not loc:
            return None
        if loc[0] != self.table or len(loc) < 2 or not isinstance(loc[1], int):
            return self.top.get(str(loc[0]))
        index = loc[1]
        if index >= len(self.entries):
            return self.top.get(self.table)
        if len(loc) >= 3:
            line = self.keys[index].get(str(loc[2]))
            if line is not None:
                return line
        return self.entries[index]


def toml_lines(text: str, table: str) -> Lines:
    """The lines of a TOML file whose entries are ``[[table]]`` tables (inline values only)."""
    header = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]\s*(#.*)?$")
    entries: list[int] = []
    keys: list[dict[str, int]] = []
    top: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            entries.append(number)
            keys.append({})
            continue
        match = _KEY.match(line)
        if match:
            target = keys[-1] if keys else top
            target.setdefault(match.group(1), number)
        elif line.strip().startswith("[") and not keys:
            top.setdefault(line.strip().strip("[]").strip(), number)
    return Lines(table, entries, keys, top)


@dataclass(frozen=True)
class Vocabulary:
    """How a kind of file names its parts in error messages."""

    title: str  # "invalid alert rules"
    table: str  # "rules": the key of the list of entries
    entry: str  # "rule": one entry, as in "rule #2 'nps-low'"
    entry_keys: tuple[str, ...]  # the keys an entry may have
    top_keys: tuple[str, ...]  # the keys the file may have
    nested_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # of sub-tables
    label_key: str = "name"  # the key that names an entry in messages


def describe(
    exc: ValidationError, data: Mapping[str, Any], lines: Lines, source: str, words: Vocabulary
) -> str:
    """One line per problem: ``file:line: entry #n 'name': key: message``."""
    raw_entries = data.get(words.table)
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        line = lines.of(loc)
        where = f"{source}:{line}" if line is not None else source
        subject = ""
        key = ".".join(str(part) for part in loc)
        if len(loc) >= 2 and loc[0] == words.table and isinstance(loc[1], int):
            index = loc[1]
            name = None
            if isinstance(raw_entries, list) and index < len(raw_entries):
                item = raw_entries[index]
                if isinstance(item, Mapping):
                    name = item.get(words.label_key)
            subject = f"{words.entry} #{index + 1}" + (
                f" {name!r}" if isinstance(name, str) else ""
            )
            key = ".".join(str(part) for part in loc[2:])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and loc:
            known: tuple[str, ...] = words.top_keys
            if subject:
                nested = words.nested_keys.get(str(loc[2]), ()) if len(loc) > 3 else ()
                known = words.entry_keys if len(loc) == 3 else nested
            hint = suggest(str(loc[-1]), known) or (
                f"; known keys: {', '.join(known)}" if known else ""
            )
            message = f"unknown key{hint}"
        elif error["type"] == "missing":
            message = "required key is missing"
        parts = [part for part in (subject, key) if part]
        problems.append(f"{where}: {': '.join([*parts, message])}")
    return f"{words.title}:\n  " + "\n  ".join(problems)
