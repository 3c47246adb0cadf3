"""Versions of the refund transaction and the rules that produce the next one.

Rules / theory of operation (the heart of the channel; see docs/channels.md for the why):
- A ``Version`` is one refund transaction spending the 2-of-2: balances for the opener and the
  acceptor, hash-locked contract outputs (escrows, bet stakes), a fee, an nLockTime and a number
  (the input's nSequence is ``SEQUENCE_BASE + number``: bit 31 keeps BIP68 off, and the value
  stays below final so nLockTime is enforced).
- Invariant: balances + contract amounts + fee == capacity, nothing negative.
- Who holds what. A version signed by one party X (its ``signer``) is completed and held only by
  the other party Y: Y can broadcast it, X cannot. So X may only sign versions that move value
  *towards* Y (a payment, an escrow offered by X, X committing its escrow, X returning an escrow Y
  offered, X settling a bet it lost). Y will broadcast whichever of its held versions pays Y most,
  which, within one epoch, is the newest.
- Epochs. Consecutive versions signed by the same party share one nLockTime and fee (an epoch).
  When the signer changes (a direction switch), or for a version both sign (bets), the new version
  takes nLockTime one ``locktime_step`` earlier and the fee one ``fee_step`` higher (paid by the
  party opening the epoch). The earlier nLockTime lets it confirm before any version the other
  party may hold from an earlier epoch becomes valid; the higher fee and nSequence make miners and
  mempools prefer it.
- A direction switch may not put nLockTime below ``height + safety_margin``: ``LocktimeExhausted``.
- Reserve: a party may not pay, escrow or stake itself below ``reserve``.
- Escrow: the payer's amount moves to ``hashlock_cltv(hash, payee, payer, timeout)`` with
  ``timeout = nLockTime of the offering version + escrow_delta`` unless the offer names its own
  (``OfferEscrow.timeout``, an absolute height). An explicit timeout must lie in
  ``[L + escrow_delta, lifetime + escrow_delta]`` (L: the offering version's nLockTime): the
  payee, once that version confirms (from block L on), keeps at least ``escrow_delta`` blocks to
  claim with the preimage before the payer may reclaim, and no escrow outlives the channel's
  own budget by more than the default would. The design's escrow locks both
  whole balances under the hash with no timeout; we lock only the escrowed amount and add a
  timeout, so a payer who vanishes (or never reveals) cannot freeze the payee's own balance, and
  the escrowed amount returns to the payer if the preimage is never revealed.
- Bets: one version both parties sign (the settlement's fee step is paid by the winner).
- Returning value (rolling back an escrow, settling a bet) opens an epoch whose fee step is paid
  by the party receiving the value, so the signer never needs a balance of its own. Each party's stake is an output the *other* party claims
  with the preimage of any outcome it wins, else the owner reclaims after the timeout (the
  default case). The outcome therefore decides the payout of whichever version is on chain, so a
  party gains nothing by broadcasting it rather than cooperating (docs/channels.md analyses the
  design's one-version-per-outcome construction and its races).
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import coincurve
from embit.transaction import Transaction

from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel.errors import (
    BalanceViolation,
    BetViolation,
    EscrowViolation,
    FeeViolation,
    LocktimeExhausted,
    PaymentTooLarge,
    ReserveViolation,
)
from eschaton.core.channel.oracle import Announcement
from eschaton.core.channel.params import DUST_LIMIT, MAX_LOCKTIME_HEIGHT, ChannelParams
from eschaton.core.channel.scripts import multi_hashlock_cltv

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
        return cls(_int(d, "id"), _role(d, "payer"), _int(d, "amount"), _b(d, "payment_hash", 32),
                   _int(d, "timeout"))


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
        return cls(_int(d, "id"), _b(d, "announcement", 32), tuple(bytes(h) for h in hashes),
                   tuple(str(w) for w in winners), (int(stakes[0]), int(stakes[1])), _int(d, "timeout"))


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
        return cls(_int(d, "number"), _int(d, "locktime"), _int(d, "fee"), (int(bal[0]), int(bal[1])),
                   tuple(Escrow.from_fields(_d(e)) for e in esc), tuple(Bet.from_fields(_d(b)) for b in bets),
                   str(signer), _int(d, "next_id"), (int(paid[0]), int(paid[1])))


def _d(x: object) -> dict[str, object]:
    if not isinstance(x, dict):
        raise BalanceViolation("malformed nested field")
    return x


def _int(d: dict[str, object], k: str) -> int:
    v = d.get(k)
    if not isinstance(v, int) or isinstance(v, bool):
        raise BalanceViolation(f"field {k} missing or not an integer")
    return v


def _b(d: dict[str, object], k: str, n: int) -> bytes:
    v = d.get(k)
    if not isinstance(v, (bytes, bytearray)) or len(v) != n:
        raise BalanceViolation(f"field {k} must be {n} bytes")
    return bytes(v)


def _role(d: dict[str, object], k: str) -> str:
    v = d.get(k)
    if v not in ROLES:
        raise BalanceViolation(f"field {k} must be a role")
    return str(v)


# --- operations ---------------------------------------------------------------------------


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
        return Pay(_int(d, "amount"))
    if k == "offer_escrow":
        return OfferEscrow(_int(d, "amount"), _b(d, "payment_hash", 32), _int(d, "timeout") if "timeout" in d else 0)
    if k == "commit_escrow":
        return CommitEscrow(_int(d, "escrow_id"), _b(d, "preimage", 32))
    if k == "return_escrow":
        return ReturnEscrow(_int(d, "escrow_id"))
    if k == "settle_bet":
        return SettleBet(_int(d, "bet_id"), _b(d, "preimage", 32))
    if k == "place_bet":
        w = d.get("winners")
        st = d.get("stakes")
        if not isinstance(w, list) or not isinstance(st, list) or len(st) != 2:
            raise BetViolation("malformed bet proposal")
        if not all(isinstance(s, int) for s in st):
            raise BetViolation("malformed bet stakes")
        return PlaceBet(Announcement.from_fields(_d(d.get("announcement"))),
                        tuple(str(x) for x in w), (int(st[0]), int(st[1])))
    if k == "adjust_bet":
        st = d.get("stakes")
        if not isinstance(st, list) or len(st) != 2 or not all(isinstance(s, int) for s in st):
            raise BetViolation("malformed bet stakes")
        return AdjustBet(_int(d, "bet_id"), (int(st[0]), int(st[1])))
    if k == "cancel_bet":
        return CancelBet(_int(d, "bet_id"))
    raise BalanceViolation(f"unknown operation {k!r}")


# --- the rules ----------------------------------------------------------------------------


def initial_version(p: ChannelParams) -> Version:
    return Version(0, p.lifetime, p.initial_fee,
                   (p.opener_contribution - p.initial_fee, p.acceptor_contribution), (), (), BOTH, 1,
                   (p.initial_fee, 0))


def is_new_epoch(cur: Version, op: Op, signer: str) -> bool:
    return isinstance(op, MUTUAL) or cur.signer != signer


def _amount(p: ChannelParams, amount: int, what: str) -> None:
    if amount <= 0:
        raise BalanceViolation(f"{what} must be positive")
    if amount > p.max_payment:
        raise PaymentTooLarge(f"{what} {amount} above max_payment {p.max_payment}")


def escrow_timeout_bounds(p: ChannelParams, locktime: int) -> tuple[int, int]:
    """Earliest and latest explicit escrow timeout for a version at ``locktime`` (see the rules)."""
    return locktime + p.escrow_delta, min(p.lifetime + p.escrow_delta, MAX_LOCKTIME_HEIGHT)


def escrow_timeout(p: ChannelParams, locktime: int, asked: int) -> int:
    """The timeout of an escrow offered in a version at ``locktime`` (``asked`` 0: the default)."""
    lo, hi = escrow_timeout_bounds(p, locktime)
    if not asked:
        return lo
    if asked < lo:
        raise EscrowViolation(
            f"escrow timeout {asked} too early: the version can confirm from block {locktime} and the "
            f"payee needs escrow_delta={p.escrow_delta} blocks after it to claim (use >= {lo})")
    if asked > hi:
        raise EscrowViolation(f"escrow timeout {asked} beyond the channel's lifetime {p.lifetime} "
                              f"+ escrow_delta {p.escrow_delta} (use <= {hi})")
    return asked


def apply(p: ChannelParams, cur: Version, op: Op, signer: str, height: int) -> Version:
    """The version that ``op`` signed by ``signer`` (the proposer, for mutual ops) makes of ``cur``.

    Raises a ``RuleViolation`` subclass if the operation breaks any rule; ``cur`` is untouched.
    """
    if signer not in ROLES:
        raise BalanceViolation("signer must be a role")
    if cur.number >= MAX_NUMBER:
        raise LocktimeExhausted("version numbers exhausted")
    me, them = idx(signer), idx(other(signer))
    bal = [cur.balances[0], cur.balances[1]]
    locktime, fee = cur.locktime, cur.fee
    paid = [cur.fee_paid[0], cur.fee_paid[1]]
    new_epoch = is_new_epoch(cur, op, signer)
    if new_epoch:
        locktime -= p.locktime_step
        if locktime < height + p.safety_margin:
            raise LocktimeExhausted(
                f"a direction switch needs nLockTime {locktime} >= height {height} + margin {p.safety_margin}"
            )
        fee += p.fee_step
        bal[me] -= p.fee_step
        paid[me] += p.fee_step
    escrows = list(cur.escrows)
    bets = list(cur.bets)
    next_id = cur.next_id
    if isinstance(op, Pay):
        _amount(p, op.amount, "payment")
        bal[me] -= op.amount
        bal[them] += op.amount
    elif isinstance(op, OfferEscrow):
        _amount(p, op.amount, "escrow")
        if op.amount < DUST_LIMIT:
            raise EscrowViolation("escrow below the dust limit")
        if len(op.payment_hash) != 32:
            raise EscrowViolation("payment hash must be 32 bytes")
        if any(e.payment_hash == op.payment_hash for e in escrows):
            raise EscrowViolation("an escrow with this hash is already open")
        timeout = escrow_timeout(p, locktime, op.timeout)
        bal[me] -= op.amount
        escrows.append(Escrow(next_id, signer, op.amount, op.payment_hash, timeout))
        next_id += 1
    elif isinstance(op, CommitEscrow):
        e = cur.escrow(op.escrow_id)
        if e.payer != signer:
            raise EscrowViolation("only the escrow's payer commits it")
        if hashlib.sha256(op.preimage).digest() != e.payment_hash:
            raise EscrowViolation("preimage does not match the escrow hash")
        escrows.remove(e)
        bal[idx(e.payee)] += e.amount
    elif isinstance(op, ReturnEscrow):
        e = cur.escrow(op.escrow_id)
        if e.payee != signer:
            raise EscrowViolation("only the escrow's payee rolls it back")
        escrows.remove(e)
        bal[idx(e.payer)] += e.amount
        if new_epoch:
            # The payer gets its escrow back minus the switch's fee step: a payee with nothing
            # of its own (a fresh single-funded channel) can still roll back.
            bal[me] += p.fee_step
            bal[idx(e.payer)] -= p.fee_step
            paid[me] -= p.fee_step
            paid[idx(e.payer)] += p.fee_step
    elif isinstance(op, SettleBet):
        b = cur.bet(op.bet_id)
        h = hashlib.sha256(op.preimage).digest()
        if h not in b.hashes:
            raise BetViolation("preimage matches no outcome of the bet")
        winner = b.winners[b.hashes.index(h)]
        if winner == signer:
            raise BetViolation("the loser signs the settlement, not the winner")
        bets.remove(b)
        if winner == "":
            bal[0] += b.stakes[0]
            bal[1] += b.stakes[1]
        else:
            bal[idx(winner)] += sum(b.stakes)
            if new_epoch:
                # The winner pays the settlement's fee step out of the pot, so that the loser
                # ends exactly where the bet version on chain would leave it: nothing to gain
                # by refusing to settle. (Safe: the loser still only signs value towards the winner.)
                bal[me] += p.fee_step
                bal[idx(winner)] -= p.fee_step
                paid[me] -= p.fee_step
                paid[idx(winner)] += p.fee_step
    elif isinstance(op, PlaceBet):
        a = op.announcement
        a.verify()
        if len(op.winners) != len(a.hashes):
            raise BetViolation("one winner (or push) per outcome")
        if any(w not in (OPENER, ACCEPTOR, "") for w in op.winners):
            raise BetViolation("winners must be roles or '' for a push")
        if OPENER not in op.winners or ACCEPTOR not in op.winners:
            raise BetViolation("each party must win at least one outcome")
        if any(b.announcement == a.digest for b in bets):
            raise BetViolation("a bet on this announcement is already open")
        for i, s in enumerate(op.stakes):
            _amount(p, s, "stake")
            if s < DUST_LIMIT:
                raise BetViolation("stake below the dust limit")
            bal[i] -= s
        timeout = max(locktime, a.deadline) + p.escrow_delta
        bets.append(Bet(next_id, a.digest, a.hashes, op.winners, op.stakes, timeout))
        next_id += 1
    elif isinstance(op, AdjustBet):
        b = cur.bet(op.bet_id)
        i = bets.index(b)
        for j, s in enumerate(op.stakes):
            _amount(p, s, "stake")
            if s < DUST_LIMIT:
                raise BetViolation("stake below the dust limit")
            bal[j] += b.stakes[j] - s
        bets[i] = replace(b, stakes=op.stakes)
    elif isinstance(op, CancelBet):
        b = cur.bet(op.bet_id)
        bets.remove(b)
        bal[0] += b.stakes[0]
        bal[1] += b.stakes[1]
    else:  # pragma: no cover - the Op union is closed
        raise BalanceViolation("unknown operation")
    new = Version(cur.number + 1, locktime, fee, (bal[0], bal[1]), tuple(escrows), tuple(bets),
                  BOTH if isinstance(op, MUTUAL) else signer, next_id, (paid[0], paid[1]))
    check_invariants(p, new)
    for i in (0, 1):
        if new.balances[i] < cur.balances[i] and new.balances[i] < p.reserve:
            raise ReserveViolation(f"{ROLES[i]} balance {new.balances[i]} would fall below reserve {p.reserve}")
    if new.contracts() > p.max_contracts:
        raise EscrowViolation(f"more than {p.max_contracts} hash-locked outputs")
    return new


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
    fee = _int(v, "fee")
    base = min(fee, p.initial_fee)
    steps, rest = divmod(fee - base, max(1, p.fee_step))
    signer = v.get("signer")
    first = idx(str(signer)) if signer in ROLES else 0
    paid = [0, 0]
    paid[first] += (steps + 1) // 2 * p.fee_step
    paid[1 - first] += steps // 2 * p.fee_step
    paid[0] += base + rest
    return paid


# --- transactions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setup:
    """What both parties agreed about the funding output and where refunds pay."""

    funding_txid: str
    funding_vout: int
    capacity: int
    pubkeys: tuple[bytes, bytes]  # (opener, acceptor) 2-of-2 keys, also used in hash-locked outputs
    payout_scripts: tuple[bytes, bytes]

    @property
    def witness_script(self) -> bytes:
        return S.multisig_2of2(self.pubkeys[0], self.pubkeys[1])

    @property
    def funding_script(self) -> bytes:
        return S.p2wsh(self.witness_script)

    def to_fields(self) -> dict[str, object]:
        return {"funding_txid": self.funding_txid, "funding_vout": self.funding_vout,
                "capacity": self.capacity, "pubkeys": list(self.pubkeys),
                "payout_scripts": list(self.payout_scripts)}

    @classmethod
    def from_fields(cls, d: dict[str, object]) -> Setup:
        pk = d["pubkeys"]
        ps = d["payout_scripts"]
        assert isinstance(pk, list) and isinstance(ps, list)
        return cls(str(d["funding_txid"]), _int(d, "funding_vout"), _int(d, "capacity"),
                   (bytes(pk[0]), bytes(pk[1])), (bytes(ps[0]), bytes(ps[1])))


@dataclass(frozen=True, slots=True)
class OutputInfo:
    """One refund output: what it is, its script, and (for contracts) how to spend it."""

    kind: str  # "balance" | "escrow" | "stake"
    role: str  # balance: owner; escrow: payer; stake: owner
    value: int
    script_pubkey: bytes
    witness_script: bytes | None = None
    contract_id: int = 0
    claim_role: str = ""  # who may claim with a preimage
    timeout: int = 0
    hashes: tuple[bytes, ...] = ()


def version_outputs(v: Version, s: Setup) -> list[OutputInfo]:
    """Refund outputs in their canonical order; balances below dust are left to the fee."""
    outs: list[OutputInfo] = []
    for i, role in enumerate(ROLES):
        if v.balances[i] >= DUST_LIMIT:
            outs.append(OutputInfo("balance", role, v.balances[i], s.payout_scripts[i]))
    for e in sorted(v.escrows, key=lambda e: e.id):
        ws = S.hashlock_cltv(e.payment_hash, s.pubkeys[idx(e.payee)], s.pubkeys[idx(e.payer)], e.timeout)
        outs.append(OutputInfo("escrow", e.payer, e.amount, S.p2wsh(ws), ws, e.id, e.payee,
                               e.timeout, (e.payment_hash,)))
    for b in sorted(v.bets, key=lambda b: b.id):
        for i, role in enumerate(ROLES):
            hashes = b.claim_hashes(role)
            ws = multi_hashlock_cltv(hashes, s.pubkeys[idx(other(role))], s.pubkeys[i], b.timeout)
            outs.append(OutputInfo("stake", role, b.stakes[i], S.p2wsh(ws), ws, b.id, other(role),
                                   b.timeout, tuple(hashes)))
    return outs


def _dsha(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    return b"\xfe" + n.to_bytes(4, "little")


@functools.lru_cache(maxsize=256)
def _input_consts(s: Setup) -> tuple[bytes, bytes, bytes]:
    """(outpoint, hashPrevouts, scriptCode + amount) of the funding input: the same for every
    version of a channel, so computed once per setup (Setup is frozen, hence a safe cache key)."""
    outpoint = bytes.fromhex(s.funding_txid)[::-1] + s.funding_vout.to_bytes(4, "little")
    ws = s.witness_script
    return outpoint, _dsha(outpoint), _varint(len(ws)) + ws + s.capacity.to_bytes(8, "little")


_VER = (2).to_bytes(4, "little")
_ALL = (1).to_bytes(4, "little")


def version_digest(v: Version, s: Setup) -> tuple[bytes, str]:
    """(BIP143 SIGHASH_ALL digest of the 2-of-2 input, txid) of ``version_tx(v, s)``.

    Hand-rolled for this one-input shape because it runs twice per update (sign, verify) and
    embit's general serialiser costs several times more; ``test_version_digest_matches_embit``
    pins it to embit's result.
    """
    if v.escrows or v.bets:
        pairs = [(o.value, o.script_pubkey) for o in version_outputs(v, s)]
    else:  # balance outputs only (most versions): the same outputs without building OutputInfos
        pairs = [(v.balances[i], s.payout_scripts[i]) for i in (0, 1) if v.balances[i] >= DUST_LIMIT]
    if not pairs:
        raise BalanceViolation("a version must have at least one output above dust")
    outs = b"".join(value.to_bytes(8, "little") + _varint(len(spk)) + spk for value, spk in pairs)
    outpoint, hash_prevouts, code_amount = _input_consts(s)
    seq = (SEQUENCE_BASE + v.number).to_bytes(4, "little")
    lock = v.locktime.to_bytes(4, "little")
    pre = _VER + hash_prevouts + _dsha(seq) + outpoint + code_amount + seq + _dsha(outs) + lock + _ALL
    body = _VER + b"\x01" + outpoint + b"\x00" + seq + _varint(len(pairs)) + outs + lock
    return _dsha(pre), _dsha(body)[::-1].hex()


@functools.lru_cache(maxsize=256)
def _public_key(pubkey: bytes) -> coincurve.PublicKey:
    """Parsed once per key: parsing costs a tenth of a verification, and a channel verifies every
    update against the same peer key."""
    return coincurve.PublicKey(pubkey)


def sign_digest(digest: bytes, key: coincurve.PrivateKey) -> bytes:
    return bytes(key.sign(digest, hasher=None)) + bytes([T.SIGHASH_ALL])


def verify_digest(digest: bytes, pubkey: bytes, sig: bytes) -> bool:
    """Low-S DER + SIGHASH_ALL check, as ``tx.check_signature`` does, on a precomputed digest."""
    if len(sig) < 9 or sig[-1] != T.SIGHASH_ALL:
        return False
    der = sig[:-1]
    try:
        if coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.der_to_cdata(der)) != der:
            return False  # not canonical low-S DER: non-standard, would not relay
        return bool(_public_key(pubkey).verify(der, digest, hasher=None))
    except (ValueError, TypeError):
        return False


def version_tx(v: Version, s: Setup) -> Transaction:
    outs = [T.TxOut(o.value, o.script_pubkey) for o in version_outputs(v, s)]
    if not outs:
        raise BalanceViolation("a version must have at least one output above dust")
    return T.build_tx([T.TxIn(s.funding_txid, s.funding_vout, SEQUENCE_BASE + v.number)], outs, v.locktime, 2)


def close_tx(p: ChannelParams, v: Version, s: Setup) -> Transaction:
    """The cooperative close: current balances with the fee reserve refunded (``close_balances``),
    no nLockTime, final nSequence."""
    if v.escrows or v.bets:
        raise EscrowViolation("settle escrows and bets before a cooperative close")
    final = replace(v, balances=close_balances(p, v), fee=close_fee(p, v))
    outs = [T.TxOut(o.value, o.script_pubkey) for o in version_outputs(final, s)]
    if not outs:
        raise BalanceViolation("a close must have at least one output above dust")
    return T.build_tx([T.TxIn(s.funding_txid, s.funding_vout, T.SEQUENCE_FINAL)], outs, 0, 2)


def reanchor_tx(s: Setup, new_capacity: int) -> Transaction:
    """Spend the funding output into a new 2-of-2 output (same keys): final, no nLockTime."""
    return T.build_tx([T.TxIn(s.funding_txid, s.funding_vout, T.SEQUENCE_FINAL)],
                      [T.TxOut(new_capacity, s.funding_script)], 0, 2)


def sign(tx: Transaction, s: Setup, key: coincurve.PrivateKey) -> bytes:
    """Low-S DER signature plus SIGHASH_ALL (as ``tx.sign_input``, with a prepared key)."""
    digest = T.sighash_segwit(tx, 0, s.witness_script, s.capacity)
    return bytes(key.sign(digest, hasher=None)) + bytes([T.SIGHASH_ALL])


def verify(tx: Transaction, s: Setup, pubkey: bytes, sig: bytes) -> bool:
    return T.check_signature(tx, 0, s.witness_script, s.capacity, pubkey, sig)


def complete(tx: Transaction, s: Setup, sigs: dict[bytes, bytes]) -> bytes:
    """Serialised ``tx`` with the 2-of-2 witness from both signatures."""
    T.set_witness(tx, 0, S.witness_2of2(s.witness_script, sigs))
    return T.serialize(tx)


def replace_balances(v: Version, balances: Sequence[int]) -> Version:
    """A copy with other balances (used by tests to forge a peer's bad proposal)."""
    return replace(v, balances=(balances[0], balances[1]))
