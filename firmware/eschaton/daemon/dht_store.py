"""The DHT service's database: paid queries (asked, sold, forwarded) and the claims of payments.

Rules:
- ``claims``: one row per payment hash, written (``synchronous=FULL``) before the preimage is
  revealed or a forwarded escrow offered. A hash is claimed by one escrow only: a second escrow
  under a claimed hash (a replayed payment) is refused and returned, so a quote never earns or
  answers twice. The same escrow seen again (an event after a restart) is the same claim.
- ``queries``: one row per (query id, role) with what it cost or earned, so ``dht stats``
  totals are exact across restarts:
  - ``ask``: written before the escrow paying for it is offered (state ``paying``), then
    ``answered`` with the answer kept (a retry of the query id is answered from here, never paid
    again) or ``failed``;
  - ``sell``: written with its claim (``paid`` = what the escrow carried), then ``answered``;
  - ``forward``: written with its claim (``paid`` upstream, ``cost`` = the neighbour's price),
    then ``answered`` when the neighbour's answer was relayed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from eschaton.store.sqlite import Connection, open_db

ROLES = ("ask", "sell", "forward")


def _v1(db: Connection) -> None:
    db.execute("CREATE TABLE claims (payment_hash BLOB PRIMARY KEY, escrow TEXT NOT NULL, qid BLOB NOT NULL,"
               " peer TEXT NOT NULL, amount INTEGER NOT NULL, claimed REAL NOT NULL)")
    db.execute("CREATE TABLE queries (qid BLOB NOT NULL, role TEXT NOT NULL, peer TEXT NOT NULL,"
               " key BLOB NOT NULL, price INTEGER NOT NULL, paid INTEGER NOT NULL DEFAULT 0,"
               " cost INTEGER NOT NULL DEFAULT 0, results INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,"
               " payment_hash BLOB NOT NULL, answer BLOB, error TEXT NOT NULL DEFAULT '',"
               " created REAL NOT NULL, updated REAL NOT NULL, PRIMARY KEY (qid, role))")


MIGRATIONS = (_v1,)


@dataclass(frozen=True, slots=True)
class QueryRow:
    qid: bytes
    role: str
    peer: str
    key: bytes
    price: int
    paid: int
    cost: int
    results: int
    state: str
    payment_hash: bytes
    answer: bytes | None
    error: str


_COLS = "qid, role, peer, key, price, paid, cost, results, state, payment_hash, answer, error"


class DhtLedger:
    def __init__(self, path: Path) -> None:
        self.db = open_db(path, MIGRATIONS, synchronous="FULL")

    def close(self) -> None:
        self.db.close()

    def row(self, qid: bytes, role: str) -> QueryRow | None:
        r = self.db.execute(f"SELECT {_COLS} FROM queries WHERE qid = ? AND role = ?",  # noqa: S608
                            (qid, role)).fetchone()
        return None if r is None else QueryRow(*r)

    def ask(self, qid: bytes, peer: str, key: bytes, price: int, payment_hash: bytes) -> QueryRow:
        """Record our query as being paid (before the escrow is offered); an existing row wins."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT OR IGNORE INTO queries (qid, role, peer, key, price, paid, state, payment_hash,"
                            " created, updated) VALUES (?, 'ask', ?, ?, ?, ?, 'paying', ?, ?, ?)",
                            (qid, peer, key, price, price, payment_hash, now, now))
        row = self.row(qid, "ask")
        assert row is not None
        return row

    def claim(self, payment_hash: bytes, escrow: str, qid: bytes, role: str, peer: str, key: bytes,
              price: int, amount: int, cost: int) -> bool:
        """Claim ``payment_hash`` for ``escrow`` and record the sale (or forward) as paid, in one
        transaction. False: the hash was claimed by another escrow (a replay: refuse it)."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            old = self.db.execute("SELECT escrow FROM claims WHERE payment_hash = ?", (payment_hash,)).fetchone()
            if old is not None:
                return bool(old[0] == escrow)
            self.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                            (payment_hash, escrow, qid, peer, amount, now))
            self.db.execute("INSERT OR REPLACE INTO queries (qid, role, peer, key, price, paid, cost, state,"
                            " payment_hash, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'paid', ?, ?, ?)",
                            (qid, role, peer, key, price, amount, cost, payment_hash, now, now))
        return True

    def answered(self, qid: bytes, role: str, results: int, answer: bytes) -> None:
        with self.db:
            self.db.execute("UPDATE queries SET state = 'answered', results = ?, answer = ?, updated = ?"
                            " WHERE qid = ? AND role = ?", (results, answer, time.time(), qid, role))

    def failed(self, qid: bytes, role: str, error: str) -> None:
        with self.db:
            self.db.execute("UPDATE queries SET state = 'failed', error = ?, updated = ? WHERE qid = ? AND role = ?",
                            (error[:512], time.time(), qid, role))

    def totals(self) -> dict[str, int]:
        """What this node spent on queries, earned answering and forwarding them, and counts."""
        out = {"asked": 0, "spent_sat": 0, "sold": 0, "earned_sat": 0, "forwarded": 0, "forward_margin_sat": 0}
        for role, n, paid, cost in self.db.execute(
                "SELECT role, count(*), coalesce(sum(paid), 0), coalesce(sum(cost), 0) FROM queries"
                " WHERE state IN ('paying', 'paid', 'answered') GROUP BY role"):
            if role == "ask":
                out["asked"], out["spent_sat"] = n, paid
            elif role == "sell":
                out["sold"], out["earned_sat"] = n, paid
            elif role == "forward":
                out["forwarded"], out["forward_margin_sat"] = n, paid - cost
        out["claims"] = int(self.db.execute("SELECT count(*) FROM claims").fetchone()[0])
        return out
