"""The SPV client's headers on disk, so that a restart does not sync from genesis again.

Rules:
- One SQLite file (``store.sqlite.open_db``: 0600, WAL, versioned schema), one row per height.
  ``synchronous=NORMAL``: a header lost in a power cut is fetched again from a server and
  checked again; nothing is acted on that a lost header could take back.
- The file names its network; opening it for another network is refused (one line).
- ``save(chain, first_new)`` writes the chain from ``first_new`` up in one transaction, after
  deleting whatever it held from there (a reorg's losing branch).
- ``load()`` gives back the ``HeaderChain`` (the headers were checked when they came in; the
  chain checks that header 0 is the network's genesis).
"""
from __future__ import annotations

from pathlib import Path

from eschaton.core.spv.headers import HEADER, HeaderChain
from eschaton.core.spv.pow import NetParams
from eschaton.errors import LocalError
from eschaton.store.sqlite import Connection, open_db, run_script


class WrongNetwork(LocalError):
    """The header file belongs to another network."""


def _v1(db: Connection) -> None:
    run_script(db, """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE headers (height INTEGER PRIMARY KEY, raw BLOB NOT NULL CHECK (length(raw) = 80));
    """)


MIGRATIONS = [_v1]


class HeaderStore:
    def __init__(self, path: Path, params: NetParams, genesis: bytes) -> None:
        self.path = path
        self.params = params
        self.db = open_db(path, MIGRATIONS, synchronous="NORMAL")
        row = self.db.execute("SELECT value FROM meta WHERE key = 'network'").fetchone()
        if row is None:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO meta VALUES ('network', ?)", (params.name,))
            self.db.execute("INSERT OR REPLACE INTO headers VALUES (0, ?)", (genesis,))
            self.db.execute("COMMIT")
        elif row[0] != params.name:
            self.db.close()
            raise WrongNetwork(f"{path}: headers of {row[0]}, not {params.name}")

    def load(self) -> HeaderChain:
        raw = b"".join(r[0] for r in self.db.execute("SELECT raw FROM headers ORDER BY height"))
        return HeaderChain(self.params, raw)

    def save(self, chain: HeaderChain, first_new: int) -> None:
        raw = chain.raw_from(first_new)
        rows = [(first_new + i, raw[i * HEADER:(i + 1) * HEADER]) for i in range(len(raw) // HEADER)]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("DELETE FROM headers WHERE height >= ?", (first_new,))
            self.db.executemany("INSERT INTO headers VALUES (?, ?)", rows)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()
