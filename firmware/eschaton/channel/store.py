"""Durable channel store: SQLite, WAL, every signature-bearing state fsynced before it is sent.

Rules / theory of operation:
- One row per channel in ``channels`` holds the core's snapshot (JSON, bytes tagged; its static
  part in ``channel_static``) and its state BY NAME (``ChannelState.name``). ``versions`` keeps every signed version that has
  hash-locked outputs (escrows, bet stakes), so the watcher can sweep them if the peer
  broadcasts that version. A balance-only version needs no sweeping (each output pays its
  owner's own script) and the channel core keeps the best one in its snapshot, so it gets no
  row: a channel streaming micro-payments does not grow its store by a row per payment, which on
  an SD card would be unbounded wear and space. ``keep_every_version`` keeps them all (tests
  that play a peer broadcasting old versions).
- ``persist(PersistThenSend)`` writes the snapshot and new versions in ONE transaction. With
  ``durable=True`` (anything a signature of ours depends on) the commit runs with
  ``synchronous=FULL``: in WAL mode that fsyncs the WAL on every commit, so the state survives
  power loss, not just a killed process. ``synchronous=NORMAL`` would only fsync at checkpoints;
  a Pi on a flaky supply can lose the last commits that way, and a lost commit after a
  signature left is lost money. Pure bookkeeping (``durable=False``, nothing to send, no new
  version: an ack received) is held in memory and folded into the channel's next commit, because
  the peer's reestablish recovers it after a crash.
- Group commit: ``persist_many`` writes several actions (several channels, or several pipelined
  versions of one) in ONE transaction, so one fsync covers them all. The driver sends none of
  their messages before that commit returns. One snapshot per channel is written, taken at the
  commit (``PersistThenSend.state``), so it covers every staged action of that channel; every
  version is written.
- The database opens through ``eschaton.store.sqlite.open_db``: the schema is versioned
  (``PRAGMA user_version``), ``MIGRATIONS[n]`` upgrades n -> n+1 in one transaction and is
  tested against a database in the old layout; a newer database is refused.
- ``channel_peers`` (v5) names the peer that holds each channel. A channel's peer is staged
  (``stage_peer``) before anything about the channel is sent and written in the SAME
  transaction as the channel's first state, so a channel on disk always knows where to resend.
  Until v5 the map lived in its own file, ``channel_peers.db``: the migration copies its rows
  and leaves that file as it was (no longer written; safe to delete once this firmware stays).
- ``payments`` (v4) holds one row per payment id (``eschaton.channel.payments``). A payment's
  row goes into the SAME transaction as the channel state holding the version that pays it
  (``persist_many(..., payments=...)``), so after a crash the store knows exactly which ids were
  signed for. Later changes (complete, failed) are bookkeeping: held like deferred snapshots and
  written with the next commit or at ``flush()``; if that commit fails they stay held.
  Since v7 the rows are kept in the order they were made (``seq``) and found by id through a
  unique index; there is no index by state (each payment would cost it two page writes).
- Retention: ``prune_payments`` deletes records older than a time and all but the newest N of
  the store, oldest first and a bounded number per call (never a PENDING one, nor one held in
  memory); ``payment_pruned`` keeps per
  channel the creation time of the newest record pruned (``pruned_before``), so a retry that
  says it was first asked for before then is refused rather than paid again (the daemon's
  ``Payments.check_not_pruned``). Freed pages are reused by the next rows: the file stays flat.
- Writes: every page a commit changes is a WAL frame, fsynced. The store uses 1 KiB pages
  (``PAGE_SIZE``) and keeps each snapshot's static part in ``channel_static`` (v7), written
  once, so that a payment's commit changes about one small page per channel plus the ends of
  the payment table and its id index (docs/channels.md, "Store writes").
- A write the disk refuses (SQLite's "database or disk is full") raises ``DiskFull`` at once,
  with nothing committed: the caller learns it now rather than waiting for an answer that cannot
  come.
- A backup file is a JSON document (snapshots + versions), written to a temporary file, fsynced
  and renamed, so a crash never leaves half a backup.
"""
from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eschaton.channel.payments import PaymentRecord, PaymentState
from eschaton.core.channel import STATIC_KEYS, PersistThenSend, StoredVersion
from eschaton.core.channel.ops import op_from_fields
from eschaton.core.channel.params import ChannelParams
from eschaton.core.channel.rules import apply
from eschaton.core.channel.snapshot_json import dumps, loads
from eschaton.core.channel.versions import Version, legacy_fee_paid, other
from eschaton.errors import LocalError
from eschaton.store.sqlite import (
    SQLITE_FULL,
    Connection,
    DatabaseError,
    Error,
    Migration,
    SchemaTooNew,
    connect,
    open_db,
    refuse_newer,
    run_script,
    schema_version,
)

# 1 KiB pages: a commit writes each page it changes as a WAL frame; a payment changes its
# channel's row (about 1 KB) and the ends of the payment table and its id index (docs/channels.md,
# "Store writes": 4 KiB pages wrote about twice the bytes per payment).
PAGE_SIZE = 1024
# SQLite's page cache for this connection, in KiB. Its default (2,000 KiB) filled as the payment
# records grew the file: about 120 B of RSS per payment until it was full, the hub's memory
# climbing for the first tens of thousands of payments. What a payment touches again is small
# (each channel's row, the ends and upper levels of the payment table and its id index); pages
# read rarely (a retried id, a restart) come from the OS's cache.
CACHE_KIB = 256
LEGACY_PEER_FILE = "channel_peers.db"  # beside the store: the peer map before schema v5
BACKUP_FORMAT = "eschaton-channel-backup/1"


def _constant(snap: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: snap


class StoreError(LocalError):
    """The channel store cannot be opened, migrated, written or restored."""


class DiskFull(StoreError):
    """The filesystem holding the store has no space left: nothing was written."""


def is_disk_full(e: BaseException) -> bool:
    """SQLite's SQLITE_FULL, or ENOSPC from a plain file write."""
    if isinstance(e, Error):
        return getattr(e, "sqlite_errorcode", None) == SQLITE_FULL or "is full" in str(e)
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _v1(db: Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE channels (
            channel_id BLOB PRIMARY KEY,
            state TEXT NOT NULL,
            snapshot TEXT NOT NULL
        );
        CREATE TABLE versions (
            channel_id BLOB NOT NULL,
            number INTEGER NOT NULL,
            txid TEXT NOT NULL,
            version TEXT NOT NULL,
            peer_signature BLOB,
            PRIMARY KEY (channel_id, number)
        );
        """
    )


def _v1_to_v2(db: Connection) -> None:
    # v2: role, current number and update time as columns (listing without parsing snapshots),
    # and an index to find a version by txid when the watcher sees the funding output spent.
    run_script(
        db,
        """
        ALTER TABLE channels ADD COLUMN role TEXT NOT NULL DEFAULT '';
        ALTER TABLE channels ADD COLUMN number INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE channels ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX versions_by_txid ON versions (txid);
        """
    )
    for cid, snap in db.execute("SELECT channel_id, snapshot FROM channels").fetchall():
        s = loads(snap)
        db.execute("UPDATE channels SET role = ?, number = ? WHERE channel_id = ?",
                   (s["role"], s["current"]["number"], cid))


def _v2_to_v3(db: Connection) -> None:
    # v3: the parts of a snapshot that only change while a channel opens live in their own
    # column, written once, so each update encodes and writes a third of the bytes. Old rows keep
    # their whole snapshot in ``snapshot``; loading merges ``static`` under it.
    db.execute("ALTER TABLE channels ADD COLUMN static TEXT NOT NULL DEFAULT '{}'")


def _v3_to_v4(db: Connection) -> None:
    # v4: payment ids, so that a retried request never pays twice (eschaton.channel.payments).
    # ``state`` by name; ``number`` is the channel version that pays it.
    run_script(
        db,
        """
        CREATE TABLE payments (
            id TEXT PRIMARY KEY,
            channel_id BLOB NOT NULL,
            amount INTEGER NOT NULL,
            state TEXT NOT NULL,
            number INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            error TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX payments_by_state ON payments (state);
        """
    )


def _v4_to_v5(db: Connection) -> None:
    # v5: the channel -> peer map moves in from its own file, so that a channel and its peer are
    # written in one transaction. The old file is read, never changed: it stays as it was.
    db.execute("CREATE TABLE channel_peers (channel_id BLOB PRIMARY KEY, peer TEXT NOT NULL)")
    main = Path(db.execute("PRAGMA database_list").fetchone()[2] or ".")
    legacy = main.with_name(LEGACY_PEER_FILE)
    if main.name and legacy.exists():
        db.executemany("INSERT INTO channel_peers VALUES (?, ?)", _legacy_peers(legacy))


def _legacy_peers(path: Path) -> list[tuple[bytes, str]]:
    """The rows of a ``channel_peers.db`` as firmware before schema v5 wrote it (user_version 0
    or 1, same table); a newer one is refused like any newer database."""
    old = connect(path, synchronous="FULL")
    try:
        refuse_newer(path, schema_version(old), 1)
        if old.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'channel_peers'").fetchone() is None:
            return []
        return [(bytes(c), str(p)) for c, p in old.execute("SELECT channel_id, peer FROM channel_peers")]
    finally:
        old.close()


def _v5_to_v6(db: Connection) -> None:
    # v6: each version records who paid how much of its fee (``Version.fee_paid``), so that a
    # cooperative close or a re-anchor gives the fee steps back (docs/channels.md, "Fee reserve").
    # Snapshots and stored versions written before get the shares ``with_fee_shares`` derives.
    rows = db.execute("SELECT channel_id, static, snapshot FROM channels").fetchall()
    for cid, static, snap in rows:
        merged = loads(static)
        merged.update(loads(snap))
        params = ChannelParams.from_fields(merged["params"])
        db.execute("UPDATE channels SET snapshot = ? WHERE channel_id = ?",
                   (dumps(with_fee_shares(loads(snap), params, merged["role"])), cid))
        for number, ver in db.execute("SELECT number, version FROM versions WHERE channel_id = ?", (cid,)).fetchall():
            v = loads(ver)
            if "fee_paid" not in v:
                v["fee_paid"] = legacy_fee_paid(params, v)
                db.execute("UPDATE versions SET version = ? WHERE channel_id = ? AND number = ?",
                           (dumps(v), cid, number))


def with_fee_shares(snap: dict[str, Any], params: ChannelParams, role: str) -> dict[str, Any]:
    """``snap`` (a snapshot written before versions recorded their fee shares) with the shares.

    The current and best versions get ``legacy_fee_paid`` (derived from the version alone, so
    the peer derives the same for the same version); our versions in flight (the outbox) are
    replayed from the current one by the rules, exactly as they were built, so they stay
    consistent with what the peer will compute when it receives them."""
    snap = dict(snap)
    for key in ("current", "best"):
        v = snap.get(key)
        if isinstance(v, dict) and "fee_paid" not in v:
            snap[key] = dict(v, fee_paid=legacy_fee_paid(params, v))
    cur = snap.get("current")
    prev = Version.from_fields(cur) if isinstance(cur, dict) else None
    outbox = []
    for m in snap.get("outbox") or []:
        f = m.get("fields", {})
        v = f.get("version")
        if isinstance(v, dict) and "fee_paid" not in v:
            v = _replayed_shares(params, prev, v, f.get("op"), m.get("name"), role)
            f = dict(f, version=v)
            m = dict(m, fields=f)
            prev = Version.from_fields(v)
        outbox.append(m)
    if "outbox" in snap:
        snap["outbox"] = outbox
    pend = snap.get("pending")
    if isinstance(pend, dict) and "fee_paid" not in pend:
        same = [m["fields"]["version"] for m in outbox
                if m.get("fields", {}).get("version", {}).get("number") == pend.get("number")]
        # Not in the outbox: a bet proposal, ours ("propose") or the peer's ("incoming", "signed").
        proposer = role if snap.get("pending_kind") == "propose" else other(role)
        snap["pending"] = dict(pend, fee_paid=same[0]["fee_paid"] if same else _replayed_shares(
            params, Version.from_fields(snap["current"]), pend, snap.get("pending_op"), "mutual_propose",
            proposer)["fee_paid"])
    return snap


def _replayed_shares(params: ChannelParams, prev: Version | None, v: dict[str, Any], op: Any, name: Any,
                     role: str) -> dict[str, Any]:
    """``v`` with the fee shares the rules give when its op is applied to ``prev``; the
    version-alone derivation if the replay does not reproduce ``v`` (it always should)."""
    if prev is not None and isinstance(op, dict):
        signer = role if name == "mutual_propose" else str(v.get("signer"))
        try:
            got = apply(params, prev, op_from_fields(op), signer, 0)
            if got.fee == v.get("fee") and list(got.balances) == list(v.get("balances", [])):
                return dict(v, fee_paid=list(got.fee_paid))
        except Exception:  # noqa: BLE001 - any refusal: fall back to the derivation below
            pass
    return dict(v, fee_paid=legacy_fee_paid(params, v))


def _v6_to_v7(db: Connection) -> None:
    # v7: payment rows in the order they were made (``seq``), found by id through its unique
    # index, and no index by state. A payment's row and its completion then land on the table's
    # last page, shared with every other payment of the commit, and the state index no longer
    # takes a page write on insert and another on completion: on an SD card each page written
    # is a whole WAL frame (see "Store writes" in docs/channels.md). Pruning takes the oldest
    # rows by ``seq``; ``payment_pruned`` keeps, per channel, the creation time of the newest
    # record pruned (a retry that says it is older is refused, see the rules).
    run_script(
        db,
        """
        CREATE TABLE payments_v7 (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            channel_id BLOB NOT NULL,
            amount INTEGER NOT NULL,
            state TEXT NOT NULL,
            number INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            error TEXT NOT NULL DEFAULT ''
        );
        INSERT INTO payments_v7 (id, channel_id, amount, state, number, created_at, updated_at, error)
            SELECT id, channel_id, amount, state, number, created_at, updated_at, error FROM payments
            ORDER BY created_at, id;
        DROP TABLE payments;
        ALTER TABLE payments_v7 RENAME TO payments;
        CREATE TABLE payment_pruned (channel_id BLOB PRIMARY KEY, before REAL NOT NULL);
        CREATE TABLE channel_static (channel_id BLOB PRIMARY KEY, static TEXT NOT NULL);
        INSERT INTO channel_static SELECT channel_id, static FROM channels WHERE static != '{}';
        ALTER TABLE channels DROP COLUMN static;
        """
    )
    # ``channel_static``: the part of a snapshot that only changes while a channel opens (v3) in
    # a table of its own: an update rewrites the channel's whole row, and with the static part
    # in it that row overflowed a 1 KiB page into three or four (see PAGE_SIZE).


MIGRATIONS: tuple[Migration, ...] = (_v1, _v1_to_v2, _v2_to_v3, _v3_to_v4, _v4_to_v5, _v5_to_v6, _v6_to_v7)
SCHEMA_VERSION = len(MIGRATIONS)


_STATIC = "COALESCE(s.static, '{}')"  # rows written before v3 hold their whole snapshot in ``snapshot``
_JOIN_STATIC = "LEFT JOIN channel_static s ON s.channel_id = c.channel_id"


@dataclass(frozen=True, slots=True)
class VersionRow:
    channel_id: bytes
    number: int
    txid: str
    version: Version
    peer_signature: bytes | None


def _payment(r: Any) -> PaymentRecord:
    return PaymentRecord(r[0], bytes(r[1]), r[2], PaymentState[r[3]], r[4], r[5], r[6], r[7])


class ChannelStore:
    def __init__(self, path: Path | str, *, fsync: bool = True, keep_every_version: bool = False) -> None:
        """``fsync=False`` (synchronous=OFF) exists only to measure CPU cost in benchmarks."""
        self.path = Path(path)
        self.keep_every_version = keep_every_version
        try:
            self.db = open_db(self.path, MIGRATIONS, synchronous="FULL" if fsync else "OFF", check_same_thread=False,
                              page_size=PAGE_SIZE, pragmas=(f"cache_size = -{CACHE_KIB}",))
        except SchemaTooNew as e:
            raise StoreError(str(e)) from None
        except DatabaseError as e:
            if is_disk_full(e):
                raise DiskFull(f"disk full: cannot open channel store {self.path}") from e
            raise StoreError(f"cannot open channel store {self.path}: {e}") from e
        self._deferred: dict[bytes, PersistThenSend] = {}
        self._deferred_payments: dict[str, PaymentRecord] = {}  # bookkeeping, see the rules
        self._staged_peers: dict[bytes, str] = {}  # written with the next commit, see the rules
        self._static: dict[bytes, dict[str, Any]] = {}  # last static part written, per channel
        self.commits = 0  # transactions written since opened (each one an fsync when durable)

    def schema_version(self) -> int:
        return schema_version(self.db)

    def persist(self, act: PersistThenSend) -> None:
        """Make ``act``'s snapshot and versions durable (one transaction) before anything is sent.

        A non-durable persist with nothing to send and no new version (bookkeeping such as an ack
        received) is held in memory and written with the channel's next commit or at ``flush()``:
        losing it in a crash is harmless, the peer's reestablish recovers it.
        """
        self.persist_many((act,))

    def persist_many(self, acts: Sequence[PersistThenSend], payments: Sequence[PaymentRecord] = ()) -> None:
        """Group commit: ``acts`` (in the order they were produced) in one transaction, with the
        records of the payments their versions carry."""
        newest: dict[bytes, PersistThenSend] = {}
        versions: list[tuple[bytes, StoredVersion]] = []
        for act in acts:
            cid = act.channel_id
            if not act.durable and not act.messages and not act.versions and cid not in newest:
                self._deferred[cid] = act
                continue
            self._deferred.pop(cid, None)
            newest[cid] = act  # a later action of the same channel supersedes
            versions.extend((cid, sv) for sv in act.versions
                            if self.keep_every_version or sv.version.escrows or sv.version.bets)
        if newest or payments:
            # One snapshot per channel, taken now (see PersistThenSend): the channel's state at
            # the commit, which covers every staged action of it.
            self._write({cid: act.snapshot for cid, act in newest.items()}, versions, payments)

    def flush(self) -> None:
        """Write bookkeeping held back by ``persist`` and ``record_payments``, and staged peers."""
        pending, self._deferred = self._deferred, {}
        if pending or self._deferred_payments or self._staged_peers:
            self._write({cid: act.snapshot for cid, act in pending.items()}, [])

    def _flush_channels(self) -> None:
        """Before reading channels: write held channel bookkeeping (payment records stay held)."""
        if self._deferred:
            self.flush()

    def drop_held(self) -> None:
        """Forget held channel bookkeeping (after a failed commit, before reloading: the peers'
        reestablish brings it back). Held payment records and staged peers are kept."""
        self._deferred = {}

    # ---- peers --------------------------------------------------------------------------

    def stage_peer(self, channel_id: bytes, peer: str) -> None:
        """Record that ``peer`` holds ``channel_id``: written in the next commit, which is the
        one that makes the channel's first state durable (see the rules)."""
        self._staged_peers[channel_id] = peer

    def peers(self) -> dict[bytes, str]:
        """channel id -> peer node id (hex), staged ones included."""
        rows = self.db.execute("SELECT channel_id, peer FROM channel_peers").fetchall()
        return {**{bytes(c): str(p) for c, p in rows}, **self._staged_peers}

    # ---- payments -----------------------------------------------------------------------

    def record_payments(self, recs: Sequence[PaymentRecord]) -> None:
        """Bookkeeping (a payment completed or failed): written with the next commit."""
        for r in recs:
            self._deferred_payments[r.id] = r

    def payment(self, pid: str) -> PaymentRecord | None:
        held = self._deferred_payments.get(pid)
        if held is not None:
            return held
        row = self.db.execute("SELECT id, channel_id, amount, state, number, created_at, updated_at, error "
                              "FROM payments WHERE id = ?", (pid,)).fetchone()
        return _payment(row) if row else None

    def payments(self, state: PaymentState) -> list[PaymentRecord]:
        rows = self.db.execute("SELECT id, channel_id, amount, state, number, created_at, updated_at, error "
                               "FROM payments WHERE state = ? ORDER BY seq", (state.name,)).fetchall()
        held = dict(self._deferred_payments)
        out = [held.pop(r[0]) if r[0] in held else _payment(r) for r in rows]
        return [r for r in out + list(held.values()) if r.state is state]

    def pruned_before(self, channel_id: bytes) -> float:
        """The creation time of the newest payment record of ``channel_id`` pruned (0: none)."""
        row = self.db.execute("SELECT before FROM payment_pruned WHERE channel_id = ?", (channel_id,)).fetchone()
        return float(row[0]) if row else 0.0

    def pruned_any(self) -> bool:
        """Whether any payment record was ever pruned."""
        return self.db.execute("SELECT 1 FROM payment_pruned LIMIT 1").fetchone() is not None

    def prune_payments(self, older_than: float, keep: int, limit: int = 2_000,
                       count_before: float = float("inf")) -> int:
        """Delete up to ``limit`` of the oldest payment records that were created before
        ``older_than``, or are beyond the newest ``keep`` of the store and were created before
        ``count_before`` (the count never takes a record younger than that: a retry within it is
        always answered from its record); never a PENDING one (it can still complete) nor one
        held in memory. Remembers per channel when the newest pruned
        record was created (see the rules). Works from the oldest by ``seq``: it reads what it
        deletes, not the whole table, and ``limit`` bounds one call (the caller repeats while
        it returns ``limit``). Freed pages take the next records: the file stops growing.
        Returns the number of records deleted."""
        top = self.db.execute("SELECT MAX(seq) FROM payments").fetchone()[0]
        if top is None:
            return 0
        by_count = int(top) - keep  # rows at or below this seq are beyond the newest ``keep``
        rows = self.db.execute(
            "SELECT seq, created_at FROM payments WHERE state != 'PENDING' ORDER BY seq LIMIT ?", (limit,)).fetchall()
        cut = 0
        for seq, created in rows:
            if created >= older_than and (seq > by_count or created >= count_before):
                break
            cut = int(seq)
        if not cut:
            return 0
        held = list(self._deferred_payments)
        keep_held = f" AND id NOT IN ({','.join('?' * len(held))})" if held else ""
        try:
            self.db.execute("BEGIN")
            marks = self.db.execute(
                "SELECT channel_id, MAX(created_at) FROM payments WHERE seq <= ? AND state != 'PENDING'"
                + keep_held + " GROUP BY channel_id", (cut, *held)).fetchall()
            deleted = self.db.execute("DELETE FROM payments WHERE seq <= ? AND state != 'PENDING'" + keep_held,
                                      (cut, *held)).rowcount
            self.db.executemany("INSERT INTO payment_pruned (channel_id, before) VALUES (?, ?) ON CONFLICT (channel_id) "
                                "DO UPDATE SET before = MAX(before, excluded.before)",
                                [(bytes(c), float(t)) for c, t in marks])
            self.db.execute("COMMIT")
            self.commits += 1
        except BaseException as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if is_disk_full(e):
                raise DiskFull(f"disk full: cannot prune channel store {self.path}") from e
            if isinstance(e, Error):
                raise StoreError(f"cannot prune channel store {self.path}: {e}") from e
            raise
        return int(deleted)

    def _write(self, snaps: dict[bytes, dict[str, Any]], versions: list[tuple[bytes, StoredVersion]],
               payments: Sequence[PaymentRecord] = ()) -> None:
        db = self.db
        now = int(time.time())
        written: dict[bytes, dict[str, Any]] = {}
        held, self._deferred_payments = self._deferred_payments, {}
        recs = list({**held, **{r.id: r for r in payments}}.values())  # a payment's own record wins
        peers, self._staged_peers = self._staged_peers, {}
        try:
            db.execute("BEGIN")
            if peers:
                db.executemany("INSERT OR REPLACE INTO channel_peers (channel_id, peer) VALUES (?, ?)",
                               list(peers.items()))
            for cid, snap in snaps.items():
                static = {k: v for k, v in snap.items() if k in STATIC_KEYS}
                dynamic = {k: v for k, v in snap.items() if k not in STATIC_KEYS}
                if self._static.get(cid) != static:
                    db.execute("INSERT INTO channel_static (channel_id, static) VALUES (?, ?) "
                               "ON CONFLICT (channel_id) DO UPDATE SET static = excluded.static", (cid, dumps(static)))
                db.execute(
                    "INSERT INTO channels (channel_id, state, snapshot, role, number, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id) DO UPDATE SET state = excluded.state, "
                    "snapshot = excluded.snapshot, number = excluded.number, updated_at = excluded.updated_at",
                    (cid, snap["state"], dumps(dynamic), snap["role"], snap["current"]["number"], now),
                )
                written[cid] = static
            if versions:
                db.executemany(
                    "INSERT INTO versions (channel_id, number, txid, version, peer_signature) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (channel_id, number) DO UPDATE SET txid = excluded.txid, version = excluded.version, "
                    "peer_signature = COALESCE(excluded.peer_signature, versions.peer_signature)",
                    [(cid, sv.version.number, sv.txid, dumps(sv.version.to_fields()), sv.peer_signature)
                     for cid, sv in versions],
                )
            if recs:
                db.executemany(
                    "INSERT INTO payments (id, channel_id, amount, state, number, created_at, updated_at, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                    "number = excluded.number, updated_at = excluded.updated_at, error = excluded.error",
                    [(r.id, r.channel_id, r.amount, r.state.name, r.number, r.created_at, r.updated_at, r.error)
                     for r in recs],
                )
            db.execute("COMMIT")
            self.commits += 1
        except BaseException as e:
            if db.in_transaction:  # SQLite may have rolled back by itself (a full disk does)
                db.execute("ROLLBACK")
            for cid in snaps:
                self._static.pop(cid, None)
            # Held bookkeeping stays held (a newer record of the same id, staged since, wins).
            self._deferred_payments = {**held, **self._deferred_payments}
            self._staged_peers = {**peers, **self._staged_peers}
            if is_disk_full(e):
                raise DiskFull(f"disk full: cannot write channel store {self.path}") from e
            if isinstance(e, Error):
                raise StoreError(f"cannot write channel store {self.path}: {e}") from e
            raise
        self._static.update(written)

    @staticmethod
    def _merge(static: str, snapshot: str) -> dict[str, Any]:
        out: dict[str, Any] = loads(static)
        out.update(loads(snapshot))
        return out

    def load(self, channel_id: bytes) -> dict[str, Any] | None:
        if channel_id in self._deferred:
            return self._deferred[channel_id].snapshot
        row = self.db.execute(f"SELECT {_STATIC}, c.snapshot FROM channels c {_JOIN_STATIC} WHERE c.channel_id = ?",
                              (channel_id,)).fetchone()
        return self._merge(row[0], row[1]) if row else None

    def load_all(self) -> list[dict[str, Any]]:
        self._flush_channels()
        return [self._merge(r[0], r[1]) for r in self.db.execute(
            f"SELECT {_STATIC}, c.snapshot FROM channels c {_JOIN_STATIC} ORDER BY c.channel_id")]

    def states(self) -> dict[bytes, str]:
        self._flush_channels()
        return {bytes(r[0]): r[1] for r in self.db.execute("SELECT channel_id, state FROM channels")}

    def versions(self, channel_id: bytes) -> list[VersionRow]:
        rows = self.db.execute(
            "SELECT number, txid, version, peer_signature FROM versions WHERE channel_id = ? ORDER BY number",
            (channel_id,),
        ).fetchall()
        return [VersionRow(channel_id, n, t, Version.from_fields(loads(v)), bytes(s) if s is not None else None)
                for n, t, v, s in rows]

    def version_by_txid(self, txid: str) -> VersionRow | None:
        r = self.db.execute(
            "SELECT channel_id, number, txid, version, peer_signature FROM versions WHERE txid = ?", (txid,)
        ).fetchone()
        if r is None:
            return None
        return VersionRow(bytes(r[0]), r[1], r[2], Version.from_fields(loads(r[3])),
                          bytes(r[4]) if r[4] is not None else None)

    # ---- backups ------------------------------------------------------------------------

    def export_backup(self, path: Path | str) -> int:
        """Write every channel (snapshot + versions) to ``path`` atomically; returns the count."""
        self.flush()
        chans = []
        for snap in self.load_all():
            cid = snap["channel_id"]
            vers = [{"number": v.number, "txid": v.txid, "version": v.version.to_fields(),
                     "peer_signature": v.peer_signature} for v in self.versions(cid)]
            chans.append({"snapshot": snap, "versions": vers})
        doc = dumps({"format": BACKUP_FORMAT, "channels": chans})
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        # 0600 like everything else: a backup holds every channel's state and signatures.
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(doc)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return len(chans)

    def import_backup(self, path: Path | str) -> list[bytes]:
        """Restore channels from a backup; a channel already stored at a newer number is kept.

        Returns the ids restored. A restored channel may be older than what the peer holds: the
        node must reestablish before using it (the core reports ``data_loss`` if so).
        """
        try:
            doc = loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError, ValueError) as e:
            raise StoreError(f"cannot read backup {path}: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
            raise StoreError(f"{path} is not a channel backup")
        restored = []
        for ch in doc["channels"]:
            snap = ch["snapshot"]
            cid = snap["channel_id"]
            params = ChannelParams.from_fields(snap["params"])
            snap = with_fee_shares(snap, params, snap["role"])  # a backup from before schema 6
            for v in ch["versions"]:
                if "fee_paid" not in v["version"]:
                    v["version"]["fee_paid"] = legacy_fee_paid(params, v["version"])
            have = self.load(cid)
            if have is not None and have["current"]["number"] >= snap["current"]["number"]:
                continue
            vers = tuple(StoredVersion(Version.from_fields(v["version"]), v["peer_signature"], v["txid"])
                         for v in ch["versions"])
            self.persist(PersistThenSend(cid, _constant(snap), vers, (), True))
            restored.append(cid)
        return restored

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()
