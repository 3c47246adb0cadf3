"""The rules that produce the next version of the refund transaction from an operation.

Rules / theory of operation (the heart of the channel; see docs/channels.md for the why, and
``versions.py`` for what a version is and its invariant):
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

import hashlib
from dataclasses import replace

from eschaton.core.channel.errors import (
    BalanceViolation,
    BetViolation,
    EscrowViolation,
    LocktimeExhausted,
    PaymentTooLarge,
    ReserveViolation,
)
from eschaton.core.channel.ops import (
    MUTUAL,
    AdjustBet,
    CancelBet,
    CommitEscrow,
    OfferEscrow,
    Op,
    Pay,
    PlaceBet,
    ReturnEscrow,
    SettleBet,
)
from eschaton.core.channel.params import DUST_LIMIT, MAX_LOCKTIME_HEIGHT, ChannelParams
from eschaton.core.channel.versions import (
    ACCEPTOR,
    BOTH,
    MAX_NUMBER,
    OPENER,
    ROLES,
    Bet,
    Escrow,
    Version,
    check_invariants,
    idx,
    other,
)


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
