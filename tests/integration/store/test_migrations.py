"""Every database opens from the layout the previous firmware left (SQL dumps in
``tests/vectors/store``, made by ``dump_old.py`` from that firmware) with its data intact and
its schema version current; a database newer than the code is refused in one line, by the
store and by a node that will not start on it."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from eschaton.chain.embedded.engine import ChainNode
from eschaton.chain.embedded.index import SCHEMA_VERSION as INDEX_VERSION
from eschaton.chain.embedded.index import ChainIndex
from eschaton.channel.payments import PaymentState
from eschaton.channel.store import SCHEMA_VERSION, ChannelStore, DiskFull, StoreError
from eschaton.core.channel import PersistThenSend
from eschaton.daemon.channels import _PeerMap
from eschaton.daemon.microgrid import INTENT_MIGRATIONS, _Intents
from eschaton.daemon.stamp_store import StampStore
from eschaton.errors import EschatonError
from eschaton.microgrid.ledger import SCHEMA_VERSION as LEDGER_VERSION
from eschaton.microgrid.ledger import SqliteLedger
from tests.integration.node.harness import NodeProc
from tests.unit.channel.pair import opened

DUMPS = Path(__file__).resolve().parents[2] / "vectors" / "store"
PEER_A, PEER_B = "aa" * 32, "bb" * 32


def _load(path: Path, dump: str) -> Path:
    """The database as the previous firmware left it (WAL, as every store of it ran)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript((DUMPS / dump).read_text())
    db.close()
    return path


def _raw(path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read from a second connection: what is on disk, not what a store holds."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def _version(path: Path) -> int:
    return int(_raw(path, "PRAGMA user_version")[0][0])


# --- channels.db (v4 -> v5) and channel_peers.db ------------------------------------------------


def test_channel_store_v4_takes_in_the_peer_map_and_leaves_the_old_file(tmp_path: Path) -> None:
    path = _load(tmp_path / "channels.db", "channels-v4.sql")
    legacy = _load(tmp_path / "channel_peers.db", "channel_peers-v1.sql")
    legacy_rows = sorted(_raw(legacy, "SELECT channel_id, peer FROM channel_peers"))
    assert len(legacy_rows) == 2 and _version(path) == 4
    st = ChannelStore(path)
    assert st.schema_version() == SCHEMA_VERSION == 7
    [snap] = st.load_all()
    cid = snap["channel_id"]
    assert st.peers() == {bytes(c): p for c, p in legacy_rows} and st.peers()[cid] == PEER_A
    assert snap["pending"]["number"] == 1 and [v.number for v in st.versions(cid)] == [1]  # signed, not yet acked
    pay = st.payment("old-pay")
    assert pay is not None and (pay.state, pay.amount, pay.number) == (PaymentState.PENDING, 1_234, 1)
    assert _PeerMap(st).map == st.peers()
    st.close()
    # The old file is left as it was: readable by the firmware before, for one release.
    assert sorted(_raw(legacy, "SELECT channel_id, peer FROM channel_peers")) == legacy_rows
    assert _version(legacy) == 1
    again = ChannelStore(path)  # migrated once: opening again changes nothing
    assert again.schema_version() == SCHEMA_VERSION and len(again.peers()) == 2
    again.close()


def test_channel_store_v6_payments_keep_their_order_and_lose_the_state_index(tmp_path: Path) -> None:
    """v6 -> v7: the payment rows move to a table in the order they were made (``seq``), found by
    id through a unique index, with no index by state (a page write per insert and per
    completion, docs/channels.md "Store writes"); every record and outcome stays."""
    from eschaton.channel.store import MIGRATIONS
    from eschaton.store.sqlite import open_db

    path = _load(tmp_path / "channels.db", "channels-v4.sql")
    db = open_db(path, MIGRATIONS[:6], synchronous="FULL")  # the layout the schema-6 firmware left
    cid = _raw(path, "SELECT channel_id FROM channels")[0][0]
    db.executemany("INSERT INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [("zz-first", cid, 5, "COMPLETE", 1, 100.0, 101.0, ""),
                    ("aa-second", cid, 6, "FAILED", 0, 200.0, 200.0, "disk full")])
    db.close()
    assert _version(path) == 6
    st = ChannelStore(path)
    assert st.schema_version() == SCHEMA_VERSION == 7
    assert [r[0] for r in st.db.execute("SELECT id FROM payments ORDER BY seq")] == ["zz-first", "aa-second", "old-pay"]  # by creation time
    assert _raw(path, "SELECT name FROM sqlite_master WHERE name = 'payments_by_state'") == []
    first, second = st.payment("zz-first"), st.payment("aa-second")
    assert first is not None and (first.state, first.amount, first.created_at) == (PaymentState.COMPLETE, 5, 100.0)
    assert second is not None and (second.state, second.error) == (PaymentState.FAILED, "disk full")
    assert [p.id for p in st.payments(PaymentState.PENDING)] == ["old-pay"]
    assert st.pruned_before(bytes(cid)) == 0.0
    st.close()


def test_channel_store_v4_without_a_peer_file(tmp_path: Path) -> None:
    st = ChannelStore(_load(tmp_path / "channels.db", "channels-v4.sql"))
    assert st.schema_version() == SCHEMA_VERSION and st.peers() == {} and len(st.load_all()) == 1
    st.close()
    assert not (tmp_path / "channel_peers.db").exists()


def test_a_newer_peer_file_is_refused_and_the_store_stays_at_v4(tmp_path: Path) -> None:
    path = _load(tmp_path / "channels.db", "channels-v4.sql")
    legacy = _load(tmp_path / "channel_peers.db", "channel_peers-v1.sql")
    db = sqlite3.connect(legacy)
    db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(StoreError) as e:
        ChannelStore(path)
    assert str(e.value) == f"{legacy}: schema 2 is newer than this firmware's (1); refusing to open it"
    assert _version(path) == 4  # the migration's transaction rolled back
    assert _raw(path, "SELECT name FROM sqlite_master WHERE name = 'channel_peers'") == []


def test_channel_store_v5_both_sides_get_the_same_fee_shares_and_the_channel_continues(tmp_path: Path) -> None:
    """Both sides of one channel, dumped by the schema-5 firmware mid-stream (switches done, the
    acceptor's payment opening a new epoch persisted but never delivered): after the migration
    each side derived the same fee shares, the in-flight payment is accepted, payments continue
    both ways, and the cooperative close gives the fee steps back."""
    from eschaton.core import tx as T
    from eschaton.core.channel import Channel
    from eschaton.core.channel.versions import close_balances
    from tests.unit.channel.pair import key

    chans: dict[str, Channel] = {}
    for name in ("a", "b"):
        path = _load(tmp_path / f"{name}.db", f"channels-v5-{name}.sql")
        st = ChannelStore(path)
        assert st.schema_version() == SCHEMA_VERSION == 7
        (snap,) = st.load_all()
        for row in st.versions(snap["channel_id"]):
            assert sum(row.version.fee_paid) == row.version.fee
        chans[name] = Channel.from_snapshot(snap, key(f"{name}-channel"))
        st.close()
    a, b = chans["a"], chans["b"]
    p = a.params
    assert b.pending is not None and a.current.number == b.current.number == b.pending.number - 1
    assert a.current == b.current and sum(a.current.fee_paid) == a.current.fee > p.initial_fee
    height = 100

    def deliver(to: Channel, acts: list[Any]) -> None:
        queue = [(to, m) for act in acts for m in getattr(act, "messages", ())
                 + ((act.message,) if hasattr(act, "message") else ())]
        while queue:
            dest, msg = queue.pop(0)
            other = a if dest is b else b
            for act in dest.handle(msg, height):
                for m in getattr(act, "messages", ()) + ((act.message,) if hasattr(act, "message") else ()):
                    queue.append((other, m))

    deliver(a, b.reestablish())  # the lost payment arrives
    deliver(b, a.reestablish())
    assert b.pending is None and a.current == b.current
    for payer, payee, amount in ((a, b, 3), (b, a, 1), (a, b, 2)):
        if not payer.have_turn:
            deliver(payee, payer.request_turn())
        deliver(payee, payer.pay(amount, height))
        assert a.current == b.current
    cur = a.current
    assert sum(cur.fee_paid) == cur.fee and cur.fee_paid == b.current.fee_paid
    if not a.have_turn:
        deliver(b, a.request_turn())
    close = [act for act in a.close(height)]
    broadcasts: list[bytes] = []
    for act in close:
        for m in act.messages:  # type: ignore[attr-defined]
            for r in b.handle(m, height):
                if hasattr(r, "raw_tx"):
                    broadcasts.append(r.raw_tx)
    (raw,) = broadcasts
    outs = sorted(o.value for o in T.outputs_of(T.parse_tx(raw)))
    assert sum(outs) == p.capacity - p.initial_fee
    assert outs == sorted(close_balances(p, cur))


def test_a_backup_from_before_fee_shares_imports_with_the_derived_shares(tmp_path: Path) -> None:
    """A backup file written before schema 6 has versions without ``fee_paid``; importing it
    derives them as the migration does, and the restored channel loads."""
    import json

    from eschaton.core.channel import Channel
    from eschaton.core.channel.snapshot_json import dumps, loads
    from tests.unit.channel.pair import key

    st = ChannelStore(_load(tmp_path / "b.db", "channels-v5-b.sql"))
    migrated = st.load_all()[0]
    st.export_backup(tmp_path / "new.json")
    st.close()
    doc = loads((tmp_path / "new.json").read_text())

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "fee_paid"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    old = strip(doc)
    assert "fee_paid" not in json.dumps(dumps(old))
    (tmp_path / "old.json").write_text(dumps(old))
    fresh = ChannelStore(tmp_path / "fresh.db")
    assert fresh.import_backup(tmp_path / "old.json") == [migrated["channel_id"]]
    (snap,) = fresh.load_all()
    assert snap["current"] == migrated["current"] and snap["pending"] == migrated["pending"]
    assert Channel.from_snapshot(snap, key("b-channel")).current.fee_paid == tuple(migrated["current"]["fee_paid"])
    fresh.close()


def test_a_channel_and_its_peer_are_committed_in_one_transaction(tmp_path: Path) -> None:
    pr = opened()
    path = tmp_path / "channels.db"
    st = ChannelStore(path)
    peers = _PeerMap(st)

    def first_state(cid: bytes) -> None:
        st.persist(PersistThenSend(cid, pr.a.ch.snapshot, (), (), True))

    cid = b"\x01" * 32
    peers.set(cid, PEER_A)
    assert peers.map == {cid: PEER_A} and _raw(path, "SELECT * FROM channel_peers") == []  # staged only
    first_state(cid)  # the channel's first durable state carries its peer
    assert _raw(path, "SELECT channel_id, peer FROM channel_peers") == [(cid, PEER_A)]
    assert _raw(path, "SELECT channel_id FROM channels") == [(cid,)]

    # A commit the disk refuses writes neither, and the peer stays staged until one succeeds.
    pages = st.db.execute("PRAGMA page_count").fetchone()[0]
    st.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFull):
        for i in range(2, 200):  # a few may still fit in free pages
            cid = bytes([i]) * 32
            peers.set(cid, PEER_B)
            first_state(cid)
    on_disk = {c for (c,) in _raw(path, "SELECT channel_id FROM channels")}
    assert cid not in on_disk and {c for (c,) in _raw(path, "SELECT channel_id FROM channel_peers")} == on_disk
    assert st.peers()[cid] == PEER_B
    st.db.execute("PRAGMA max_page_count = 1073741823")
    first_state(cid)
    assert _raw(path, "SELECT peer FROM channel_peers WHERE channel_id = ?", cid) == [(PEER_B,)]
    st.close()
    again = ChannelStore(path)
    assert _PeerMap(again).map == {c: PEER_A if c == b"\x01" * 32 else PEER_B for c in on_disk | {cid}}
    again.close()


def test_a_staged_peer_is_written_at_close(tmp_path: Path) -> None:
    """An incoming open the core refused still has its peer staged: it is written at close, as
    the separate map wrote it before."""
    st = ChannelStore(tmp_path / "channels.db")
    st.stage_peer(b"\x07" * 32, PEER_B)
    st.close()
    assert _raw(tmp_path / "channels.db", "SELECT channel_id, peer FROM channel_peers") == [(b"\x07" * 32, PEER_B)]


# --- the microgrid ledger and intents --------------------------------------------------------


@pytest.mark.parametrize("left_at", [1, 0])
def test_microgrid_ledger_from_the_previous_firmware(tmp_path: Path, left_at: int) -> None:
    """Version 1 as it wrote it, and version 0 with the tables (it wrote them before the version)."""
    path = _load(tmp_path / "microgrid-seller.db", "microgrid-ledger-v1.sql")
    if left_at == 0:
        db = sqlite3.connect(path)
        db.execute("PRAGMA user_version = 0")
        db.close()
    with SqliteLedger(path) as led:
        entries = led.verify()
        assert [e.body["amount_sat"] for e in entries] == [0, 1, 2, 3, 4]
        assert [r[0] for r in led.entries_after(3)] == [4, 5]
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            led._db.execute("DELETE FROM entries WHERE seq = 1")
    assert _version(path) == LEDGER_VERSION == 1


def test_unversioned_intents_are_migrated(tmp_path: Path) -> None:
    path = _load(tmp_path / "microgrid-intents.db", "microgrid-intents-v0.sql")
    assert _version(path) == 0
    it = _Intents(path)
    try:
        assert it.get(b"\x01" * 4) == (b"c" * 32, 10_000, 500)
        assert it.get(b"\x02" * 4) == (b"c" * 32, 9_500, 700)
        assert [c[2] for c in it.confirmed()] == [b"\x01" * 4]
    finally:
        it.close()
    assert _version(path) == len(INTENT_MIGRATIONS) == 1


# --- the chain index (version in its meta table -> user_version) ------------------------------


def test_chain_index_versioned_in_meta_is_migrated_and_still_feeds_the_kernel(tmp_path: Path) -> None:
    path = _load(tmp_path / "chain" / "index.sqlite", "chain-index-meta1.sql")
    assert _version(path) == 0
    idx = ChainIndex(path)
    tip = idx.tip()
    assert tip is not None and tip.height == 3
    idx.close()
    assert _version(path) == INDEX_VERSION == 2
    assert _raw(path, "SELECT value FROM meta WHERE key = 'schema'") == [("1",)]  # the old firmware's check
    # Schema 2's script-hash index on spends is there (this chain has no spends to fill it).
    assert _raw(path, "SELECT name FROM sqlite_master WHERE name = 'spends_sh'") == [("spends_sh",)]
    # The blocks survived whole: a fresh kernel is fed them from the index (as after a crash).
    node = ChainNode(tmp_path)
    try:
        assert node.index is not None and node.index.tip() == tip
        assert node.cm.get_active_chain().height == 3
    finally:
        node.close()


def test_chain_index_v1_gets_the_history_a_fresh_index_writes(tmp_path: Path) -> None:
    """Schema 1 -> 2 fills ``spends.sh`` from the spends the index holds; it, and the histories
    read through it, must equal what ``connect_block`` writes for the same chain (spends within
    and across blocks)."""
    from tests.unit.chain.helpers import Key, spend_p2wpkh

    node = ChainNode(tmp_path / "a")
    k, dest = Key(1), Key(9)
    try:
        node.mine(101, k.p2wpkh)
        assert node.index is not None
        coins = sorted(node.index.coins_for_script(k.p2wpkh), key=lambda c: c.height)[:2]
        for c in coins:
            parent = node.broadcast(spend_p2wpkh(c.txid, 0, c.value, k, [(c.value - 1_000, dest.p2wpkh)]))
            node.mine(1)
        # a spend of an output created in the same block
        node.broadcast(spend_p2wpkh(parent, 0, coins[1].value - 1_000, dest, [(coins[1].value - 2_000, k.p2wpkh)]))
        c = sorted(node.index.coins_for_script(k.p2wpkh), key=lambda c: c.height)[0]
        mid = node.broadcast(spend_p2wpkh(c.txid, 0, c.value, k, [(c.value - 1_000, dest.p2wpkh)]))
        node.broadcast(spend_p2wpkh(mid, 0, c.value - 1_000, dest, [(c.value - 2_000, k.p2wpkh)]))
        node.mine(1)
    finally:
        node.close()
    path = tmp_path / "a" / "chain" / "index.sqlite"
    shs = [hashlib.sha256(s).digest() for s in (k.p2wpkh, dest.p2wpkh)]

    def histories() -> list[list[tuple[str, int]]]:
        idx = ChainIndex(path)
        try:
            return [idx.history(sh) for sh in shs]
        finally:
            idx.close()

    fresh_spends = sorted(_raw(path, "SELECT txid, vout, sh FROM spends"))
    fresh = histories()
    assert len(fresh_spends) == 5 and all(r[2] is not None for r in fresh_spends)
    # dest: paid twice, spends back to k, pays itself (mid) and spends that in the same block;
    # k: 101 coinbases, its three spends, and the two payments back
    assert len(fresh[1]) == 5 and len(fresh[0]) == 101 + 5
    # The index as schema 1 left it: no sh column, no index.
    db = sqlite3.connect(path)
    db.execute("DROP INDEX spends_sh")
    db.execute("ALTER TABLE spends DROP COLUMN sh")
    db.execute("PRAGMA user_version = 1")
    db.close()
    assert histories() == fresh
    assert _version(path) == 2
    assert sorted(_raw(path, "SELECT txid, vout, sh FROM spends")) == fresh_spends


# --- newer than the code ----------------------------------------------------------------------


def _newer(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.execute("PRAGMA user_version = 99")
    db.close()
    return path


@pytest.mark.parametrize("opener", [ChannelStore, SqliteLedger, _Intents, ChainIndex, StampStore])
def test_every_store_refuses_a_newer_database_in_one_line(tmp_path: Path, opener: type) -> None:
    path = _newer(tmp_path / "x.db")
    with pytest.raises(EschatonError) as e:
        opener(path)
    assert str(e.value).startswith(f"{path}: schema 99 is newer than this firmware's") and "\n" not in str(e.value)
    assert _version(path) == 99


@pytest.mark.timeout(120)
def test_a_node_does_not_start_on_a_newer_channel_store(tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "solo", chain_dir=None)
    store = _newer(n.datadir / "channels.db")
    n.start()
    assert n.proc is not None
    rc = n.proc.wait(90)
    n.stop()
    err = "".join(n.stderr)
    assert rc != 0
    assert err == (f"eschaton: node failed to start: {store}: schema 99 is newer than this firmware's "
                   f"({SCHEMA_VERSION}); refusing to open it\n"), err
