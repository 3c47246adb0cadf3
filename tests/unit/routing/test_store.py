"""The routing store: forwards, requests, payments and the graph survive a reopen; files are 0600."""
from __future__ import annotations

import hashlib
import random
import stat
from dataclasses import replace
from pathlib import Path

import coincurve

from eschaton.core import script as S
from eschaton.core.link.identity import NodeKeys
from eschaton.core.routing.forward import Forward, FwdState, Incoming
from eschaton.core.routing.graph import ChannelAnnouncement, FundingOutput, Graph
from eschaton.core.routing.policy import FeePolicy
from eschaton.daemon.routing_store import (
    MIGRATIONS,
    AttemptRow,
    PaymentRow,
    RequestRow,
    RoutingStore,
    SqliteGraphStore,
)
from eschaton.store.sqlite import open_db


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "routing.db"
    st = RoutingStore(path)
    inc = Incoming(b"\x01" * 32, 3, b"\x02" * 32, 10_050, b"\x03" * 32, 1600, 1500)
    rec = Forward(inc, FwdState.OFFERED, 10_000, 1570, b"\x04" * 32, b"\x05" * 32, 7, b"", b"\x06" * 32,
                  b"", "", b"", False)
    st.put_forward(rec)
    st.put_forward(rec.to(FwdState.FULFILLED, preimage=b"\x07" * 32))
    st.put_request(RequestRow(b"\x08" * 32, b"\x09" * 32, b"\x0a" * 32, 500, 1_700_000_000, 18, "eschreq1x"))
    row = PaymentRow("p-1", b"\x0b" * 32, b"\x0c" * 32, 500, "pending", 0, None, "", 1, "", False, b"\x0d" * 32,
                     1.5, 2.5)
    st.put_payment(row)
    st.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    st = RoutingStore(path)
    (got,) = st.forwards()
    assert got == rec.to(FwdState.FULFILLED, preimage=b"\x07" * 32)
    assert st.request(b"\x08" * 32) == RequestRow(b"\x08" * 32, b"\x09" * 32, b"\x0a" * 32, 500, 1_700_000_000,
                                                  18, "eschreq1x")
    assert st.request(b"\x00" * 32) is None
    assert st.payment("p-1") == row and st.payments("pending") == [row] and st.payments("complete") == []
    st.close()


def test_the_graph_on_sqlite_survives_a_reopen(tmp_path: Path) -> None:
    rng = random.Random(5)
    k1, k2 = NodeKeys.generate(rng.randbytes), NodeKeys.generate(rng.randbytes)
    fk = [coincurve.PrivateKey(bytes([i]) * 32).public_key.format(compressed=True) for i in (1, 2)]
    ann = ChannelAnnouncement(b"\x01" * 32, hashlib.sha256(b"f").digest(), 0, 100_000, fk[0], fk[1],
                              k1.node_id.raw, k2.node_id.raw, 2000, 1900, 6, FeePolicy(), FeePolicy(), 1)
    ann = ann.signed_by(k1).signed_by(k2)
    st = RoutingStore(tmp_path / "routing.db")
    g = Graph(SqliteGraphStore(st.db))
    assert g.offer(ann, FundingOutput(100_000, S.p2wsh(S.multisig_2of2(fk[0], fk[1])))).accepted
    st.close()
    st = RoutingStore(tmp_path / "routing.db")
    g = Graph(SqliteGraphStore(st.db))
    assert len(g) == 1 and g.store.get(ann.channel_id) == ann and len(g.edges()) == 2
    assert g.spent(ann.funding_txid, 0) and len(g) == 0
    st.close()


def test_a_schema_1_database_gains_the_attempts_and_keeps_its_payments(tmp_path: Path) -> None:
    """A routing.db written before attempts were durable (schema 1) opens at schema 2: its
    payments are kept, and attempts round-trip (open until settled)."""
    path = tmp_path / "routing.db"
    old = open_db(path, MIGRATIONS[:1], synchronous="FULL")
    row = PaymentRow("p-1", b"\x0b" * 32, b"\x0c" * 32, 500, "pending", 0, None, "", 1, "", False, None, 1.5, 2.5)
    old.execute("INSERT INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.payee, row.hash, row.amount, row.state, row.fee, row.preimage, row.escrow, row.attempts,
                 row.error, 0, row.secret, row.created, row.updated))
    old.close()
    st = RoutingStore(path)
    assert st.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 2
    assert st.payment("p-1") == row and st.open_attempts() == []
    att = AttemptRow("p-1.1", "p-1", b"\x01" * 32, b"\x02" * 32, 510, 1600, -1, "open", b"\x03" * 1665,
                     b"\x04" * 32, b"\x05" * 32 + b"\x06" * 32)
    st.put_attempt(att)
    st.close()
    st = RoutingStore(path)
    assert st.open_attempts() == [att] and st.attempt("p-1.1") == att
    assert att.hop_ids == [b"\x05" * 32, b"\x06" * 32]
    st.put_attempt(replace(att, escrow=4, state="fulfilled"))
    assert st.open_attempts() == [] and st.attempt("p-1.1") == replace(att, escrow=4, state="fulfilled")
    st.close()
