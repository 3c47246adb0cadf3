"""Escrows by hash in the payments facade: offer (payer), fulfil and fail (payee), typed events.

Rules / theory of operation (the channel core's rules: ``eschaton.core.channel.updates``):
- ``offer(channel or peer, amount, payment_hash, timeout, id)``: the payer locks ``amount``
  under ``payment_hash`` until ``timeout`` (an absolute height; 0: the channel's default). An
  explicit timeout is only offered to a peer that announced ``escrow_by_hash`` (an older peer
  would refuse the version). The id is a payment id like ``pay``'s: its record (``esc:<id>``)
  is written in the transaction that makes the offering version durable, so a retried request
  with the same id never locks twice; it returns the escrow the first request made (a retry
  with another channel, amount or hash is refused).
- ``fulfil(escrow, preimage)`` (payee): the preimage is made durable, then sent (or, with the
  payer offline, resent by ``reestablish`` once it is back); the payer commits. If the payer never does, the payee's held version carries the escrow output and the
  watcher claims it with the preimage once that version confirms.
- ``fail(escrow, code)`` (payee): tells the payer why, then returns the escrow (a version the
  payee signs, so it needs the turn).
- An escrow is named ``<channel id hex>:<escrow id>`` (a unique prefix of the channel id will
  do), on the API and in the events.
- Events (to the facade's listeners, after the commit of what they report):
  ``EscrowOffered`` (payee: an escrow was offered to us), ``EscrowFulfilled`` (payer: the
  payee revealed the preimage, which is durable here; a forwarding node claims upstream with
  it), ``EscrowFailed`` (payer: the escrow came back, or the payee announced it will), and
  ``EscrowSettled`` (payee: committed to us; payer: our commit was acknowledged). Payer events
  carry the offer's payment id while this process knows it (from its offer or, after a
  restart, from the records of offers not yet acknowledged); otherwise the escrow's name.
- The payer commits a fulfilled escrow at once if it holds the turn; otherwise the core asks for
  the turn and ``commit_due`` (run on the turn's arrival, a relink and at start) commits it.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from eschaton.channel.payments import PaymentError, PaymentRecord, check_id
from eschaton.core import script as S
from eschaton.core.channel import Channel, Notify
from eschaton.core.wire.messages import EXTENSIONS
from eschaton.errors import LocalError, RemoteError, TransientError

log = logging.getLogger("eschaton.escrows")

ESCROW_BY_HASH = next(x.feature for x in EXTENSIONS if x.name == "escrow_by_hash")
RECORD_PREFIX = "esc:"


class EscrowError(LocalError):
    """An escrow request the node refuses (unknown escrow, bad preimage, peer lacks support)."""


@dataclass(frozen=True, slots=True)
class EscrowOffered:
    """(payee) ``amount`` locked for us under ``payment_hash`` until ``timeout``."""

    escrow: str
    channel_id: bytes
    peer: str
    escrow_id: int
    amount: int
    payment_hash: bytes
    timeout: int


@dataclass(frozen=True, slots=True)
class EscrowFulfilled:
    """(payer) The payee revealed ``preimage`` (durable here); the escrow is being committed."""

    payment_id: str
    escrow: str
    channel_id: bytes
    escrow_id: int
    amount: int
    payment_hash: bytes
    preimage: bytes


@dataclass(frozen=True, slots=True)
class EscrowFailed:
    """(payer) The payee failed the escrow (``returned``: the amount is back in our balance)."""

    payment_id: str
    escrow: str
    channel_id: bytes
    escrow_id: int
    payment_hash: bytes
    code: str
    returned: bool


@dataclass(frozen=True, slots=True)
class EscrowSettled:
    """The escrow was committed: ``role`` payee (paid to us) or payer (our commit acknowledged)."""

    payment_id: str
    escrow: str
    channel_id: bytes
    escrow_id: int
    payment_hash: bytes
    role: str


EscrowEvent = EscrowOffered | EscrowFulfilled | EscrowFailed | EscrowSettled


def escrow_name(cid: bytes, eid: int) -> str:
    return f"{cid.hex()}:{eid}"


class Escrows:
    """The escrow half of the payments facade (``Payments.offer_escrow`` etc. call in here)."""

    def __init__(self, payments: Any, svc: Any) -> None:
        self._payments = payments
        self._svc = svc
        self._ids: dict[tuple[bytes, int], str] = {}  # (channel, escrow id) -> offer's payment id
        self._failing: dict[tuple[bytes, int], str] = {}  # code the payee announced
        self._committing: set[bytes] = set()
        for rec in payments.pending.values():
            if rec.id.startswith(RECORD_PREFIX):
                self._remember(rec)

    # --- names ---------------------------------------------------------------------------------

    def resolve(self, name: str) -> tuple[Channel, int]:
        """``<channel id hex or unique prefix>:<escrow id>`` -> (channel, escrow id)."""
        cid_part, sep, eid_part = name.rpartition(":")
        if not sep or not eid_part.isdigit() or len(cid_part) < 8:
            raise EscrowError(f"bad escrow {name!r}: expected CHANNEL:ESCROW_ID (a channel id or a "
                              "prefix of 8+ hex digits, then the escrow number)")
        hits = [c for cid, c in self._svc.endpoint.channels.items() if cid.hex().startswith(cid_part.lower())]
        if len(hits) != 1:
            raise EscrowError(f"{'no' if not hits else 'more than one'} channel matches {cid_part!r}")
        return hits[0], int(eid_part)

    def _remember(self, rec: PaymentRecord) -> None:
        row = self._offer_row(rec)
        if row is not None:
            self._ids[(rec.channel_id, row[0])] = rec.id[len(RECORD_PREFIX):]

    def _offer_row(self, rec: PaymentRecord) -> tuple[int, bytes] | None:
        """(escrow id, hash) of the escrow the offer ``rec`` made, from the stored version."""
        for row in self._svc.store.versions(rec.channel_id):
            if row.number == rec.number and row.version.escrows:
                e = max(row.version.escrows, key=lambda x: x.id)
                return e.id, e.payment_hash
        return None

    def offered_id(self, pid: str) -> int | None:
        """The escrow id our signed offer ``pid`` made (None: never signed, or it failed)."""
        rec = self._payments.get(RECORD_PREFIX + pid)
        if rec is None or rec.state.value == "failed":
            return None
        row = self._offer_row(rec)
        return row[0] if row is not None else None

    # --- payer ---------------------------------------------------------------------------------

    async def offer(self, target: Channel | str, amount: int, payment_hash: bytes, timeout: int,
                    pid: str | None, acked: bool = True) -> tuple[PaymentRecord, int]:
        if amount <= 0:
            raise EscrowError("amount must be positive")
        if len(payment_hash) != 32:
            raise EscrowError("payment hash must be 32 bytes (64 hex digits)")
        if timeout < 0:
            raise EscrowError("timeout must be a block height (0: the channel's default)")
        ch = target if isinstance(target, Channel) else await self._payments.wait_channel(target, amount)
        if timeout and not self._svc.peer_has(ch.channel_id, ESCROW_BY_HASH):
            raise EscrowError("the peer does not support escrows with an explicit timeout "
                              "(feature escrow_by_hash); offer without --timeout")
        rid = RECORD_PREFIX + check_id(pid) if pid else None

        def same_hash(rec: PaymentRecord) -> str | None:
            row = self._offer_row(rec)
            if row is not None and row[1] != payment_hash:
                return f"escrow id {pid} was used with another hash; a new escrow needs a new id"
            return None

        rec = await self._payments.signed_once(ch, amount, rid, "offer_escrow_hash",
                                               (amount, payment_hash, timeout), same_hash, acked)
        row = self._offer_row(rec)
        if row is None:  # pragma: no cover - the record's version is stored with it
            raise EscrowError(f"escrow {rec.id} has no stored offering version")
        self._ids[(rec.channel_id, row[0])] = rec.id[len(RECORD_PREFIX):]
        return rec, row[0]

    def _pid(self, cid: bytes, eid: int) -> str:
        return self._ids.get((cid, eid), escrow_name(cid, eid))

    def commit_due(self, ch: Channel) -> None:
        """Commit the escrows the peer fulfilled (in a task: it may wait for the turn)."""
        cid = ch.channel_id
        if not ch.commits_due() or cid in self._committing or ch.state.name != "OPEN":
            return
        self._committing.add(cid)

        async def run() -> None:
            try:
                await self._svc.run_update(ch, "commit_fulfilled")
            except (LocalError, RemoteError, TransientError) as e:
                log.warning("committing fulfilled escrows on %s: %s (tried again on the next turn or link)",
                            cid.hex()[:12], e)
            finally:
                self._committing.discard(cid)
        asyncio.get_running_loop().create_task(run())

    # --- payee ---------------------------------------------------------------------------------

    async def fulfil(self, name: str, preimage: bytes, wait: bool = True) -> tuple[Channel, bool]:
        """Make the preimage durable and send it; with ``wait``, wait for the payer's commit
        while the payer is linked. Returns the channel and whether the escrow was committed."""
        ch, eid = self.resolve(name)
        e = next((x for x in ch.current.escrows if x.id == eid and x.payer != ch.role), None)
        if e is None:
            raise EscrowError(f"no open escrow {name} offered to this node")
        if len(preimage) != 32 or S.sha256(preimage) != e.payment_hash:
            raise EscrowError(f"preimage does not match escrow {name}'s hash")
        peer = self._svc.peers.map.get(ch.channel_id, "")
        linked = self._svc.linked(peer)
        if linked and not self._svc.peer_has(ch.channel_id, ESCROW_BY_HASH):
            raise EscrowError("the peer does not support escrow_fulfil (feature escrow_by_hash); "
                              "close the channel to claim the escrow on chain with the preimage")
        # Durable first; sent now if the payer is linked, else by reestablish when it is back.
        await self._svc.run_local(ch, "fulfil_escrow", eid, preimage)
        cid = ch.channel_id

        def committed() -> bool:
            c = self._svc.endpoint.channels.get(cid)
            return c is not None and all(x.id != eid for x in c.current.escrows)
        if wait and linked:
            await self._svc.wait_for(committed, f"the payer to commit escrow {name}")
        return self._svc.endpoint.channels.get(cid, ch), committed()

    async def fail(self, name: str, code: str) -> Channel:
        ch, eid = self.resolve(name)
        if not any(x.id == eid and x.payer != ch.role for x in ch.current.escrows):
            raise EscrowError(f"no open escrow {name} offered to this node")
        if self._svc.peer_has(ch.channel_id, ESCROW_BY_HASH):
            await self._svc.run_local(ch, "fail_escrow", eid, code)
        await self._svc.run_update(ch, "return_escrow", eid)
        return ch

    # --- events ----------------------------------------------------------------------------------

    def on_notify(self, n: Notify) -> None:
        """The channel service's notifications, after the commit of their state."""
        cid, d = n.channel_id, n.data
        emit = self._payments.emit
        if n.kind == "escrow_offered":
            eid = int(d["escrow_id"])
            emit(EscrowOffered(escrow_name(cid, eid), cid, self._svc.peers.map.get(cid, ""), eid,
                               int(d["amount"]), d["payment_hash"], int(d["timeout"])))
        elif n.kind == "escrow_fulfilled":
            eid = int(d["escrow_id"])
            emit(EscrowFulfilled(self._pid(cid, eid), escrow_name(cid, eid), cid, eid, int(d["amount"]),
                                 d["payment_hash"], d["preimage"]))
            ch = self._svc.endpoint.channels.get(cid)
            if ch is not None:
                self.commit_due(ch)
        elif n.kind == "escrow_failing":
            eid = int(d["escrow_id"])
            self._failing[(cid, eid)] = str(d["code"])
            emit(EscrowFailed(self._pid(cid, eid), escrow_name(cid, eid), cid, eid, d["payment_hash"],
                              str(d["code"]), False))
        elif n.kind == "escrow_returned":
            eid = int(d["escrow_id"])
            ch = self._svc.endpoint.channels.get(cid)
            if ch is not None and d.get("payer") == ch.role:
                emit(EscrowFailed(self._pid(cid, eid), escrow_name(cid, eid), cid, eid, d["payment_hash"],
                                  self._failing.pop((cid, eid), "returned"), True))
                self._ids.pop((cid, eid), None)
        elif n.kind == "escrow_committed":
            eid = int(d["escrow_id"])
            emit(EscrowSettled(escrow_name(cid, eid), escrow_name(cid, eid), cid, eid,
                               S.sha256(d["preimage"]), "payee"))
        elif n.kind == "escrow_commit_acked":
            eid = int(d["escrow_id"])
            emit(EscrowSettled(self._pid(cid, eid), escrow_name(cid, eid), cid, eid, d["payment_hash"], "payer"))
            self._ids.pop((cid, eid), None)
        elif n.kind in ("turn", "opened"):
            ch = self._svc.endpoint.channels.get(cid)
            if ch is not None:
                self.commit_due(ch)


def check_hash(text: str) -> bytes:
    try:
        h = bytes.fromhex(text)
    except ValueError:
        raise EscrowError(f"bad hash {text[:80]!r}: expected 64 hex digits") from None
    if len(h) != 32:
        raise EscrowError("bad hash: expected 64 hex digits (32 bytes)")
    return h


def check_preimage(text: str) -> bytes:
    try:
        p = bytes.fromhex(text)
    except ValueError:
        raise EscrowError("bad preimage: expected 64 hex digits") from None
    if len(p) != 32:
        raise EscrowError("bad preimage: expected 64 hex digits (32 bytes)")
    return p


__all__ = ["ESCROW_BY_HASH", "EscrowError", "EscrowEvent", "EscrowFailed", "EscrowFulfilled", "EscrowOffered",
           "EscrowSettled", "Escrows", "PaymentError", "check_hash", "check_preimage", "escrow_name"]
