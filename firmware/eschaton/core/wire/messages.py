"""THE wire message table: every message a link may carry, declared once.

Each row is ``(name, type id, fields, doc)``; every field has a type with a size limit. The codec
(``codec.py``), the dispatcher (``on_<name>`` handlers) and ``docs/network.md`` all read this
table. Type ids 1-31 are link control, 32-63 trade channels, 64-95 microgrid; new rows take a fresh id and a
protocol version bump (peers agree a version in the handshake; an unknown id is a WireError).

The channel rows carry the channel core's own messages: a ``channel_id`` and a ``body``, the
canonical JSON of the message's other fields (``eschaton.daemon.chanwire``). The channel core
validates the body; the wire bounds its size. So the channel protocol can evolve without
touching this table or the codec.
"""
from __future__ import annotations

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
I63 = UInt(63)  # the microgrid core's integers are at most 2**63 - 1
CHANNEL_ID = Fixed(32)
CHANNEL_BODY = Field("body", Bytes(max_len=60_000, min_len=2),
                     doc="The channel message's fields as canonical JSON (channel core validates).")


def _cid(doc: str = "The channel this message belongs to.") -> Field:
    return Field("channel_id", CHANNEL_ID, doc=doc)


MESSAGES: tuple[MessageSpec, ...] = (
    # ---- link control --------------------------------------------------------------------
    MessageSpec("init", 1, (
        Field("features", ListOf(Text(32), 64), doc="Feature names this node supports."),
        Field("name", Text(64), optional=True, doc="Human-readable node name."),
    ), "First message on an established link: features (the version is fixed by the handshake)."),
    MessageSpec("error", 2, (
        Field("code", U16, doc="Machine-readable reason."),
        Field("message", Text(512), doc="Human-readable reason."),
        Field("channel_id", CHANNEL_ID, optional=True, doc="Set when the error concerns one channel."),
    ), "Fatal: the sender closes the link (or fails the named channel) after sending it."),
    MessageSpec("warning", 3, (
        Field("code", U16),
        Field("message", Text(512)),
        Field("channel_id", CHANNEL_ID, optional=True),
    ), "Non-fatal complaint; the link stays up."),
    MessageSpec("ping", 4, (
        Field("nonce", U64, doc="Echoed in the pong."),
        Field("padding", Bytes(1024), optional=True, doc="Ignored; hides traffic patterns."),
    ), "Liveness probe; the receiver answers pong with the same nonce."),
    MessageSpec("pong", 5, (
        Field("nonce", U64),
        Field("padding", Bytes(1024), optional=True),
    ), "Answer to ping."),
    # ---- trade channels ---------------------------------------------------------------------
    # Each row carries the channel core's canonical JSON body (see eschaton.daemon.chanwire):
    # the channel core validates the fields; the wire bounds the size.
    MessageSpec("open_channel", 32, (_cid(), CHANNEL_BODY), "Opener -> acceptor: parameters, funding key, payout script, funding inputs and change."),
    MessageSpec("accept_channel", 33, (_cid(), CHANNEL_BODY), "Acceptor -> opener: funding key, payout script, its inputs and change."),
    MessageSpec("refund_signature", 34, (_cid(), CHANNEL_BODY), "A signature on the initial refund, sent before any funding input is signed."),
    MessageSpec("funding_signatures", 35, (_cid(), CHANNEL_BODY), "Witnesses for the sender's funding inputs."),
    MessageSpec("channel_ready", 36, (_cid(), CHANNEL_BODY), "The funding transaction is deep enough; updates may start."),
    MessageSpec("update", 37, (_cid(), CHANNEL_BODY), "A new refund version signed by the sender (a payment, escrow or bet)."),
    MessageSpec("update_ack", 38, (_cid(), CHANNEL_BODY), "Countersignature of a version, sent only after it is persisted."),
    MessageSpec("mutual_propose", 39, (_cid(), CHANNEL_BODY), "Proposal of a version both sides sign (bets, escrow returns)."),
    MessageSpec("mutual_sign", 40, (_cid(), CHANNEL_BODY), "Signature on a mutually proposed version."),
    MessageSpec("close_proposal", 41, (_cid(), CHANNEL_BODY), "Signature on the cooperative close transaction (no nLockTime)."),
    MessageSpec("close_accept", 42, (_cid(), CHANNEL_BODY), "Countersignature of the cooperative close."),
    MessageSpec("reestablish", 43, (_cid(), CHANNEL_BODY), "Sent after reconnecting so both sides resynchronise."),
    MessageSpec("turn_request", 44, (_cid(), CHANNEL_BODY), "Ask for the turn to send the next version."),
    MessageSpec("turn_grant", 45, (_cid(), CHANNEL_BODY), "Grant the turn (numbered, so a stale grant resent after a crash is ignored)."),
    MessageSpec("channel_error", 46, (_cid(), CHANNEL_BODY), "The peer refused a channel message; the channel stays as it was."),
    MessageSpec("reanchor_propose", 47, (_cid(), CHANNEL_BODY), "Move the channel to a new 2-of-2 output with a new lifetime."),
    MessageSpec("reanchor_refund", 48, (_cid(), CHANNEL_BODY), "A signature on the new anchor's initial refund, before the anchor is signed."),
    MessageSpec("reanchor_anchor", 49, (_cid(), CHANNEL_BODY), "A signature on the re-anchor transaction itself."),
    # ---- microgrid (eschaton.core.microgrid): the wire dicts of Offer, Acceptance and Invoice,
    # field for field; the microgrid core re-checks every value and the signatures. ----------
    MessageSpec("mg_offer", 64, (
        Field("v", U16), Field("offer_id", Fixed(16)), Field("service", Text(16)),
        Field("unit", Text(8)), Field("base_unit", Text(8)), Field("base_per_unit", I63),
        Field("price_msat", I63), Field("fee_sat", I63), Field("fee_period_ms", I63),
        Field("credit_limit_sat", I63), Field("pay_interval_ms", I63), Field("meter_id", Text(64)),
        Field("seller", Fixed(32)), Field("buyer", Bytes(max_len=32)), Field("proposer", Fixed(32)),
        Field("expires_ms", I63), Field("prev_agreement", Bytes(max_len=32)),
        Field("anchor_seq", I63), Field("anchor_units", I63), Field("anchor_due_sat", I63),
        Field("anchor_ms", I63), Field("sig", Fixed(64)),
    ), "Seller -> buyer: signed terms for one metered connection (tariff, credit limit, anchor)."),
    MessageSpec("mg_accept", 65, (
        Field("v", U16), Field("offer_hash", Fixed(32)), Field("acceptor", Fixed(32)),
        Field("accepted_ms", I63), Field("sig", Fixed(64)),
    ), "Buyer -> seller: signed acceptance of an offer; the pair is the agreement."),
    MessageSpec("mg_invoice", 66, (
        Field("v", U16), Field("agreement_id", Fixed(32)), Field("seq", I63),
        Field("meter_id", Text(64)), Field("cum_units", I63), Field("cum_due_sat", I63),
        Field("reading_ms", I63), Field("sig", Fixed(64)),
    ), "Seller -> buyer: signed cumulative invoice (units and amount since the contract began)."),
    MessageSpec("mg_paid", 67, (
        Field("meter_id", Text(64)), Field("ref", Fixed(32)), Field("payment_id", Fixed(32)),
        Field("amount_sat", I63), _cid("The trade channel the payment moved over."),
    ), "Buyer -> seller: which invoice a channel payment covers (credited only up to what the channel moved)."),
    MessageSpec("mg_refused", 68, (
        Field("meter_id", Text(64)), Field("reason", Text(32)), Field("detail", Text(256)),
    ), "Buyer -> seller: an offer or invoice was refused (stable reason); nothing was paid."),
)


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
