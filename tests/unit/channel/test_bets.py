"""Bets over the channel: placement (both sign), settlement per outcome, default, fraud proofs."""
from __future__ import annotations

import pytest

from eschaton.core.channel import ChannelState, FraudProof, Oracle
from eschaton.core.channel.errors import BetViolation, InvalidRequest, OracleError
from eschaton.core.channel.ops import SettleBet
from eschaton.core.channel.rules import apply
from eschaton.core.channel.sweep import payout_after
from eschaton.core.channel.transactions import version_outputs
from eschaton.core.channel.versions import idx
from tests.unit.channel.pair import Pair, key, opened, params

P = [key(f"outcome-{i}") for i in range(3)]


def oracle_and_announcement(n: int = 2, deadline: int = 150) -> tuple[Oracle, object]:
    o = Oracle(key("oracle"))
    return o, o.announce("match-1", [f"o{i}" for i in range(n)], P[:n], deadline)


def place(pr: Pair, winners: tuple[str, ...], stakes: tuple[int, int] = (10_000, 10_000), n: int = 2) -> int:
    _, ann = oracle_and_announcement(n)
    pr.turn("a")
    pr.do("a", "propose_bet", ann, winners, stakes)
    assert pr.b.ch.pending_kind == "incoming"
    assert any(x.kind == "proposal" for x in pr.b.notes)
    pr.run("b", pr.b.ch.accept_proposal())
    pr.flush()
    assert pr.a.ch.current == pr.b.ch.current and len(pr.a.ch.current.bets) == 1
    # Both hold the bet version fully signed.
    assert pr.a.ch.best == pr.b.ch.best == pr.a.ch.current
    return pr.a.ch.current.bets[0].id


def funded() -> Pair:
    pr = opened(p=params(acceptor_contribution=300_000), acceptor_funds=True)
    return pr


@pytest.mark.parametrize("outcome, winner", [(0, "opener"), (1, "acceptor")])
def test_bet_won_by_each_outcome(outcome: int, winner: str) -> None:
    pr = funded()
    bid = place(pr, ("opener", "acceptor"))
    before = pr.a.ch.current
    loser_side = "b" if winner == "opener" else "a"
    pr.turn(loser_side)
    pr.do(loser_side, "settle_bet", bid, P[outcome])
    v = pr.a.ch.current
    assert v.bets == () and v == pr.b.ch.current
    w = idx(winner)
    # The bet version is mutual, so settling opens an epoch; its fee step comes out of the pot.
    assert v.balances[w] == before.balances[w] + 20_000 - pr.p.fee_step
    assert v.balances[1 - w] == before.balances[1 - w]


def test_winner_cannot_settle_in_its_own_favour() -> None:
    pr = funded()
    bid = place(pr, ("opener", "acceptor"))
    pr.turn("a")
    with pytest.raises(InvalidRequest) as e:
        pr.a.ch.settle_bet(bid, P[0], pr.height)
    assert isinstance(e.value.rule, BetViolation)
    with pytest.raises(InvalidRequest):
        pr.a.ch.settle_bet(bid, key("not an outcome"), pr.height)


def test_default_case_cancel_returns_stakes() -> None:
    pr = funded()
    before = pr.a.ch.current
    bid = place(pr, ("opener", "acceptor"))
    pr.turn("b")
    pr.do("b", "cancel_bet", bid)
    pr.run("a", pr.a.ch.accept_proposal())
    pr.flush()
    v = pr.a.ch.current
    assert v.bets == () and v == pr.b.ch.current
    # Only the two fee steps (one per mutual version) were spent.
    assert sum(v.balances) == sum(before.balances) - 2 * pr.p.fee_step


def test_push_outcome_and_three_outcomes() -> None:
    pr = funded()
    bid = place(pr, ("opener", "acceptor", ""), n=3)
    bet = pr.a.ch.current.bet(bid)
    outs = version_outputs(pr.a.ch.current, pr.a.ch.setup)  # type: ignore[arg-type]
    stakes = [o for o in outs if o.kind == "stake"]
    assert [o.claim_role for o in stakes] == ["acceptor", "opener"]
    assert stakes[0].hashes == (bet.hashes[1],) and stakes[1].hashes == (bet.hashes[0],)
    pr.turn("a")
    pr.do("a", "settle_bet", bid, P[2])  # push: either party may return the stakes
    assert pr.b.ch.current.bets == ()


def test_bet_needs_agreement_and_can_be_rejected() -> None:
    pr = funded()
    _, ann = oracle_and_announcement()
    pr.turn("a")
    pr.do("a", "propose_bet", ann, ("opener", "acceptor"), (10_000, 10_000))
    pr.run("b", pr.b.ch.reject_proposal("no thanks"))
    pr.flush()
    assert pr.a.ch.pending is None and pr.a.ch.current.bets == ()
    pr.pay("a", 1_000)  # still usable


def test_bet_rules() -> None:
    pr = funded()
    o, ann = oracle_and_announcement()
    pr.turn("a")
    for winners in (("opener", "opener"), ("opener",), ("opener", "x")):
        with pytest.raises(InvalidRequest):
            pr.a.ch.propose_bet(ann, winners, (10_000, 10_000), pr.height)  # type: ignore[arg-type]
    forged = type(ann)(ann.oracle_pubkey, ann.event_id, ann.outcomes, ann.hashes, ann.deadline + 1, ann.signature)  # type: ignore[attr-defined]
    with pytest.raises(OracleError):
        pr.a.ch.propose_bet(forged, ("opener", "acceptor"), (10_000, 10_000), pr.height)
    with pytest.raises(InvalidRequest):
        pr.a.ch.propose_bet(ann, ("opener", "acceptor"), (10_000, 10**9), pr.height)


def test_oracle_fraud_proof() -> None:
    o, ann = oracle_and_announcement()
    assert FraudProof(ann, P[0], P[1]).verify()  # type: ignore[arg-type]
    assert not FraudProof(ann, P[0], P[0]).verify()  # type: ignore[arg-type]
    assert not FraudProof(ann, P[0], key("junk")).verify()  # type: ignore[arg-type]
    other = Oracle(key("other")).announce("match-1", ["o0", "o1"], P[:2], 150)
    forged = type(ann)(other.oracle_pubkey, ann.event_id, ann.outcomes, ann.hashes, ann.deadline, ann.signature)  # type: ignore[attr-defined]
    assert not FraudProof(forged, P[0], P[1]).verify()


def test_on_chain_bet_version_pays_what_cooperation_pays() -> None:
    """Whoever broadcasts the bet version, the revealed outcome decides the payout: no gain."""
    pr = funded()
    bid = place(pr, ("opener", "acceptor"))
    bet_v = pr.a.ch.current
    outs = version_outputs(bet_v, pr.a.ch.setup)  # type: ignore[arg-type]
    for outcome in (0, 1):
        coop = apply(pr.p, bet_v, SettleBet(bid, P[outcome]),
                            "acceptor" if outcome == 0 else "opener", pr.height)
        onchain = payout_after(outs, [P[outcome]])
        loser = 1 - outcome
        # The loser's on-chain result is never better than settling cooperatively.
        assert onchain[loser] <= coop.balances[loser]
        assert onchain == (coop.balances[0] + (pr.p.fee_step if outcome == 0 else 0),
                           coop.balances[1] + (pr.p.fee_step if outcome == 1 else 0))
    # Default (no preimage): everyone's stake comes back, as a cancel would give.
    assert payout_after(outs, []) == (bet_v.balances[0] + 10_000, bet_v.balances[1] + 10_000)
    # A cheating oracle revealing both: each claims the other's stake (first come); fraud is provable.
    assert sum(payout_after(outs, P[:2])) == sum(bet_v.balances) + 20_000


def test_bet_version_survives_crash_of_either_side_mid_signing() -> None:
    pr = funded()
    _, ann = oracle_and_announcement()
    pr.turn("a")
    pr.do("a", "propose_bet", ann, ("opener", "acceptor"), (10_000, 10_000))
    pr.online = False
    pr.run("b", pr.b.ch.accept_proposal())  # b's signature persisted, never delivered
    pr.online = True
    pr.crash("a")
    pr.crash("b")
    pr.reconnect()
    assert pr.a.ch.current == pr.b.ch.current and len(pr.a.ch.current.bets) == 1
    assert pr.a.ch.best == pr.b.ch.best == pr.a.ch.current
    assert pr.a.ch.state is ChannelState.OPEN


def test_adjust_bet_changes_stakes_with_a_newer_mutual_version() -> None:
    pr = funded()
    bid = place(pr, ("opener", "acceptor"))
    before = pr.a.ch.current
    pr.turn("b")
    pr.do("b", "adjust_bet", bid, (20_000, 5_000))
    pr.run("a", pr.a.ch.accept_proposal())
    pr.flush()
    v = pr.a.ch.current
    assert v == pr.b.ch.current and v.bet(bid).stakes == (20_000, 5_000)
    assert v.locktime == before.locktime - pr.p.locktime_step and v.signer == "both"
    assert v.balances == (before.balances[0] - 10_000, before.balances[1] + 5_000 - pr.p.fee_step)
    pr.turn("a")
    pr.do("a", "settle_bet", bid, P[1])  # acceptor wins the adjusted pot
    assert pr.b.ch.current.balances[1] == v.balances[1] + 25_000 - pr.p.fee_step


def test_lost_final_mutual_signature_is_resent_after_turn_moved_on() -> None:
    pr = funded()
    _, ann = oracle_and_announcement()
    pr.turn("a")
    pr.do("a", "propose_bet", ann, ("opener", "acceptor"), (10_000, 10_000))
    pr.run("b", pr.b.ch.request_turn())  # b wants the turn while the bet is being signed
    pr.flush()
    pr.run("b", pr.b.ch.accept_proposal())
    sender, sig_b = pr.queue.popleft()
    pr.online = False
    pr.run("a", pr.a.ch.handle(sig_b, pr.height))  # a completes, grants the turn; all lost
    pr.online = True
    pr.crash("b")
    pr.reconnect()
    assert pr.a.ch.current == pr.b.ch.current and pr.b.ch.best == pr.b.ch.current
    assert pr.b.ch.have_turn and not pr.a.ch.have_turn
