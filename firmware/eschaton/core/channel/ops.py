"""The operations that make one version from the previous one, and their field codec.

``rules.apply`` says what each does; the codec reads them from a peer's update (strictly: a
malformed field is a rule violation) and writes them into updates and the store.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eschaton.core.channel.errors import BalanceViolation, BetViolation
from eschaton.core.channel.fields import as_dict, bytes_field, int_field
from eschaton.core.channel.oracle import Announcement


@dataclass(frozen=True, slots=True)
class Pay:
    amount: int
    kind: str = field(default="pay", init=False)


@dataclass(frozen=True, slots=True)
class OfferEscrow:
    amount: int
    payment_hash: bytes
    timeout: int = 0  # absolute height; 0: the default (offering nLockTime + escrow_delta)
    kind: str = field(default="offer_escrow", init=False)


@dataclass(frozen=True, slots=True)
class CommitEscrow:
    escrow_id: int
    preimage: bytes
    kind: str = field(default="commit_escrow", init=False)


@dataclass(frozen=True, slots=True)
class ReturnEscrow:
    escrow_id: int
    kind: str = field(default="return_escrow", init=False)


@dataclass(frozen=True, slots=True)
class SettleBet:
    bet_id: int
    preimage: bytes
    kind: str = field(default="settle_bet", init=False)


@dataclass(frozen=True, slots=True)
class PlaceBet:
    announcement: Announcement
    winners: tuple[str, ...]
    stakes: tuple[int, int]
    kind: str = field(default="place_bet", init=False)


@dataclass(frozen=True, slots=True)
class AdjustBet:
    bet_id: int
    stakes: tuple[int, int]
    kind: str = field(default="adjust_bet", init=False)


@dataclass(frozen=True, slots=True)
class CancelBet:
    bet_id: int
    kind: str = field(default="cancel_bet", init=False)


Op = Pay | OfferEscrow | CommitEscrow | ReturnEscrow | SettleBet | PlaceBet | AdjustBet | CancelBet
MUTUAL = (PlaceBet, AdjustBet, CancelBet)


def op_to_fields(op: Op) -> dict[str, object]:
    if isinstance(op, Pay):
        return {"kind": op.kind, "amount": op.amount}
    if isinstance(op, OfferEscrow):
        # The default timeout is left out, so such an offer reads the same to a peer that
        # predates explicit timeouts.
        d: dict[str, object] = {"kind": op.kind, "amount": op.amount, "payment_hash": op.payment_hash}
        if op.timeout:
            d["timeout"] = op.timeout
        return d
    if isinstance(op, CommitEscrow):
        return {"kind": op.kind, "escrow_id": op.escrow_id, "preimage": op.preimage}
    if isinstance(op, ReturnEscrow):
        return {"kind": op.kind, "escrow_id": op.escrow_id}
    if isinstance(op, SettleBet):
        return {"kind": op.kind, "bet_id": op.bet_id, "preimage": op.preimage}
    if isinstance(op, PlaceBet):
        return {"kind": op.kind, "announcement": op.announcement.to_fields(),
                "winners": list(op.winners), "stakes": list(op.stakes)}
    if isinstance(op, AdjustBet):
        return {"kind": op.kind, "bet_id": op.bet_id, "stakes": list(op.stakes)}
    return {"kind": op.kind, "bet_id": op.bet_id}


def op_from_fields(d: dict[str, object]) -> Op:
    k = d.get("kind")
    if k == "pay":
        return Pay(int_field(d, "amount"))
    if k == "offer_escrow":
        return OfferEscrow(int_field(d, "amount"), bytes_field(d, "payment_hash", 32), int_field(d, "timeout") if "timeout" in d else 0)
    if k == "commit_escrow":
        return CommitEscrow(int_field(d, "escrow_id"), bytes_field(d, "preimage", 32))
    if k == "return_escrow":
        return ReturnEscrow(int_field(d, "escrow_id"))
    if k == "settle_bet":
        return SettleBet(int_field(d, "bet_id"), bytes_field(d, "preimage", 32))
    if k == "place_bet":
        w = d.get("winners")
        st = d.get("stakes")
        if not isinstance(w, list) or not isinstance(st, list) or len(st) != 2:
            raise BetViolation("malformed bet proposal")
        if not all(isinstance(s, int) for s in st):
            raise BetViolation("malformed bet stakes")
        return PlaceBet(Announcement.from_fields(as_dict(d.get("announcement"))),
                        tuple(str(x) for x in w), (int(st[0]), int(st[1])))
    if k == "adjust_bet":
        st = d.get("stakes")
        if not isinstance(st, list) or len(st) != 2 or not all(isinstance(s, int) for s in st):
            raise BetViolation("malformed bet stakes")
        return AdjustBet(int_field(d, "bet_id"), (int(st[0]), int(st[1])))
    if k == "cancel_bet":
        return CancelBet(int_field(d, "bet_id"))
    raise BalanceViolation(f"unknown operation {k!r}")
