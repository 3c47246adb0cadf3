"""What the seller's trade channels received, counted from payment events (``microgrid-received.db``).

Rules / theory of operation:
- The seller credits an invoice only up to what its channels with that buyer received and is
  not yet credited. "Received" is the sum of the ``PaymentReceived`` events of the payments
  facade (``eschaton.daemon.payments``), counted here once each: per channel, the last version
  number counted, our balance at that version and the running total.
- An event whose version number is not above the channel's recorded one was counted already
  (a replay after a restart, or the catch-up event below): it changes nothing.
- Crash safety: an event is emitted after the channel store committed the version, and counted
  here with ``synchronous=FULL``. A crash between the two loses the event in memory but not the
  money: at start the seller asks the facade to ``catch_up`` from the recorded number and
  balance, which reports what arrived since as one event. So a received payment is counted
  exactly once, and a credit (the seller ledger, keyed by payment id) at most once.
- A channel the seller opened (``seed``) starts counting at its current version: its balance
  holds the seller's own funding, which no buyer paid. A channel the buyer opened starts at
  version 0 with balance 0 (an acceptor contributes nothing), so catching up on a channel seen
  here for the first time counts everything the buyer paid on it so far.
- Sales paid through the network (``via = "routing"``): the seller credits each of its payment
  requests once it is paid, then marks its hash here (schema 2, ``requests``). The credit comes
  first: a crash between the two leaves the request unmarked, and the routing service's replay
  at start offers it again, when the seller core still knows its payment id (the latest it
  credited) and ignores it; so each paid request is credited exactly once.
"""
from __future__ import annotations

from pathlib import Path

from eschaton.store.sqlite import Connection, Migration, open_db


def _v1(db: Connection) -> None:
    db.execute("CREATE TABLE received (channel_id BLOB PRIMARY KEY, peer TEXT NOT NULL, "
               "number INTEGER NOT NULL, balance INTEGER NOT NULL, total INTEGER NOT NULL)")


def _v2(db: Connection) -> None:
    db.execute("CREATE TABLE requests (hash BLOB PRIMARY KEY)")


MIGRATIONS: tuple[Migration, ...] = (_v1, _v2)


class Received:
    def __init__(self, path: Path) -> None:
        self.db = open_db(path, MIGRATIONS, synchronous="FULL")

    def position(self, cid: bytes) -> tuple[int, int] | None:
        """The channel's last counted version number and our balance then (None: never seen)."""
        row = self.db.execute("SELECT number, balance FROM received WHERE channel_id = ?", (cid,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def seed(self, cid: bytes, peer: str, number: int, balance: int) -> None:
        """Start counting ``cid`` after version ``number`` (nothing of it counted so far)."""
        self.db.execute("INSERT OR IGNORE INTO received VALUES (?, ?, ?, ?, 0)", (cid, peer, number, balance))

    def add(self, cid: bytes, peer: str, amount: int, number: int, balance: int) -> bool:
        """Count a received payment; False if its version was counted already."""
        pos = self.position(cid)
        if pos is not None and number <= pos[0]:
            return False
        self.db.execute("INSERT INTO received VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel_id) DO UPDATE "
                        "SET number = excluded.number, balance = excluded.balance, "
                        "total = total + excluded.total", (cid, peer, number, balance, amount))
        return True

    def total(self, peer: str) -> int:
        row = self.db.execute("SELECT COALESCE(SUM(total), 0) FROM received WHERE peer = ?", (peer,)).fetchone()
        return int(row[0])

    def request_credited(self, h: bytes) -> bool:
        """Whether our paid request for ``h`` was credited already."""
        return self.db.execute("SELECT 1 FROM requests WHERE hash = ?", (h,)).fetchone() is not None

    def mark_request(self, h: bytes) -> None:
        self.db.execute("INSERT OR IGNORE INTO requests VALUES (?)", (h,))

    def close(self) -> None:
        self.db.close()
