"""Typed getters over one TOML table that track which keys were used, so that an unknown key (a
typo) is an error naming its line."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eschaton.config.errors import ConfigContext, ConfigError


class Section:
    """One table of the document at ``path``."""

    def __init__(self, ctx: ConfigContext, path: tuple[str | int, ...], table: Any) -> None:
        self.ctx = ctx
        self.path = path
        if not isinstance(table, dict):
            raise ctx.error(path, "must be a table")
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def err(self, key: str | int, message: str) -> ConfigError:
        return self.ctx.error((*self.path, key), message)

    def raw(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.table.get(key, default)

    def get_str(self, key: str, default: str) -> str:
        v = self.raw(key, default)
        if not isinstance(v, str):
            raise self.err(key, f"must be a string, not {type(v).__name__}")
        return v

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self.err(key, "must be true or false")
        return v

    def get_int(self, key: str, default: int, lo: int, hi: int) -> int:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.err(key, f"must be an integer in {lo}..{hi}")
        return v

    def get_float(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise self.err(key, f"must be a number in {lo}..{hi}")
        return float(v)

    def get_choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        v = self.get_str(key, default)
        if v not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)} (got {v!r})")
        return v

    def get_str_list(self, key: str, default: Sequence[str]) -> tuple[str, ...]:
        v = self.raw(key, list(default))
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err(key, "must be a list of strings")
        return tuple(v)

    def get_path(self, key: str, default: str | None) -> Path | None:
        """A path; relative ones hang off the datadir; empty means none."""
        v = self.raw(key, default)
        if v is None or v == "":
            return None
        if not isinstance(v, str):
            raise self.err(key, "must be a path string")
        p = Path(v)
        return p if p.is_absolute() else self.ctx.datadir / p

    def sub(self, key: str) -> Section:
        return Section(self.ctx, (*self.path, key), self.raw(key, {}))

    def done(self, allowed_extra: Sequence[str] = ()) -> None:
        for key in self.table:
            if key not in self.used and key not in allowed_extra:
                raise self.err(key, "unknown key")
