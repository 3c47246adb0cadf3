"""The one way the node opens a SQLite database: private files, whatever the umask.

SQLite creates a database's ``-wal`` and ``-shm`` files with the mode of the database file
itself, so creating the database 0600 before SQLite opens it makes all three private. Files
left 0644 by older firmware are tightened here, once, when the database is opened. Pragmas and
schemas stay with each store (they differ: the channel store fsyncs every commit, the chain
index does not).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from eschaton.store.private import make_dirs, tighten, touch_private

_SIDE_FILES = ("-wal", "-shm", "-journal")


def connect(path: Path | str, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(path, **kwargs)`` with the files 0600 (and a missing directory made
    0700; an existing one is its owner's to set)."""
    p = Path(path)
    make_dirs(p.parent)
    touch_private(p)
    for suffix in _SIDE_FILES:
        tighten(p.with_name(p.name + suffix))
    conn: sqlite3.Connection = sqlite3.connect(str(p), **kwargs)
    return conn
