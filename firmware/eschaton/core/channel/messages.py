"""Channel messages as frozen dataclasses that map onto any codec.

``to_fields()`` gives a dict of ints, strs, bytes, lists and nested dicts; ``from_fields()``
checks types and raises ``ProtocolViolation`` (a ``RemoteError``) on anything malformed, so a
peer's garbage is refused cleanly. ``message_from_fields(name, fields)`` dispatches by ``NAME``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from eschaton.core.channel.errors import ProtocolViolation

# Field name -> the python type every value of it must have (nested dicts are validated by the
# versions' and ops' own from_fields when the channel interprets them).
_TYPES: dict[str, type | tuple[type, ...]] = {
    "channel_id": bytes, "params": dict, "funding_pubkey": bytes, "payout_script": bytes,
    "inputs": list, "change": list, "funding_locktime": int, "signature": bytes, "witnesses": list,
    "version": dict, "op": dict, "number": int, "code": str, "text": str, "pending": int, "lifetime": int, "fee": int,
    "escrow_id": int, "preimage": bytes,
}


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    """Field names per message class, computed once: ``dataclasses.fields`` is slow per call and
    snapshots serialise every unacknowledged message on each update."""
    got = _NAMES.get(cls)
    if got is None:
        got = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return got


@dataclass(frozen=True, slots=True)
class Message:
    NAME: ClassVar[str] = ""
    channel_id: bytes

    def to_fields(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in _names(type(self))}

    @classmethod
    def from_fields(cls, d: dict[str, Any]) -> Message:
        vals: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                raise ProtocolViolation(f"{cls.NAME}: missing field {f.name}")
            v = d[f.name]
            want = _TYPES[f.name]
            if isinstance(v, bool) or not isinstance(v, want):
                raise ProtocolViolation(f"{cls.NAME}: field {f.name} has the wrong type")
            vals[f.name] = v
        if len(vals["channel_id"]) != 32:
            raise ProtocolViolation("channel_id must be 32 bytes")
        return cls(**vals)


@dataclass(frozen=True, slots=True)
class OpenChannel(Message):
    """Opener -> acceptor: parameters, keys and the opener's funding inputs and change."""

    NAME: ClassVar[str] = "open_channel"
    params: dict[str, Any]
    funding_pubkey: bytes
    payout_script: bytes
    inputs: list[Any]
    change: list[Any]
    funding_locktime: int


@dataclass(frozen=True, slots=True)
class AcceptChannel(Message):
    """Acceptor -> opener: its keys, funding inputs and change."""

    NAME: ClassVar[str] = "accept_channel"
    funding_pubkey: bytes
    payout_script: bytes
    inputs: list[Any]
    change: list[Any]


@dataclass(frozen=True, slots=True)
class RefundSignature(Message):
    """A signature on the initial refund (version 0). Sent before any funding input is signed."""

    NAME: ClassVar[str] = "refund_signature"
    signature: bytes


@dataclass(frozen=True, slots=True)
class FundingSignatures(Message):
    """Witnesses for the sender's own funding inputs, in funding-transaction input order."""

    NAME: ClassVar[str] = "funding_signatures"
    witnesses: list[Any]


@dataclass(frozen=True, slots=True)
class ChannelReady(Message):
    NAME: ClassVar[str] = "channel_ready"


@dataclass(frozen=True, slots=True)
class Update(Message):
    """A new version signed by the sender only (the receiver completes and holds it)."""

    NAME: ClassVar[str] = "update"
    version: dict[str, Any]
    op: dict[str, Any]
    signature: bytes


@dataclass(frozen=True, slots=True)
class UpdateAck(Message):
    NAME: ClassVar[str] = "update_ack"
    number: int


@dataclass(frozen=True, slots=True)
class MutualPropose(Message):
    """A version both must sign (bets). Carries no signature."""

    NAME: ClassVar[str] = "mutual_propose"
    version: dict[str, Any]
    op: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MutualSign(Message):
    """A signature on a mutual version (each side sends one)."""

    NAME: ClassVar[str] = "mutual_sign"
    number: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class CloseProposal(Message):
    NAME: ClassVar[str] = "close_proposal"
    signature: bytes


@dataclass(frozen=True, slots=True)
class CloseAccept(Message):
    NAME: ClassVar[str] = "close_accept"
    signature: bytes


@dataclass(frozen=True, slots=True)
class Reestablish(Message):
    """First message after a reconnect: the sender's current version number."""

    NAME: ClassVar[str] = "reestablish"
    number: int
    pending: int  # number of the sender's unacknowledged outgoing version, 0 if none


@dataclass(frozen=True, slots=True)
class TurnRequest(Message):
    """Ask for the right to sign the next version (direction switches take turns)."""

    NAME: ClassVar[str] = "turn_request"


@dataclass(frozen=True, slots=True)
class TurnGrant(Message):
    """Hands the turn over; ``number`` counts grants so a stale resent grant is ignored."""

    NAME: ClassVar[str] = "turn_grant"
    number: int


@dataclass(frozen=True, slots=True)
class ReanchorPropose(Message):
    """Move the channel to a new 2-of-2 output with a new lifetime; the proposer pays ``fee``."""

    NAME: ClassVar[str] = "reanchor_propose"
    lifetime: int
    fee: int


@dataclass(frozen=True, slots=True)
class ReanchorRefund(Message):
    """A signature on the new anchor's initial refund (exchanged before the anchor is signed)."""

    NAME: ClassVar[str] = "reanchor_refund"
    signature: bytes


@dataclass(frozen=True, slots=True)
class ReanchorAnchor(Message):
    """A signature on the re-anchor transaction itself."""

    NAME: ClassVar[str] = "reanchor_anchor"
    signature: bytes


@dataclass(frozen=True, slots=True)
class EscrowFulfil(Message):
    """Payee -> payer: the preimage of an escrow the payer offered; the payer commits it."""

    NAME: ClassVar[str] = "escrow_fulfil"
    escrow_id: int
    preimage: bytes


@dataclass(frozen=True, slots=True)
class EscrowFail(Message):
    """Payee -> payer: the payee will not fulfil this escrow (``code`` says why) and returns it."""

    NAME: ClassVar[str] = "escrow_fail"
    escrow_id: int
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class ChannelErrorMsg(Message):
    NAME: ClassVar[str] = "channel_error"
    code: str
    text: str


MESSAGE_TYPES: dict[str, type[Message]] = {
    c.NAME: c
    for c in (OpenChannel, AcceptChannel, RefundSignature, FundingSignatures, ChannelReady, Update,
              UpdateAck, MutualPropose, MutualSign, CloseProposal, CloseAccept, Reestablish,
              TurnRequest, TurnGrant, ReanchorPropose, ReanchorRefund, ReanchorAnchor, EscrowFulfil, EscrowFail,
              ChannelErrorMsg)
}


def message_from_fields(name: str, d: dict[str, Any]) -> Message:
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise ProtocolViolation(f"unknown channel message {name!r}")
    return cls.from_fields(d)
