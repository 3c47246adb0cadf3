"""Trade channels on the real embedded regtest chain: every settlement path confirmed by the kernel."""
from __future__ import annotations

import asyncio
import random

import pytest

from eschaton.chain.backend import BroadcastRefused
from eschaton.core import tx as T
from eschaton.core.channel import Oracle
from eschaton.core.channel.errors import BadSignature, LocktimeViolation
from eschaton.core.channel.messages import Update
from eschaton.core.channel.ops import Pay, SettleBet, op_to_fields
from eschaton.core.channel.rules import apply
from eschaton.core.channel.transactions import sign, version_outputs, version_tx
from eschaton.core.channel.versions import Version, close_balances
from tests.integration.channel.harness import Net, k

pytestmark = pytest.mark.timeout(120)
SWEEP_FEE = 1_000


def other(n: str) -> str:
    return "b" if n == "a" else "a"


def test_many_payments_both_directions_then_cooperative_close(net: Net) -> None:
    net.open(acceptor=3_000_000, lifetime_blocks=400, step=2)
    rng = random.Random(7)
    expected = list(net.ch("a").current.balances)
    paid = [2_000, 0]  # fee shares: the initial fee is the opener's
    for _ in range(60):
        who = rng.choice("ab")
        amt = rng.randint(1, 40_000)
        switch = net.ch(who).current.signer != net.ch(who).role
        net.do(who, "pay", amt)
        i = 0 if who == "a" else 1
        expected[i] -= amt + (300 if switch else 0)
        paid[i] += 300 if switch else 0
        expected[1 - i] += amt
        assert net.ch("a").current == net.ch("b").current
    assert list(net.ch("a").current.balances) == expected
    assert list(net.ch("a").current.fee_paid) == paid
    net.do("a", "close")
    net.mine(1)
    assert net.ch("a").state.name == net.ch("b").state.name == "CLOSED"
    # The close gives the fee steps back to whoever paid them and pays only the initial fee.
    assert (net.a.paid_to_payout(), net.b.paid_to_payout()) == (expected[0] + paid[0] - 2_000,
                                                                expected[1] + paid[1])


@pytest.mark.parametrize("closer", ["a", "b"])
def test_unilateral_close_by_each_side(net: Net, closer: str) -> None:
    net.open()
    net.do("a", "pay", 400_000)
    net.do("b", "pay", 100_000)
    net.do("a", "pay", 50_000)  # a signed last: b holds the current version
    agreed = net.ch("a").current.balances
    nd = net.node(closer)
    nd.ep.call(net.cid, "force_close", net.height)
    net.mine_to(net.ch("b").current.locktime + 2)
    assert net.funding_spender() is not None
    assert net.ch("a").state.name == net.ch("b").state.name == "CLOSED"
    # Whoever closed, the current version (held by b) is what confirmed: each gets the agreed state.
    assert net.funding_spender() == net.ch("b").best_txid()
    assert (net.a.paid_to_payout(), net.b.paid_to_payout()) == agreed


def _cheater(net: Net, who: str) -> None:
    """``who`` will play a peer broadcasting old versions: its store keeps every version (an
    honest node keeps only those with hash-locked outputs, all it could need to sweep)."""
    net.node(who).store.keep_every_version = True


def _older_versions(net: Net, cheater: str) -> list[bytes]:
    """Every version the cheater can complete (it holds the peer's signature), oldest first."""
    nd = net.node(cheater)
    ch = net.ch(cheater)
    rows = [r for r in nd.store.versions(net.cid) if r.peer_signature is not None]
    return [ch.version_raw(r.version, r.peer_signature) for r in rows if r.number < net.ch(other(cheater)).best.number]  # type: ignore[union-attr]


@pytest.mark.parametrize("honest", ["a", "b"])
def test_counterparty_broadcasts_each_older_version_newer_confirms_first(net: Net, honest: str) -> None:
    cheater = other(honest)
    _cheater(net, cheater)
    net.open(acceptor=2_000_000, lifetime_blocks=90)
    # Four epochs: the honest side ends up holding the newest version.
    for who, amt in ((honest, 10_000), (honest, 20_000), (cheater, 30_000), (honest, 5_000), (cheater, 70_000),
                     (cheater, 1_000)):
        net.do(who, "pay", amt)
    assert net.ch(honest).best == net.ch(honest).current
    agreed = net.ch(honest).current.balances
    olds = _older_versions(net, cheater)
    assert len(olds) >= 4
    refusals: set[str] = set()
    # The cheater stops cooperating and, every block, tries every older version it holds.
    target = net.ch(honest).current.locktime + 3 * net.ch(honest).params.locktime_step
    while net.height < target:
        for raw in olds:
            try:
                net.chain.node.broadcast(raw)
                refusals.add("ACCEPTED " + T.txid(T.parse_tx(raw)))
            except BroadcastRefused as e:
                refusals.add(e.reason)
        net.mine(1)
    assert not any(r.startswith("ACCEPTED") for r in refusals), refusals
    assert "non-final" in refusals and "bad-txns-inputs-missingorspent" in refusals
    assert net.funding_spender() == net.ch(honest).best_txid()
    assert (net.a.paid_to_payout(), net.b.paid_to_payout()) == agreed


def test_refused_peer_messages_leave_channel_usable(net: Net) -> None:
    net.open()
    net.do("a", "pay", 1_000)
    a = net.ch("a")
    cur = a.current
    good_v = apply(a.params, cur, Pay(2_000), "opener", net.height)
    setup = a.setup
    assert setup is not None

    def signed(v: Version) -> Update:
        sig = sign(version_tx(v, setup), setup, a._key)
        return Update(net.cid, v.to_fields(), op_to_fields(Pay(2_000)), sig)

    bad_lock = signed(Version(good_v.number, good_v.locktime + 10, good_v.fee, good_v.balances,
                                     signer=good_v.signer))
    with pytest.raises(LocktimeViolation):
        net.b.ep.receive(bad_lock, net.height)
    forged = signed(good_v)
    forged = Update(net.cid, forged.version, forged.op, forged.signature[:10] + bytes([forged.signature[10] ^ 1]) + forged.signature[11:])
    with pytest.raises(BadSignature):
        net.b.ep.receive(forged, net.height)
    net.queue.clear()  # the channel_error replies
    net.do("a", "pay", 2_000)
    assert net.ch("b").current.balances[1] == 3_000
    net.do("b", "close")
    net.mine(1)
    assert net.b.paid_to_payout() == 3_000


def test_escrow_commit_rollback_and_timeout_reclaim(net: Net) -> None:
    net.open()
    pre1, pre2, pre3 = k("p1"), k("p2"), k("p3")
    e1 = net.do("a", "offer_escrow", 100_000, pre1)
    net.do("a", "commit_escrow", e1)  # committed off-chain: folded into b's balance
    assert net.ch("b").current.balances[1] == 100_000
    e2 = net.do("a", "offer_escrow", 200_000, pre2)
    net.do("b", "return_escrow", e2)  # rolled back by the payee
    assert net.ch("a").current.escrows == ()
    e3 = net.do("a", "offer_escrow", 300_000, pre3)
    e4 = net.do("a", "offer_escrow", 50_000, k("p4"))
    assert {e.id for e in net.ch("b").current.escrows} == {e3, e4}
    esc_v = net.ch("b").current
    # Cooperation stops with two escrows open; b's version (with both) confirms at the lifetime end.
    net.mine_to(esc_v.locktime + 1)
    assert net.funding_spender() == net.ch("b").best_txid()
    # a reveals pre3 (goods delivered) out of band: b's watcher claims escrow 3 with it.
    net.b.watcher.learn_preimage(pre3)
    net.mine(1)
    # escrow 4 is never revealed: a reclaims it after its timeout.
    timeout = max(e.timeout for e in esc_v.escrows)
    before = net.a.paid_to_payout()
    net.mine_to(timeout + 2)
    assert net.a.paid_to_payout() == before + 50_000 - SWEEP_FEE
    assert net.b.paid_to_payout() == esc_v.balances[1] + 300_000 - SWEEP_FEE
    assert net.a.paid_to_payout() == esc_v.balances[0] + 50_000 - SWEEP_FEE


ORACLE = Oracle(k("oracle"))


def _bet(net: Net) -> tuple[list[bytes], int]:
    pre = [k(f"outcome-{net.height}-{i}") for i in range(2)]
    ann = ORACLE.announce(f"event-{net.height}", ["home", "away"], pre, net.height + 20)
    net.do("a", "propose_bet", ann, ("opener", "acceptor"), (500_000, 400_000))
    net.accept("b")
    assert net.ch("a").best == net.ch("b").best == net.ch("a").current
    return pre, net.ch("a").current.bets[0].id


@pytest.mark.parametrize("outcome", [0, 1])
def test_bet_settled_cooperatively_for_each_outcome(net: Net, outcome: int) -> None:
    net.open(acceptor=1_000_000)
    pre, bid = _bet(net)
    loser = "b" if outcome == 0 else "a"
    net.do(loser, "settle_bet", bid, pre[outcome])
    v = net.ch("a").current
    net.do("a", "close")
    net.mine(1)
    assert (net.a.paid_to_payout(), net.b.paid_to_payout()) == close_balances(net.ch("a").params, v)
    assert close_balances(net.ch("a").params, v) == (v.balances[0] + v.fee_paid[0] - 2_000,
                                                             v.balances[1] + v.fee_paid[1])


@pytest.mark.parametrize("outcome", [0, 1, None])
def test_bet_on_chain_loser_gains_nothing_by_refusing(net: Net, outcome: int | None) -> None:
    """The loser stops cooperating and tries every older version; the bet version confirms and
    the oracle's outcome decides: the loser ends with what cooperative settlement gives it."""
    loser = {0: "b", 1: "a", None: "b"}[outcome]
    _cheater(net, loser)
    net.open(acceptor=1_000_000)
    net.do("b", "pay", 100_000)  # so that both sides hold older versions
    pre, bid = _bet(net)
    bet_v = net.ch("a").current
    olds = _older_versions(net, loser)
    assert olds
    coop = (apply(net.ch("a").params, bet_v, SettleBet(bid, pre[outcome]), net.ch(loser).role, net.height)
            if outcome is not None else None)
    bet_timeout = bet_v.bets[0].timeout
    while net.height < bet_timeout + 3:
        for raw in olds:
            try:
                net.chain.node.broadcast(raw)
                pytest.fail("an older version got into the mempool")
            except BroadcastRefused:
                pass
        if outcome is not None and net.height >= bet_v.locktime + 2:
            for n in (net.a, net.b):
                n.watcher.learn_preimage(pre[outcome])  # the oracle publishes
        net.mine(1)
    assert net.funding_spender() == net.ch("a").best_txid() == net.ch("b").best_txid()
    paid = (net.a.paid_to_payout(), net.b.paid_to_payout())
    if coop is None:  # default: no preimage, each reclaims its stake after the timeout
        assert paid == (bet_v.balances[0] + 500_000 - SWEEP_FEE, bet_v.balances[1] + 400_000 - SWEEP_FEE)
        return
    w = outcome
    lose_i = 1 - w
    assert paid[lose_i] == coop.balances[lose_i]  # exactly the cooperative result, no more
    # The winner got the pot (minus two sweep fees instead of the settlement's fee step).
    assert paid[w] == bet_v.balances[w] + 900_000 - 2 * SWEEP_FEE


def test_store_restart_mid_channel_then_close(net: Net) -> None:
    net.open()
    net.do("a", "pay", 10_000)
    net.do("b", "pay", 1_000)
    net.a.restart()
    net.b.restart()
    for n in (net.a, net.b):
        n.ep.reconnect(net.cid)
    net.flush()
    net.do("a", "pay", 5_000)
    agreed = close_balances(net.ch("a").params, net.ch("a").current)  # the fee steps come back
    net.do("b", "close")
    net.mine(1)
    assert (net.a.paid_to_payout(), net.b.paid_to_payout()) == agreed


def test_three_outcome_bet_claimed_through_multi_hash_script(net: Net) -> None:
    """Opener wins outcomes 0 and 2: its claim on the acceptor's stake uses the k-hash script."""
    net.open(acceptor=1_000_000)
    pre = [k(f"three-{i}") for i in range(3)]
    ann = ORACLE.announce("three-way", ["a", "b", "c"], pre, net.height + 10)
    net.do("a", "propose_bet", ann, ("opener", "acceptor", "opener"), (300_000, 200_000))
    net.accept("b")
    bet_v = net.ch("a").current
    outs = version_outputs(bet_v, net.ch("a").setup)  # type: ignore[arg-type]
    assert [len(o.hashes) for o in outs if o.kind == "stake"] == [1, 2]
    while net.height < bet_v.bets[0].timeout + 2:
        if net.height >= bet_v.locktime + 1:
            net.a.watcher.learn_preimage(pre[2])
        net.mine(1)
    assert any(r.label.startswith("claim stake") and r.refused is None for r in net.a.watcher.results)
    paid = (net.a.paid_to_payout(), net.b.paid_to_payout())
    assert paid == (bet_v.balances[0] + 500_000 - 2 * SWEEP_FEE, bet_v.balances[1])


def test_reanchor_on_chain_then_old_versions_are_dead(net: Net) -> None:
    _cheater(net, "a")
    _cheater(net, "b")
    net.open(lifetime_blocks=60, step=10)
    for who, amt in (("a", 300_000), ("b", 1_000), ("a", 2_000), ("b", 500)):
        net.do(who, "pay", amt)
    olds = _older_versions(net, "a") + _older_versions(net, "b")
    lifetime = net.height + 500
    net.do("a", "reanchor_channel", lifetime, 2_000)
    net.mine(1)
    assert net.ch("a").state.name == net.ch("b").state.name == "OPEN"
    assert net.ch("a").current.locktime == lifetime and net.ch("a").status(net.height).switches_left > 40
    for raw in olds:
        with pytest.raises(BroadcastRefused) as e:
            net.chain.node.broadcast(raw)
        assert e.value.reason in ("non-final", "bad-txns-inputs-missingorspent")
    net.do("b", "pay", 100)
    net.do("a", "pay", 1_000)
    agreed = close_balances(net.ch("a").params, net.ch("a").current)  # the fee steps come back
    net.do("b", "close")
    net.mine(1)
    assert (net.a.paid_to_payout(), net.b.paid_to_payout()) == agreed


def test_watcher_answers_an_older_version_in_the_mempool(net: Net) -> None:
    """a is offline through its whole window; b's older version reaches the mempool first. a's
    watcher broadcasts its newer version at once; it pays the higher fee the design gives every
    newer epoch, so it replaces b's version in the mempool (full RBF, as bitcoind) and a is
    paid what the newest agreed version gives it."""
    _cheater(net, "b")
    net.open()
    net.do("a", "pay", 100_000)
    net.do("b", "pay", 40_000)  # a holds the newest version (b signed it)
    newest = net.ch("a").current
    olds = _older_versions(net, "b")
    target = max(T.parse_tx(r).locktime for r in olds[-1:])
    while net.height < target:  # a is offline: only b's node follows the chain
        net.chain.node.mine(1)
        asyncio.run(net.b.watcher.sync())
    net.chain.node.broadcast(olds[-1])
    asyncio.run(net.a.watcher.sync())  # a comes back and sees the spend in the mempool
    tried = [r for r in net.a.watcher.results if r.label == f"version {newest.number}"]
    assert tried and tried[-1].refused is None  # replaced b's older version
    assert net.ch("a").state.name == "FORCE_CLOSING"
    net.mine(1)
    assert net.ch("a").state.name == "CLOSED"
    assert net.a.paid_to_payout() == newest.balances[0]


def test_the_minimal_fee_step_replaces_an_older_version_with_contract_outputs(net: Net) -> None:
    """With ``fee_step = min_fee_step(max_contracts)`` an older version carrying hash-locked
    outputs, already in the mempool, is replaced by the newer one (BIP125 rules 3, 4 and 6 as the
    embedded mempool applies them), which confirms and pays a what the newest version gives."""
    from eschaton.core.channel.params import min_fee_step

    n = 4
    step = min_fee_step(n)
    _cheater(net, "b")
    net.open(acceptor=1_000_000, max_contracts=n, fee_step=step)
    net.do("a", "pay", 100_000)
    for i in range(n):  # b escrows into every contract slot: the largest version there is
        net.do("b", "offer_escrow", 1_000 + i, k(f"mini-{i}"))
    net.do("a", "pay", 1)  # a new epoch: b holds it, a holds b's escrow version
    net.do("b", "pay", 1)  # and another: a holds the newest, with the escrows still open
    newest = net.ch("a").current
    assert newest.contracts() == n and newest.fee - net.ch("b").best.fee == step  # type: ignore[union-attr]
    olds = _older_versions(net, "b")
    old = T.parse_tx(olds[-1])
    assert len(T.outputs_of(old)) == 2 + n  # b's older version: every contract output
    while net.height < old.locktime:  # a is offline: only b's node follows the chain
        net.chain.node.mine(1)
        asyncio.run(net.b.watcher.sync())
    net.chain.node.broadcast(olds[-1])
    asyncio.run(net.a.watcher.sync())
    tried = [r for r in net.a.watcher.results if r.label == f"version {newest.number}"]
    assert tried and tried[-1].refused is None, tried
    net.mine(1)
    assert net.ch("a").state.name == "CLOSED"
    assert net.funding_spender() == net.ch("a").best_txid()
    assert net.a.paid_to_payout() == newest.balances[0]
