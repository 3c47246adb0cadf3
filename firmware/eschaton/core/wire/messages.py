"""THE wire message table: every message a link may carry, and the service that owns it, declared once.

Each row is ``(name, type id, fields, doc)``; every field has a type with a size limit. The codec
(``codec.py``), the link (``core/link/link.py``), the router (``eschaton.net.router``: one handler
per row) and ``docs/network.md`` all read this table.

Services (``SERVICES``): each owns a range of type ids and, unless it is link control, one
feature bit. A node announces in ``init`` the bits of the services it runs; a message of a
service the peer did not announce is never sent to it, so nodes of different versions share a
mesh. Rules for ids ("it's OK to be odd", as in Lightning's BOLT #1):
- an **odd** id is optional: a receiver that does not know it (an older table) or does not run
  its service ignores it (logged at debug and counted) and the link stays;
- an **even** id must be understood: a receiver that does not know it closes the link with a
  one-line error naming the id.
A new row takes a fresh id in its service's range: odd if an older peer running the same
service may safely ignore it, even if the service cannot work without it. A new service takes a
fresh range and a fresh feature bit (odd bits: optional services; even bits are kept for a
future "the peer must run this" rule and refused in the table for now).

The channel rows carry the channel core's own messages: a ``channel_id`` and a ``body``, the
canonical JSON of the message's other fields (``eschaton.daemon.chanwire``). The channel core
validates the body; the wire bounds its size. So the channel protocol can evolve without
touching this table or the codec.
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.core.wire.fields import (
    Bytes,
    Field,
    Fixed,
    ListOf,
    MessageSpec,
    Text,
    UInt,
)

U16 = UInt(16)
U64 = UInt(64)
MAX_FEATURE_BYTES = 32
"""Feature bitfields are at most 256 bits."""
I63 = UInt(63)  # the microgrid core's integers are at most 2**63 - 1
CHANNEL_ID = Fixed(32)
CHANNEL_BODY = Field("body", Bytes(max_len=60_000, min_len=2),
                     doc="The channel message's fields as canonical JSON (channel core validates).")


def _cid(doc: str = "The channel this message belongs to.") -> Field:
    return Field("channel_id", CHANNEL_ID, doc=doc)


MESSAGES: tuple[MessageSpec, ...] = (
    # ---- link control --------------------------------------------------------------------
    MessageSpec("warning", 1, (
        Field("code", U16),
        Field("message", Text(512)),
        Field("channel_id", CHANNEL_ID, optional=True),
    ), "Non-fatal complaint; the link stays up."),
    MessageSpec("init", 2, (
        Field("features", Bytes(max_len=MAX_FEATURE_BYTES),
              doc="Feature bits of the services this node runs (big-endian bitfield; bit 0 is the last byte's lowest bit)."),
        Field("name", Text(64), optional=True, doc="Human-readable node name."),
    ), "First message on an established link: the services this node runs (the version is fixed by the handshake)."),
    MessageSpec("error", 4, (
        Field("code", U16, doc="Machine-readable reason."),
        Field("message", Text(512), doc="Human-readable reason."),
        Field("channel_id", CHANNEL_ID, optional=True, doc="Set when the error concerns one channel."),
    ), "Fatal: the sender closes the link (or fails the named channel) after sending it."),
    MessageSpec("ping", 6, (
        Field("nonce", U64, doc="Echoed in the pong."),
        Field("padding", Bytes(1024), optional=True, doc="Ignored; hides traffic patterns."),
    ), "Liveness probe; the receiver answers pong with the same nonce."),
    MessageSpec("pong", 8, (
        Field("nonce", U64),
        Field("padding", Bytes(1024), optional=True),
    ), "Answer to ping."),
    # ---- trade channels ---------------------------------------------------------------------
    # Each row carries the channel core's canonical JSON body (see eschaton.daemon.chanwire):
    # the channel core validates the fields; the wire bounds the size.
    MessageSpec("open_channel", 32, (_cid(), CHANNEL_BODY), "Opener -> acceptor: parameters, funding key, payout script, funding inputs and change."),
    MessageSpec("accept_channel", 34, (_cid(), CHANNEL_BODY), "Acceptor -> opener: funding key, payout script, its inputs and change."),
    MessageSpec("refund_signature", 36, (_cid(), CHANNEL_BODY), "A signature on the initial refund, sent before any funding input is signed."),
    MessageSpec("funding_signatures", 38, (_cid(), CHANNEL_BODY), "Witnesses for the sender's funding inputs."),
    MessageSpec("channel_ready", 40, (_cid(), CHANNEL_BODY), "The funding transaction is deep enough; updates may start."),
    MessageSpec("update", 42, (_cid(), CHANNEL_BODY), "A new refund version signed by the sender (a payment, escrow or bet)."),
    MessageSpec("update_ack", 44, (_cid(), CHANNEL_BODY), "Countersignature of a version, sent only after it is persisted."),
    MessageSpec("mutual_propose", 46, (_cid(), CHANNEL_BODY), "Proposal of a version both sides sign (bets, escrow returns)."),
    MessageSpec("mutual_sign", 48, (_cid(), CHANNEL_BODY), "Signature on a mutually proposed version."),
    MessageSpec("close_proposal", 50, (_cid(), CHANNEL_BODY), "Signature on the cooperative close transaction (no nLockTime)."),
    MessageSpec("close_accept", 52, (_cid(), CHANNEL_BODY), "Countersignature of the cooperative close."),
    MessageSpec("reestablish", 54, (_cid(), CHANNEL_BODY), "Sent after reconnecting so both sides resynchronise."),
    MessageSpec("turn_request", 56, (_cid(), CHANNEL_BODY), "Ask for the turn to send the next version."),
    MessageSpec("turn_grant", 58, (_cid(), CHANNEL_BODY), "Grant the turn (numbered, so a stale grant resent after a crash is ignored)."),
    MessageSpec("channel_error", 60, (_cid(), CHANNEL_BODY), "The peer refused a channel message; the channel stays as it was."),
    MessageSpec("reanchor_propose", 62, (_cid(), CHANNEL_BODY), "Move the channel to a new 2-of-2 output with a new lifetime."),
    MessageSpec("reanchor_refund", 64, (_cid(), CHANNEL_BODY), "A signature on the new anchor's initial refund, before the anchor is signed."),
    MessageSpec("reanchor_anchor", 66, (_cid(), CHANNEL_BODY), "A signature on the re-anchor transaction itself."),
    # Odd: a peer that predates escrows by hash ignores them (the payee can still claim on chain).
    MessageSpec("escrow_fulfil", 67, (_cid(), CHANNEL_BODY), "Payee -> payer: the preimage of an escrow offered by hash; the payer commits it."),
    MessageSpec("escrow_fail", 69, (_cid(), CHANNEL_BODY), "Payee -> payer: the payee will not fulfil an escrow (a reason code) and returns it."),
    # ---- microgrid (eschaton.core.microgrid): the wire dicts of Offer, Acceptance and Invoice,
    # field for field; the microgrid core re-checks every value and the signatures. ----------
    MessageSpec("mg_offer", 128, (
        Field("v", U16), Field("offer_id", Fixed(16)), Field("service", Text(16)),
        Field("unit", Text(8)), Field("base_unit", Text(8)), Field("base_per_unit", I63),
        Field("price_msat", I63), Field("fee_sat", I63), Field("fee_period_ms", I63),
        Field("credit_limit_sat", I63), Field("pay_interval_ms", I63), Field("meter_id", Text(64)),
        Field("seller", Fixed(32)), Field("buyer", Bytes(max_len=32)), Field("proposer", Fixed(32)),
        Field("expires_ms", I63), Field("prev_agreement", Bytes(max_len=32)),
        Field("anchor_seq", I63), Field("anchor_units", I63), Field("anchor_due_sat", I63),
        Field("anchor_ms", I63), Field("sig", Fixed(64)),
    ), "Seller -> buyer: signed terms for one metered connection (tariff, credit limit, anchor)."),
    MessageSpec("mg_accept", 130, (
        Field("v", U16), Field("offer_hash", Fixed(32)), Field("acceptor", Fixed(32)),
        Field("accepted_ms", I63), Field("sig", Fixed(64)),
    ), "Buyer -> seller: signed acceptance of an offer; the pair is the agreement."),
    MessageSpec("mg_invoice", 132, (
        Field("v", U16), Field("agreement_id", Fixed(32)), Field("seq", I63),
        Field("meter_id", Text(64)), Field("cum_units", I63), Field("cum_due_sat", I63),
        Field("reading_ms", I63), Field("sig", Fixed(64)),
    ), "Seller -> buyer: signed cumulative invoice (units and amount since the contract began)."),
    MessageSpec("mg_paid", 134, (
        Field("meter_id", Text(64)), Field("ref", Fixed(32)), Field("payment_id", Fixed(32)),
        Field("amount_sat", I63), _cid("The trade channel the payment moved over."),
    ), "Buyer -> seller: which invoice a channel payment covers (credited only up to what the channel moved)."),
    MessageSpec("mg_refused", 136, (
        Field("meter_id", Text(64)), Field("reason", Text(32)), Field("detail", Text(256)),
    ), "Buyer -> seller: an offer or invoice was refused (stable reason); nothing was paid."),
    # Odd: a sale paid through the network (eschaton.core.microgrid.routed); a peer that does
    # not sell that way ignores them (the buyer then pays nothing and is cut, as if unpaid).
    MessageSpec("mg_ask", 137, (
        Field("meter_id", Text(64)), Field("ref", Fixed(32)), Field("payment_id", Fixed(32)),
        Field("amount_sat", I63),
    ), "Buyer -> seller: send a payment request for this payment of an invoice (paid through the network)."),
    MessageSpec("mg_request", 139, (
        Field("payment_id", Fixed(32)), Field("request", Text(800), doc="A payment request (eschreq1...)."),
    ), "Seller -> buyer: the payment request for that payment, bound to it by its description."),
    # ---- echo (eschaton.core.echo): an application-level round trip through the peer's router.
    # Odd ids: a peer without the service ignores them (the caller times out).
    MessageSpec("echo_request", 193, (
        Field("nonce", U64, doc="Chosen by the caller; echoed in the reply."),
        Field("payload", Bytes(1024), doc="Echoed back unchanged."),
    ), "Ask the peer's echo service to send the payload back."),
    MessageSpec("echo_reply", 195, (
        Field("nonce", U64),
        Field("payload", Bytes(1024)),
    ), "The echo service's answer: the request's nonce and payload."),
    # ---- stamp (eschaton.core.stamp): upstream consolidation of timestamp rounds. Odd ids: a
    # peer without the service ignores them (the downstream node keeps its round and retries).
    MessageSpec("stamp_submit", 225, (
        Field("digest", Fixed(32), doc="A downstream round's root, stamped as one digest."),
    ), "Ask the peer's stamp service to timestamp a digest; sent again until its proof comes back."),
    MessageSpec("stamp_proof", 227, (
        Field("digest", Fixed(32)),
        Field("proof", Bytes(max_len=16_384, min_len=10),
              doc="OpenTimestamps operations from the digest to a block's Merkle root, then the attestation."),
    ), "The stamp service's answer: the digest's proof, complete down to a block header."),
    MessageSpec("stamp_quote_req", 229, (
        Field("ref", Fixed(32), doc="The asker's id of one batch of digests (a retry asks again with it)."),
        Field("count", U16, doc="Digests in the batch (1..stamp.PEER_BATCH)."),
    ), "Ask the peer's stamp service its price for a batch: answered with stamp_quote or stamp_answer."),
    MessageSpec("stamp_quote", 231, (
        Field("ref", Fixed(32)),
        Field("price_sat", I63, doc="Price per digest."),
        Field("request", Text(1024), doc="A payment request signed by the peer for price * count (empty: free)."),
    ), "The price of a batch, and the payment request that buys it (the same one for a repeated ref)."),
    MessageSpec("stamp_paid_submit", 233, (
        Field("ref", Fixed(32)),
        Field("digests", Bytes(max_len=32 * 1000, min_len=32), doc="The batch: 32-byte digests, concatenated."),
        Field("preimage", Bytes(max_len=32), doc="The paid request's preimage: the proof of payment (empty: free)."),
    ), "Stamp a paid batch; sent again until the digests' proofs come back (a repeat pays nothing more)."),
    MessageSpec("stamp_answer", 235, (
        Field("ref", Fixed(32)),
        Field("code", Text(32), doc="accepted, or why not: unpaid, underpaid, claimed, bad_batch, no_invoice."),
        Field("detail", Text(256)),
    ), "The stamp service's answer to a quote request or a paid batch (accepted: durable)."),
    # ---- routing (eschaton.core.routing): multi-hop payments over the channels' escrows by hash.
    # Odd ids: a peer without the service ignores them (it is then no hop of any route).
    MessageSpec("route_onion", 257, (
        _cid("The channel the escrow was offered on."),
        Field("escrow_id", U64, doc="The escrow this onion goes with (offered by the sender)."),
        Field("onion", Fixed(1665), doc="The fixed-size onion (eschaton.core.routing.onion.PACKET_LEN)."),
    ), "Payer or forwarding hop -> next hop: the hop instructions for an escrow it offered (resent on relink until resolved)."),
    MessageSpec("route_fail", 259, (
        _cid("The channel of the failed escrow."),
        Field("escrow_id", U64),
        Field("failure", Bytes(64), doc="The failure encrypted for the payer (empty: unattributed)."),
    ), "Next hop -> sender of an escrow: why it fails, for the payer only; escrow_fail and the return follow."),
    MessageSpec("route_sign", 261, (
        Field("announcement", Bytes(1024), doc="A channel announcement the sender signed (eschaton.core.routing.graph)."),
    ), "Channel opener -> acceptor: please add your signature to this announcement of our channel."),
    MessageSpec("route_announce", 263, (
        Field("announcement", Bytes(1024), doc="A channel announcement signed by both ends."),
    ), "Gossip: a channel of the graph; a receiver checks it on chain and passes it on once."),
    # ---- dht (eschaton.core.dht.rpc): Kademlia's find-node, find-value and store. Odd ids: a
    # peer without the DHT ignores them and the asker's lookup times it out. Records are
    # re-verified by the receiver (eschaton.core.dht.records); the wire bounds their size.
    MessageSpec("dht_find_node", 321, (
        Field("nonce", U64, doc="Chosen by the asker; repeated in the answer."),
        Field("target", Fixed(32), doc="The DHT id to find the closest nodes of."),
    ), "Ask for the k closest nodes the peer knows of a DHT id."),
    MessageSpec("dht_nodes", 323, (
        Field("nonce", U64),
        Field("nodes", ListOf(Fixed(32), 32), doc="Node keys, closest first."),
    ), "Answer to dht_find_node: node keys (their DHT ids are the hashes of the keys)."),
    MessageSpec("dht_find_value", 325, (
        Field("nonce", U64),
        Field("key", Fixed(32), doc="The DHT key of the records wanted."),
    ), "Ask for the records under a DHT key (or, failing that, the closest nodes)."),
    MessageSpec("dht_values", 327, (
        Field("nonce", U64),
        Field("records", ListOf(Bytes(16384), 3), doc="Records under the key (verified by the sender and again by the asker)."),
        Field("nodes", ListOf(Fixed(32), 32), doc="Closest node keys, when there are no records."),
    ), "Answer to dht_find_value."),
    MessageSpec("dht_store", 329, (
        Field("nonce", U64),
        Field("key", Fixed(32)),
        Field("record", Bytes(16384), doc="One record; charged to the sender's quota."),
    ), "Ask the peer to hold a record under a DHT key."),
    MessageSpec("dht_stored", 331, (
        Field("nonce", U64),
    ), "Answer to dht_store: the record is held."),
    MessageSpec("dht_refused", 333, (
        Field("nonce", U64),
        Field("reason", Text(256), doc="One line: quota, rate limit, a record that does not verify."),
    ), "A DHT request was refused."),
    MessageSpec("dht_query", 335, (
        Field("nonce", U64),
        Field("qid", Fixed(16), doc="The asker's fresh query id: a retry with it is the same query."),
        Field("key", Fixed(32), doc="The DHT key whose records the query selects among."),
        Field("query", Bytes(8192), doc="The query (eschaton.core.dht.query), decoded strictly by the receiver."),
        Field("hops", UInt(8), doc="How many more times the query may be forwarded to a neighbour."),
    ), "Ask for a quote for a query's answer (eschaton.core.dht.paid)."),
    MessageSpec("dht_quote", 337, (
        Field("nonce", U64),
        Field("qid", Fixed(16)),
        Field("price", I63, doc="Satoshis, paid over the trade channel with the quoting peer."),
        Field("count", UInt(32), doc="Records in the answer."),
        Field("size", UInt(32), doc="Bytes of the encoded answer."),
        Field("commitment", Fixed(32), doc="sha256 of the encoded answer."),
    ), "Answer to dht_query: the price of the answer; nothing is sent before it is paid."),
    MessageSpec("dht_paid", 341, (
        Field("nonce", U64),
        Field("qid", Fixed(16)),
        _cid("The trade channel the payment moved over."),
        Field("number", U64, doc="The channel version that carried the payment (the payee's receipt)."),
    ), "The asker paid a quote: names the payment, which the seller claims once for this query."),
    MessageSpec("dht_answer", 339, (
        Field("qid", Fixed(16)),
        Field("answer", Bytes(60_000), doc="The encoded answer the quote committed to."),
    ), "A paid query's answer, sent once the payment for it was claimed."),
    MessageSpec("dht_addrs", 343, (
        Field("records", ListOf(Bytes(1024), 33), doc="Signed address records (eschaton.core.dht.addrs)."),
    ), "Transport addresses of the sender and of the contacts it names next, each signed by its node key."),
)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service of the table: the type ids it owns and the feature bit that announces it."""

    name: str
    first_id: int
    last_id: int
    feature: int | None
    """Bit in ``init.features`` that says a node runs this service; None for link control,
    which every node runs."""
    doc: str = ""

    def owns(self, type_id: int) -> bool:
        return self.first_id <= type_id <= self.last_id


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("link", 1, 31, None, "Link control: init, error, warning, ping, pong (handled by the link itself)."),
    ServiceSpec("channel", 32, 127, 1, "Trade channels (eschaton.daemon.channels)."),
    ServiceSpec("microgrid", 128, 191, 3, "Metered supply: offers, invoices, payments (eschaton.daemon.microgrid)."),
    ServiceSpec("echo", 192, 223, 5, "Echo: a round trip through the peer's router (eschaton.daemon.echo)."),
    ServiceSpec("stamp", 224, 255, 9, "Timestamping: paid batches and round roots consolidated upstream (eschaton.daemon.stamp)."),
    ServiceSpec("routing", 256, 287, 11, "Multi-hop payments: onions, failures, channel announcements (eschaton.daemon.routing)."),
    ServiceSpec("dht", 320, 351, 13, "The DHT: find-node, find-value, store (eschaton.core.dht.rpc)."),
)
"""Ids 288-319 and 352-65535, and feature bits 15-255 are free."""


@dataclass(frozen=True, slots=True)
class ExtensionSpec:
    """An optional capability inside a service, announced by its own (odd) feature bit: a node
    uses it towards a peer only if the peer announced the bit too."""

    name: str
    service: str
    feature: int
    doc: str = ""


EXTENSIONS: tuple[ExtensionSpec, ...] = (
    ExtensionSpec("escrow_by_hash", "channel", 7,
                  "Escrows with an explicit timeout, fulfilled or failed by the payee (escrow_fulfil, escrow_fail)."),
)


def ignorable(type_id: int) -> bool:
    """Odd ids may be ignored by a receiver that does not know or handle them; even ids may not."""
    return type_id % 2 == 1


def _index() -> tuple[dict[str, MessageSpec], dict[int, MessageSpec]]:
    by_name: dict[str, MessageSpec] = {}
    by_id: dict[int, MessageSpec] = {}
    for spec in MESSAGES:
        if not spec.name.isidentifier() or spec.name in by_name:
            raise ValueError(f"message table: bad or duplicate name {spec.name!r}")
        if not 0 < spec.type_id < 0x10000 or spec.type_id in by_id:
            raise ValueError(f"message table: bad or duplicate type id {spec.type_id}")
        names = [f.name for f in spec.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"message table: duplicate field in {spec.name}")
        by_name[spec.name] = spec
        by_id[spec.type_id] = spec
    return by_name, by_id


BY_NAME, BY_ID = _index()


def _services() -> tuple[dict[str, ServiceSpec], dict[str, ServiceSpec], dict[int, ServiceSpec]]:
    by_name: dict[str, ServiceSpec] = {}
    by_feature: dict[int, ServiceSpec] = {}
    for svc in SERVICES:
        if svc.name in by_name or not 0 < svc.first_id <= svc.last_id < 0x10000:
            raise ValueError(f"service table: bad or duplicate service {svc.name!r}")
        for other in by_name.values():
            if svc.first_id <= other.last_id and other.first_id <= svc.last_id:
                raise ValueError(f"service table: {svc.name} overlaps {other.name}")
        if (svc.feature is None) != (svc.name == "link"):
            raise ValueError(f"service table: {svc.name}: every service but link has a feature bit")
        if svc.feature is not None:
            if not 0 <= svc.feature < 8 * MAX_FEATURE_BYTES or svc.feature % 2 == 0 \
                    or svc.feature in by_feature:
                raise ValueError(f"service table: {svc.name}: feature bit {svc.feature} is not a "
                                 f"free odd bit below {8 * MAX_FEATURE_BYTES}")
            by_feature[svc.feature] = svc
        by_name[svc.name] = svc
    taken = {svc.feature for svc in SERVICES}
    for ext in EXTENSIONS:
        if ext.service not in by_name or ext.feature % 2 == 0 or ext.feature in taken \
                or not 0 <= ext.feature < 8 * MAX_FEATURE_BYTES:
            raise ValueError(f"extension table: {ext.name}: needs a known service and a free odd bit")
        taken.add(ext.feature)
    of_row: dict[str, ServiceSpec] = {}
    for spec in MESSAGES:
        owners = [svc for svc in SERVICES if svc.owns(spec.type_id)]
        if len(owners) != 1:
            raise ValueError(f"message table: {spec.name} (id {spec.type_id}) is in no service's range")
        of_row[spec.name] = owners[0]
    return by_name, of_row, by_feature


SERVICE, SERVICE_OF, SERVICE_BY_FEATURE = _services()
"""Services by name, the service that owns each row (by row name), services by feature bit."""
