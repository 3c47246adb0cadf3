"""The routing graph: channel announcements signed by both ends, checked on chain, kept in a store.

Rules / theory of operation:
- A ``ChannelAnnouncement`` names a channel (id, funding outpoint, capacity, the two funding
  keys in the channel's order), its two ends' node ids, its lifetime (the initial nLockTime,
  which caps escrow timeouts), its current nLockTime or an upper bound of it (versions only move
  it earlier; a re-anchor announces again with a higher ``seq``), its ``escrow_delta``, and each end's ``FeePolicy`` (base, ppm, reservation term,
  timeout delta) for forwarding over it. ``seq`` orders announcements of one channel: a higher
  one replaces a lower one; an equal or lower one is stale and ignored (so gossip stops).
- Both ends sign the same body (ed25519, node keys, under a domain tag): one end cannot publish
  the other's fees or a channel the other never agreed to.
- ``Graph.offer(ann, funding)``: the adapter looks up the funding outpoint first and passes what
  the chain says (``FundingOutput``: value and script, or None if absent or spent). The graph
  accepts only an announcement whose signatures verify and whose outpoint is unspent, holds
  ``capacity`` and pays the 2-of-2 P2WSH of the two announced funding keys. Refusals are one
  line (``Verdict``); what is accepted is what the router gossips on.
- ``Graph.closed(channel_id)`` / ``Graph.spent(outpoint)``: the watcher saw the funding spent;
  the channel leaves the graph.
- The store is behind ``GraphStore`` (put, get, remove, all): memory here, SQLite in the
  adapter, a DHT later. The graph never holds announcements the store does not.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from eschaton.core import script as S
from eschaton.core.link.identity import BadNodeId, NodeId, NodeKeys
from eschaton.core.routing.policy import FeePolicy, Margins
from eschaton.core.routing.route import Edge
from eschaton.errors import RemoteError

DOMAIN = b"eschaton/routing/channel/v1\x00"
_POLICY = struct.Struct(">IIIH")
_BODY = struct.Struct(">32s32sIQ33s33s32s32sIIH")
_SEQ = struct.Struct(">Q")
SIG_LEN = 64
ANNOUNCEMENT_LEN = _BODY.size + 2 * _POLICY.size + _SEQ.size + 2 * SIG_LEN


class BadAnnouncement(RemoteError):
    """A channel announcement that does not parse or verify (one line)."""


@dataclass(frozen=True, slots=True)
class ChannelAnnouncement:
    channel_id: bytes
    funding_txid: bytes
    funding_vout: int
    capacity: int
    key_1: bytes
    key_2: bytes
    node_1: bytes
    node_2: bytes
    lifetime: int
    """The channel's initial nLockTime (escrow timeouts are capped at lifetime + escrow_delta)."""
    locktime: int
    """Its current version's nLockTime, or an upper bound (versions only move it earlier)."""
    escrow_delta: int
    policy_1: FeePolicy
    policy_2: FeePolicy
    seq: int
    sig_1: bytes = b""
    sig_2: bytes = b""

    def body(self) -> bytes:
        out = _BODY.pack(self.channel_id, self.funding_txid, self.funding_vout, self.capacity,
                         self.key_1, self.key_2, self.node_1, self.node_2, self.lifetime, self.locktime,
                         self.escrow_delta)
        for p in (self.policy_1, self.policy_2):
            out += _POLICY.pack(p.base, p.ppm, p.hold_ppm, p.delta)
        return out + _SEQ.pack(self.seq)

    def signed_by(self, keys: NodeKeys) -> ChannelAnnouncement:
        """This announcement with ``keys``' signature added (``keys`` is one of its ends)."""
        sig = keys.sign(DOMAIN + self.body())
        if keys.node_id.raw == self.node_1:
            return replace(self, sig_1=sig)
        if keys.node_id.raw == self.node_2:
            return replace(self, sig_2=sig)
        raise ValueError("only an end of the channel signs its announcement")

    def encode(self) -> bytes:
        if len(self.sig_1) != SIG_LEN or len(self.sig_2) != SIG_LEN:
            raise ValueError("announcement not signed by both ends")
        return self.body() + self.sig_1 + self.sig_2

    @classmethod
    def decode(cls, raw: bytes) -> ChannelAnnouncement:
        """Parse and verify both signatures; raises ``BadAnnouncement``."""
        ann = cls.parse(raw)
        ann.verify()
        return ann

    @classmethod
    def parse(cls, raw: bytes) -> ChannelAnnouncement:
        """Parse without verifying (for a half-signed announcement asked to be countersigned)."""
        if len(raw) != ANNOUNCEMENT_LEN:
            raise BadAnnouncement(f"channel announcement of {len(raw)} bytes, expected {ANNOUNCEMENT_LEN}")
        cid, txid, vout, cap, k1, k2, n1, n2, life, lock, ed = _BODY.unpack_from(raw)
        pols = [FeePolicy(*_POLICY.unpack_from(raw, _BODY.size + i * _POLICY.size)) for i in range(2)]
        (seq,) = _SEQ.unpack_from(raw, _BODY.size + 2 * _POLICY.size)
        sigs = raw[-2 * SIG_LEN:]
        return cls(cid, txid, vout, cap, k1, k2, n1, n2, life, lock, ed, pols[0], pols[1], seq, sigs[:SIG_LEN],
                   sigs[SIG_LEN:])

    def half_encode(self) -> bytes:
        """The encoding with one end's signature and zeros for the other's: a ``route_sign``."""
        if len(self.sig_1) != SIG_LEN and len(self.sig_2) != SIG_LEN:
            raise ValueError("announcement signed by neither end")
        return self.body() + (self.sig_1 or bytes(SIG_LEN)) + (self.sig_2 or bytes(SIG_LEN))

    def signed_by_end(self, node: bytes) -> bool:
        """True if ``node`` (one of the ends) signed this announcement as it stands."""
        sig = self.sig_1 if node == self.node_1 else self.sig_2 if node == self.node_2 else b""
        try:
            return len(sig) == SIG_LEN and NodeId(node).verify(DOMAIN + self.body(), sig)
        except BadNodeId:
            return False

    def verify(self) -> None:
        if self.node_1 == self.node_2:
            raise BadAnnouncement("channel announcement with the same node at both ends")
        if self.capacity <= 0 or self.escrow_delta <= 0:
            raise BadAnnouncement("channel announcement with no capacity or escrow delta")
        if self.locktime > self.lifetime:
            raise BadAnnouncement("channel announcement with an nLockTime above its lifetime")
        for p in (self.policy_1, self.policy_2):
            try:
                p.check(Margins(confirm=0, safety=0))
            except ValueError as exc:
                raise BadAnnouncement(f"channel announcement policy: {exc}") from None
        msg = DOMAIN + self.body()
        for node, sig in ((self.node_1, self.sig_1), (self.node_2, self.sig_2)):
            try:
                ok = NodeId(node).verify(msg, sig)
            except BadNodeId:
                raise BadAnnouncement(f"channel announcement end {node.hex()[:12]} is not a node id") from None
            if not ok:
                raise BadAnnouncement(f"channel announcement signature of {node.hex()[:12]} does not verify")

    @property
    def outpoint(self) -> tuple[bytes, int]:
        return self.funding_txid, self.funding_vout

    def funding_script(self) -> bytes:
        return S.p2wsh(S.multisig_2of2(self.key_1, self.key_2))

    def edges(self) -> tuple[Edge, Edge]:
        """Both directions, each with the policy of the node forwarding over it."""
        return (Edge(self.channel_id, self.node_1, self.node_2, self.policy_1, self.locktime, self.escrow_delta,
                     self.capacity, self.lifetime),
                Edge(self.channel_id, self.node_2, self.node_1, self.policy_2, self.locktime, self.escrow_delta,
                     self.capacity, self.lifetime))


@dataclass(frozen=True, slots=True)
class FundingOutput:
    """What the chain says about an announced funding outpoint (unspent)."""

    value: int
    script: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    why: str
    """Empty if accepted and new; ``stale`` for a known or older announcement; otherwise the refusal."""


class GraphStore(Protocol):
    """Where announcements live (memory, SQLite, later a DHT)."""

    def put(self, ann: ChannelAnnouncement) -> None: ...
    def get(self, channel_id: bytes) -> ChannelAnnouncement | None: ...
    def remove(self, channel_id: bytes) -> None: ...
    def all(self) -> Iterator[ChannelAnnouncement]: ...


class MemoryGraphStore:
    def __init__(self) -> None:
        self._rows: dict[bytes, ChannelAnnouncement] = {}

    def put(self, ann: ChannelAnnouncement) -> None:
        self._rows[ann.channel_id] = ann

    def get(self, channel_id: bytes) -> ChannelAnnouncement | None:
        return self._rows.get(channel_id)

    def remove(self, channel_id: bytes) -> None:
        self._rows.pop(channel_id, None)

    def all(self) -> Iterator[ChannelAnnouncement]:
        return iter(list(self._rows.values()))


class Graph:
    def __init__(self, store: GraphStore) -> None:
        self.store = store
        self._by_outpoint = {a.outpoint: a.channel_id for a in store.all()}

    def offer(self, ann: ChannelAnnouncement, funding: FundingOutput | None) -> Verdict:
        known = self.store.get(ann.channel_id)
        if known is not None and ann.seq <= known.seq:
            return Verdict(False, "stale")
        try:
            ann.verify()
        except BadAnnouncement as exc:
            return Verdict(False, str(exc))
        if known is not None and (known.outpoint, known.node_1, known.node_2) != (ann.outpoint, ann.node_1, ann.node_2):
            return Verdict(False, "channel announcement changes the outpoint or the ends of a known channel")
        if funding is None:
            return Verdict(False, f"funding outpoint {ann.funding_txid.hex()[:16]}:{ann.funding_vout} is not unspent on chain")
        if funding.value != ann.capacity:
            return Verdict(False, f"funding output holds {funding.value}, not the announced capacity {ann.capacity}")
        if funding.script != ann.funding_script():
            return Verdict(False, "funding output does not pay the 2-of-2 of the announced keys")
        self.store.put(ann)
        self._by_outpoint[ann.outpoint] = ann.channel_id
        return Verdict(True, "")

    def closed(self, channel_id: bytes) -> bool:
        ann = self.store.get(channel_id)
        if ann is None:
            return False
        self.store.remove(channel_id)
        self._by_outpoint.pop(ann.outpoint, None)
        return True

    def spent(self, txid: bytes, vout: int) -> bool:
        cid = self._by_outpoint.get((txid, vout))
        return self.closed(cid) if cid is not None else False

    def edges(self) -> list[Edge]:
        return [e for a in self.store.all() for e in a.edges()]

    def __len__(self) -> int:
        return len(self._by_outpoint)
