"""Payment records in the channel store: written in the same transaction as the version that
pays them (checked from a second connection at the moment the update leaves), migrated into an
old database, and a full database refused at once with nothing written and nothing sent."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from eschaton.channel.driver import ChannelEndpoint
from eschaton.channel.payments import PaymentError, PaymentRecord, PaymentState, check_id
from eschaton.channel.store import MIGRATIONS, SCHEMA_VERSION, ChannelStore, DiskFull
from eschaton.core.channel import PersistThenSend
from eschaton.core.channel.messages import Message
from eschaton.core.channel.snapshot_json import dumps, loads
from tests.unit.channel.pair import opened


def _rec(pid: str, cid: bytes, amount: int) -> PaymentRecord:
    now = time.time()
    return PaymentRecord(pid, cid, amount, PaymentState.PENDING, 0, now, now)


def _row(path: Path, pid: str) -> tuple[str, int] | None:
    other = sqlite3.connect(path)
    try:
        return other.execute("SELECT state, number FROM payments WHERE id = ?", (pid,)).fetchone()
    finally:
        other.close()


@pytest.mark.parametrize("batched", [False, True])
def test_payment_record_is_durable_with_its_version_before_the_update_leaves(tmp_path: Path,
                                                                            batched: bool) -> None:
    pr = opened()
    path = tmp_path / "a.db"
    seen: list[tuple[int, tuple[str, int] | None]] = []

    def send(m: Message) -> None:
        n = m.to_fields()["version"]["number"]
        seen.append((n, _row(path, f"p{n}")))
        pr.queue.append(("a", m))

    st = ChannelStore(path)
    ep = ChannelEndpoint(st, lambda cid: pr.a.priv, send)
    cid = pr.a.ch.channel_id
    ep.channels[cid] = pr.a.ch
    if batched:
        with ep.batch():
            for i in (1, 2, 3):
                ep.call(cid, "pay", 100 * i, pr.height, payment=_rec(f"p{i}", cid, 100 * i))
    else:
        for i in (1, 2, 3):
            ep.call(cid, "pay", 100 * i, pr.height, payment=_rec(f"p{i}", cid, 100 * i))
    assert seen == [(1, ("PENDING", 1)), (2, ("PENDING", 2)), (3, ("PENDING", 3))]
    pr.flush()
    # Completion is bookkeeping: held, then written with the next commit (here: close).
    done = st.payment("p2")
    assert done is not None
    st.record_payments([done.to(PaymentState.COMPLETE, time.time())])
    assert _row(path, "p2") == ("PENDING", 2)
    assert st.payment("p2").state is PaymentState.COMPLETE  # type: ignore[union-attr]
    st.close()
    assert _row(path, "p2") == ("COMPLETE", 2)
    st = ChannelStore(path)
    assert [r.id for r in st.payments(PaymentState.PENDING)] == ["p1", "p3"]
    st.close()


def test_migration_from_schema_3_adds_payments(tmp_path: Path) -> None:
    pr = opened()
    pr.pay("a", 7_000)
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path, isolation_level=None)
    for v in range(3):
        MIGRATIONS[v](db)
    snap = pr.b.ch.snapshot()
    db.execute("INSERT INTO channels (channel_id, state, snapshot, role, number) VALUES (?, ?, ?, ?, ?)",
               (pr.b.ch.channel_id, snap["state"], dumps(snap), snap["role"], snap["current"]["number"]))
    db.execute("PRAGMA user_version = 3")
    db.close()
    st = ChannelStore(path)
    assert st.schema_version() == SCHEMA_VERSION == 7
    assert st.payment("anything") is None
    assert loads(st.db.execute("SELECT snapshot FROM channels").fetchone()[0])["current"]["number"] == 1
    rec = _rec("x", pr.b.ch.channel_id, 5)
    st.persist_many((), [rec])
    st.close()
    assert _row(path, "x") == ("PENDING", 0)


def test_a_full_database_is_refused_at_once_and_nothing_is_sent(tmp_path: Path) -> None:
    pr = opened()
    path = tmp_path / "a.db"
    sent: list[Message] = []
    st = ChannelStore(path)
    ep = ChannelEndpoint(st, lambda cid: pr.a.priv, sent.append)
    cid = pr.a.ch.channel_id
    ep.channels[cid] = pr.a.ch
    ep.call(cid, "pay", 100, pr.height, payment=_rec("ok", cid, 100))
    # SQLite's own SQLITE_FULL ("database or disk is full"), as from a full filesystem: the file
    # may not grow by another page.
    pages = st.db.execute("PRAGMA page_count").fetchone()[0]
    st.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFull, match="^disk full: cannot write channel store"):
        for i in range(200):  # a few payments may still fit in free pages
            sent.clear()
            ep.call(cid, "pay", 1, pr.height, payment=_rec(f"f{i}", cid, 1))
    assert sent == []
    # A record too large for the free space left in the file's pages.
    failed = PaymentRecord("f-held", cid, 1, PaymentState.FAILED, 0, time.time(), time.time(), "x" * 20_000)
    st.record_payments([failed])
    with pytest.raises(DiskFull):
        st.flush()
    assert st.payment("f-held") == failed  # held, not lost, while the disk is full
    st.db.execute("PRAGMA max_page_count = 1073741823")
    st.close()
    assert _row(path, "f-held") == ("FAILED", 0)
    assert _row(path, "ok") == ("PENDING", 1)


def test_payment_ids_and_transitions() -> None:
    assert check_id("order-17:retry.2") == "order-17:retry.2"
    for bad in ("", "-x", "a b", "x" * 65, "é"):
        with pytest.raises(PaymentError, match="bad payment id"):
            check_id(bad)
    r = _rec("p", b"\x01" * 32, 10)
    assert r.conflict(b"\x01" * 32, 10) is None
    assert "already used for 10 sat" in (r.conflict(b"\x01" * 32, 11) or "")
    done = r.to(PaymentState.COMPLETE, time.time())
    with pytest.raises(PaymentError):
        done.to(PaymentState.PENDING, time.time())
    with pytest.raises(PaymentError):
        r.to(PaymentState.FAILED, time.time())  # a signed version is never withdrawn


def test_persist_then_send_without_payment_is_unchanged(tmp_path: Path) -> None:
    pr = opened()
    st = ChannelStore(tmp_path / "a.db")
    st.persist(PersistThenSend(pr.a.ch.channel_id, pr.a.ch.snapshot, (), (), True))
    assert st.db.execute("SELECT COUNT(*) FROM payments").fetchone()[0] == 0
    st.close()
