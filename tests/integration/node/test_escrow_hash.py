"""Escrows offered by hash alone, between real nodes on the embedded chain.

The payer (a) knows only the hash; the payee (b) knows the preimage. Off chain: b fulfils and a
learns the preimage from its event; b fails and the escrow comes back; a retried offer id never
locks twice. On chain: a payer gone after the offer does not stop the payee, which claims with
the preimage once its version confirms; an escrow nobody fulfils goes back to the payer once
its timeout has passed.
"""
from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.integration.node.harness import Cluster, NodeProc, channel_pair, mirrored, poll

CAPACITY = 1_000_000
SWEEP_FEE = 1_000  # the watcher's fee for a claim or a reclaim (eschaton.channel.watcher)


def _secret(tag: str) -> tuple[str, str]:
    pre = hashlib.sha256(tag.encode()).digest()
    return pre.hex(), hashlib.sha256(pre).hexdigest()


def _events(n: NodeProc, mark: int, kind: str) -> list[dict[str, Any]]:
    got = n.api("events.since", seq=mark, source="payments")
    return [e for e in got["events"] if e["kind"] == kind]


def _one(n: NodeProc, mark: int, kind: str, what: str, count: int = 1) -> list[dict[str, Any]]:
    return poll(lambda: (lambda e: e if len(e) >= count else None)(_events(n, mark, kind)),  # type: ignore[no-any-return]
                f"{n.name}: {what}")


def test_offer_by_hash_fulfil_fail_and_retry(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY)
    mark_a, mark_b = (n.api("events.since", seq=0)["head"] for n in (a, b))
    pre, h = _secret("invoice 1")

    # Offer by hash with an explicit timeout; a retry with the same id locks nothing more.
    o = a.cli("channel", "escrow", "offer", cid, "50000", "--hash", h, "--timeout", "1010", "--id", "esc-1")
    assert o["escrows"] == 1 and o["hash"] == h and o["payment"] == "esc-1"
    again = a.cli("channel", "escrow", "offer", cid, "50000", "--hash", h, "--timeout", "1010", "--id", "esc-1")
    assert again["escrow"] == o["escrow"] and again["escrows"] == 1 and again["version"] == o["version"]
    other = a.cli_fail("channel", "escrow", "offer", cid, "50000", "--hash", _secret("x")[1], "--id", "esc-1")
    assert other.stderr.count("\n") == 1 and "used with another hash" in other.stderr
    va, vb = mirrored(a, b, cid)
    assert vb["escrows"] == 1 and vb["local_sat"] == 0
    offered = _one(b, mark_b, "EscrowOffered", "the offer event")
    assert len(offered) == 1  # the retry offered nothing
    ev = offered[0]
    assert ev["payment_hash"] == h and ev["amount"] == 50_000 and ev["escrow"] == o["escrow"]
    assert ev["timeout"] == o["timeout"] and ev["peer"] == a.id

    # Bad input is refused in one line, and changes nothing.
    bad = b.cli_fail("channel", "escrow", "fulfil", o["escrow"], _secret("wrong")[0])
    assert bad.stderr.count("\n") == 1 and "does not match" in bad.stderr
    bad = b.cli_fail("channel", "escrow", "fulfil", "zz", pre)
    assert bad.stderr.count("\n") == 1 and "CHANNEL:ESCROW_ID" in bad.stderr
    bad = a.cli_fail("channel", "escrow", "offer", cid, "1000", "--hash", _secret("y")[1], "--timeout", "100000")
    assert bad.stderr.count("\n") == 1 and "lifetime" in bad.stderr

    # The payee fulfils; the payer learns the preimage from its event and commits.
    f = b.cli("channel", "escrow", "fulfil", o["escrow"], pre)
    assert f["committed"] is True and f["escrows"] == 0 and f["local_sat"] == 50_000
    got = _one(a, mark_a, "EscrowFulfilled", "the fulfilled event")[0]
    assert got["preimage"] == pre and got["payment_hash"] == h and got["payment_id"] == "esc-1"
    _one(a, mark_a, "EscrowSettled", "the payer's settled event")
    assert [e["role"] for e in _one(b, mark_b, "EscrowSettled", "the payee's settled event")] == ["payee"]
    va, vb = mirrored(a, b, cid)
    assert vb["local_sat"] == 50_000 and va["escrows"] == vb["escrows"] == 0
    # A retry after it all settled still pays nothing more.
    a.cli("channel", "escrow", "offer", cid, "50000", "--hash", h, "--timeout", "1010", "--id", "esc-1")
    assert mirrored(a, b, cid)[1]["local_sat"] == 50_000

    # A second escrow the payee fails: it comes back to the payer (less the switch's fee step).
    _pre2, h2 = _secret("invoice 2")
    o2 = a.cli("channel", "escrow", "offer", cid, "30000", "--hash", h2, "--id", "esc-2")
    before, _ = mirrored(a, b, cid)
    r = b.cli("channel", "escrow", "fail", o2["escrow"], "--reason", "unknown_payee")
    assert r["escrows"] == 0
    failed = _one(a, mark_a, "EscrowFailed", "the returned event", count=2)
    assert [(e["code"], e["returned"], e["payment_id"]) for e in failed] == [
        ("unknown_payee", False, "esc-2"), ("unknown_payee", True, "esc-2")]
    after, _ = mirrored(a, b, cid)
    assert after["local_sat"] == before["local_sat"] + 30_000 - (after["fee_sat"] - before["fee_sat"])
    assert after["local_sat"] + after["remote_sat"] + after["fee_sat"] == CAPACITY

    # A fulfil while the payee holds the turn: the payer asks for it, then commits.
    pre3, h3 = _secret("invoice 3")
    o3 = a.cli("channel", "escrow", "offer", b.id, "20000", "--hash", h3, "--id", "esc-3")  # by peer
    assert o3["channel"] == cid
    b.cli("channel", "pay", cid, "1000")  # b takes the turn
    before, _ = mirrored(a, b, cid)
    f3 = b.cli("channel", "escrow", "fulfil", o3["escrow"], pre3)
    assert f3["committed"] is True and f3["escrows"] == 0
    settled = _one(a, mark_a, "EscrowSettled", "the third escrow settled", count=2)
    assert [e["payment_id"] for e in settled] == ["esc-1", "esc-3"]
    after, vb = mirrored(a, b, cid)
    assert vb["local_sat"] == before["remote_sat"] + 20_000
    assert after["local_sat"] + after["remote_sat"] + after["fee_sat"] == CAPACITY
    assert not [r for n in (a, b) for r in n.logs if "exc" in r]


def _swept(n: NodeProc, label: str) -> bool:
    """The node's watcher broadcast ``label`` and the chain accepted it."""
    return any(str(r.get("msg", "")).startswith(label) and "refused" not in str(r.get("msg", ""))
               for r in n.logs)


def _to_height(cluster: Cluster, h: int) -> None:
    now = cluster.chain.height()
    if now < h:
        cluster.chain.mine(h - now)


@pytest.mark.slow
def test_payee_claims_on_chain_when_the_payer_is_gone_after_fulfil(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY, "--lifetime", "30", "--step", "2", serve=True)
    pre, h = _secret("delivered")
    o = a.cli("channel", "escrow", "offer", cid, "60000", "--hash", h, "--id", "gone-1")
    mirrored(a, b, cid)
    a.stop()  # the payer disappears: it will never commit
    f = b.cli("channel", "escrow", "fulfil", o["escrow"], pre)
    assert f["committed"] is False and f["escrows"] == 1  # durable here, not committed
    tb = b.wallet_total()
    st = b.cli("channel", "close", cid, "--force")
    assert st["state"] == "FORCE_CLOSING"
    _to_height(cluster, st["locktime"])
    poll(lambda: _swept(b, "broadcast version"), "b broadcasts its version (with the escrow output)")
    cluster.chain.mine(1)
    poll(lambda: _swept(b, "broadcast claim escrow"), "b claims the escrow with the preimage")
    cluster.chain.mine(1)
    # b's version pays b nothing of its own (a single-funded channel) plus the escrow it claimed.
    poll(lambda: b.wallet_total() == tb + 60_000 - SWEEP_FEE or None, "b's wallet + the escrow")
    # The payer comes back and reads the preimage out of b's claim (what a forwarding node needs
    # to claim upstream): it reports it as fulfilled, with its offer's payment id.
    a.start().wait_ready()
    got = _one(a, 0, "EscrowFulfilled", "a learns the preimage from the chain")[0]
    assert got["preimage"] == pre and got["payment_hash"] == h and got["escrow"] == o["escrow"]


@pytest.mark.slow
def test_unfulfilled_escrow_returns_to_the_payer_after_its_timeout(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, CAPACITY, "--lifetime", "30", "--step", "2", serve=True)
    _pre, h = _secret("never revealed")
    o = a.cli("channel", "escrow", "offer", cid, "70000", "--hash", h, "--timeout", "30", "--id", "late-1")
    va, _ = mirrored(a, b, cid)
    ta = a.wallet_total()
    # The payee goes on chain without fulfilling: its version carries the escrow output.
    st = b.cli("channel", "close", cid, "--force")
    _to_height(cluster, st["locktime"])
    poll(lambda: _swept(b, "broadcast version"), "b broadcasts its version")
    cluster.chain.mine(1)
    poll(lambda: (a.channel(cid) or {}).get("state") == "CLOSED", "a sees the channel closed")
    assert not _swept(a, "broadcast reclaim escrow")  # not before the timeout
    _to_height(cluster, o["timeout"])
    poll(lambda: _swept(a, "broadcast reclaim escrow"), "a reclaims the escrow after its timeout")
    cluster.chain.mine(1)
    poll(lambda: a.wallet_total() == ta + va["local_sat"] + 70_000 - SWEEP_FEE or None,
         "a's wallet: its balance and the escrow back")
