"""THE wire message table: every message a link may carry, declared once.

Each row is ``(name, type id, fields, doc)``; every field has a type with a size limit. The codec
(``codec.py``), the dispatcher (``on_<name>`` handlers) and ``docs/network.md`` all read this
table. Type ids 1-31 are link control, 32-63 trade channels; new rows take a fresh id and a
protocol version bump (peers agree a version in the handshake; an unknown id is a WireError).

The channel rows are deliberately generic (fixed ids, byte strings and u64s, plus an optional
``extra`` map) so the channel core can adjust fields here without touching the codec.
"""
from __future__ import annotations

from eschaton.core.wire.fields import (
    Bytes,
    Field,
    Fixed,
    ListOf,
    MapOf,
    MessageSpec,
    Scalar,
    Text,
    UInt,
)

U16 = UInt(16)
U32 = UInt(32)
U64 = UInt(64)
CHANNEL_ID = Fixed(32)
SIGNATURE = Bytes(max_len=73, min_len=64)  # 64-byte Schnorr/compact or DER ECDSA (<=73 with type)
PUBKEY = Fixed(33)
EXTRA = Field("extra", MapOf(Scalar(256), max_items=16), optional=True,
              doc="Channel-layer extension parameters (u64 or bytes values).")


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
    # ---- trade channels (placeholders for the channel core) -------------------------------
    MessageSpec("open_channel", 32, (
        Field("temp_channel_id", Fixed(32), doc="Random id until the funding outpoint is known."),
        Field("funding_sat", U64, doc="Opener's contribution in satoshi."),
        Field("push_sat", U64, doc="Amount given to the acceptor at open."),
        Field("funding_pubkey", PUBKEY, doc="Opener's 2-of-2 funding key."),
        Field("refund_pubkey", PUBKEY, doc="Opener's key for refund outputs."),
        Field("csv_delay", U16, doc="Relative delay asked of the acceptor's refund."),
        Field("fee_rate", U32, doc="sat/kvB for refund and close transactions."),
        EXTRA,
    ), "Propose a channel."),
    MessageSpec("accept_channel", 33, (
        Field("temp_channel_id", Fixed(32)),
        Field("funding_sat", U64, doc="Acceptor's contribution (may be 0)."),
        Field("funding_pubkey", PUBKEY),
        Field("refund_pubkey", PUBKEY),
        Field("csv_delay", U16),
        EXTRA,
    ), "Accept a proposed channel."),
    MessageSpec("funding_created", 34, (
        Field("temp_channel_id", Fixed(32)),
        Field("funding_txid", Fixed(32)),
        Field("funding_vout", U32),
        Field("refund_signature", SIGNATURE, doc="Opener's signature on the first refund."),
        EXTRA,
    ), "Opener names the funding outpoint and signs the first refund."),
    MessageSpec("funding_signed", 35, (
        _cid(),
        Field("refund_signature", SIGNATURE),
        EXTRA,
    ), "Acceptor signs the first refund; the opener may now broadcast funding."),
    MessageSpec("channel_ready", 36, (
        _cid(),
        Field("confirmations", U32, doc="Depth the sender saw the funding at."),
        EXTRA,
    ), "Funding is deep enough; updates may start."),
    MessageSpec("update", 37, (
        _cid(),
        Field("version", U64, doc="Refund version number; strictly increasing."),
        Field("nlocktime", U32, doc="nLockTime of this refund version (decreasing)."),
        Field("fee_sat", U64),
        Field("balances", MapOf(U64, max_items=8), doc="Balance per party in satoshi."),
        Field("signature", SIGNATURE),
        EXTRA,
    ), "A new refund version signed by the sender."),
    MessageSpec("update_ack", 38, (
        _cid(),
        Field("version", U64),
        Field("signature", SIGNATURE),
        EXTRA,
    ), "Countersignature of a refund version (sent only after it is persisted)."),
    MessageSpec("escrow_add", 39, (
        _cid(),
        Field("escrow_id", U64),
        Field("amount_sat", U64),
        Field("payment_hash", Fixed(32)),
        Field("expiry", U32, doc="Block height after which the escrow refunds."),
        Field("terms", MapOf(Scalar(256), max_items=16), optional=True,
              doc="Service terms (meter, tariff, quantity) for metered trades."),
        EXTRA,
    ), "Lock an amount against a hash preimage."),
    MessageSpec("escrow_settle", 40, (
        _cid(),
        Field("escrow_id", U64),
        Field("preimage", Fixed(32)),
        EXTRA,
    ), "Reveal the preimage; the escrow pays out."),
    MessageSpec("close_request", 41, (
        _cid(),
        Field("fee_sat", U64),
        Field("script_pubkey", Bytes(max_len=64, min_len=1), doc="Where the sender's share goes."),
        EXTRA,
    ), "Ask for a cooperative close."),
    MessageSpec("close_signed", 42, (
        _cid(),
        Field("fee_sat", U64),
        Field("signature", SIGNATURE),
        EXTRA,
    ), "Signature on the cooperative close transaction."),
    MessageSpec("channel_reestablish", 43, (
        _cid(),
        Field("next_version", U64, doc="The next refund version the sender expects."),
        Field("last_acked_version", U64, doc="The last version the sender countersigned."),
        EXTRA,
    ), "Sent after reconnecting so both sides resynchronise."),
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
