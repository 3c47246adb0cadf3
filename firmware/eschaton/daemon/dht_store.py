"""The DHT service's database: paid queries (asked, sold, forwarded) and the claims of payments.

Rules:
- ``claims``: one row per received payment (its channel and version number, the payee's
  receipt), written (``synchronous=FULL``) before the answer it pays for is sent or a forward
  paid. A payment pays one query only: naming a claimed payment for another query (a replayed
  payment) is refused, so a quote never earns or answers twice; naming it again for the same
  query (a retry) is the same claim.
- ``queries``: one row per (query id, role), so ``dht stats`` totals are exact across restarts.
  ``paid`` is what moved to or from us for the query, ``cost`` what a forward paid onwards:
  - ``ask``: written with the quote (``paying``, paid 0) before the payment is made, then
    ``paid`` with its receipt once the payment is acknowledged, then ``answered`` with the
    answer kept: a retry of the query id re-sends the receipt (the payment's id makes paying
    again a no-op) or answers from here, never paying twice;
  - ``sell``: written with its claim (``paid``), then ``answered``;
  - ``forward``: written with its claim, ``cost`` set once the neighbour was paid, then
    ``answered`` when the neighbour's answer was relayed (or ``failed``, cost as paid).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from eschaton.store.sqlite import Connection, open_db

ROLES = ("ask", "sell", "forward")


def _v1(db: Connection) -> None:
    db.execute("CREATE TABLE claims (channel_id BLOB NOT NULL, number INTEGER NOT NULL, qid BLOB NOT NULL,"
               " peer TEXT NOT NULL, amount INTEGER NOT NULL, claimed REAL NOT NULL,"
               " PRIMARY KEY (channel_id, number))")
    db.execute("CREATE TABLE queries (qid BLOB NOT NULL, role TEXT NOT NULL, peer TEXT NOT NULL,"
               " key BLOB NOT NULL, price INTEGER NOT NULL, count INTEGER NOT NULL, size INTEGER NOT NULL,"
               " commitment BLOB NOT NULL, paid INTEGER NOT NULL DEFAULT 0, cost INTEGER NOT NULL DEFAULT 0,"
               " state TEXT NOT NULL, channel_id BLOB, number INTEGER, answer BLOB,"
               " error TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL,"
               " PRIMARY KEY (qid, role))")


MIGRATIONS = (_v1,)


@dataclass(frozen=True, slots=True)
class QueryRow:
    qid: bytes
    role: str
    peer: str
    key: bytes
    price: int
    count: int
    size: int
    commitment: bytes
    paid: int
    cost: int
    state: str
    channel_id: bytes | None
    number: int | None
    answer: bytes | None
    error: str


_COLS = "qid, role, peer, key, price, count, size, commitment, paid, cost, state, channel_id, number, answer, error"


class DhtLedger:
    def __init__(self, path: Path) -> None:
        self.db = open_db(path, MIGRATIONS, synchronous="FULL")

    def close(self) -> None:
        self.db.close()

    def row(self, qid: bytes, role: str) -> QueryRow | None:
        r = self.db.execute(f"SELECT {_COLS} FROM queries WHERE qid = ? AND role = ?",  # noqa: S608
                            (qid, role)).fetchone()
        return None if r is None else QueryRow(*r)

    def _set(self, qid: bytes, role: str, **cols: object) -> None:
        names = ", ".join(f"{k} = ?" for k in cols)
        with self.db:
            self.db.execute(f"UPDATE queries SET {names}, updated = ? WHERE qid = ? AND role = ?",  # noqa: S608
                            (*cols.values(), time.time(), qid, role))

    def ask(self, qid: bytes, peer: str, key: bytes, price: int, count: int, size: int,
            commitment: bytes) -> None:
        """Record our query and the quote we accepted, before paying it."""
        now = time.time()
        with self.db:
            self.db.execute("INSERT INTO queries (qid, role, peer, key, price, count, size, commitment, state,"
                            " created, updated) VALUES (?, 'ask', ?, ?, ?, ?, ?, ?, 'paying', ?, ?)",
                            (qid, peer, key, price, count, size, commitment, now, now))

    def ask_paid(self, qid: bytes, channel_id: bytes, number: int, amount: int) -> None:
        self._set(qid, "ask", state="paid", paid=amount, channel_id=channel_id, number=number)

    def claim(self, channel_id: bytes, number: int, qid: bytes, role: str, peer: str, key: bytes,
              price: int, count: int, size: int, commitment: bytes, amount: int,
              answer: bytes | None = None) -> bool:
        """Claim the payment (``channel_id``, ``number``) for ``qid`` and record the sale (or
        forward) as paid (with ``answer``: answered), in one transaction. False: it pays
        another query (a replay)."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            old = self.db.execute("SELECT qid FROM claims WHERE channel_id = ? AND number = ?",
                                  (channel_id, number)).fetchone()
            if old is not None:
                return bool(old[0] == qid)
            if self.db.execute("SELECT 1 FROM claims WHERE qid = ? AND peer = ?", (qid, peer)).fetchone():
                return False  # that query was paid by another payment already
            self.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                            (channel_id, number, qid, peer, amount, now))
            self.db.execute("INSERT OR REPLACE INTO queries (qid, role, peer, key, price, count, size, commitment,"
                            " paid, state, channel_id, number, answer, created, updated)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (qid, role, peer, key, price, count, size, commitment, amount,
                             "paid" if answer is None else "answered", channel_id, number, answer, now, now))
        return True

    def claimed(self, channel_id: bytes, number: int) -> bytes | None:
        """The query a payment was claimed for, if any."""
        r = self.db.execute("SELECT qid FROM claims WHERE channel_id = ? AND number = ?",
                            (channel_id, number)).fetchone()
        return None if r is None else bytes(r[0])

    def forward_paid(self, qid: bytes, cost: int) -> None:
        self._set(qid, "forward", cost=cost)

    def answered(self, qid: bytes, role: str, answer: bytes) -> None:
        self._set(qid, role, state="answered", answer=answer)

    def failed(self, qid: bytes, role: str, error: str) -> None:
        self._set(qid, role, state="failed", error=error[:512])

    def totals(self) -> dict[str, int]:
        """What this node spent on queries, earned answering and forwarding them, and counts."""
        out = {"asked": 0, "spent_sat": 0, "sold": 0, "earned_sat": 0, "forwarded": 0, "forward_margin_sat": 0}
        for role, n, paid, cost in self.db.execute(
                "SELECT role, count(*), coalesce(sum(paid), 0), coalesce(sum(cost), 0) FROM queries"
                " WHERE paid > 0 OR cost > 0 GROUP BY role"):
            if role == "ask":
                out["asked"], out["spent_sat"] = n, paid
            elif role == "sell":
                out["sold"], out["earned_sat"] = n, paid
            elif role == "forward":
                out["forwarded"], out["forward_margin_sat"] = n, paid - cost
        out["claims"] = int(self.db.execute("SELECT count(*) FROM claims").fetchone()[0])
        out["failed"] = int(self.db.execute("SELECT count(*) FROM queries WHERE state = 'failed'").fetchone()[0])
        return out
