"""A small TOML writer for the tables ``bootconf`` passes through to ``node.toml`` (the standard
library reads TOML but does not write it). Handles what ``tomllib`` returns for a configuration:
strings, integers, floats, booleans, arrays, tables and arrays of tables (no dates)."""
from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else json.dumps(k)


def value(v: Any) -> str:
    """One TOML value (inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are valid TOML basic-string escapes (\uXXXX, \", \\, \n, ...).
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _table(out: list[str], path: list[str], table: dict[str, Any], header: str | None) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)]
    if header is not None and (scalars or not table):
        out.append(header)
    for k, v in scalars:
        out.append(f"{_key(k)} = {value(v)}")
    if scalars or (header is not None and not table):
        out.append("")
    for k, v in table.items():
        sub = [*path, _key(k)]
        if isinstance(v, dict):
            _table(out, sub, v, f"[{'.'.join(sub)}]")
        elif _is_table_array(v):
            for item in v:
                _table(out, sub, item, f"[[{'.'.join(sub)}]]")
                if out[-1] != "":
                    out.append("")


def dumps(doc: dict[str, Any]) -> str:
    """The document as TOML text; ``tomllib.loads(dumps(d)) == d``."""
    out: list[str] = []
    _table(out, [], doc, None)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"
