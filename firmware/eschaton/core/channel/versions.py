"""Versions of the refund transaction: the model, its invariants and who paid the fee.

Theory of operation (see docs/channels.md for the why; ``rules.py`` for how an operation makes
the next version, ``transactions.py`` for the transaction a version is):
- A ``Version`` is one refund transaction spending the 2-of-2: balances for the opener and the
  acceptor, hash-locked contract outputs (escrows, bet stakes), a fee, an nLockTime and a number
  (the input's nSequence is ``SEQUENCE_BASE + number``: bit 31 keeps BIP68 off, and the value
  stays below final so nLockTime is enforced).
- Invariant: balances + contract amounts + fee == capacity, nothing negative.
- Fee shares. ``fee_paid`` records who paid how much of the fee: the fee is a reserve that only a
  version reaching the chain pays, so a cooperative close or a re-anchor refunds each party's share
  beyond the new transaction's own fee.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from eschaton.core.channel.errors import (
    BalanceViolation,
    BetViolation,
    EscrowViolation,
    FeeViolation,
)
from eschaton.core.channel.fields import as_dict, bytes_field, int_field
from eschaton.core.channel.params import ChannelParams

OPENER = "opener"
ACCEPTOR = "acceptor"
BOTH = "both"
ROLES = (OPENER, ACCEPTOR)
SEQUENCE_BASE = 0x8000_0000
MAX_NUMBER = 0x7FFF_FFFE


def idx(role: str) -> int:
    return 0 if role == OPENER else 1


def other(role: str) -> str:
    return ACCEPTOR if role == OPENER else OPENER


@dataclass(frozen=True, slots=True)
class Escrow:
    id: int
    payer: str
    amount: int
    payment_hash: bytes
    timeout: int

    @property
    def payee(self) -> str:
        return other(self.payer)

    def to_fields(self) -> dict[str, object]:
        return {"id": self.id, "payer": self.payer, "amount": self.amount,
                "payment_hash": self.payment_hash, "timeout": self.timeout}

    @classmethod
    def from_fields(cls, d: dict[str, object]) -> Escrow:
        return cls(int_field(d, "id"), _role(d, "payer"), int_field(d, "amount"), bytes_field(d, "payment_hash", 32),
                   int_field(d, "timeout"))


@dataclass(frozen=True, slots=True)
class Bet:
    id: int
    announcement: bytes  # Announcement.digest
    hashes: tuple[bytes, ...]
    winners: tuple[str, ...]  # per outcome: OPENER, ACCEPTOR, or "" (push: stakes returned)
    stakes: tuple[int, int]  # (opener, acceptor)
    timeout: int

    def claim_hashes(self, owner: str) -> list[bytes]:
        """Hashes whose preimage lets the *other* party take ``owner``'s stake."""
        return [h for h, w in zip(self.hashes, self.winners, strict=True) if w == other(owner)]

    def to_fields(self) -> dict[str, object]:
        return {"id": self.id, "announcement": self.announcement, "hashes": list(self.hashes),
                "winners": list(self.winners), "stakes": list(self.stakes), "timeout": self.timeout}

    @classmethod
    def from_fields(cls, d: dict[str, object]) -> Bet:
        hashes = d.get("hashes")
        winners = d.get("winners")
        stakes = d.get("stakes")
        if not (isinstance(hashes, list) and isinstance(winners, list) and isinstance(stakes, list)):
            raise BetViolation("malformed bet")
        if len(stakes) != 2 or not all(isinstance(s, int) for s in stakes):
            raise BetViolation("malformed bet stakes")
        if any(w not in (OPENER, ACCEPTOR, "") for w in winners):
            raise BetViolation("malformed bet winners")
        return cls(int_field(d, "id"), bytes_field(d, "announcement", 32), tuple(bytes(h) for h in hashes),
                   tuple(str(w) for w in winners), (int(stakes[0]), int(stakes[1])), int_field(d, "timeout"))


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    locktime: int
    fee: int
    balances: tuple[int, int]  # (opener, acceptor)
    escrows: tuple[Escrow, ...] = ()
    bets: tuple[Bet, ...] = ()
    signer: str = BOTH
    next_id: int = 1  # id for the next escrow or bet
    fee_paid: tuple[int, int] = (0, 0)
    """(opener, acceptor): who paid how much of ``fee``. The fee is a reserve: only a version
    that reaches the chain pays it, and a cooperative close or a re-anchor gives each party back
    what it paid beyond the new transaction's own fee (``close_balances``, ``reanchored_balances``)."""

    def committed(self) -> int:
        return (sum(self.balances) + sum(e.amount for e in self.escrows)
                + sum(sum(b.stakes) for b in self.bets) + self.fee)

    def contracts(self) -> int:
        return len(self.escrows) + sum(1 for b in self.bets for s in b.stakes if s > 0)

    def escrow(self, eid: int) -> Escrow:
        for e in self.escrows:
            if e.id == eid:
                return e
        raise EscrowViolation(f"no escrow {eid}")

    def bet(self, bid: int) -> Bet:
        for b in self.bets:
            if b.id == bid:
                return b
        raise BetViolation(f"no bet {bid}")

    def to_fields(self) -> dict[str, object]:
        return {"number": self.number, "locktime": self.locktime, "fee": self.fee,
                "balances": list(self.balances), "escrows": [e.to_fields() for e in self.escrows],
                "bets": [b.to_fields() for b in self.bets], "signer": self.signer,
                "next_id": self.next_id, "fee_paid": list(self.fee_paid)}

    @classmethod
    def from_fields(cls, d: dict[str, object]) -> Version:
        bal = d.get("balances")
        esc = d.get("escrows")
        bets = d.get("bets")
        signer = d.get("signer")
        if not (isinstance(bal, list) and len(bal) == 2 and all(isinstance(x, int) for x in bal)):
            raise BalanceViolation("malformed balances")
        if not isinstance(esc, list) or not isinstance(bets, list) or signer not in (OPENER, ACCEPTOR, BOTH):
            raise BalanceViolation("malformed version")
        paid = d.get("fee_paid")
        if not (isinstance(paid, list) and len(paid) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in paid)):
            raise FeeViolation("fee_paid (who paid how much of the fee) missing or malformed")
        return cls(int_field(d, "number"), int_field(d, "locktime"), int_field(d, "fee"), (int(bal[0]), int(bal[1])),
                   tuple(Escrow.from_fields(as_dict(e)) for e in esc), tuple(Bet.from_fields(as_dict(b)) for b in bets),
                   str(signer), int_field(d, "next_id"), (int(paid[0]), int(paid[1])))


def _role(d: dict[str, object], k: str) -> str:
    v = d.get(k)
    if v not in ROLES:
        raise BalanceViolation(f"field {k} must be a role")
    return str(v)


def initial_version(p: ChannelParams) -> Version:
    return Version(0, p.lifetime, p.initial_fee,
                   (p.opener_contribution - p.initial_fee, p.acceptor_contribution), (), (), BOTH, 1,
                   (p.initial_fee, 0))


def check_invariants(p: ChannelParams, v: Version) -> None:
    if any(b < 0 for b in v.balances) or v.fee < 0:
        raise BalanceViolation("negative balance or fee")
    if any(e.amount <= 0 for e in v.escrows) or any(s <= 0 for b in v.bets for s in b.stakes):
        raise BalanceViolation("non-positive contract amount")
    if v.committed() != p.capacity:
        raise BalanceViolation(f"balances + contracts + fee = {v.committed()} != capacity {p.capacity}")
    if min(v.fee_paid) < 0 or sum(v.fee_paid) != v.fee:
        raise FeeViolation(f"fee shares {list(v.fee_paid)} do not add up to the fee {v.fee}")


def close_fee(p: ChannelParams, v: Version) -> int:
    """The cooperative close's own fee: the initial refund's (a final transaction of the same
    shape, two balance outputs), never more than the version's fee."""
    return min(p.initial_fee, v.fee)


def refunded_balances(v: Version, fee: int) -> tuple[int, int]:
    """``v``'s balances once the fee reserve goes back to whoever paid it and a new
    transaction's own ``fee`` is paid instead: the opener pays it out of its share (it paid the
    initial fee), the acceptor only what the opener's share does not cover."""
    from_opener = min(fee, v.fee_paid[0])
    return (v.balances[0] + v.fee_paid[0] - from_opener,
            v.balances[1] + v.fee_paid[1] - (fee - from_opener))


def close_balances(p: ChannelParams, v: Version) -> tuple[int, int]:
    """What a cooperative close of ``v`` pays each party: its balance plus the fee reserve it
    paid, the opener less the close's own fee. Sums to capacity - ``close_fee``."""
    return refunded_balances(v, close_fee(p, v))


def reanchored_version(p: ChannelParams, v: Version, number: int, lifetime: int, anchor_fee: int,
                       proposer: str) -> Version:
    """The new initial refund V0' of a re-anchor of ``v`` (no contracts open): the fee reserve
    goes back to whoever paid it, V0' pays the initial fee again (from the opener, as at the
    opening), and the proposer pays the re-anchor transaction's ``anchor_fee``."""
    base = close_fee(p, v)
    bal = list(refunded_balances(v, base))
    bal[idx(proposer)] -= anchor_fee
    return Version(number, lifetime, base, (bal[0], bal[1]), (), (), BOTH, v.next_id, (base, 0))


def legacy_fee_paid(p: ChannelParams, v: dict[str, object]) -> list[int]:
    """Fee shares for a version written before they were kept (store migration to schema 6).

    Deterministic from the version alone, so both parties of a channel derive the same shares
    for the same version: the opener paid the initial fee; direction switches alternate signers,
    so of the k fee steps above it the version's signer paid ceil(k/2) and the other party
    floor(k/2) (a mutual version counts the opener as its signer); a remainder that is not a
    whole step goes to the opener."""
    fee = int_field(v, "fee")
    base = min(fee, p.initial_fee)
    steps, rest = divmod(fee - base, max(1, p.fee_step))
    signer = v.get("signer")
    first = idx(str(signer)) if signer in ROLES else 0
    paid = [0, 0]
    paid[first] += (steps + 1) // 2 * p.fee_step
    paid[1 - first] += steps // 2 * p.fee_step
    paid[0] += base + rest
    return paid


def replace_balances(v: Version, balances: Sequence[int]) -> Version:
    """A copy with other balances (used by tests to forge a peer's bad proposal)."""
    return replace(v, balances=(balances[0], balances[1]))
