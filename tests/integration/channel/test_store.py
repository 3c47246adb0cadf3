"""The durable channel store: schema migration, persist-before-send, restart, backups."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from eschaton.channel.driver import ChannelEndpoint
from eschaton.channel.store import SCHEMA_VERSION, ChannelStore, StoreError, _v1
from eschaton.core.channel import Channel
from eschaton.core.channel.actions import Notify
from eschaton.core.channel.messages import Message
from eschaton.core.channel.snapshot_json import dumps, loads
from tests.unit.channel.pair import opened


def test_persisted_by_state_name_and_restored(tmp_path: Path) -> None:
    pr = opened()
    pr.pay("a", 5_000)
    pr.turn("a")
    pr.do("a", "offer_escrow", 3_000, bytes(range(32)))
    st = ChannelStore(tmp_path / "c.db")
    from eschaton.core.channel import PersistThenSend
    st.persist(PersistThenSend(pr.a.ch.channel_id, pr.a.ch.snapshot, tuple(pr.a.versions), (), True))
    st.close()
    raw = sqlite3.connect(tmp_path / "c.db")
    assert raw.execute("SELECT state, role, number FROM channels").fetchall() == [("OPEN", "opener", 2)]
    raw.close()
    st = ChannelStore(tmp_path / "c.db")
    (snap,) = st.load_all()
    ch = Channel.from_snapshot(snap, pr.a.priv)
    assert ch.current == pr.a.ch.current and ch.state is pr.a.ch.state
    # Only versions with hash-locked outputs get a row (the watcher sweeps those); balance-only
    # ones pay each side's own script and need none.
    with_contracts = [v for v in pr.a.versions if v.version.escrows or v.version.bets]
    assert [v.version.number for v in with_contracts] == [2]
    assert [r.number for r in st.versions(ch.channel_id)] == [2]
    row = st.version_by_txid(with_contracts[0].txid)
    assert row is not None and row.version == with_contracts[0].version
    assert st.version_by_txid(pr.a.versions[0].txid) is None
    st.close()


def test_a_payment_stream_does_not_grow_the_store(tmp_path: Path) -> None:
    pr = opened()
    st = ChannelStore(tmp_path / "a.db")
    ep = ChannelEndpoint(st, lambda cid: pr.a.priv, lambda m: pr.queue.append(("a", m)))
    ep.channels[pr.a.ch.channel_id] = pr.a.ch
    for _ in range(200):
        ep.call(pr.a.ch.channel_id, "pay", 10, pr.height)
        pr.flush()
    assert pr.b.ch.current.number == 200
    assert st.db.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == 0
    kept = ChannelStore(tmp_path / "all.db", keep_every_version=True)
    ep.store = kept
    ep.call(pr.a.ch.channel_id, "pay", 10, pr.height)
    assert kept.db.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == 1
    st.close()
    kept.close()


def test_migration_from_schema_1(tmp_path: Path) -> None:
    pr = opened()
    pr.pay("a", 7_000)
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    _v1(db)
    snap = pr.b.ch.snapshot()
    db.execute("INSERT INTO channels (channel_id, state, snapshot) VALUES (?, ?, ?)",
               (pr.b.ch.channel_id, snap["state"], dumps(snap)))
    for sv in pr.b.versions:
        db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
                   (pr.b.ch.channel_id, sv.version.number, sv.txid, dumps(sv.version.to_fields()), sv.peer_signature))
    db.execute("PRAGMA user_version = 1")
    db.close()
    st = ChannelStore(path)
    assert st.schema_version() == SCHEMA_VERSION == 7
    r = st.db.execute("SELECT role, number FROM channels").fetchone()
    assert r == ("acceptor", 1)
    # v3: old rows keep the whole snapshot until next written (v7: no static part stored yet)
    assert st.db.execute("SELECT COUNT(*) FROM channel_static").fetchone()[0] == 0
    assert st.version_by_txid(pr.b.versions[-1].txid) is not None
    assert Channel.from_snapshot(st.load_all()[0], pr.b.priv).current == pr.b.ch.current
    # Written again: the opening-time part moves to its own table (v7), loads the same.
    from eschaton.core.channel import PersistThenSend
    pr.pay("a", 1_000)
    st.persist(PersistThenSend(pr.b.ch.channel_id, pr.b.ch.snapshot, (), (), True))
    static, dyn = st.db.execute("SELECT s.static, c.snapshot FROM channels c JOIN channel_static s USING (channel_id)").fetchone()
    assert "funding_raw" in loads(static) and "funding_raw" not in loads(dyn)
    assert Channel.from_snapshot(st.load_all()[0], pr.b.priv).snapshot() == pr.b.ch.snapshot()
    st.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "new.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError):
        ChannelStore(tmp_path / "new.db")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        ChannelStore(tmp_path / "junk.db")


def test_state_is_durable_before_the_signature_leaves(tmp_path: Path) -> None:
    """Each message is checked, at the moment it is sent, against a second connection to the file."""
    pr = opened()
    path = tmp_path / "a.db"
    seen: list[tuple[str, int]] = []

    def send(m: Message) -> None:
        other = sqlite3.connect(path)
        (snap,) = other.execute("SELECT snapshot FROM channels").fetchone()
        other.close()
        s = loads(snap)
        if m.NAME == "update":
            assert s["pending"]["number"] == m.to_fields()["version"]["number"]
            assert s["outbox"][0]["fields"]["signature"] == m.to_fields()["signature"]
        seen.append((m.NAME, s["current"]["number"]))
        pr.queue.append(("a", m))

    st = ChannelStore(path)
    ep = ChannelEndpoint(st, lambda cid: pr.a.priv, send)
    ep.channels[pr.a.ch.channel_id] = pr.a.ch
    for amount in (1_000, 2_000, 3_000):
        ep.call(pr.a.ch.channel_id, "pay", amount, pr.height)
        pr.flush()
    assert [n for n, _ in seen] == ["update"] * 3
    st.close()


def test_backup_export_and_restore(tmp_path: Path) -> None:
    pr = opened()
    pr.pay("a", 5_000)
    from eschaton.core.channel import PersistThenSend
    st = ChannelStore(tmp_path / "a.db")
    st.persist(PersistThenSend(pr.a.ch.channel_id, pr.a.ch.snapshot, tuple(pr.a.versions), (), True))
    assert st.export_backup(tmp_path / "backup.json") == 1
    fresh = ChannelStore(tmp_path / "restored.db")
    assert fresh.import_backup(tmp_path / "backup.json") == [pr.a.ch.channel_id]
    assert Channel.from_snapshot(fresh.load_all()[0], pr.a.priv).current == pr.a.ch.current
    # An older backup never overwrites a newer stored state.
    pr.pay("a", 1_000)
    st.persist(PersistThenSend(pr.a.ch.channel_id, pr.a.ch.snapshot, (), (), True))
    assert st.import_backup(tmp_path / "backup.json") == []
    assert st.load_all()[0]["current"]["number"] == pr.a.ch.current.number
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(StoreError):
        fresh.import_backup(tmp_path / "bad.json")
    st.close()
    fresh.close()


def test_restored_stale_backup_detects_data_loss() -> None:
    """A node restored from an old backup learns it is behind instead of trusting its stale state."""
    pr = opened()
    pr.pay("a", 1_000)
    old = pr.b.snapshot
    assert old is not None
    pr.pay("a", 1_000)
    pr.pay("a", 1_000)
    stale = Channel.from_snapshot(old, pr.b.priv)  # b restored from a backup two versions old
    acts = stale.handle(pr.a.ch.reestablish()[0].message, pr.height)  # type: ignore[union-attr]
    loss = [x for x in acts if getattr(x, "kind", "") == "data_loss"]
    assert loss and loss[0].data == {"peer_number": 3, "ours": 1}  # type: ignore[union-attr]
    # The up-to-date side sees nothing wrong with a peer that is merely behind.
    acts = pr.a.ch.handle(stale.reestablish()[0].message, pr.height)  # type: ignore[union-attr]
    assert not any(getattr(x, "kind", "") == "data_loss" for x in acts)


def test_group_commit_is_durable_before_any_message_leaves(tmp_path: Path) -> None:
    """Five pipelined payments in one batch: one commit holds all five versions, and no message
    leaves before it; each message is checked against a second connection when it is sent."""
    pr = opened()
    path = tmp_path / "a.db"
    sent: list[int] = []

    def send(m: Message) -> None:
        other = sqlite3.connect(path)
        (snap,) = other.execute("SELECT snapshot FROM channels").fetchone()
        other.close()
        s = loads(snap)
        n = m.to_fields()["version"]["number"]
        assert s["pending"]["number"] >= n
        assert m.to_fields()["signature"] in [o["fields"]["signature"] for o in s["outbox"]]
        sent.append(n)
        pr.queue.append(("a", m))

    st = ChannelStore(path)
    commits = 0
    ep = ChannelEndpoint(st, lambda cid: pr.a.priv, send)

    def counted() -> None:
        nonlocal commits
        commits += 1

    ep.after_persist = counted
    ep.channels[pr.a.ch.channel_id] = pr.a.ch
    builds = 0
    take = pr.a.ch.snapshot

    def counting() -> dict[str, Any]:
        nonlocal builds
        builds += 1
        return take()

    pr.a.ch.snapshot = counting  # type: ignore[method-assign]
    with ep.batch():
        for amount in (100, 200, 300, 400, 500):
            ep.call(pr.a.ch.channel_id, "pay", amount, pr.height)
        assert sent == [] and commits == 0 and builds == 0  # held until the group commit
    assert commits == 1 and sent == [1, 2, 3, 4, 5]
    assert builds == 1  # one snapshot for the burst, taken at the commit
    assert st.load(pr.a.ch.channel_id) == take()  # ... and it is the channel's state after the burst
    pr.flush()
    assert pr.b.ch.current.number == 5 and pr.b.ch.current.balances[1] == 1_500
    st.close()


def test_batch_that_raises_still_commits_what_it_staged(tmp_path: Path) -> None:
    pr = opened()
    sent: list[Message] = []
    st = ChannelStore(tmp_path / "a.db")
    ep = ChannelEndpoint(st, lambda cid: pr.a.priv, sent.append)
    ep.channels[pr.a.ch.channel_id] = pr.a.ch
    with pytest.raises(RuntimeError), ep.batch():
        ep.call(pr.a.ch.channel_id, "pay", 1_000, pr.height)
        raise RuntimeError("the caller failed after the payment was signed")
    assert [m.NAME for m in sent] == ["update"]
    assert loads(st.db.execute("SELECT snapshot FROM channels").fetchone()[0])["pending"]["number"] == 1
    st.close()


def test_a_burst_of_updates_is_answered_by_one_cumulative_ack(tmp_path: Path) -> None:
    pr = opened()
    pr.turn("a")
    updates = []
    for _ in range(5):
        acts = pr.a.ch.pay(100, pr.height)
        pr.run("a", acts)
        updates.append(acts[0].messages[0])  # type: ignore[union-attr]
    pr.queue.clear()
    sent: list[Message] = []
    st = ChannelStore(tmp_path / "b.db")
    ep = ChannelEndpoint(st, lambda cid: pr.b.priv, sent.append)
    ep.channels[pr.b.ch.channel_id] = pr.b.ch
    notes: list[Notify] = []
    ep.listeners.append(notes.append)
    with ep.batch():
        for u in updates:
            ep.receive(u, pr.height)
        assert notes == []  # effects of a state follow its commit
    assert [(m.NAME, m.to_fields()["number"]) for m in sent] == [("update_ack", 5)]
    assert [n.data["number"] for n in notes if n.kind == "payment"] == [1, 2, 3, 4, 5]
    pr.run("a", pr.a.ch.handle(sent[0], pr.height))
    assert pr.a.ch.pending is None and pr.a.ch.current == pr.b.ch.current
    st.close()
