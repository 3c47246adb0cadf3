"""The one configuration error, and how it finds the file, key and line of a mistake.

``tomllib`` reports no positions, so ``find_line`` looks the key up again in the text: the line of
the key itself, else (a required key that is missing) the header of the table that lacks it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eschaton.errors import LocalError

KeyPath = Sequence[str | int]
"""A key inside the document: ``("meter", 1, "pin")`` is ``meter[1].pin``."""


class ConfigError(LocalError):
    """A configuration problem, located by file, key and line."""

    def __init__(self, source: str, key: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.key = key
        self.line = line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def dotted(path: KeyPath) -> str:
    """``("meter", 1, "pin")`` -> ``meter[1].pin``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def find_line(text: str, path: KeyPath) -> int | None:
    """Best-effort line number of ``path`` in TOML ``text`` (tomllib does not report it)."""
    line = _find_line(text, path)
    if line is None and path and isinstance(path[-1], int):
        return _find_line(text, path[:-1])  # an element of an inline array: the key's line
    return line


def _find_line(text: str, path: KeyPath) -> int | None:
    keys = [p for p in path if isinstance(p, str)]
    if not keys:
        return None
    # The table is the path minus its last key; array indices pick the n-th [[table]] header.
    table_parts: list[str] = []
    index: int | None = None
    for p in path[:-1]:
        if isinstance(p, int):
            index = p
        else:
            table_parts.append(p)
    want_table = ".".join(table_parts)
    last = path[-1]
    current = ""
    seen_arrays: dict[str, int] = {}
    current_index: int | None = None
    header_line: int | None = None
    table_line: int | None = None  # the header of the table the key belongs in
    for no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        m = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", stripped) or None
        if m:
            current = m.group(1).replace(" ", "")
            seen_arrays[current] = seen_arrays.get(current, -1) + 1
            current_index = seen_arrays[current]
        else:
            m = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
            if m:
                current = m.group(1).replace(" ", "")
                current_index = None
            else:
                m = None
        if m:
            if isinstance(last, str) and current == ".".join(table_parts + [last]):
                header_line = header_line or no  # the key names a whole table
            if isinstance(last, int) and current == want_table and current_index == last:
                return no
            if want_table and current == want_table and (index is None or current_index == index):
                table_line = table_line or no
            continue
        if current == want_table and (index is None or current_index == index):
            if isinstance(last, str) and re.match(rf"^\s*\"?{re.escape(last)}\"?\s*=", line):
                return no
    return header_line or (table_line if isinstance(last, str) else None)


@dataclass(frozen=True, slots=True)
class ConfigContext:
    """What every section parser shares: the file (for messages) and the node's datadir (relative
    paths hang off it)."""

    source: str
    text: str
    datadir: Path

    def error(self, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(self.source, dotted(path), message, find_line(self.text, path))
