"""Which datadir a command means when no config file names it."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATADIR = "~/.eschaton"


def resolve_datadir(datadir: str | Path | None) -> Path:
    """``--datadir``, else ``$ESCHATON_DATADIR``, else ``~/.eschaton``."""
    d = datadir or os.environ.get("ESCHATON_DATADIR") or DEFAULT_DATADIR
    return Path(d).expanduser()
