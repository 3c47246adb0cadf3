"""Escrows offered by hash alone: explicit timeouts, fulfil by the payee, fail, crash and replay."""
from __future__ import annotations

import pytest

from eschaton.core import script as S
from eschaton.core.channel.errors import EscrowViolation, InvalidRequest, ProtocolViolation
from eschaton.core.channel.messages import EscrowFulfil
from eschaton.core.channel.ops import OfferEscrow, op_from_fields, op_to_fields
from eschaton.core.channel.rules import apply
from eschaton.core.channel.sweep import claim_tx, payout_after, preimage_from_claim, reclaim_tx
from eschaton.core.channel.transactions import version_outputs
from eschaton.core.channel.versions import ACCEPTOR, OPENER, initial_version
from tests.unit.channel.pair import Pair, key, opened

PRE = key("the payee's secret")
H = S.sha256(PRE)


def _notes(pr: Pair, side: str, kind: str) -> list[dict[str, object]]:
    return [n.data for n in pr.side(side).notes if n.kind == kind]


def _offer(pr: Pair, amount: int = 5_000, timeout: int = 0) -> int:
    pr.turn("a")
    eid: int = pr.do("a", "offer_escrow_hash", amount, H, timeout)
    return eid


def test_offer_by_hash_fulfil_commits_and_the_payer_learns_the_preimage() -> None:
    pr = opened()
    eid = _offer(pr)
    assert PRE not in pr.a.ch.preimages.values()  # the payer never knew it
    offered = _notes(pr, "b", "escrow_offered")
    assert offered == [{"amount": 5_000, "payment_hash": H, "escrow_id": eid,
                        "timeout": pr.a.ch.current.locktime + pr.p.escrow_delta}]
    b0 = pr.b.ch.current.balances[1]
    pr.do("b", "fulfil_escrow", eid, PRE)
    # The payer persisted the preimage, reported it, and committed the escrow in one go.
    assert _notes(pr, "a", "escrow_fulfilled") == [{"escrow_id": eid, "amount": 5_000, "payment_hash": H,
                                                    "preimage": PRE}]
    assert pr.a.ch.preimages[H] == PRE
    assert pr.b.ch.current.escrows == () and pr.b.ch.current.balances[1] == b0 + 5_000
    assert pr.a.ch.current == pr.b.ch.current
    assert pr.a.ch.fulfilled == {} and pr.b.ch.fulfilled == {}  # resolved: forgotten
    assert [n["escrow_id"] for n in _notes(pr, "a", "escrow_commit_acked")] == [eid]


def test_a_default_offer_by_hash_reads_as_before_on_the_wire() -> None:
    op = OfferEscrow(5_000, H)
    assert op_to_fields(op) == {"kind": "offer_escrow", "amount": 5_000, "payment_hash": H}
    explicit = OfferEscrow(5_000, H, 950)
    assert op_from_fields(op_to_fields(explicit)) == explicit


def test_explicit_timeout_is_used_and_bounded() -> None:
    pr = opened()  # height 100, lifetime 1000, escrow_delta 20, safety_margin 6
    pr.pay("a", 1_000)  # a's epoch: its next version keeps this nLockTime
    lt = pr.a.ch.current.locktime
    with pytest.raises(InvalidRequest, match="too early"):
        pr.a.ch.offer_escrow_hash(5_000, H, lt + pr.p.escrow_delta - 1, pr.height)
    with pytest.raises(InvalidRequest, match="lifetime"):
        pr.a.ch.offer_escrow_hash(5_000, H, pr.p.lifetime + pr.p.escrow_delta + 1, pr.height)
    pr.height = lt - 10  # the tip close to the version's nLockTime
    with pytest.raises(InvalidRequest, match="too close to the tip"):
        pr.a.ch.offer_escrow_hash(5_000, H, pr.height + 10, pr.height)
    pr.height = 100
    assert pr.a.ch.pending is None and pr.a.ch.preimages == {}  # nothing was signed
    t = lt + pr.p.escrow_delta + 7
    eid = _offer(pr, timeout=t)
    e = pr.b.ch.current.escrow(eid)
    assert e.timeout == t
    out = [o for o in version_outputs(pr.b.ch.current, pr.b.ch._setup()) if o.kind == "escrow"][0]
    assert out.timeout == t and out.hashes == (H,) and out.claim_role == ACCEPTOR


def test_a_peer_version_with_a_timeout_out_of_bounds_is_refused() -> None:
    p = Pair().p
    v = initial_version(p)
    with pytest.raises(EscrowViolation, match="too early"):
        apply(p, v, OfferEscrow(5_000, H, v.locktime), OPENER, 100)


def test_bad_preimage_refused_on_both_sides() -> None:
    pr = opened()
    eid = _offer(pr)
    with pytest.raises(InvalidRequest, match="does not match"):
        pr.b.ch.fulfil_escrow(eid, key("wrong"), pr.height)
    with pytest.raises(InvalidRequest, match="no open escrow"):
        pr.a.ch.fulfil_escrow(eid, PRE, pr.height)  # the payer cannot fulfil its own offer
    before = pr.a.ch.snapshot()
    with pytest.raises(EscrowViolation, match="does not match"):
        pr.a.ch.handle(EscrowFulfil(pr.a.ch.channel_id, eid, key("wrong")), pr.height)
    assert pr.a.ch.snapshot() == before  # refused means unchanged
    with pytest.raises(ProtocolViolation, match="unknown escrow"):
        pr.a.ch.handle(EscrowFulfil(pr.a.ch.channel_id, 99, PRE), pr.height)


def test_fulfil_without_the_turn_asks_for_it_and_commits_on_the_grant() -> None:
    pr = opened()
    eid = _offer(pr)
    pr.turn("b")  # the payee now holds the turn
    pr.do("b", "fulfil_escrow", eid, PRE)
    assert pr.a.ch.preimages[H] == PRE and pr.a.ch.commits_due() == [eid]
    assert pr.a.ch.have_turn  # asked and granted (the payee had nothing in flight)
    pr.do("a", "commit_fulfilled")
    assert pr.b.ch.current.escrows == () and pr.a.ch.commits_due() == []


def test_payer_crash_after_persisting_the_preimage_commits_after_restart() -> None:
    pr = opened()
    eid = _offer(pr)
    pr.run("b", pr.b.ch.fulfil_escrow(eid, PRE, pr.height))
    pr.online = False  # the payer persists, then dies before its commit leaves
    _, msg = pr.queue.popleft()
    pr.run("a", pr.a.ch.handle(msg, pr.height))
    pr.queue.clear()
    pr.crash("a")
    pr.online = True
    assert pr.a.ch.preimages[H] == PRE  # durable before anything else
    pr.reconnect()  # the commit in the outbox is resent, and the payee's fulfil again (ignored)
    assert pr.b.ch.current.escrows == () and pr.a.ch.current == pr.b.ch.current
    assert pr.a.ch.commits_due() == [] and pr.b.ch.fulfilled == {}


def test_payee_crash_after_fulfil_resends_it_on_reconnect() -> None:
    pr = opened()
    eid = _offer(pr)
    pr.online = False
    pr.run("b", pr.b.ch.fulfil_escrow(eid, PRE, pr.height))  # durable, lost on the way
    pr.crash("b")
    pr.online = True
    assert pr.b.ch.fulfilled == {eid: PRE} and pr.b.ch.preimages[H] == PRE
    pr.reconnect()
    assert pr.a.ch.preimages[H] == PRE and pr.b.ch.current.escrows == ()
    # Replayed once more (a stale duplicate): ignored, nothing changes.
    before = pr.a.ch.snapshot()
    assert pr.a.ch.handle(EscrowFulfil(pr.a.ch.channel_id, eid, PRE), pr.height) == []
    assert pr.a.ch.snapshot() == before


def test_payer_crash_before_persisting_learns_it_again() -> None:
    pr = opened()
    eid = _offer(pr)
    pr.run("b", pr.b.ch.fulfil_escrow(eid, PRE, pr.height))
    pr.queue.clear()  # lost with the link: the payer never saw it
    pr.crash("a")
    assert H not in pr.a.ch.preimages
    pr.reconnect()
    assert pr.a.ch.preimages[H] == PRE and pr.b.ch.current.escrows == ()


def test_fail_then_return_and_no_fail_after_fulfil() -> None:
    pr = opened()
    e1 = _offer(pr, 5_000)
    pre2 = key("second secret")
    pr.do("a", "offer_escrow_hash", 6_000, S.sha256(pre2), 0)
    e2 = pr.a.ch.current.escrows[-1].id
    a0 = pr.a.ch.current.balances[0]
    pr.do("b", "fail_escrow", e1, "unknown_payee")
    assert _notes(pr, "a", "escrow_failing") == [{"escrow_id": e1, "payment_hash": H, "code": "unknown_payee",
                                                  "text": ""}]
    pr.turn("b")
    pr.do("b", "return_escrow", e1)
    assert [e.id for e in pr.a.ch.current.escrows] == [e2]
    assert pr.a.ch.current.balances[0] == a0 + 5_000 - pr.p.fee_step  # back, less the switch's fee step
    # An escrow whose preimage the payee revealed can no longer be failed or returned.
    pr.online = False
    pr.run("b", pr.b.ch.fulfil_escrow(e2, pre2, pr.height))
    with pytest.raises(InvalidRequest, match="fulfilled"):
        pr.b.ch.fail_escrow(e2, "late", pr.height)
    with pytest.raises(InvalidRequest, match="fulfilled"):
        pr.b.ch.return_escrow(e2, pr.height)


def test_fulfilled_escrow_on_chain_is_the_payees() -> None:
    """The payer never commits: the payee's held version carries the contract output, which its
    preimage claims (and the payout model gives it to the payee)."""
    pr = opened()
    eid = _offer(pr, 50_000)
    pr.online = False
    pr.run("b", pr.b.ch.fulfil_escrow(eid, PRE, pr.height))  # the payer is gone
    v = pr.b.ch.best
    assert v is not None and any(e.id == eid for e in v.escrows)
    outs = version_outputs(v, pr.b.ch._setup())
    vout, out = next((i, o) for i, o in enumerate(outs) if o.kind == "escrow")
    raw = claim_tx(out, "ab" * 32, vout, pr.b.ch.preimages[H], pr.b.priv, pr.b.ch.payout_script, 500)
    # The payer reads the preimage out of the payee's claim (not out of its own reclaim) ...
    assert preimage_from_claim(raw, 0, out) == PRE
    back = reclaim_tx(out, "ab" * 32, vout, pr.a.priv, pr.a.ch.payout_script, 500)
    assert preimage_from_claim(back, 0, out) is None and preimage_from_claim(raw, 1, out) is None
    # ... and keeps it, reporting it like a fulfil (once).
    acts = pr.a.ch.learn_preimage(eid, out.value, PRE)
    pr.run("a", acts)
    assert pr.a.ch.preimages[H] == PRE and pr.a.snapshot is not None
    assert [n.data["preimage"] for n in pr.a.notes if n.kind == "escrow_fulfilled"] == [PRE]
    assert pr.a.ch.learn_preimage(eid, out.value, PRE) == []
    assert payout_after(outs, [PRE])[1] == v.balances[1] + 50_000
    assert payout_after(outs, [])[0] == v.balances[0] + 50_000  # without it the payer reclaims


def test_fulfil_too_close_to_the_timeout_is_refused() -> None:
    pr = opened()
    eid = _offer(pr)
    e = pr.b.ch.current.escrow(eid)
    pr.height = e.timeout - pr.p.escrow_delta - pr.p.safety_margin
    with pytest.raises(InvalidRequest, match="too late"):
        pr.b.ch.fulfil_escrow(eid, PRE, pr.height)
