"""The stamp service's database: accepted digests and the rounds that commit them.

Rules:
- A digest is written (``synchronous=FULL``) before its submission is acknowledged; the same
  digest from the same origin is accepted once (a retried request gets the same row).
- Closing a round assigns its digests (leaf order) and stores its nonces and signed commitment
  transaction in one transaction, before the transaction is broadcast.
- ``tail`` is the encoded proof from the round's root to a block (operations, then the
  attestation); a digest's proof is its path in the round's tree followed by the tail.
- Paid stamps, the payee's side: ``invoices`` holds the payment requests quoted to peers (one
  per peer and batch ref); ``claims`` holds each payment that bought stamps, keyed by its
  payment hash, written in the transaction that accepts the batch's digests, so a payment
  buys exactly one batch (a repeat of the same batch is answered from the row; another batch
  with the same payment is refused).
- Paid stamps, the payer's side: ``batches`` holds each batch sent to an upstream peer (state,
  price, the request and its payment id, the preimage once paid), written before anything is
  paid; ``sent`` maps each digest sent to a peer to its batch and, later, its proof. A digest
  already sent to a peer is never sent (nor paid for) again.
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


def _v2(db: Connection) -> None:
    db.execute("CREATE TABLE invoices (hash BLOB PRIMARY KEY, peer TEXT NOT NULL, ref BLOB NOT NULL,"
               " count INTEGER NOT NULL, amount INTEGER NOT NULL, request TEXT NOT NULL, expires REAL NOT NULL)")
    db.execute("CREATE INDEX invoices_ref ON invoices (peer, ref)")
    db.execute("CREATE TABLE claims (hash BLOB PRIMARY KEY, peer TEXT NOT NULL, batch BLOB NOT NULL,"
               " count INTEGER NOT NULL, amount INTEGER NOT NULL, at REAL NOT NULL)")
    db.execute("CREATE TABLE batches (ref BLOB PRIMARY KEY, peer TEXT NOT NULL, digests BLOB NOT NULL,"
               " state TEXT NOT NULL, max_price INTEGER NOT NULL, price INTEGER NOT NULL DEFAULT 0,"
               " amount INTEGER NOT NULL DEFAULT 0, request TEXT NOT NULL DEFAULT '',"
               " payment_id TEXT NOT NULL DEFAULT '', preimage BLOB NOT NULL DEFAULT x'',"
               " detail TEXT NOT NULL DEFAULT '', at REAL NOT NULL)")
    db.execute("CREATE TABLE sent (digest BLOB NOT NULL, peer TEXT NOT NULL, ref BLOB NOT NULL, proof BLOB,"
               " PRIMARY KEY (digest, peer))")


MIGRATIONS = (_v1, _v2)


BATCH_STATES = ("new", "quoted", "paid", "accepted", "refused")
"""A batch sent upstream: new (written, not priced) -> quoted (the request is within the max
price) -> paid (the preimage is ours) -> accepted (durable upstream); refused at any step
before paid with nothing paid, or after it with what the peer said."""


@dataclass(slots=True)
class Batch:
    ref: bytes
    peer: str
    digests: bytes
    state: str
    max_price: int
    price: int
    amount: int
    request: str
    payment_id: str
    preimage: bytes
    detail: str
    at: float

    def digest_list(self) -> list[bytes]:
        return [self.digests[i:i + 32] for i in range(0, len(self.digests), 32)]


@dataclass(frozen=True, slots=True)
class Invoice:
    hash: bytes
    peer: str
    ref: bytes
    count: int
    amount: int
    request: str
    expires: float


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

    # --- paid stamps: the payee's side ------------------------------------------------------

    def invoice_for(self, peer: str, ref: bytes, now: float) -> Invoice | None:
        r = self.db.execute("SELECT * FROM invoices WHERE peer = ? AND ref = ? AND expires > ? ORDER BY expires DESC",
                            (peer, ref, now)).fetchone()
        return None if r is None else Invoice(*r)

    def invoice(self, h: bytes) -> Invoice | None:
        r = self.db.execute("SELECT * FROM invoices WHERE hash = ?", (h,)).fetchone()
        return None if r is None else Invoice(*r)

    def put_invoice(self, inv: Invoice) -> None:
        with self.db:
            self.db.execute("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (inv.hash, inv.peer, inv.ref, inv.count, inv.amount, inv.request, inv.expires))

    def claimed(self, h: bytes) -> bytes | None:
        """The batch (concatenated digests) payment ``h`` bought, if it was claimed."""
        r = self.db.execute("SELECT batch FROM claims WHERE hash = ?", (h,)).fetchone()
        return None if r is None else bytes(r[0])

    def accept_paid(self, h: bytes, peer: str, digests: list[bytes], amount: int, now: float) -> bool:
        """Claim payment ``h`` for ``digests`` from ``peer`` and accept them, in one transaction.
        False (nothing written): ``h`` was claimed already, for another batch."""
        batch = b"".join(digests)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            r = self.db.execute("SELECT batch FROM claims WHERE hash = ?", (h,)).fetchone()
            if r is not None:
                return bytes(r[0]) == batch
            self.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?)", (h, peer, batch, len(digests), amount, now))
            self.db.executemany("INSERT OR IGNORE INTO digests (digest, origin) VALUES (?, ?)",
                                [(d, peer) for d in digests])
        return True

    def earned(self) -> tuple[int, int, int]:
        """(payments claimed, digests they bought, satoshis)."""
        r = self.db.execute("SELECT count(*), coalesce(sum(count), 0), coalesce(sum(amount), 0) FROM claims").fetchone()
        return int(r[0]), int(r[1]), int(r[2])

    # --- paid stamps: the payer's side --------------------------------------------------------

    def new_batch(self, ref: bytes, peer: str, digests: list[bytes], max_price: int, now: float) -> Batch:
        """Record a batch for ``peer`` (before anything is paid), and each digest as sent in it."""
        b = Batch(ref, peer, b"".join(digests), "new", max_price, 0, 0, "", "", b"", "", now)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO batches (ref, peer, digests, state, max_price, at) VALUES (?, ?, ?, ?, ?, ?)",
                            (ref, peer, b.digests, "new", max_price, now))
            self.db.executemany("INSERT INTO sent (digest, peer, ref) VALUES (?, ?, ?)", [(d, peer, ref) for d in digests])
        return b

    def put_batch(self, b: Batch) -> None:
        with self.db:
            self.db.execute("UPDATE batches SET state = ?, price = ?, amount = ?, request = ?, payment_id = ?,"
                            " preimage = ?, detail = ? WHERE ref = ?",
                            (b.state, b.price, b.amount, b.request, b.payment_id, b.preimage, b.detail, b.ref))

    def refuse_batch(self, b: Batch) -> None:
        """Mark ``b`` refused; if nothing of it was paid, its digests may be sent again."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE batches SET state = 'refused', detail = ? WHERE ref = ?", (b.detail, b.ref))
            if not b.preimage:
                self.db.execute("DELETE FROM sent WHERE ref = ?", (b.ref,))

    def drop_batch(self, ref: bytes) -> None:
        """Forget a batch refused with nothing paid (its ref is to be asked again)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if self.db.execute("DELETE FROM batches WHERE ref = ? AND length(preimage) = 0", (ref,)).rowcount:
                self.db.execute("DELETE FROM sent WHERE ref = ?", (ref,))

    def batch(self, ref: bytes) -> Batch | None:
        r = self.db.execute("SELECT * FROM batches WHERE ref = ?", (ref,)).fetchone()
        return None if r is None else Batch(*r)

    def batches(self, states: tuple[str, ...]) -> list[Batch]:
        marks = ",".join("?" * len(states))
        return [Batch(*r) for r in self.db.execute(f"SELECT * FROM batches WHERE state IN ({marks})",  # noqa: S608
                                                   states)]

    def sent(self, digest: bytes, peer: str) -> tuple[bytes, bytes | None] | None:
        """(the batch ref, the proof if it came) of a digest sent to ``peer``."""
        r = self.db.execute("SELECT ref, proof FROM sent WHERE digest = ? AND peer = ?", (digest, peer)).fetchone()
        return None if r is None else (bytes(r[0]), None if r[1] is None else bytes(r[1]))

    def unproven(self, ref: bytes) -> int:
        return int(self.db.execute("SELECT count(*) FROM sent WHERE ref = ? AND proof IS NULL", (ref,)).fetchone()[0])

    def put_proof(self, digest: bytes, peer: str, proof: bytes) -> None:
        with self.db:
            self.db.execute("UPDATE sent SET proof = ? WHERE digest = ? AND peer = ?", (proof, digest, peer))

    def spent(self) -> tuple[int, int, int]:
        """(batches paid, digests in them, satoshis: the requests' amounts, routing fees apart)."""
        r = self.db.execute("SELECT count(*), coalesce(sum(length(digests) / 32), 0), coalesce(sum(amount), 0)"
                            " FROM batches WHERE state IN ('paid', 'accepted') OR (state = 'refused' AND"
                            " length(preimage) > 0)").fetchone()
        return int(r[0]), int(r[1]), int(r[2])
