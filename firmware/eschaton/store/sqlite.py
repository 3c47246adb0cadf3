"""The one way the node opens a SQLite database: private files, the project's pragmas, and a
versioned schema with ordered migrations.

Rules / theory of operation:
- ``open_db(path, migrations, synchronous=...)`` is the opener of every store. It makes the
  files private, sets ``journal_mode=WAL`` and the store's ``synchronous`` level, then brings
  the schema up to date. Nothing else in the firmware imports ``sqlite3`` (a test checks it).
- Private files: SQLite creates a database's ``-wal`` and ``-shm`` with the mode of the
  database file itself, so creating the database 0600 before SQLite opens it makes all three
  private. Files left 0644 by older firmware are tightened here, once, when the database opens.
- Durability is each store's choice and is passed explicitly, never defaulted: money and
  decisions that are acted on (channel states, microgrid ledgers and intents) use ``FULL``
  (in WAL mode every commit fsyncs the WAL before it returns, so nothing is sent or actuated
  on a state a power cut could take back); the chain index uses ``NORMAL`` (a lost commit is a
  short reorg it repairs by itself) and does its fsyncs on a checkpoint thread.
- Page size is each store's choice too (``open_db(page_size=...)``, default SQLite's 4 KiB).
  In WAL mode every page a commit changes is appended to the WAL as a whole frame and fsynced,
  so a store that commits a few small rows per transaction (the channel store: one per payment)
  writes several times less with 1 KiB pages. An existing file is rebuilt to the size once
  (``set_page_size``).
- Schema versions live in ``PRAGMA user_version``. ``migrations[n]`` takes the schema from
  version n to n+1, so the current version is ``len(migrations)`` and a new database runs them
  all. Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with the version
  bump: a crash leaves the database at one version or the next, never in between. The version
  is read again inside the transaction, so two processes opening an old file at once migrate it
  once.
- A database whose version is newer than the code knows is refused with ``SchemaTooNew`` (a
  one-line message naming the file): misreading a newer layout could lose money.
- Connections run in autocommit mode (``isolation_level=None``): every store issues its own
  ``BEGIN``/``COMMIT``, because sqlite3's implicit transactions would not take the write lock
  up front and would commit behind a migration's back.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from eschaton.errors import LocalError
from eschaton.store.private import make_dirs, tighten, touch_private

# Re-exported so that stores can type connections and catch SQLite's errors without importing
# sqlite3 themselves.
Connection = sqlite3.Connection
Error = sqlite3.Error
DatabaseError = sqlite3.DatabaseError
SQLITE_FULL = sqlite3.SQLITE_FULL

Synchronous = Literal["OFF", "NORMAL", "FULL"]
Migration = Callable[[Connection], None]
"""One schema step, run inside the transaction that also bumps ``user_version``."""

_SIDE_FILES = ("-wal", "-shm", "-journal")


class SchemaTooNew(LocalError):
    """The database was written by newer firmware: refused rather than misread."""


def connect(path: Path | str, *, synchronous: Synchronous, check_same_thread: bool = True,
            pragmas: Sequence[str] = ()) -> Connection:
    """An autocommit connection to ``path`` with its files 0600 (a missing directory is made
    0700; an existing one is its owner's to set), ``synchronous`` and ``pragmas`` applied. No
    journal mode or schema work: for a second connection to a database ``open_db`` opened."""
    p = Path(path)
    make_dirs(p.parent)
    touch_private(p)
    for suffix in _SIDE_FILES:
        tighten(p.with_name(p.name + suffix))
    db = sqlite3.connect(str(p), isolation_level=None, check_same_thread=check_same_thread)
    try:
        db.execute(f"PRAGMA synchronous={synchronous}")
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
    except BaseException:
        db.close()
        raise
    return db


def open_db(path: Path | str, migrations: Sequence[Migration], *, synchronous: Synchronous,
            check_same_thread: bool = True, pragmas: Sequence[str] = (), page_size: int | None = None) -> Connection:
    """Open (or create) the database at ``path`` in WAL mode with ``synchronous`` and
    ``pragmas``, migrated to version ``len(migrations)``. Raises ``SchemaTooNew`` for a newer
    database and SQLite's ``Error`` for one that cannot be read; the connection is closed then.
    ``page_size``: the store's page size (see the rules); an existing file is rebuilt to it once."""
    p = Path(path)
    db = connect(p, synchronous=synchronous, check_same_thread=check_same_thread)
    try:
        if page_size is not None:
            set_page_size(db, page_size)
        db.execute("PRAGMA journal_mode=WAL")
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
        migrate(db, migrations, p)
    except BaseException:
        db.close()
        raise
    return db


def set_page_size(db: Connection, size: int) -> None:
    """Give the database pages of ``size`` bytes. A new file takes it at once; an existing one is
    rebuilt by ``VACUUM`` (which cannot change the page size in WAL mode, so the journal goes to
    DELETE for it; the caller sets WAL again). VACUUM is atomic: a crash leaves the old file. If
    it cannot run (a full disk: it needs room for a copy), the file keeps its page size, which
    costs writes, not correctness."""
    if int(db.execute("PRAGMA page_size").fetchone()[0]) == size:
        return
    if int(db.execute("PRAGMA page_count").fetchone()[0]) == 0:
        db.execute(f"PRAGMA page_size = {int(size)}")
        return
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute(f"PRAGMA page_size = {int(size)}")
        db.execute("VACUUM")
    except sqlite3.OperationalError:
        pass


def schema_version(db: Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(path: Path, version: int, known: int) -> None:
    """Raise ``SchemaTooNew`` if ``version`` is past the ``known`` one."""
    if version > known:
        raise SchemaTooNew(f"{path}: schema {version} is newer than this firmware's ({known}); refusing to open it")


def migrate(db: Connection, migrations: Sequence[Migration], path: Path) -> None:
    """Bring ``db`` to version ``len(migrations)``, one transaction per step (see the rules)."""
    target = len(migrations)
    version = schema_version(db)
    refuse_newer(path, version, target)
    while version < target:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = schema_version(db)  # another process may have migrated meanwhile
            if version < target:
                migrations[version](db)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back by itself (a full disk does)
                db.execute("ROLLBACK")
            raise


def run_script(db: Connection, sql: str) -> None:
    """Execute the statements of ``sql`` one by one inside the caller's transaction.

    Not ``executescript()``: it commits first, which would break a migration's transaction.
    Statements are split where SQLite says one is complete, so a trigger's body (which holds
    semicolons of its own) stays whole."""
    stmt = ""
    for piece in sql.split(";"):
        stmt += piece + ";"
        if sqlite3.complete_statement(stmt):
            if stmt.strip(" \t\r\n;"):
                db.execute(stmt)
            stmt = ""
    if stmt.strip(" \t\r\n;"):
        db.execute(stmt)
