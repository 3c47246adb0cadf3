"""Griefing a multi-hop payment on the embedded chain: every honest hop ends whole.

A line a - b - c of real node processes (the chain served apart, so any node may die), with
short channel lifetimes so that the chain can be mined past every nLockTime and escrow timeout
in seconds. a pays c's payment request through b; then one node misbehaves, the channels go on
chain, the chain is mined block by block, and the watchers claim or reclaim every escrow
output. Each honest node's result is checked to the satoshi: what its wallet received on chain
(its version's output, plus each escrow it claimed or reclaimed less the watcher's sweep fee),
or its channel balance where the channel stayed open.

- ``test_a_hop_withholding_the_preimage_costs_the_payer_nothing``: b learns the preimage from
  c and is killed for good before it fulfils upstream. c was paid by b; a gets its escrow back
  on chain after its timeout, nothing lost but the sweep fee.
- ``test_a_hop_gone_before_committing_its_downstream_lets_the_payee_claim_on_chain``: b dies as
  c's fulfil reaches it, before it commits c's escrow: c claims it on chain with the preimage
  before its timeout; a reclaims its own escrow after its timeout.
- ``test_a_payee_claiming_on_chain_only_lets_the_hop_claim_upstream``: c never fulfils off
  chain but claims its escrow on chain with the preimage; b reads the preimage from c's claim
  and fulfils upstream to a before a's escrow times out: b ends with exactly its fee.
"""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from eschaton.api.client import call as api_call
from eschaton.errors import EschatonError
from tests.integration.node.harness import Cluster, NodeProc, free_port, mirrored, poll
from tests.integration.node.test_multihop import _fund, _open

AMOUNT = 20_000
CAPACITY = 1_000_000
SWEEP_FEE = 1_000  # the watcher's fee for a claim or a reclaim (eschaton.channel.watcher)
LIFETIME_BC = 30  # blocks; a - b lives longer so that its escrow's timeout fits its cap
LIFETIME_AB = 45
ROUTING = ["[routing]", "delta = 8"]  # the least delta the node's margins allow: short lock-ups


def _line(cluster: Cluster) -> tuple[list[NodeProc], list[str]]:
    cluster.serve_chain()
    disc = free_port(socket.SOCK_DGRAM)
    nodes = [cluster.node(n, listen=[f"tcp://127.0.0.1:{free_port()}"], discovery_port=disc, sections=ROUTING)
             for n in "abc"]
    for n in nodes:
        n.start(env={"ESCHATON_FAULT_FILE": str(_fault(cluster, n))})
    for n in nodes:
        n.wait_ready()
    for n in nodes:
        poll(lambda n=n: len(n.linked()) == 2, f"{n.name} linked to all")
    _fund(cluster, nodes[:2])
    cids = [_open(cluster, nodes[1], nodes[2], LIFETIME_BC)]
    cids.insert(0, _open(cluster, nodes[0], nodes[1], LIFETIME_AB))
    for n in nodes:
        poll(lambda n=n: len(n.api("routing.graph")["channels"]) == 2, f"{n.name} knows every channel")
    return nodes, cids


def _fault(cluster: Cluster, n: NodeProc) -> Path:
    return cluster.root / f"{n.name}.fault"


def _pay(payer: NodeProc, request: str, pid: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Pay in a thread: a payment through a griefing hop does not answer until it is settled."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = api_call(payer.datadir, "routing.pay", {"request": request, "id": pid}, timeout=150)
        except (EschatonError, OSError) as e:
            out["result"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _swept(n: NodeProc, label: str) -> bool:
    """The node's watcher broadcast ``label`` and the chain accepted it."""
    return any(str(r.get("msg", "")).startswith(label) and "refused" not in str(r.get("msg", ""))
               for r in n.logs)


def _mine_until(cluster: Cluster, cond: Any, what: str, nodes: list[NodeProc], limit: int = 80) -> None:
    """Mine one block at a time (letting the nodes react to each) until ``cond()`` holds."""
    for _ in range(limit):
        try:
            if poll(lambda: cond() or None, what, timeout=0.4):
                return
        except AssertionError:
            pass
        cluster.chain.mine(1)
    for n in nodes:
        if n.running:
            print(n.name, n.api("channel.list"))
            print("\n".join(str(r)[:300] for r in n.logs[-40:]))
    raise AssertionError(f"{what}: not after {limit} blocks (height {cluster.chain.height()})")


def _locked(a: NodeProc, c: NodeProc) -> int:
    """What a payment of AMOUNT from a to c locks in a's escrow: the amount and b's fee (the
    route at this height, as the payer computes it)."""
    fees = a.cli("route", c.id, str(AMOUNT))["fees_sat"]
    assert len(fees) == 1 and fees[0] > 0, fees
    return AMOUNT + int(fees[0])


def _payer_back_on_chain(cluster: Cluster, a: NodeProc, ab: str, wa: int, va0: dict[str, Any],
                         va: dict[str, Any], locked: int, nodes: list[NodeProc]) -> None:
    """a's channel to a hop gone for good goes on chain and a gets all its money back: either
    the version before its offer confirms (the one a holds signed by b: it pays a its whole
    balance, no escrow in it), or the version with the escrow does and a reclaims the escrow
    once its timeout has passed. Exact to the satoshi either way."""
    _mine_until(cluster, lambda: (a.channel(ab) or {}).get("state") == "CLOSED", "a's channel closed", nodes)
    if _swept(a, f"broadcast version {va0['version']} "):
        cluster.chain.mine(1)
        poll(lambda: a.wallet_total() == wa + va0["local_sat"] or None, "a's wallet: its whole balance back")
        return
    _mine_until(cluster, lambda: _swept(a, "broadcast reclaim escrow"), "a reclaims its escrow", nodes)
    cluster.chain.mine(1)
    poll(lambda: a.wallet_total() == wa + va["local_sat"] + locked - SWEEP_FEE or None,
         "a's wallet: its balance and the escrow back, less the reclaim's sweep fee")


def _escrow_of(n: NodeProc, cid: str) -> dict[str, Any]:
    ch = n.channel(cid) or {}
    assert ch.get("escrows") == 1, ch
    return ch


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_hop_gone_before_committing_its_downstream_lets_the_payee_claim_on_chain(cluster: Cluster) -> None:
    (a, b, c), (ab, bc) = _line(cluster)
    va0, _ = mirrored(a, b, ab)
    _, vc0 = mirrored(b, c, bc)
    wa, wc = a.wallet_total(), c.wallet_total()
    req = c.cli("invoice", "create", str(AMOUNT))
    locked = _locked(a, c)
    # b's first escrow event is c's fulfil: b dies there, after its channel kept the preimage
    # and before it committed c's escrow or told a anything. It never comes back.
    _fault(cluster, b).write_text("event.escrow")
    t, out = _pay(a, req["request"], "gone-1")
    poll(lambda: b.proc is not None and b.proc.poll() is not None, "b killed as c's fulfil arrives")
    vc = _escrow_of(c, bc)  # c fulfilled (its preimage is durable) but b never committed
    va = _escrow_of(a, ab)
    assert vc["local_sat"] == vc0["local_sat"]
    # The escrow comes out of a's balance; the version's fee grows with its escrow output.
    assert va0["local_sat"] - va["local_sat"] == locked + va["fee_sat"] - va0["fee_sat"]
    # Every channel of b's goes on chain by itself (its nLockTime budget runs out); c claims its
    # escrow with the preimage, a reclaims its own once its timeout has passed.
    _mine_until(cluster, lambda: _swept(c, "broadcast claim escrow"), "c claims its escrow on chain", [a, c])
    _payer_back_on_chain(cluster, a, ab, wa, va0, va, locked, [a, c])
    poll(lambda: c.wallet_total() == wc + vc0["local_sat"] + AMOUNT - SWEEP_FEE or None,
         "c's wallet: the amount, less the claim's sweep fee")
    # a never got the preimage: its payment did not complete. (It stays "pending": the payer is
    # not told that its escrow came back on chain; see docs/multihop.md, "Not built yet".)
    assert a.api("routing.payment", id="gone-1")["preimage"] is None
    assert "result" not in out or not isinstance(out["result"], dict) or out["result"]["state"] != "complete"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_hop_withholding_the_preimage_costs_the_payer_nothing(cluster: Cluster) -> None:
    (a, b, c), (ab, bc) = _line(cluster)
    va0, _ = mirrored(a, b, ab)
    _, vc0 = mirrored(b, c, bc)
    wa, wc = a.wallet_total(), c.wallet_total()
    req = c.cli("invoice", "create", str(AMOUNT))
    locked = _locked(a, c)
    # b learns the preimage (its record is FULFILLED, durable) and dies for good just before
    # it would fulfil upstream: it withholds the preimage from a.
    _fault(cluster, b).write_text("fwd.fulfilling")
    t, out = _pay(a, req["request"], "withheld-1")
    poll(lambda: b.proc is not None and b.proc.poll() is not None, "b killed with the preimage")
    va = _escrow_of(a, ab)
    assert va0["local_sat"] - va["local_sat"] == locked + va["fee_sat"] - va0["fee_sat"]
    vc = c.channel(bc) or {}
    # c fulfilled to b; b committed it (c was paid off chain) or not (c claims on chain).
    _payer_back_on_chain(cluster, a, ab, wa, va0, va, locked, [a, c])
    _mine_until(cluster, lambda: (c.channel(bc) or {}).get("state") == "CLOSED", "c's channel closed", [a, c])
    if vc["escrows"] == 0:
        assert vc["local_sat"] == vc0["local_sat"] + AMOUNT
        cluster.chain.mine(1)
        poll(lambda: c.wallet_total() == wc + vc["local_sat"] or None, "c's wallet: paid off chain, on chain now")
    else:
        _mine_until(cluster, lambda: _swept(c, "broadcast claim escrow"), "c claims its escrow on chain", [a, c])
        cluster.chain.mine(1)
        poll(lambda: c.wallet_total() == wc + vc0["local_sat"] + AMOUNT - SWEEP_FEE or None,
             "c's wallet: the amount, less the claim's sweep fee")
    assert a.api("routing.payment", id="withheld-1")["preimage"] is None
    assert "result" not in out or not isinstance(out["result"], dict) or out["result"]["state"] != "complete"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_payee_claiming_on_chain_only_lets_the_hop_claim_upstream(cluster: Cluster) -> None:
    (a, b, c), (ab, bc) = _line(cluster)
    _, vc0 = mirrored(b, c, bc)
    close_a, close_b = (int((n.channel(ab) or {})["close_sat"]) for n in (a, b))
    wb, wc = b.wallet_total(), c.wallet_total()
    req = c.cli("invoice", "create", str(AMOUNT))
    locked = _locked(a, c)
    # c dies after its record learnt it is paid (FULFILLED) and before its channel fulfilled;
    # it comes back cut off from b (no discovery, another port): its fulfil is made durable in
    # its channel but never reaches b. Its only way to the money is the chain.
    _fault(cluster, c).write_text("fwd.fulfilling")
    t, out = _pay(a, req["request"], "onchain-1")
    poll(lambda: c.proc is not None and c.proc.poll() is not None, "c killed before it fulfils")
    assert c.proc is not None
    c.kill()
    text = c.config.read_text().replace("[network.discovery]\nenabled = true", "[network.discovery]\nenabled = false")
    old = text[text.index("listen = ["):text.index("]", text.index("listen = ["))]
    c.config.write_text(text.replace(old, f'listen = ["tcp://127.0.0.1:{free_port()}"'))
    c.start().wait_ready()
    vb = _escrow_of(b, bc)  # b's offer to c is open; b holds no preimage
    _escrow_of(a, ab)
    assert b.id not in c.linked()
    # c's channel closes itself (its nLockTime budget), its version confirms with the escrow
    # output, and c claims it with the preimage; b reads the preimage from the claim and
    # fulfils upstream: a commits off chain, and the payment completes.
    _mine_until(cluster, lambda: _swept(c, "broadcast claim escrow"), "c claims its escrow on chain", [a, b, c])
    cluster.chain.mine(1)
    paid = poll(lambda: (lambda p: p if p["state"] == "complete" else None)(a.api("routing.payment", id="onchain-1")),
                "a's payment completes with the preimage b read from the chain", timeout=60)
    t.join(60)
    assert paid["fee_sat"] == locked - AMOUNT
    poll(lambda: mirrored(a, b, ab)[0]["escrows"] == 0 or None, "a committed its escrow to b")
    va, vb_ab = mirrored(a, b, ab)
    assert va["close_sat"] == close_a - locked and vb_ab["close_sat"] == close_b + locked
    poll(lambda: c.wallet_total() == wc + vc0["local_sat"] + AMOUNT - SWEEP_FEE or None,
         "c's wallet: the amount, less the claim's sweep fee")
    # b: c's version paid b its balance on chain (the escrow went to c), and a paid b the
    # amount + its fee off chain: b ends with exactly its fee.
    poll(lambda: (b.channel(bc) or {}).get("state") == "CLOSED" or None, "b sees its channel to c closed")
    poll(lambda: b.wallet_total() == wb + vb["local_sat"] or None, "b's wallet: its balance in c's version")
