"""Multi-hop payments between real node processes on the embedded chain.

A line of five nodes a - b - c - d - e (each channel opened by the node nearer a, so money
flows towards e): the announcements reach every node, e issues a payment request, a pays it
through b, c and d; every hop keeps exactly its fee and every balance is reconciled (what a
cooperative close would pay each node moves by exactly the amount, the fees, or nothing). A
retry of the payment id pays nothing more.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
from typing import Any

import pytest

from eschaton.api.client import call as api_call
from eschaton.errors import EschatonError
from tests.integration.node.harness import Cluster, NodeProc, free_port, mirrored, poll

CAPACITY = 1_000_000
AMOUNT = 10_000


def _nodes(cluster: Cluster, names: str, fixed_ports: bool = False,
           sections: dict[str, list[str]] | None = None) -> list[NodeProc]:
    disc = free_port(socket.SOCK_DGRAM)
    nodes = [cluster.node(n, listen=[f"tcp://127.0.0.1:{free_port() if fixed_ports else 0}"], discovery_port=disc,
                          sections=(sections or {}).get(n, ())) for n in names]
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_ready()
    for n in nodes:
        poll(lambda n=n: len(n.linked()) == len(nodes) - 1, f"{n.name} linked to all")
    return nodes


def _fund(cluster: Cluster, nodes: list[NodeProc]) -> None:
    for n in nodes:
        cluster.chain.mine(1, to=n.wallet("address")["address"])
    cluster.chain.mine(100)
    for n in nodes:
        poll(lambda n=n: n.wallet("balance")["spendable"] > 0, f"{n.name} has spendable coins")


def _open(cluster: Cluster, opener: NodeProc, acceptor: NodeProc, lifetime: int) -> str:
    st = opener.cli("channel", "open", acceptor.id, str(CAPACITY), "--lifetime", str(lifetime))
    cid = str(st["channel"])
    poll(lambda: (opener.channel(cid) or {}).get("state") == "FUNDING_BROADCAST", f"{cid[:12]} broadcast")
    cluster.chain.mine(1)
    for n in (opener, acceptor):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN", f"{n.name}: {cid[:12]} OPEN")
    return cid


def _close_sats(n: NodeProc) -> dict[str, int]:
    return {c["channel"]: int(c["close_sat"]) for c in n.api("channel.list")}


def _settled(nodes: list[NodeProc], cids: list[str]) -> None:
    for x, y, cid in zip(nodes, nodes[1:], cids, strict=False):
        poll(lambda x=x, y=y, cid=cid: mirrored(x, y, cid)[0]["escrows"] == 0, f"{cid[:12]} settled")


def _line(cluster: Cluster, names: str, fixed_ports: bool = False) -> tuple[list[NodeProc], list[str]]:
    nodes = _nodes(cluster, names, fixed_ports)
    _fund(cluster, nodes[:-1])
    cids: list[str] = []
    # Opened from the payee's end: each upstream channel lives 100 blocks longer, so the
    # timeouts (which grow by each hop's delta towards the payer) fit in every channel's cap.
    for i in range(len(nodes) - 2, -1, -1):
        cids.insert(0, _open(cluster, nodes[i], nodes[i + 1], 1008 + 100 * (len(nodes) - 2 - i)))
    for n in nodes:
        poll(lambda n=n: len(n.api("routing.graph")["channels"]) == len(cids), f"{n.name} knows every channel")
    return nodes, cids


@pytest.mark.slow
def test_a_line_of_five_pays_with_exact_fees_on_every_hop(cluster: Cluster) -> None:
    nodes, cids = _line(cluster, "abcde")
    a, e = nodes[0], nodes[-1]
    before = {n.name: _close_sats(n) for n in nodes}

    req = e.cli("invoice", "create", str(AMOUNT), "--description", "five hops")
    route = a.cli("route", e.id, str(AMOUNT))
    assert [h["node"] for h in route["hops"]] == [n.id for n in nodes[1:]]
    paid: dict[str, Any] = a.cli("pay", req["request"], "--id", "line-1")
    assert paid["state"] == "complete", paid
    assert hashlib.sha256(bytes.fromhex(paid["preimage"])).hexdigest() == req["hash"]
    assert paid["fee_sat"] == sum(route["fees_sat"]) and paid["fee_sat"] > 0
    _settled(nodes, cids)

    after = {n.name: _close_sats(n) for n in nodes}
    delta = {n.name: sum(after[n.name].values()) - sum(before[n.name].values()) for n in nodes}
    # the payer pays amount + fees, each hop keeps exactly its fee, the payee gets the amount
    assert delta["a"] == -(AMOUNT + paid["fee_sat"])
    assert [delta[n] for n in "bcd"] == route["fees_sat"]
    assert delta["e"] == AMOUNT
    assert sum(delta.values()) == 0
    # every channel still adds up to its capacity on both sides
    for x, y, cid in zip(nodes, nodes[1:], cids, strict=False):
        vx, _ = mirrored(x, y, cid)
        assert vx["local_sat"] + vx["remote_sat"] + vx["fee_sat"] == CAPACITY

    # the same id again pays nothing more; the outcome is stored
    again = a.cli("pay", req["request"], "--id", "line-1")
    assert again["state"] == "complete" and again["escrow"] == paid["escrow"]
    assert {n.name: sum(_close_sats(n).values()) for n in nodes} == {k: sum(v.values()) for k, v in after.items()}
    assert a.cli("payment", "line-1")["state"] == "complete"
    assert len(a.cli("graph")["channels"]) == len(cids)
    bad = a.cli_fail("pay", "eschreq1zzzz")
    assert bad.stderr.count("\n") == 1

    # To a node id (the payer picks the preimage and puts it in the payee's layer) ...
    by_id = a.cli("pay", e.id, "3000", "--id", "line-2")
    assert by_id["state"] == "complete" and by_id["amount_sat"] == 3000
    # ... and payer-held: the answer comes at once with the preimage; the payee holds the
    # escrow until it is given the preimage, then the payment completes.
    held = a.cli("pay", e.id, "2000", "--hold", "--id", "line-3")
    assert held["state"] == "pending" and held["hold"] is True
    def release() -> dict[str, Any] | None:
        try:  # refused ("no held payment") until the escrow and its onion reached e
            return e.api("routing.release", preimage=held["preimage"])  # type: ignore[no-any-return]
        except EschatonError:
            return None
    assert a.api("routing.payment", id="line-3")["state"] == "pending"
    assert e.cli_fail("pay", "--release", "00" * 32).stderr.count("\n") == 1
    rel = poll(release, "e holds the escrow and releases it")
    assert rel["released"] == 1
    poll(lambda: a.api("routing.payment", id="line-3")["state"] == "complete", "the held payment completes")
    _settled(nodes, cids)
    final = {n.name: sum(_close_sats(n).values()) for n in nodes}
    assert final["e"] - sum(after["e"].values()) == 5000
    assert sum(final[k] - sum(after[k].values()) for k in final) == 0
    assert not [r for n in nodes for r in n.logs if "exc" in r]


@pytest.mark.slow
def test_a_diamond_where_the_first_path_fails_and_the_retry_succeeds(cluster: Cluster) -> None:
    """a - b - d and a - c - d; c's [routing] config asks a higher fee, so a's first route goes
    through b. b has paid almost all of its channel to d away, so the payment fails there
    (insufficient_balance, read by a from the encrypted failure) and a's retry through c
    succeeds, c keeping exactly its configured fee. Balances reconcile."""
    dear = ["[routing]", "fee_base_sat = 50", "fee_ppm = 5000", "fee_hold_ppm = 0", "delta = 30"]
    a, b, c, d = _nodes(cluster, "abcd", sections={"c": dear})
    _fund(cluster, [a, b, c])
    bd, cd = _open(cluster, b, d, 1008), _open(cluster, c, d, 1008)
    ab, ac = _open(cluster, a, b, 1108), _open(cluster, a, c, 1108)
    for n in (a, b, c, d):
        poll(lambda n=n: len(n.api("routing.graph")["channels"]) == 4, f"{n.name} knows every channel")
    assert a.cli("route", d.id, str(AMOUNT))["hops"][0]["node"] == b.id  # the cheaper side
    x, y, xd = b, c, bd
    x.cli("channel", "pay", xd, str(990_000))  # x keeps less than the payment on its way to d
    mirrored(x, d, xd)
    before = {n.name: sum(_close_sats(n).values()) for n in (a, b, c, d)}

    req = d.cli("invoice", "create", str(AMOUNT))
    paid = a.cli("pay", req["request"], "--id", "diamond-1")
    assert paid["state"] == "complete" and paid["attempts"] == 2, paid
    assert hashlib.sha256(bytes.fromhex(paid["preimage"])).hexdigest() == req["hash"]
    assert any("attempt 1 failed: insufficient_balance at hop 1" in str(r.get("msg", "")) for r in a.logs)
    _settled([a, x], [ab if x is b else ac])
    _settled([a, y, d], [ab if y is b else ac, cd if y is c else bd])

    after = {n.name: sum(_close_sats(n).values()) for n in (a, b, c, d)}
    delta = {k: after[k] - before[k] for k in after}
    assert delta[a.name] == -(AMOUNT + paid["fee_sat"]) and paid["fee_sat"] > 0
    assert delta[y.name] == paid["fee_sat"] == 50 + AMOUNT * 5000 // 1_000_000  # c's configured fee, exactly
    assert delta[x.name] == 0  # the hop that failed gained and lost nothing
    assert delta[d.name] == AMOUNT
    assert not [r for n in (a, b, c, d) for r in n.logs if "exc" in r]


def _events(n: NodeProc, mark: int, kind: str) -> list[dict[str, Any]]:
    return [e for e in n.api("events.since", seq=mark, source="payments")["events"] if e["kind"] == kind]


def _paying(payer: NodeProc, request: str, pid: str, out: dict[str, object]) -> threading.Thread:
    def run() -> None:
        try:
            out["result"] = api_call(payer.datadir, "routing.pay", {"request": request, "id": pid}, timeout=150)
        except EschatonError as e:
            out["result"] = e
    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_hop_killed_mid_forward_and_mid_fulfil_loses_nothing(cluster: Cluster) -> None:
    """a - b - c, the chain served apart. (1) c is frozen, so b's offer to c cannot complete; b
    is SIGKILLed and restarted, c thawed: b resumes its forward from its record (the same offer
    id: nothing locked twice) and resends the onion, and the payment completes. (2) a is frozen
    once its escrow reached b; c fulfils, b learns the preimage; b is SIGKILLed and restarted,
    a thawed: b fulfils upstream again from its record and the payment completes. Every node's
    balance moves by exactly the amount, the fee or nothing."""
    cluster.serve_chain()
    nodes, cids = _line(cluster, "abc", fixed_ports=True)
    a, b, c = nodes
    assert a.proc is not None and c.proc is not None
    totals = {n.name: sum(_close_sats(n).values()) for n in nodes}
    fees = 0
    for trial, frozen in enumerate((c, a)):
        req = c.cli("invoice", "create", str(AMOUNT))
        mark_b = b.api("events.since", seq=0)["head"]
        out: dict[str, object] = {}
        if frozen is c:
            os.kill(c.proc.pid, signal.SIGSTOP)
            t = _paying(a, req["request"], f"crash-{trial}", out)
            poll(lambda m=mark_b: _events(b, m, "EscrowOffered"), "b got a's escrow")
        else:
            t = _paying(a, req["request"], f"crash-{trial}", out)
            poll(lambda m=mark_b: _events(b, m, "EscrowOffered"), "b got a's escrow")
            os.kill(a.proc.pid, signal.SIGSTOP)
            poll(lambda m=mark_b: _events(b, m, "EscrowFulfilled"), "b learnt the preimage from c")
        b.kill()
        b.start()
        b.wait_ready()
        os.kill(frozen.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        t.join(160)
        assert not t.is_alive(), "the payment never returned"
        result = out["result"]
        if not isinstance(result, dict):
            for n in nodes:
                for r in n.logs:
                    m = str(r.get("msg", ""))
                    if any(w in m for w in ("routing", "escrow", "offer", "exc", "waiting")) or "exc" in r:
                        print("DBG", trial, n.name, m[:300], str(r.get("exc", ""))[-600:])
        assert isinstance(result, dict) and result["state"] == "complete", (trial, result)
        assert hashlib.sha256(bytes.fromhex(str(result["preimage"]))).hexdigest() == req["hash"]
        fees += int(result["fee_sat"])
        _settled(nodes, cids)
        after = {n.name: sum(_close_sats(n).values()) for n in nodes}
        n_paid = trial + 1
        assert after["a"] - totals["a"] == -(n_paid * AMOUNT + fees)
        assert after["b"] - totals["b"] == fees
        assert after["c"] - totals["c"] == n_paid * AMOUNT
    assert fees > 0
    assert not [r for n in nodes for r in n.logs if "exc" in r]


def _forwarded(n: NodeProc) -> int:
    detail = next(s["detail"] for s in n.api("node.health") if s["service"] == "routing")
    return int(detail.split(" forwarded")[0].rsplit(", ", 1)[-1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hop_passes_the_onion_on_once_its_offer_is_durable_not_acknowledged(cluster: Cluster) -> None:
    """a - b - c with c frozen: b's offer to c is durable and sent but cannot be acknowledged.
    b passes the payment on (its forward goes OFFERED and the onion leaves) without waiting for
    c's acknowledgement, which would cost a round trip and a commit per hop. Once c is thawed it
    gets the escrow and the onion, and the payment completes with every balance exact."""
    cluster.serve_chain()
    nodes, cids = _line(cluster, "abc")
    a, b, c = nodes
    assert c.proc is not None
    before = {n.name: sum(_close_sats(n).values()) for n in nodes}
    req = c.cli("invoice", "create", str(AMOUNT))
    assert _forwarded(b) == 0
    os.kill(c.proc.pid, signal.SIGSTOP)
    out: dict[str, object] = {}
    try:
        t = _paying(a, req["request"], "durable-not-acked", out)
        poll(lambda: _forwarded(b) == 1, "b forwarded while c cannot acknowledge", timeout=20)
    finally:
        os.kill(c.proc.pid, signal.SIGCONT)
    t.join(120)
    assert not t.is_alive(), "the payment never returned"
    result = out["result"]
    assert isinstance(result, dict) and result["state"] == "complete", result
    _settled(nodes, cids)
    after = {n.name: sum(_close_sats(n).values()) for n in nodes}
    fee = int(result["fee_sat"])
    assert fee > 0
    assert (after["a"] - before["a"], after["b"] - before["b"], after["c"] - before["c"]) == (-(AMOUNT + fee), fee,
                                                                                            AMOUNT)
