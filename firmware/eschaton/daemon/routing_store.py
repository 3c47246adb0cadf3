"""The routing service's store: forwards, payment requests, outgoing payments, the graph.

One SQLite database, ``<datadir>/routing.db``, opened by ``store.sqlite.open_db`` (WAL,
``synchronous=FULL``: a forward's record and a request's preimage are money). Each write is one
transaction, committed before the caller acts on it (the forwarding core's rule: persist, then
act). Schema 1:

- ``forwards``: one row per incoming escrow (``eschaton.core.routing.forward.Forward`` as JSON);
- ``requests``: the payment requests this node issued, with their preimages;
- ``payments``: the payments this node sent (id, payee, hash, amount, state, fee, preimage,
  the escrow of the current attempt, error);
- ``graph``: channel announcements (``GraphStore``).

Schema 2 adds ``attempts``: one row per attempt of a payment we send (``P.n``), written before
its escrow is offered: the first channel and hop, the amount and timeout offered, the onion, the
session key and the hops' node ids (to read a failure that comes back), and, once the offer is
signed, the escrow id. A payer killed mid-payment finds every attempt it may have made here,
resends the onion, and completes or fails the payment from the escrow's outcome.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from eschaton.core.routing.forward import Forward, FwdState, Incoming
from eschaton.core.routing.graph import ChannelAnnouncement
from eschaton.store.sqlite import Connection, open_db, run_script

SCHEMA_1 = """
CREATE TABLE forwards (name TEXT PRIMARY KEY, state TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE requests (hash BLOB PRIMARY KEY, preimage BLOB NOT NULL, secret BLOB NOT NULL,
    amount INTEGER NOT NULL, expires INTEGER NOT NULL, final_delta INTEGER NOT NULL, text TEXT NOT NULL);
CREATE TABLE payments (id TEXT PRIMARY KEY, payee BLOB NOT NULL, hash BLOB NOT NULL, amount INTEGER NOT NULL,
    state TEXT NOT NULL, fee INTEGER NOT NULL DEFAULT 0, preimage BLOB, escrow TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', hold INTEGER NOT NULL DEFAULT 0,
    secret BLOB, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE graph (channel_id BLOB PRIMARY KEY, raw BLOB NOT NULL);
"""


SCHEMA_2 = """
CREATE TABLE attempts (id TEXT PRIMARY KEY, payment TEXT NOT NULL, channel BLOB NOT NULL, first BLOB NOT NULL,
    amount INTEGER NOT NULL, timeout INTEGER NOT NULL, escrow INTEGER NOT NULL, state TEXT NOT NULL,
    onion BLOB NOT NULL, session BLOB NOT NULL, hops BLOB NOT NULL);
CREATE INDEX attempts_state ON attempts (state);
"""


def _v1(db: Connection) -> None:
    run_script(db, SCHEMA_1)


def _v2(db: Connection) -> None:
    run_script(db, SCHEMA_2)


MIGRATIONS = (_v1, _v2)


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    if isinstance(v, FwdState):
        return v.value
    return v


def forward_to_json(rec: Forward) -> str:
    d: dict[str, Any] = {f.name: _jsonable(getattr(rec, f.name)) for f in fields(rec) if f.name != "incoming"}
    d["incoming"] = {f.name: _jsonable(getattr(rec.incoming, f.name)) for f in fields(rec.incoming)}
    return json.dumps(d, sort_keys=True)


def _unjson(v: Any) -> Any:
    return bytes.fromhex(v["hex"]) if isinstance(v, dict) and "hex" in v else v


def forward_from_json(text: str) -> Forward:
    d = json.loads(text)
    inc = Incoming(**{k: _unjson(v) for k, v in d.pop("incoming").items()})
    d = {k: _unjson(v) for k, v in d.items()}
    d["state"] = FwdState(d["state"])
    return Forward(incoming=inc, **d)


@dataclass(frozen=True, slots=True)
class RequestRow:
    hash: bytes
    preimage: bytes
    secret: bytes
    amount: int
    expires: int
    final_delta: int
    text: str


@dataclass(frozen=True, slots=True)
class PaymentRow:
    id: str
    payee: bytes
    hash: bytes
    amount: int
    state: str
    """pending, complete, failed, held (payer-held: escrows locked, preimage not released)."""
    fee: int
    preimage: bytes | None
    escrow: str
    attempts: int
    error: str
    hold: bool
    secret: bytes | None
    """The preimage of a payment to a node id (chosen by us; a retry reuses it)."""
    created: float
    updated: float

    def to_json(self) -> dict[str, Any]:
        return {"payment": self.id, "payee": self.payee.hex(), "hash": self.hash.hex(), "amount_sat": self.amount,
                "state": self.state, "fee_sat": self.fee,
                "preimage": (self.preimage or (self.secret if self.hold else None) or b"").hex() or None,
                "escrow": self.escrow, "attempts": self.attempts, "error": self.error, "hold": self.hold,
                "created": self.created, "updated": self.updated}


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One attempt of a payment we send, durable before its escrow is offered."""

    id: str
    """``<payment id>.<n>``: also the payments facade's id of the escrow offer."""
    payment: str
    channel: bytes
    first: bytes
    """The first hop's node id (the onion goes there)."""
    amount: int
    timeout: int
    escrow: int
    """The escrow id once the offer is signed; -1 before."""
    state: str
    """open, fulfilled, failed."""
    onion: bytes
    session: bytes
    hops: bytes
    """The route's node ids after us, 32 bytes each (the failure's shared secrets)."""

    @property
    def hop_ids(self) -> list[bytes]:
        return [self.hops[i:i + 32] for i in range(0, len(self.hops), 32)]


class RoutingStore:
    def __init__(self, path: Path) -> None:
        self.db = open_db(path, MIGRATIONS, synchronous="FULL")

    def close(self) -> None:
        self.db.close()

    # forwards
    def put_forward(self, rec: Forward) -> None:
        self.db.execute("INSERT OR REPLACE INTO forwards VALUES (?, ?, ?)",
                        (rec.name, rec.state.value, forward_to_json(rec)))

    def forwards(self) -> list[Forward]:
        return [forward_from_json(r[0]) for r in self.db.execute("SELECT record FROM forwards")]

    # requests
    def put_request(self, r: RequestRow) -> None:
        self.db.execute("INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (r.hash, r.preimage, r.secret, r.amount, r.expires, r.final_delta, r.text))

    def request(self, h: bytes) -> RequestRow | None:
        row = self.db.execute("SELECT * FROM requests WHERE hash = ?", (h,)).fetchone()
        return RequestRow(*row) if row else None

    # payments
    def put_payment(self, p: PaymentRow) -> None:
        self.db.execute("INSERT OR REPLACE INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (p.id, p.payee, p.hash, p.amount, p.state, p.fee, p.preimage, p.escrow, p.attempts,
                         p.error, int(p.hold), p.secret, p.created, p.updated))

    def payment(self, pid: str) -> PaymentRow | None:
        row = self.db.execute("SELECT * FROM payments WHERE id = ?", (pid,)).fetchone()
        return _payment(row) if row else None

    def payments(self, state: str) -> list[PaymentRow]:
        return [_payment(r) for r in self.db.execute("SELECT * FROM payments WHERE state = ?", (state,))]


    # attempts
    def put_attempt(self, a: AttemptRow) -> None:
        self.db.execute("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (a.id, a.payment, a.channel, a.first, a.amount, a.timeout, a.escrow, a.state, a.onion,
                         a.session, a.hops))

    def attempt(self, aid: str) -> AttemptRow | None:
        row = self.db.execute("SELECT * FROM attempts WHERE id = ?", (aid,)).fetchone()
        return AttemptRow(*row) if row else None

    def open_attempts(self) -> list[AttemptRow]:
        return [AttemptRow(*r) for r in self.db.execute("SELECT * FROM attempts WHERE state = 'open'")]


def _payment(row: tuple[Any, ...]) -> PaymentRow:
    vals = list(row)
    vals[10] = bool(vals[10])
    return PaymentRow(*vals)


class SqliteGraphStore:
    """``GraphStore`` on the routing database."""

    def __init__(self, db: Connection) -> None:
        self.db = db

    def put(self, ann: ChannelAnnouncement) -> None:
        self.db.execute("INSERT OR REPLACE INTO graph VALUES (?, ?)", (ann.channel_id, ann.encode()))

    def get(self, channel_id: bytes) -> ChannelAnnouncement | None:
        row = self.db.execute("SELECT raw FROM graph WHERE channel_id = ?", (channel_id,)).fetchone()
        return ChannelAnnouncement.decode(row[0]) if row else None

    def remove(self, channel_id: bytes) -> None:
        self.db.execute("DELETE FROM graph WHERE channel_id = ?", (channel_id,))

    def all(self) -> Iterator[ChannelAnnouncement]:
        return iter([ChannelAnnouncement.decode(r[0]) for r in self.db.execute("SELECT raw FROM graph")])
