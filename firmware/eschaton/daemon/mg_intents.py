"""The microgrid buyer's durable payment intents (``microgrid-intents.db``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from eschaton.core.microgrid.decisions import Pay

if TYPE_CHECKING:
    pass
from eschaton.store.sqlite import Connection, Migration, open_db


def _intents_v1(db: Connection) -> None:
    # IF NOT EXISTS: firmware before schema versions made this table at version 0.
    db.execute("CREATE TABLE IF NOT EXISTS intents (payment_id BLOB PRIMARY KEY, "
               "meter_id TEXT NOT NULL, ref BLOB NOT NULL, channel_id BLOB NOT NULL, "
               "balance_before INTEGER NOT NULL, amount INTEGER NOT NULL, "
               "state TEXT NOT NULL, at_ms INTEGER NOT NULL)")


INTENT_MIGRATIONS: tuple[Migration, ...] = (_intents_v1,)


class Intents:
    """Durable payment intents of the buyer: written (fsynced, ``synchronous=FULL``) before a
    channel update starts. Versioned like every store (``INTENT_MIGRATIONS``)."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path, INTENT_MIGRATIONS, synchronous="FULL")
        self._settled = 0

    def add(self, pay: Pay, cid: bytes, before: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO intents VALUES (?, ?, ?, ?, ?, ?, 'started', ?)",
                        (pay.payment_id, pay.meter_id, pay.ref, cid, before, pay.amount_sat, _now_ms()))

    def get(self, payment_id: bytes) -> tuple[bytes, int, int] | None:
        row = self.db.execute("SELECT channel_id, balance_before, amount FROM intents "
                              "WHERE payment_id = ?", (payment_id,)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]), int(row[2]))

    KEEP_SETTLED = 1000
    """Settled intents kept (only the newest confirmed ones are ever resent); older ones are
    pruned, so a buyer paying every few seconds for years keeps a small file."""

    def set_state(self, payment_id: bytes, state: str) -> None:
        self.db.execute("UPDATE intents SET state = ? WHERE payment_id = ?", (state, payment_id))
        self._settled += 1
        if self._settled % 100 == 0:
            self.prune()

    def prune(self) -> int:
        return int(self.db.execute(
            "DELETE FROM intents WHERE state != 'started' AND payment_id NOT IN (SELECT payment_id "
            "FROM intents WHERE state != 'started' ORDER BY rowid DESC LIMIT ?)",
            (self.KEEP_SETTLED,)).rowcount)

    def confirmed(self, limit: int = 20) -> list[tuple[str, bytes, bytes, int, bytes]]:
        rows = self.db.execute("SELECT meter_id, ref, payment_id, amount, channel_id FROM intents "
                               "WHERE state = 'confirmed' ORDER BY at_ms DESC LIMIT ?", (limit,))
        return [(str(m), bytes(r), bytes(p), int(a), bytes(c)) for m, r, p, a, c in rows]

    def close(self) -> None:
        self.db.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
