"""The append-only, hash-chained microgrid ledger in SQLite.

Theory of operation:
- One SQLite file per core (seller or buyer), opened by ``eschaton.store.sqlite.open_db``: WAL
  journal, ``synchronous=FULL``: when ``append`` returns, the entries survive a power cut, which
  is what lets an adapter act (pay, cut, send an invoice) only after its decision is durable.
  The schema is versioned (``MIGRATIONS``, ``PRAGMA user_version``); a newer one is refused.
- ``append`` writes a batch in one ``BEGIN IMMEDIATE`` transaction, so a batch is all-or-nothing
  and two writers cannot both extend the same head.
- Each row stores the entry's canonical payload, its hash and the previous hash (see
  ``eschaton.core.microgrid.ledger``). Triggers refuse UPDATE and DELETE so ordinary code cannot
  rewrite history; ``verify`` catches anyone who edits the file anyway.
- The ``kind`` and ``at_ms`` columns duplicate the payload for queries by people; verification
  checks they agree with it.
- Compaction (``archive_before``): once a checkpoint entry is durable, the entries before it are
  copied to ``<name>.archive.sqlite`` (same schema, append-only too), and only after that copy
  is durable are they deleted here. A crash in between leaves them in both files, and the next
  call finishes the job (the copy ignores rows already there). The two files still form one
  hash chain: the checkpoint's ``prev_hash`` is the archive's head (``verify_archive``). The
  archive keeps growing for audit; it is never read to restart, so it may be moved off the node.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from eschaton.core.microgrid.errors import LedgerCorrupt
from eschaton.core.microgrid.ledger import (
    GENESIS,
    Entry,
    EntryKind,
    StoredEntry,
    link_hash,
    verify_chain,
)
from eschaton.errors import TransientError
from eschaton.store.sqlite import Connection, Error, Migration, SchemaTooNew, open_db, run_script

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq       INTEGER PRIMARY KEY,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL UNIQUE,
    kind      TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    payload   BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the microgrid ledger is append-only'); END;
"""
_NO_DELETE = """CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the microgrid ledger is append-only'); END;"""


def _v1(db: Connection) -> None:
    # IF NOT EXISTS: firmware that wrote the tables before setting the version may have left a
    # file with the tables and version 0.
    run_script(db, _SCHEMA)
    db.execute(_NO_DELETE)


MIGRATIONS: tuple[Migration, ...] = (_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


class LedgerIOError(TransientError):
    """The ledger file could not be read or written."""


class SqliteLedger:
    """Durable hash-chained ledger. Use as a context manager or call ``close``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = open_db(self.path, MIGRATIONS, synchronous="FULL")
        except (Error, SchemaTooNew) as exc:
            raise LedgerIOError(str(exc) if isinstance(exc, SchemaTooNew) else f"{self.path}: {exc}") from exc
        try:
            # The one place allowed to drop this trigger (``archive_before``) recreates it in the
            # same transaction; this guards against a file edited by hand.
            self._db.execute(_NO_DELETE)
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, Error):
                raise LedgerIOError(f"{self.path}: {exc}") from exc
            raise

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def head(self) -> tuple[int, bytes]:
        """(last seq, last hash), or (0, GENESIS) for an empty ledger."""
        row = self._db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def append(self, entries: Sequence[Entry]) -> tuple[int, bytes]:
        """Durably append ``entries`` in order, in one transaction; returns the new head."""
        if not entries:
            return self.head()
        try:
            with self._transaction():
                seq, prev = self.head()
                for entry in entries:
                    seq += 1
                    payload = entry.payload(seq)
                    h = link_hash(prev, payload)
                    self._db.execute(
                        "INSERT INTO entries (seq, prev_hash, hash, kind, at_ms, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (seq, prev, h, entry.kind.value, entry.at_ms, payload))
                    prev = h
        except Error as exc:
            raise LedgerIOError(f"{self.path}: append failed: {exc}") from exc
        return seq, prev

    def first_seq(self) -> int:
        """Sequence number of the oldest entry held here (0 if empty)."""
        row = self._db.execute("SELECT MIN(seq) FROM entries").fetchone()
        return int(row[0] or 0)

    @property
    def archive_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".archive.sqlite")

    def archive_before(self, seq: int) -> int:
        """Move the entries before ``seq`` (which must be a checkpoint entry) to the archive file;
        returns how many left this file. See the module doc for the crash ordering."""
        try:
            row = self._db.execute("SELECT kind FROM entries WHERE seq = ?", (seq,)).fetchone()
            if row is None or row[0] != EntryKind.CHECKPOINT.value:
                raise LedgerIOError(f"{self.path}: entry {seq} is not a checkpoint")
            with SqliteLedger(self.archive_path) as archive:
                archive._copy_from(self._db.execute(
                    "SELECT seq, prev_hash, hash, kind, at_ms, payload FROM entries WHERE seq < ?",
                    (seq,)))
            with self._transaction():
                # The trigger keeps ordinary code from deleting history; this is the one place
                # allowed to, and only for rows the archive durably holds.
                self._db.execute("DROP TRIGGER entries_no_delete")
                n = self._db.execute("DELETE FROM entries WHERE seq < ?", (seq,)).rowcount
                self._db.execute(_NO_DELETE)
        except Error as exc:
            raise LedgerIOError(f"{self.path}: archiving failed: {exc}") from exc
        return int(n)

    def _copy_from(self, rows: Iterable[tuple[object, ...]]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO entries (seq, prev_hash, hash, kind, at_ms, payload) "
                                 "VALUES (?, ?, ?, ?, ?, ?)", rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction that takes the write lock up front; rolled back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def verify_archive(self) -> int:
        """Check the archive as a chain from ``GENESIS`` whose head is what our oldest entry
        names as its predecessor; returns the number of archived entries (raises
        ``LedgerCorrupt``)."""
        first = self.first_seq()
        if first <= 1:
            return 0
        row = self._db.execute("SELECT prev_hash FROM entries WHERE seq = ?", (first,)).fetchone()
        with SqliteLedger(self.archive_path) as archive:
            rows = [r for r in archive.rows() if r.seq < first]
            verify_chain(rows, expected_head=bytes(row[0]))
        return len(rows)

    def _rows(self) -> Iterator[tuple[StoredEntry, str, int]]:
        try:
            cur = self._db.execute("SELECT seq, prev_hash, hash, payload, kind, at_ms "
                                   "FROM entries ORDER BY seq")
            for seq, prev, h, payload, kind, at_ms in cur:
                yield StoredEntry(int(seq), bytes(prev), bytes(h), bytes(payload)), str(kind), int(at_ms)
        except Error as exc:
            raise LedgerIOError(f"{self.path}: read failed: {exc}") from exc

    def entries_after(self, seq: int) -> list[tuple[int, str, int, bytes]]:
        """(seq, kind, at_ms, payload) of the entries after ``seq``, in order, unverified (for
        status views that follow the ledger as it grows)."""
        try:
            rows = self._db.execute("SELECT seq, kind, at_ms, payload FROM entries WHERE seq > ? ORDER BY seq",
                                    (seq,)).fetchall()
        except Error as exc:
            raise LedgerIOError(f"{self.path}: read failed: {exc}") from exc
        return [(int(s), str(k), int(t), bytes(p)) for s, k, t, p in rows]

    def rows(self) -> Iterator[StoredEntry]:
        """The stored rows in order, unverified."""
        for row, _, _ in self._rows():
            yield row

    def verify(self, expected_head: bytes | None = None) -> list[Entry]:
        """Check the whole chain and return its entries; raises ``LedgerCorrupt``.

        ``expected_head`` (a head hash kept elsewhere) also detects loss of the newest entries.
        """
        rows = list(self._rows())
        entries = verify_chain((r for r, _, _ in rows), expected_head)
        for (row, kind, at_ms), entry in zip(rows, entries, strict=True):
            if kind != entry.kind.value or at_ms != entry.at_ms:
                raise LedgerCorrupt(row.seq, "kind/at_ms columns disagree with the payload")
        return entries
