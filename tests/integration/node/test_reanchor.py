"""A channel running out of direction switches is re-anchored by its nodes, not left to die:
the opener's node moves it to a new 2-of-2 output with a fresh nLockTime budget when the core
warns that the budget is low, and trading goes on over the new anchor."""
from __future__ import annotations

import socket

import pytest

from tests.integration.node.harness import Cluster, free_port, mirrored, open_channel, pay, poll

pytestmark = pytest.mark.timeout(240)


def test_low_switch_budget_triggers_a_reanchor(cluster: Cluster) -> None:
    disc = free_port(socket.SOCK_DGRAM)
    a = cluster.node("a", listen=["tcp://127.0.0.1:0"], discovery_port=disc)
    b = cluster.node("b", listen=["tcp://127.0.0.1:0"], discovery_port=disc)
    a.start().wait_ready()
    b.start().wait_ready()
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    # A short life: 40 blocks, 6 per direction switch -> only a handful of switches.
    cid = open_channel(cluster.chain, a, b, 2_000_000, "--lifetime", "40", "--step", "6")
    first = a.channel(cid)
    assert first is not None
    funding0 = first["funding_txid"]
    start_switches = first["switches_left"]
    assert start_switches <= 6

    pay(a, b, cid, 100_000)  # b needs a balance to pay back (each switch costs its payer a fee step)
    # Switch direction until the core warns: the opener's node then proposes a re-anchor.
    payer, payee = b, a
    for _ in range(start_switches):
        pay(payer, payee, cid, 1_000)
        payer, payee = payee, payer
        st = a.channel(cid) or {}
        if st.get("state") == "REANCHORING" or st.get("funding_txid") != funding0:
            break
    poll(lambda: (a.channel(cid) or {}).get("state") == "REANCHORING"
         or (a.channel(cid) or {}).get("funding_txid") != funding0, "a proposes a re-anchor")
    cluster.chain.mine(1)  # the re-anchor transaction confirms
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN"
             and (n.channel(cid) or {}).get("funding_txid") != funding0,
             f"{n.name}: channel open on the new anchor")
    after, _ = mirrored(a, b, cid)
    assert after["switches_left"] > start_switches // 2
    assert not after["budget_low"]
    # The old anchor is spent by the re-anchor transaction, and trading continues on the new one.
    assert cluster.chain.tx(funding0)["confirmations"] >= 2
    pay(b, a, cid, 500)
    pay(a, b, cid, 700)
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
