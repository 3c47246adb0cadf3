"""Which datadir a command means when no config file names it."""
from __future__ import annotations

import os
from pathlib import Path

from eschaton.config.defaults import CLIENT_DATADIR


def resolve_datadir(datadir: str | Path | None) -> Path:
    """``--datadir``, else ``$ESCHATON_DATADIR``, else ``defaults.CLIENT_DATADIR``."""
    d = datadir or os.environ.get("ESCHATON_DATADIR") or CLIENT_DATADIR
    return Path(d).expanduser()
