"""Ledger entries and the hash chain over them (the storage itself is an adapter).

Rules:
- Every decision a microgrid core takes is an ``Entry``; the cores change their state only by
  applying entries (``SellerCore.apply`` / ``BuyerCore.apply``), so replaying a ledger rebuilds
  exactly the state that produced it. Adapters persist entries BEFORE acting on the decisions
  that come with them (persist, then acknowledge).
- Entry ``n`` stores ``hash_n = sha256(DOMAIN || prev_hash || canonical({seq, kind, at_ms,
  body}))`` with ``hash_0``'s predecessor ``GENESIS``. Changing, removing or inserting an entry
  anywhere breaks every later link, so tampering or a hole in the middle is detected. Losing the
  newest entries is not detectable from the chain alone: compare ``head`` with a copy kept
  elsewhere (the peer, a backup) when that matters.
- Kinds are persisted by their string value; renaming one needs a ledger migration.
- Compaction: a ``checkpoint`` entry holds a core's whole state (``snapshot()``), so applying it
  alone rebuilds that state. Entries before a checkpoint may then move to an archive file (the
  storage adapter's job). A ledger may therefore start at a sequence number above 1, but only
  with a checkpoint; its ``prev_hash`` is the archived head, so the archive and the ledger
  still form one unbroken chain.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from eschaton.core.microgrid.canonical import Plain, decode, encode
from eschaton.core.microgrid.errors import CodecError, LedgerCorrupt, MicrogridError
from eschaton.core.microgrid.fields import sha256

CHAIN_DOMAIN = b"eschaton/microgrid/ledger/v1\x00"
GENESIS = bytes(32)


class EntryKind(enum.Enum):
    OFFER_MADE = "offer_made"
    AGREEMENT = "agreement"
    RENEGOTIATION = "renegotiation"
    RENEGOTIATION_LAPSED = "renegotiation_lapsed"
    OFFER_REFUSED = "offer_refused"
    INVOICE_ISSUED = "invoice_issued"
    INVOICE_ACCEPTED = "invoice_accepted"
    INVOICE_REFUSED = "invoice_refused"
    PAYMENT_SENT = "payment_sent"
    PAYMENT_CONFIRMED = "payment_confirmed"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_RECEIVED = "payment_received"
    SUPPLY_CUT = "supply_cut"
    SUPPLY_RESTORED = "supply_restored"
    LOSS_ALARM = "loss_alarm"
    LOSS_CLEARED = "loss_cleared"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision, as recorded. ``body`` holds only plain values (see ``canonical``)."""

    kind: EntryKind
    at_ms: int
    body: Mapping[str, Plain] = field(default_factory=dict)

    def payload(self, seq: int) -> bytes:
        return encode({"seq": seq, "kind": self.kind.value, "at_ms": self.at_ms,
                       "body": dict(self.body)})

    @classmethod
    def from_payload(cls, data: bytes) -> tuple[int, Entry]:
        """(seq, entry) from stored bytes; raises ``CodecError`` if it is not an entry."""
        v = decode(data)
        if not isinstance(v, dict) or set(v) != {"seq", "kind", "at_ms", "body"}:
            raise CodecError("not a ledger entry")
        seq, kind, at_ms, body = v["seq"], v["kind"], v["at_ms"], v["body"]
        if not (isinstance(seq, int) and isinstance(kind, str) and isinstance(at_ms, int)
                and isinstance(body, dict)):
            raise CodecError("ledger entry fields have wrong types")
        try:
            return seq, cls(EntryKind(kind), at_ms, body)
        except ValueError as exc:
            raise CodecError(f"unknown ledger entry kind {kind!r}") from exc


def link_hash(prev_hash: bytes, payload: bytes) -> bytes:
    return sha256(CHAIN_DOMAIN + prev_hash + payload)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as the store holds it: position, payload bytes and both chain hashes."""

    seq: int
    prev_hash: bytes
    hash: bytes
    payload: bytes


def verify_chain(rows: Iterable[StoredEntry], expected_head: bytes | None = None) -> list[Entry]:
    """Check every link from ``GENESIS`` (or from a leading checkpoint, see the module doc);
    return the decoded entries or raise ``LedgerCorrupt``.

    ``expected_head``, if given, must equal the last hash (detects loss of the newest entries).
    """
    prev = GENESIS
    expect_seq = 1
    out: list[Entry] = []
    for row in rows:
        if not out and row.seq > 1:
            # A compacted ledger: it must open with a checkpoint, chained to the archive's head.
            try:
                _, first = Entry.from_payload(row.payload)
            except CodecError as exc:
                raise LedgerCorrupt(row.seq, str(exc)) from exc
            if first.kind is not EntryKind.CHECKPOINT:
                raise LedgerCorrupt(row.seq, "entries before this one are missing (a hole at the start)")
            prev, expect_seq = row.prev_hash, row.seq
        if row.seq != expect_seq:
            raise LedgerCorrupt(row.seq, f"expected entry {expect_seq} (a hole or a reorder)")
        if row.prev_hash != prev:
            raise LedgerCorrupt(row.seq, "previous-hash link broken")
        if link_hash(prev, row.payload) != row.hash:
            raise LedgerCorrupt(row.seq, "content does not match its hash")
        try:
            seq, entry = Entry.from_payload(row.payload)
        except CodecError as exc:
            raise LedgerCorrupt(row.seq, str(exc)) from exc
        if seq != row.seq:
            raise LedgerCorrupt(row.seq, "payload names another position")
        out.append(entry)
        prev = row.hash
        expect_seq += 1
    if expected_head is not None and prev != expected_head:
        raise LedgerCorrupt(expect_seq - 1, "head differs from the expected head (truncated?)")
    return out


def body_int(v: object) -> int:
    """Typed access to a field of an entry body (a verified ledger never fails these)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise CodecError("ledger field is not an integer")
    return v


def body_text(v: object) -> str:
    if not isinstance(v, str):
        raise CodecError("ledger field is not a string")
    return v


def body_bytes(v: object) -> bytes:
    if not isinstance(v, bytes):
        raise CodecError("ledger field is not bytes")
    return v


def body_dict(v: object) -> dict[str, Plain]:
    """A table inside a checkpoint's state (see ``snapshot`` in the cores)."""
    if not isinstance(v, dict):
        raise MicrogridError("checkpoint: expected a table")
    return v


def body_list(v: object) -> list[Plain]:
    if not isinstance(v, list):
        raise MicrogridError("checkpoint: expected a list")
    return v
