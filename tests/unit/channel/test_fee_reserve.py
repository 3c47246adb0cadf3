"""The fee reserve: every direction switch raises the refund's fee by one step, paid by the party
opening the epoch, but only a version that reaches the chain pays it. A cooperative close (and a
re-anchor) gives each party back the steps it paid; both sides compute the same shares, and a
peer's version with other shares is refused."""
from __future__ import annotations

import dataclasses

import pytest

from eschaton.core import tx as T
from eschaton.core.channel import Oracle
from eschaton.core.channel.errors import FeeViolation
from eschaton.core.channel.messages import Update
from eschaton.core.channel.ops import Pay, op_to_fields
from eschaton.core.channel.rules import apply
from eschaton.core.channel.transactions import complete, sign, version_tx
from eschaton.core.channel.versions import Version, legacy_fee_paid
from tests.unit.channel.pair import Pair, key, opened, params


def _close_outputs(pr: Pair) -> dict[bytes, int]:
    pr.turn("a")
    pr.do("a", "close")
    tx = T.parse_tx(pr.b.broadcasts[-1])
    assert tx.locktime == 0
    return {o.script_pubkey: o.value for o in T.outputs_of(tx)}


def test_two_way_one_sat_payments_cost_only_the_close_fee() -> None:
    p = params(acceptor_contribution=100_000, lifetime=2_000, locktime_step=1)
    pr = Pair(p=p, acceptor_funds=True)
    pr.confirm_funding()
    moved = [0, 0]
    for i in range(40):  # forty direction switches, one 1-sat payment each
        who = "a" if i % 2 == 0 else "b"
        pr.pay(who, 1)
        moved[i % 2] += 1
    cur = pr.a.ch.current
    assert cur == pr.b.ch.current
    # Each switch reserved one step more, paid by whoever opened the epoch: 20 each.
    assert cur.fee == p.initial_fee + 40 * p.fee_step
    assert cur.fee_paid == (p.initial_fee + 20 * p.fee_step, 20 * p.fee_step)
    assert cur.balances == (p.opener_contribution - cur.fee_paid[0] - moved[0] + moved[1],
                            p.acceptor_contribution - cur.fee_paid[1] + moved[0] - moved[1])
    outs = _close_outputs(pr)
    a_script, b_script = pr.a.ch.payout_script, pr.b.ch.payout_script
    # On chain only the close's own fee (the initial fee, the opener's): the 8,000 sat of steps
    # came back to whoever paid them.
    assert outs == {a_script: p.opener_contribution - p.initial_fee - moved[0] + moved[1],
                    b_script: p.acceptor_contribution + moved[0] - moved[1]}
    assert sum(outs.values()) == p.capacity - p.initial_fee


def test_the_receiving_party_pays_the_step_of_a_returned_escrow_and_gets_it_back() -> None:
    pr = opened()
    pr.turn("a")
    eid = pr.do("a", "offer_escrow", 10_000, key("e1"))
    offered = pr.a.ch.current
    pr.turn("b")
    pr.do("b", "return_escrow", eid)  # b signs with nothing of its own: a, who gets the escrow back, pays
    cur = pr.a.ch.current
    assert cur == pr.b.ch.current
    assert cur.fee_paid == (offered.fee_paid[0] + pr.p.fee_step, 0)
    outs = _close_outputs(pr)
    assert outs == {pr.a.ch.payout_script: pr.p.capacity - pr.p.initial_fee}


def test_a_bet_settled_by_the_loser_leaves_the_steps_with_who_paid_them() -> None:
    p = params(acceptor_contribution=100_000)
    pr = Pair(p=p, acceptor_funds=True)
    pr.confirm_funding()
    oracle = Oracle(key("fee-oracle"))
    pre = [key("o0"), key("o1")]
    ann = oracle.announce("ev", ["a wins", "b wins"], pre, deadline=pr.height + 5)
    pr.turn("a")
    pr.do("a", "propose_bet", ann, ("opener", "acceptor"), (5_000, 5_000))
    pr.run("b", pr.b.ch.accept_proposal())
    pr.flush()
    placed = pr.a.ch.current
    assert placed.fee_paid == (p.initial_fee + p.fee_step, 0)  # the proposer paid the bet's step
    pr.turn("b")
    pr.do("b", "settle_bet", placed.bets[0].id, pre[0])  # b lost: a, the winner, pays the step
    cur = pr.b.ch.current
    assert cur == pr.a.ch.current and cur.fee_paid == (p.initial_fee + 2 * p.fee_step, 0)
    outs = _close_outputs(pr)
    assert outs == {pr.a.ch.payout_script: p.opener_contribution - p.initial_fee + 5_000,
                    pr.b.ch.payout_script: p.acceptor_contribution - 5_000}


def _signed_update(pr: Pair, new: Version) -> Update:
    a = pr.a.ch
    assert a.setup is not None
    sig = sign(version_tx(new, a.setup), a.setup, a._key)
    return Update(a.channel_id, new.to_fields(), op_to_fields(Pay(1_000)), sig)


@pytest.mark.parametrize("shares", [(1_000, 200), (1_200, 0), (1_300, -100)])
def test_a_version_with_other_fee_shares_is_refused(shares: tuple[int, int]) -> None:
    """The shares are not in the transaction (the signature covers them not), so the rules must
    check them: a payer claiming the acceptor paid its step would take it back at the close."""
    pr = opened(p=params(acceptor_contribution=100_000), acceptor_funds=True)
    pr.pay("a", 1)  # a opens an epoch
    pr.turn("b")
    pr.pay("b", 1)
    pr.turn("a")
    cur = pr.a.ch.current
    good = apply(pr.p, cur, Pay(1_000), "opener", pr.height)
    assert good.fee_paid == (cur.fee_paid[0] + pr.p.fee_step, cur.fee_paid[1])
    before = pr.b.ch.snapshot()
    bad = dataclasses.replace(good, fee_paid=shares)
    with pytest.raises(FeeViolation):
        pr.b.ch.handle(_signed_update(pr, bad), pr.height)
    assert pr.b.ch.snapshot() == before
    pr.b.ch.handle(_signed_update(pr, good), pr.height)
    assert pr.b.ch.current == good


def test_a_version_without_fee_shares_is_refused_in_one_line() -> None:
    pr = opened()
    fields = dict(pr.a.ch.current.to_fields())
    del fields["fee_paid"]
    with pytest.raises(FeeViolation, match="fee_paid"):
        Version.from_fields(fields)


def test_legacy_shares_agree_with_the_rules_along_alternating_switches() -> None:
    """The store migration derives shares from a version alone; along a chain of direction
    switches it gives what the rules give, so both sides of a migrated channel, which may hold
    different versions of it, continue in agreement."""
    p = params(acceptor_contribution=100_000, lifetime=2_000, locktime_step=1)
    pr = Pair(p=p, acceptor_funds=True)
    pr.confirm_funding()
    for i in range(9):
        pr.pay("a" if i % 3 else "b", 7)  # same-direction runs and switches
        cur = pr.a.ch.current
        assert legacy_fee_paid(p, cur.to_fields()) == list(cur.fee_paid)


def test_fee_shares_survive_a_crash() -> None:
    pr = opened(p=params(acceptor_contribution=100_000), acceptor_funds=True)
    pr.pay("a", 5)
    pr.pay("b", 1)
    want = pr.a.ch.current.fee_paid
    assert want == (1_200, 200)
    pr.crash("a")
    pr.crash("b")
    pr.reconnect()
    assert pr.a.ch.current.fee_paid == pr.b.ch.current.fee_paid == want


@pytest.mark.parametrize("payout", ["p2wpkh", "p2wsh"])
def test_the_vsize_bound_holds_for_the_largest_version(payout: str) -> None:
    """``min_fee_step`` rests on ``version_vsize_bound``: a fully signed version with both
    balance outputs and every contract slot used is never larger (signatures vary in length by
    a byte; the bound takes the longest)."""
    from eschaton.core import script as S
    from eschaton.core.channel.params import min_fee_step, version_vsize_bound

    n = 8
    pr = opened(p=params(max_contracts=n))
    a = pr.a.ch
    assert a.setup is not None
    setup = a.setup
    if payout == "p2wsh":
        setup = dataclasses.replace(setup, payout_scripts=(S.p2wsh(b"\x51"), S.p2wsh(b"\x52")))
    pr.pay("a", 10_000)  # both balance outputs above dust
    for i in range(n):
        pr.turn("a")
        pr.do("a", "offer_escrow", 1_000, key(f"slot-{i}"))
    v = pr.a.ch.current
    assert v.contracts() == n
    worst = 0
    for j in range(20):  # several signatures: their DER length varies
        v_j = dataclasses.replace(v, locktime=v.locktime - j)
        tx = version_tx(v_j, setup)
        sig = sign(tx, setup, a._key)
        raw = complete(tx, setup, {a.pubkey: sig, a.remote_pubkey: sig})
        worst = max(worst, T.vsize(T.parse_tx(raw)))
    assert worst <= version_vsize_bound(2 + n) == min_fee_step(n)
    assert version_vsize_bound(2 + n) - worst <= (25 if payout == "p2wpkh" else 2)
