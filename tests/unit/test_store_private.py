"""``store.private``: modes are 0600/0700 whatever the umask; only the node's own paths are
tightened, never a shared parent directory it did not make."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from eschaton.store import sqlite as store_sqlite
from eschaton.store.private import make_dirs, private_dir, touch_private, write_private


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive: every explicit mode shows
    try:
        os.chmod(tmp_path, 0o755)  # a shared parent, e.g. /var/lib
        made = make_dirs(tmp_path / "a" / "b")
        assert _mode(tmp_path) == 0o755  # not ours: untouched
        assert _mode(tmp_path / "a") == _mode(made) == 0o700
        write_private(made / "port", "1\n")
        assert _mode(made / "port") == 0o600 and (made / "port").read_text() == "1\n"
        db = store_sqlite.connect(made / "x.db", synchronous="FULL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        assert {p.name: _mode(p) for p in made.glob("x.db*")} == {"x.db": 0o600, "x.db-wal": 0o600,
                                                                  "x.db-shm": 0o600}
        db.close()
    finally:
        os.umask(old)


def test_existing_paths_are_tightened_not_loosened(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    os.chmod(f, 0o644)
    touch_private(f)
    assert _mode(f) == 0o600 and f.read_text() == "x"
    os.chmod(f, 0o400)
    touch_private(f)
    assert _mode(f) == 0o400  # tighter already: left alone
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    private_dir(d)
    assert _mode(d) == 0o700
