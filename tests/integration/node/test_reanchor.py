"""A channel running out of direction switches is re-anchored by its nodes, not left to die:
the opener's node moves it to a new 2-of-2 output with a fresh nLockTime budget when the core
warns that the budget is low, and trading goes on over the new anchor."""
from __future__ import annotations

import socket

import pytest

from eschaton.daemon.channels import REANCHOR_FEE
from tests.integration.node.harness import (
    Cluster,
    channel_pair,
    free_port,
    mirrored,
    open_channel,
    pay,
    poll,
)

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
        # (Not ``pay``: its exact before/after check would race the re-anchor this one starts.)
        assert payer.cli("channel", "pay", cid, "1000")["payment_state"] == "complete"
        payer, payee = payee, payer
        st = a.channel(cid) or {}
        if st.get("budget_low") or st.get("state") == "REANCHORING" or st.get("funding_txid") != funding0:
            break
    # Signed by both, the channel moves to the new anchor at once (it confirms later).
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN"
             and (n.channel(cid) or {}).get("funding_txid") != funding0,
             f"{n.name}: channel open on the new anchor")
    cluster.chain.mine(1)  # the re-anchor transaction confirms
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("unconfirmed_anchors") == 0, f"{n.name}: re-anchor confirmed")
    after, _ = mirrored(a, b, cid)
    assert after["switches_left"] > start_switches // 2
    assert not after["budget_low"]
    # The old anchor is spent by the re-anchor transaction, and trading continues on the new one.
    assert cluster.chain.tx(funding0)["confirmations"] >= 2
    pay(b, a, cid, 500)
    pay(a, b, cid, 700)
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"


@pytest.mark.slow  # about 25 s: two nodes, 370 payments each a direction switch
def test_two_way_flow_keeps_paying_through_a_reanchor_without_a_block(cluster: Cluster) -> None:
    """Default parameters (lifetime 1008, step 6: 167 switches), every payment a direction
    switch (no turn dwell, the worst case for the budget), no block mined: the opener's node
    re-anchors when the budget runs low, and not one payment is refused or waits for a block.
    Each answer is checked against a model of what a close would pay the payer (a payment
    moves exactly its amount; fee steps are a reserve given back; the opener pays the
    re-anchor's fee). Then a block confirms the re-anchor and both sides agree on the new
    anchor."""
    a, b, cid = channel_pair(cluster, 10_000_000, sections=["[channel]", "turn_dwell_ms = 0"])
    first = a.channel(cid)
    assert first is not None and first["switches_left"] >= 160
    funding0 = first["funding_txid"]
    pay(a, b, cid, 200_000)  # b needs a balance to pay back (each switch reserves a fee step)
    sa, sb = mirrored(a, b, cid)
    close = {"a": sa["close_sat"], "b": sb["close_sat"]}
    funding = funding0
    height = cluster.chain.height()
    payer, payee = "b", "a"
    nodes = {"a": a, "b": b}
    reanchors, after = 0, 0
    while after < 40:
        st = nodes[payer].api("channel.pay", channel=cid, amount=1)  # raises if refused
        # (REANCHORING: the opener's node proposed right after this payment's ack.)
        assert st["state"] in ("OPEN", "REANCHORING") and st["payment_state"] == "complete", st
        if st["funding_txid"] != funding:  # the opener re-anchored since the last payment
            reanchors += 1
            funding = st["funding_txid"]
            close["a"] -= REANCHOR_FEE
        close[payer] -= 1
        close[payee] += 1
        assert st["close_sat"] == close[payer], (st, close)
        assert st["switches_left"] > 0, st
        after += reanchors > 0
        payer, payee = payee, payer
    assert reanchors == 1
    assert cluster.chain.height() == height  # no block was mined during any of it
    for n in (a, b):
        st = n.channel(cid) or {}
        assert st["funding_txid"] != funding0 and st["unconfirmed_anchors"] == 1, (n.name, st)
    cluster.chain.mine(1)  # the re-anchor transaction confirms
    for n in (a, b):
        poll(lambda n=n: (n.channel(cid) or {}).get("unconfirmed_anchors") == 0,
             f"{n.name}: the re-anchor confirmed")
    sa, sb = mirrored(a, b, cid)
    assert sa["state"] == "OPEN" and sa["funding_txid"] == sb["funding_txid"] == funding
    assert (sa["close_sat"], sb["close_sat"]) == (close["a"], close["b"])
    assert cluster.chain.tx(funding)["confirmations"] >= 1
    assert cluster.chain.tx(funding0)["confirmations"] >= 2
    pay(b, a, cid, 500)
    pay(a, b, cid, 700)
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
