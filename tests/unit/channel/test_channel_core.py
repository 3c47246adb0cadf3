"""Unit tests of the sans-IO channel core: two in-memory endpoints, controlled height."""
from __future__ import annotations

import dataclasses

import pytest

from eschaton.core import script as S
from eschaton.core import tx as T
from eschaton.core.channel import ChannelState, NotMyTurn, SignFunding
from eschaton.core.channel.errors import (
    BadSignature,
    BalanceViolation,
    EscrowViolation,
    FeeViolation,
    IllegalTransition,
    InvalidRequest,
    LocktimeExhausted,
    LocktimeViolation,
    PaymentTooLarge,
    ProtocolViolation,
    ReserveViolation,
    VersionViolation,
)
from eschaton.core.channel.messages import Update, message_from_fields
from eschaton.core.channel.ops import Pay, op_to_fields
from eschaton.core.channel.rules import apply
from eschaton.core.channel.state import TRANSITIONS, check_transition
from eschaton.core.channel.transactions import sign, version_digest, version_outputs, version_tx
from eschaton.core.channel.versions import Version, initial_version, replace_balances
from tests.unit.channel.pair import Pair, opened, params


def test_open_builds_one_funding_tx_and_signs_refund_before_funding_inputs() -> None:
    pr = Pair()
    # Before the funding is confirmed, both hold the fully signed initial refund.
    assert pr.a.ch.state is ChannelState.FUNDING_BROADCAST
    assert pr.b.ch.state is ChannelState.FUNDING_BROADCAST
    assert pr.a.ch.setup == pr.b.ch.setup
    assert pr.a.ch.best is not None and pr.b.ch.best is not None
    assert pr.a.ch.best.number == 0 and pr.a.ch.best.locktime == pr.p.lifetime
    # The refund signatures travelled before the opener's funding witnesses did.
    names = [m.NAME for m in pr.a.sent]
    assert names.index("refund_signature") < names.index("funding_signatures")
    # Both sides broadcast the same, complete funding transaction.
    assert pr.a.broadcasts == pr.b.broadcasts
    ftx = T.parse_tx(pr.a.broadcasts[0])
    assert T.txid(ftx) == pr.a.ch.setup.funding_txid  # type: ignore[union-attr]
    assert T.outputs_of(ftx)[0] == T.TxOut(pr.p.capacity, pr.a.ch.setup.funding_script)  # type: ignore[union-attr]
    pr.confirm_funding()
    assert pr.a.ch.state is ChannelState.OPEN and pr.b.ch.state is ChannelState.OPEN
    assert any(n.kind == "opened" for n in pr.a.notes)


def test_dual_funded_open_both_sign_inputs() -> None:
    pr = Pair(p=params(acceptor_contribution=300_000), acceptor_funds=True)
    ftx = T.parse_tx(pr.a.broadcasts[0])
    assert len(ftx.vin) == 2 and all(len(i.witness.items) == 2 for i in ftx.vin)
    pr.confirm_funding()
    assert pr.a.ch.current.balances == (1_000_000 - 1_000, 300_000)


def test_sign_funding_only_after_refund_fully_signed() -> None:
    # Driven by hand to inspect the order of the actions.
    from eschaton.core.channel import Channel, FundingInput
    from tests.unit.channel.pair import POLICY, key
    p = params()
    fi = [FundingInput("33" * 32, 0, 1_100_000, S.p2wpkh(T.pubkey_of(key("w"))))]
    a, acts = Channel.open(channel_id=key("c"), params=p, privkey=key("pa"), payout_script=b"\x00\x14" + b"\x01" * 20,
                           inputs=fi, change=[], height=100)
    assert not any(isinstance(x, SignFunding) for x in acts)
    b, bacts = Channel.accept(acts[0].messages[0], policy=POLICY, privkey=key("pb"),  # type: ignore[union-attr]
                              payout_script=b"\x00\x14" + b"\x02" * 20, inputs=[], change=[], height=100)
    acc, ref = bacts[0].messages  # type: ignore[union-attr]
    assert a.handle(acc, 100)[0].messages == ()  # type: ignore[union-attr]
    out = a.handle(ref, 100)
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["PersistThenSend", "SignFunding"]
    assert a.best is not None and a.best.number == 0


def test_payments_same_direction_keep_locktime_switch_moves_it() -> None:
    pr = opened()
    pr.pay("a", 1_000)
    v1 = pr.b.ch.current
    assert v1.locktime == pr.p.lifetime - 10 and v1.fee == 1_200 and v1.signer == "opener"
    pr.pay("a", 2_000)
    v2 = pr.b.ch.current
    assert (v2.locktime, v2.fee, v2.number) == (v1.locktime, v1.fee, 2)
    assert v2.balances == (999_000 - 200 - 3_000, 3_000)
    pr.pay("b", 500)
    v3 = pr.a.ch.current
    assert v3.locktime == v2.locktime - 10 and v3.fee == v2.fee + 200
    assert v3.balances == (v2.balances[0] + 500, v2.balances[1] - 500 - 200)
    # nSequence grows with the version number and stays non-final, BIP68 off.
    tx = version_tx(v3, pr.a.ch.setup)  # type: ignore[arg-type]
    assert tx.vin[0].sequence == 0x8000_0000 + 3 and tx.locktime == v3.locktime
    # Who holds what: the payee holds the newest, the payer its newest received.
    assert pr.a.ch.best == v3 and pr.b.ch.best == v2


def test_payer_cannot_broadcast_its_own_payment() -> None:
    pr = opened()
    pr.pay("a", 5_000)
    assert pr.a.ch.best is not None and pr.a.ch.best.number == 0
    assert pr.b.ch.best is not None and pr.b.ch.best.number == 1


def test_turn_is_required_and_granted_after_in_flight_version() -> None:
    pr = opened()
    with pytest.raises(NotMyTurn):
        pr.b.ch.pay(100, pr.height)
    pr.run("a", pr.a.ch.pay(1_000, pr.height))  # in flight, not delivered yet
    pr.run("b", pr.b.ch.request_turn())
    pr.flush()
    assert pr.b.ch.have_turn and not pr.a.ch.have_turn
    assert pr.b.ch.current.number == 1


def _forge(pr: Pair, **changes: object) -> Update:
    """A correctly signed update from A, with the given version fields changed (then re-signed)."""
    pr.turn("a")
    a = pr.a.ch
    cur = a.current
    new = apply(pr.p, cur, Pay(1_000), "opener", pr.height)
    new = dataclasses.replace(new, **changes)  # type: ignore[arg-type]
    tx = version_tx(new, a.setup)  # type: ignore[arg-type]
    sig = sign(tx, a.setup, a._key)  # type: ignore[arg-type]
    return Update(a.channel_id, new.to_fields(), op_to_fields(Pay(1_000)), sig)


@pytest.mark.parametrize("changes, err", [
    ({"balances": (999_000 - 200 - 1_000, 1_500)}, BalanceViolation),      # sum != capacity - fee
    ({"balances": (-1, 999_000 - 200 + 1)}, BalanceViolation),             # negative output
    ({"locktime": 1_000}, LocktimeViolation),                                # not earlier (non-monotonic)
    ({"locktime": 1_001}, LocktimeViolation),                                # later than current
    ({"locktime": 980}, LocktimeViolation),                                  # two steps
    ({"fee": 1_000, "balances": (999_000 - 1_000, 1_000)}, FeeViolation),   # no fee step
    ({"number": 5}, VersionViolation),
    ({"number": 0}, VersionViolation),
])
def test_bad_peer_versions_refused_and_channel_stays_usable(changes: dict[str, object], err: type) -> None:
    pr = opened()
    msg = _forge(pr, **changes)
    before = pr.b.ch.snapshot()
    with pytest.raises(err):
        pr.b.ch.handle(msg, pr.height)
    assert pr.b.ch.snapshot() == before
    pr.pay("a", 1_000)
    assert pr.b.ch.current.number == 1 and pr.b.ch.current.balances[1] == 1_000


def test_invalid_signature_refused() -> None:
    pr = opened()
    good = _forge(pr)
    bad = dataclasses.replace(good, signature=good.signature[:-5] + bytes(4) + good.signature[-1:])
    with pytest.raises(BadSignature):
        pr.b.ch.handle(bad, pr.height)
    other = _forge(pr, balances=(999_000 - 200 - 1_000, 1_000))  # valid fields, sig by A; swap key:
    wrong = dataclasses.replace(other, signature=sign(
        version_tx(Version.from_fields(other.version), pr.a.ch.setup),  # type: ignore[arg-type]
        pr.a.ch.setup, pr.b.ch._key))  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        pr.b.ch.handle(wrong, pr.height)
    pr.b.ch.handle(good, pr.height)  # the genuine one still goes through
    assert pr.b.ch.current.number == 1


def test_payment_rules_local_side() -> None:
    pr = opened(p=params(max_payment=50_000, reserve=900_000))
    with pytest.raises(InvalidRequest) as e:
        pr.a.ch.pay(60_000, pr.height)
    assert isinstance(e.value.rule, PaymentTooLarge)
    pr.pay("a", 40_000)
    pr.pay("a", 40_000)
    with pytest.raises(InvalidRequest) as e:
        pr.a.ch.pay(40_000, pr.height)
    assert isinstance(e.value.rule, ReserveViolation)
    with pytest.raises(InvalidRequest):
        pr.a.ch.pay(0, pr.height)
    # The payee, below the reserve (it started at 0), can still pay back: reserve binds only decreases.
    pr.turn("b")
    with pytest.raises(InvalidRequest) as e:
        pr.b.ch.pay(1_000, pr.height)
    assert isinstance(e.value.rule, ReserveViolation)


def test_peer_payment_above_max_refused() -> None:
    pr = opened(p=params(max_payment=50_000))
    a = pr.a.ch
    op = Pay(60_000)
    new = dataclasses.replace(apply(params(), a.current, op, "opener", pr.height))
    sig = sign(version_tx(new, a.setup), a.setup, a._key)  # type: ignore[arg-type]
    with pytest.raises(PaymentTooLarge):
        pr.b.ch.handle(Update(a.channel_id, new.to_fields(), op_to_fields(op), sig), pr.height)


def test_switch_budget_reported_warned_and_enforced() -> None:
    pr = opened(p=params(lifetime=200, locktime_step=10, safety_margin=6, low_switch_warning=3))
    st = pr.a.ch.status(pr.height)
    assert st.switches_left == (200 - 100 - 6) // 10 == 9
    for i in range(9):
        pr.pay("a" if i % 2 == 0 else "b", 5_000 if i % 2 == 0 else 100)
    assert pr.a.ch.status(pr.height).switches_left == 0
    pr.run("a", pr.a.ch.on_block(pr.height, 5))
    assert any(n.kind == "switch_budget_low" for n in pr.a.notes)
    pr.turn("a")
    # Same direction still works (no switch needed); a switch does not.
    pr.do("a", "pay", 100)
    pr.turn("b")
    with pytest.raises(InvalidRequest) as e:
        pr.b.ch.pay(100, pr.height)
    assert isinstance(e.value.rule, LocktimeExhausted)
    # The channel closes cooperatively rather than becoming silently unusable.
    pr.do("b", "close")
    assert pr.a.ch.state is ChannelState.CLOSING and pr.a.broadcasts[-1] == pr.b.broadcasts[-1]


def test_budget_checked_between_blocks_needs_only_the_height() -> None:
    """``check_budget`` (what the watcher runs after a direction switch, without a chain query)
    warns as ``on_block`` would, once, and does nothing outside OPEN."""
    pr = opened(p=params(lifetime=200, locktime_step=10, safety_margin=6, low_switch_warning=3))
    for i in range(6):
        pr.pay("a" if i % 2 == 0 else "b", 5_000 if i % 2 == 0 else 100)
    assert pr.a.ch.status(pr.height).switches_left == 3
    assert not any(n.kind == "switch_budget_low" for n in pr.a.notes)
    pr.run("a", pr.a.ch.check_budget(pr.height))
    assert [n.kind for n in pr.a.notes].count("switch_budget_low") == 1
    assert pr.a.ch.budget_warned and pr.a.snapshot is not None and pr.a.snapshot["budget_warned"]
    pr.run("a", pr.a.ch.check_budget(pr.height))
    assert [n.kind for n in pr.a.notes].count("switch_budget_low") == 1
    pr.turn("a")
    pr.do("a", "close")
    assert pr.a.ch.check_budget(pr.height + 1_000) == []  # CLOSING: not the budget's business


def test_lifetime_expiry_forces_close_before_older_versions_mature() -> None:
    pr = opened(p=params(lifetime=200))
    pr.pay("a", 1_000)
    pr.pay("b", 100)  # a holds version 2 at 180
    lt = pr.a.ch.current.locktime
    pr.height = lt - pr.p.safety_margin
    pr.run("a", pr.a.ch.on_block(pr.height, 10))
    assert pr.a.ch.state is ChannelState.FORCE_CLOSING
    assert not pr.a.broadcasts[1:]  # not final yet
    pr.height = lt
    pr.run("a", pr.a.ch.on_block(pr.height, 10))
    raw = pr.a.broadcasts[-1]
    tx = T.parse_tx(raw)
    assert tx.locktime == lt and T.is_final(tx, lt + 1, 0)
    # ... one full step before the previous epoch's version (held by b) becomes valid.
    assert pr.b.ch.best is not None and pr.b.ch.best.locktime == lt + pr.p.locktime_step


def test_escrow_commit_and_rollback() -> None:
    pr = opened()
    pr.turn("a")
    pre = bytes(range(32))
    eid = pr.do("a", "offer_escrow", 5_000, pre)
    v = pr.b.ch.current
    assert len(v.escrows) == 1 and v.escrows[0].amount == 5_000 and v.escrows[0].timeout == v.locktime + 20
    outs = version_outputs(v, pr.b.ch.setup)  # type: ignore[arg-type]
    esc = [o for o in outs if o.kind == "escrow"][0]
    assert esc.witness_script == S.hashlock_cltv(S.sha256(pre), pr.b.ch.pubkey, pr.a.ch.pubkey, esc.timeout)
    pr.do("a", "commit_escrow", eid)
    assert pr.b.ch.current.escrows == () and pr.b.ch.current.balances[1] == 5_000
    assert pr.b.ch.preimages[S.sha256(pre)] == pre
    # rollback: a second escrow, returned by the payee (a direction switch)
    eid2 = pr.do("a", "offer_escrow", 7_000, bytes([7]) * 32)
    bal_a = pr.a.ch.current.balances[0]
    pr.turn("b")
    pr.do("b", "return_escrow", eid2)
    assert pr.a.ch.current.escrows == () and pr.a.ch.current.balances[0] == bal_a + 7_000 - pr.p.fee_step
    assert pr.a.ch.current.signer == "acceptor"


def test_escrow_rules() -> None:
    pr = opened(p=params(max_contracts=3))
    pr.turn("a")
    for i in range(3):
        pr.do("a", "offer_escrow", 1_000, bytes([i + 1]) * 32)
    assert len(pr.b.ch.current.escrows) == 3
    with pytest.raises(InvalidRequest) as e:
        pr.a.ch.offer_escrow(1_000, bytes([9]) * 32, pr.height)
    assert isinstance(e.value.rule, EscrowViolation)
    with pytest.raises(InvalidRequest):
        pr.a.ch.return_escrow(1, pr.height)  # the payer cannot roll back its own escrow
    with pytest.raises(InvalidRequest):
        pr.a.ch.offer_escrow(100, bytes([10]) * 32, pr.height)  # below dust
    pr.turn("b")
    with pytest.raises(InvalidRequest):
        pr.b.ch.commit_escrow(1, pr.height)  # payee does not know the preimage


def test_duplicate_and_replayed_messages_are_idempotent() -> None:
    pr = opened()
    pr.turn("a")
    acts = pr.a.ch.pay(1_000, pr.height)
    upd = acts[0].messages[0]  # type: ignore[union-attr]
    pr.run("a", acts)
    pr.flush()
    # the same update again: re-acked, nothing changes
    out = pr.b.ch.handle(upd, pr.height)
    assert [type(x).__name__ for x in out] == ["Send"] and pr.b.ch.current.number == 1


def test_crash_before_ack_is_persisted_reconnect_recovers() -> None:
    pr = opened()
    pr.turn("a")
    pr.online = False
    pr.run("a", pr.a.ch.pay(1_000, pr.height))  # persisted, never delivered
    pr.online = True
    pr.crash("a")
    assert pr.a.ch.pending is not None
    pr.reconnect()
    assert pr.a.ch.pending is None and pr.a.ch.current == pr.b.ch.current
    assert pr.b.ch.current.balances[1] == 1_000
    pr.pay("a", 1_000)
    pr.pay("b", 300)
    assert pr.a.ch.current == pr.b.ch.current


def test_payee_crash_after_persist_reack() -> None:
    pr = opened()
    pr.turn("a")
    pr.run("a", pr.a.ch.pay(1_000, pr.height))
    sender, msg = pr.queue.popleft()
    pr.online = False
    pr.run("b", pr.b.ch.handle(msg, pr.height))  # b persists, its ack is lost
    pr.online = True
    pr.crash("b")
    pr.crash("a")
    pr.reconnect()
    assert pr.a.ch.pending is None and pr.a.ch.current == pr.b.ch.current
    assert pr.a.ch.have_turn and not pr.b.ch.have_turn


def test_cooperative_close() -> None:
    pr = opened()
    pr.pay("a", 10_000)
    pr.do("a", "close")
    tx = T.parse_tx(pr.b.broadcasts[-1])
    assert tx.locktime == 0 and tx.vin[0].sequence == 0xFFFFFFFF
    # The first payment opened an epoch (fee step 200, paid by a): the close gives it back and
    # pays only its own fee, the initial fee.
    assert pr.a.ch.current.balances == (988_800, 10_000) and pr.a.ch.current.fee == 1_200
    assert sorted(o.value for o in T.outputs_of(tx)) == [10_000, 989_000]
    assert pr.a.broadcasts[-1] == pr.b.broadcasts[-1]
    pr.run("a", pr.a.ch.on_funding_spent(T.txid(tx), True, pr.height))
    assert pr.a.ch.state is ChannelState.CLOSED


def test_close_seen_on_chain_before_the_accept_is_still_our_close() -> None:
    # The acceptor broadcasts as it accepts; on a slow link its spend reaches the proposer's
    # watcher before its close_accept. The proposer must know its own close by txid.
    pr = opened()
    pr.pay("a", 10_000)
    pr.turn("b")
    pr.run("b", pr.b.ch.close(pr.height))
    _, proposal = pr.queue.popleft()
    pr.run("a", pr.a.ch.handle(proposal, pr.height))
    txid = T.txid(T.parse_tx(pr.a.broadcasts[-1]))
    n_broadcasts = len(pr.b.broadcasts)
    pr.run("b", pr.b.ch.on_funding_spent(txid, False, pr.height))
    assert pr.b.ch.state is ChannelState.CLOSING  # not FORCE_CLOSING, and no version broadcast
    assert len(pr.b.broadcasts) == n_broadcasts
    pr.flush()  # the close_accept arrives late
    assert pr.b.ch.close_raw and pr.b.broadcasts[-1] == pr.a.broadcasts[-1]
    pr.run("b", pr.b.ch.on_funding_spent(txid, True, pr.height))
    assert pr.b.ch.state is ChannelState.CLOSED
    assert pr.b.notes[-1].kind == "closed" and pr.b.notes[-1].data["ours"]


def test_close_refused_with_open_escrow() -> None:
    pr = opened()
    pr.turn("a")
    pr.do("a", "offer_escrow", 5_000, bytes([3]) * 32)
    with pytest.raises(InvalidRequest):
        pr.a.ch.close(pr.height)


def test_transition_table() -> None:
    assert check_transition(ChannelState.OPEN, ChannelState.CLOSING) is ChannelState.CLOSING
    with pytest.raises(IllegalTransition):
        check_transition(ChannelState.CLOSED, ChannelState.OPEN)
    with pytest.raises(IllegalTransition):
        check_transition(ChannelState.FUNDING_BROADCAST, ChannelState.ABORTED)
    assert set(TRANSITIONS) == set(ChannelState)
    pr = opened()
    with pytest.raises(InvalidRequest):
        pr.a.ch.abort()  # funding signatures are out
    with pytest.raises(IllegalTransition):
        pr.a.ch._to(ChannelState.PROPOSED)
    assert pr.a.ch.state is ChannelState.OPEN


def test_abort_only_before_funding_signatures() -> None:
    from eschaton.core.channel import Channel, FundingInput
    from tests.unit.channel.pair import key
    fi = [FundingInput("44" * 32, 0, 1_100_000, S.p2wpkh(T.pubkey_of(key("w"))))]
    a, _ = Channel.open(channel_id=key("c"), params=params(), privkey=key("pa"),
                        payout_script=b"\x00\x14" + b"\x01" * 20, inputs=fi, change=[], height=100)
    a.abort()
    assert a.state is ChannelState.ABORTED


def test_snapshot_round_trips_through_json() -> None:
    from eschaton.core.channel import Channel
    from eschaton.core.channel.snapshot_json import dumps, loads
    pr = opened()
    pr.turn("a")
    pr.do("a", "offer_escrow", 5_000, bytes([3]) * 32)
    snap = pr.a.ch.snapshot()
    again = Channel.from_snapshot(loads(dumps(snap)), pr.a.priv)
    assert again.snapshot() == snap
    with pytest.raises(InvalidRequest):
        Channel.from_snapshot(snap, pr.b.priv)


@pytest.mark.parametrize("name, fields", [
    ("update", {"channel_id": b"x" * 32}),
    ("update", {"channel_id": b"x" * 31, "version": {}, "op": {}, "signature": b""}),
    ("update_ack", {"channel_id": b"x" * 32, "number": "1"}),
    ("nope", {}),
])
def test_malformed_messages_refused(name: str, fields: dict[str, object]) -> None:
    with pytest.raises(ProtocolViolation):
        message_from_fields(name, fields)


def test_garbage_version_fields_refused() -> None:
    pr = opened()
    good = _forge(pr)
    for bad_version in ({}, {"number": 1}, dict(good.version, balances=[1]), dict(good.version, signer="x")):
        with pytest.raises((BalanceViolation, ProtocolViolation)):
            pr.b.ch.handle(dataclasses.replace(good, version=bad_version), pr.height)
    with pytest.raises(BalanceViolation):
        pr.b.ch.handle(dataclasses.replace(good, op={"kind": "steal"}), pr.height)
    pr.b.ch.handle(good, pr.height)


def test_stale_turn_grant_resent_after_crash_is_ignored() -> None:
    pr = opened()
    pr.turn("b")  # a granted (a's outbox now holds that grant)
    pr.run("a", pr.a.ch.request_turn())
    sender, req = pr.queue.popleft()
    pr.online = False
    pr.run("b", pr.b.ch.handle(req, pr.height))  # b grants back; the grant is lost
    pr.online = True
    pr.crash("a")
    pr.crash("b")
    pr.reconnect()
    assert [pr.a.ch.have_turn, pr.b.ch.have_turn] == [True, False]
    pr.pay("a", 1_000)
    pr.pay("b", 100)
    assert pr.a.ch.current == pr.b.ch.current


def test_version_digest_matches_embit() -> None:
    pr = opened(p=params(acceptor_contribution=50_000), acceptor_funds=True)
    pr.turn("a")
    pr.do("a", "offer_escrow", 5_000, bytes([5]) * 32)
    pr.pay("a", 70_000)
    s = pr.a.ch.setup
    assert s is not None
    v0 = initial_version(pr.p)
    one_below_dust = replace_balances(v0, (sum(v0.balances) - 100, 100))  # one output only
    assert pr.a.ch.current.escrows and not v0.escrows
    for v in (pr.a.ch.current, pr.b.ch.current, v0, one_below_dust):
        tx = version_tx(v, s)
        digest, txid = version_digest(v, s)
        assert digest == T.sighash_segwit(tx, 0, s.witness_script, s.capacity)
        assert txid == T.txid(tx)


def test_channel_opens_only_at_min_depth() -> None:
    pr = Pair(p=params(min_depth=3))
    pr.confirm_funding(2)
    assert pr.a.ch.state is ChannelState.FUNDING_BROADCAST
    pr.confirm_funding(3)
    assert pr.a.ch.state is ChannelState.OPEN and pr.b.ch.state is ChannelState.OPEN
    pr.pay("a", 1_000)


def test_reanchor_restores_the_switch_budget() -> None:
    pr = opened(p=params(lifetime=200))
    for i in range(6):
        pr.pay("a" if i % 2 == 0 else "b", 5_000 if i % 2 == 0 else 100)
    before = pr.a.ch.current
    old_funding = pr.a.ch.setup.funding_txid  # type: ignore[union-attr]
    assert pr.a.ch.status(pr.height).switches_left == 3
    pr.turn("a")
    pr.do("a", "reanchor_channel", 1_000, 500)
    raw = pr.a.broadcasts[-1]
    assert raw == pr.b.broadcasts[-1]
    rtx = T.parse_tx(raw)
    assert rtx.locktime == 0 and rtx.vin[0].sequence == 0xFFFFFFFF
    assert T.outputs_of(rtx) == [T.TxOut(pr.p.capacity - 500, pr.a.ch.setup.funding_script)]  # type: ignore[union-attr]
    # R fully signed: both moved to its output at once, without waiting for a block.
    a, b = pr.a.ch, pr.b.ch
    assert a.state is ChannelState.OPEN and b.state is ChannelState.OPEN
    assert a.setup == b.setup and a.setup.funding_txid == T.txid(rtx)  # type: ignore[union-attr]
    assert a.watched_anchors() == b.watched_anchors() == [(old_funding, 0)]
    assert a.current == b.current and a.current.locktime == 1_000
    # Six epochs, three opened by each side: the fee reserve (3 x 200 each) goes back to its
    # payers, V0' pays the initial fee again (the opener's) and a pays the 500 of R.
    assert before.fee == 2_200 and before.fee_paid == (1_600, 600)
    assert a.current.balances == (before.balances[0] + 600 - 500, before.balances[1] + 600)
    assert a.current.fee == 1_000 and a.current.fee_paid == (1_000, 0)
    assert a.best == b.best == a.current
    assert a.status(pr.height).switches_left == (1_000 - 100 - 6) // 10
    pr.pay("b", 100)
    pr.pay("a", 100)
    assert pr.a.ch.current == pr.b.ch.current
    # The snapshot's opening-time part is rebuilt for the new anchor (not served from before it).
    for side in (pr.a, pr.b):
        snap = side.ch.snapshot()
        assert snap["setup"] == side.ch.setup.to_fields() and snap["params"]["lifetime"] == 1_000  # type: ignore[union-attr]
        pr.crash("a" if side is pr.a else "b")
    assert pr.a.ch.setup.funding_txid == T.txid(rtx)  # type: ignore[union-attr]
    assert pr.a.ch.watched_anchors() == [(old_funding, 0)]  # survives a restart
    # R confirms: nothing left to follow.
    for n in ("a", "b"):
        pr.run(n, pr.side(n).ch.on_old_anchor(old_funding, 0, T.txid(rtx), True, pr.height))
        assert pr.side(n).ch.watched_anchors() == []
        assert pr.side(n).notes[-1].kind == "reanchor_confirmed"
    pr.pay("a", 100)
    assert pr.a.ch.current == pr.b.ch.current


def test_reanchor_refused_returns_to_open_and_survives_crash() -> None:
    pr = opened()
    pr.pay("a", 5_000)
    pr.turn("a")
    with pytest.raises(InvalidRequest):
        pr.a.ch.reanchor_channel(500, 500, pr.height)  # does not extend the life
    pr.online = False
    pr.run("a", pr.a.ch.reanchor_channel(2_000, 500, pr.height))
    pr.online = True
    pr.crash("a")
    pr.reconnect()  # the proposal is resent and completed
    assert pr.a.ch.state is pr.b.ch.state is ChannelState.OPEN
    assert pr.a.ch.current.locktime == pr.b.ch.current.locktime == 2_000 and pr.a.ch.anchors == pr.b.ch.anchors
    pr2 = opened()
    pr2.turn("b")
    with pytest.raises(InvalidRequest):
        pr2.b.ch.reanchor_channel(2_000, 500, pr2.height)  # b has nothing to pay the fee with


def test_force_close_during_reanchor_follows_the_funds_to_the_new_output() -> None:
    pr = opened()
    pr.pay("a", 5_000)
    old_funding = pr.a.ch.setup.funding_txid  # type: ignore[union-attr]
    pr.turn("a")
    pr.do("a", "reanchor_channel", 2_000, 500)
    rtx = T.parse_tx(pr.a.broadcasts[-1])
    pr.run("b", pr.b.ch.force_close(pr.height))  # b gives up on the channel before R confirmed
    b = pr.b.ch
    assert b.state is ChannelState.FORCE_CLOSING and b.setup.funding_txid == T.txid(rtx)  # type: ignore[union-attr]
    assert b.best is not None and b.best.locktime == 2_000
    # R is not in the mempool any more: the watcher's look makes b broadcast it again.
    pr.run("b", b.on_old_anchor(old_funding, 0, None, False, pr.height))
    assert pr.b.broadcasts[-1] == T.serialize(rtx)
    pr.run("b", b.on_old_anchor(old_funding, 0, T.txid(rtx), True, pr.height))
    assert b.anchors == []
    pr.height = 2_000
    pr.run("b", b.on_block(pr.height, 5))
    last = T.parse_tx(pr.b.broadcasts[-1])
    assert T.inputs_of(last)[0].txid == T.txid(rtx) and last.locktime == 2_000
