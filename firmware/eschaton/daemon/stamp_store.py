"""The stamp service's database: accepted digests and the rounds that commit them.

Rules:
- A digest is written (``synchronous=FULL``) before its submission is acknowledged; the same
  digest from the same origin is accepted once (a retried request gets the same row).
- Closing a round assigns its digests (leaf order) and stores its nonces and signed commitment
  transaction in one transaction, before the transaction is broadcast.
- ``tail`` is the encoded proof from the round's root to a block (operations, then the
  attestation); a digest's proof is its path in the round's tree followed by the tail.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eschaton.core.stamp.rounds import RoundState, transition
from eschaton.store.sqlite import Connection, open_db

LOCAL = ""
"""Origin of digests submitted over the node's own API."""


def _v1(db: Connection) -> None:
    db.execute("CREATE TABLE digests (id INTEGER PRIMARY KEY, digest BLOB NOT NULL, origin TEXT NOT NULL,"
               " round INTEGER, leaf INTEGER, UNIQUE (digest, origin))")
    db.execute("CREATE INDEX digests_round ON digests (round, leaf)")
    db.execute("CREATE TABLE rounds (id INTEGER PRIMARY KEY, state TEXT NOT NULL, root BLOB NOT NULL,"
               " nonces BLOB NOT NULL, raw_tx BLOB, txid TEXT, height INTEGER, block_hash TEXT, tail BLOB,"
               " upstream TEXT NOT NULL DEFAULT '')")
    db.execute("CREATE INDEX rounds_state ON rounds (state, height)")
    db.execute("CREATE INDEX rounds_root ON rounds (root)")


MIGRATIONS = (_v1,)


@dataclass(slots=True)
class Round:
    id: int
    state: RoundState
    root: bytes
    nonces: bytes
    raw_tx: bytes | None
    txid: str | None
    height: int | None
    block_hash: str | None
    tail: bytes | None
    upstream: str


class StampStore:
    def __init__(self, path: Path) -> None:
        self.db = open_db(path, MIGRATIONS, synchronous="FULL")

    def close(self) -> None:
        self.db.close()

    def accept(self, digests: list[bytes], origin: str) -> list[int]:
        """Row ids of ``digests`` (new ones inserted), durable when this returns."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR IGNORE INTO digests (digest, origin) VALUES (?, ?)",
                                [(d, origin) for d in digests])
            ids = [self.db.execute("SELECT id FROM digests WHERE digest = ? AND origin = ?", (d, origin)).fetchone()[0]
                   for d in digests]
        return ids

    def open_digests(self, limit: int) -> list[tuple[int, bytes]]:
        return self.db.execute("SELECT id, digest FROM digests WHERE round IS NULL ORDER BY id LIMIT ?",
                               (limit,)).fetchall()

    def count_open(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM digests WHERE round IS NULL").fetchone()[0])

    def close_round(self, ids: list[int], root: bytes, nonces: bytes, state: RoundState,
                    raw_tx: bytes | None, txid: str | None, upstream: str) -> int:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute("INSERT INTO rounds (state, root, nonces, raw_tx, txid, upstream) VALUES (?,?,?,?,?,?)",
                                  (state.value, root, nonces, raw_tx, txid, upstream))
            rid = int(cur.lastrowid or 0)
            self.db.executemany("UPDATE digests SET round = ?, leaf = ? WHERE id = ?",
                                [(rid, i, d) for i, d in enumerate(ids)])
        return rid

    def update(self, r: Round, state: RoundState, **fields: object) -> None:
        transition(r.state, state)
        cols = {"state": state.value, **fields}
        with self.db:
            self.db.execute(f"UPDATE rounds SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",  # noqa: S608
                            (*cols.values(), r.id))
        r.state = state
        for k, v in fields.items():
            setattr(r, k, v)

    _COLS = "id, state, root, nonces, raw_tx, txid, height, block_hash, tail, upstream"

    def rounds(self, states: tuple[RoundState, ...], *, min_height: int | None = None) -> list[Round]:
        """Rounds in ``states``; with ``min_height``, COMPLETE ones only at or above it (the
        rounds a reorg can still touch: the others are never read again on this path)."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT {self._COLS} FROM rounds WHERE state IN ({marks})"  # noqa: S608
        args: list[object] = [s.value for s in states]
        if min_height is not None:
            sql += " AND (state != 'complete' OR height >= ?)"
            args.append(min_height)
        return [Round(r[0], RoundState(r[1]), *r[2:]) for r in self.db.execute(sql + " ORDER BY id", args)]

    def round(self, rid: int) -> Round:
        r = self.db.execute(f"SELECT {self._COLS} FROM rounds WHERE id = ?", (rid,)).fetchone()  # noqa: S608
        return Round(r[0], RoundState(r[1]), *r[2:])

    def round_with_root(self, root: bytes, upstream: str) -> Round | None:
        r = self.db.execute(f"SELECT {self._COLS} FROM rounds WHERE root = ? AND upstream = ?",  # noqa: S608
                            (root, upstream)).fetchone()
        return None if r is None else Round(r[0], RoundState(r[1]), *r[2:])

    def round_digests(self, rid: int) -> list[tuple[bytes, str]]:
        return self.db.execute("SELECT digest, origin FROM digests WHERE round = ? ORDER BY leaf", (rid,)).fetchall()

    def find(self, digest: bytes, origin: str) -> tuple[int | None, int | None] | None:
        row = self.db.execute("SELECT round, leaf FROM digests WHERE digest = ? AND origin = ?",
                              (digest, origin)).fetchone()
        return None if row is None else (row[0], row[1])

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in RoundState}
        for state, n in self.db.execute("SELECT state, count(*) FROM rounds GROUP BY state"):
            out[state] = n
        return out
