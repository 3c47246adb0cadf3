"""Nodes with ``network = "signet"`` on the rpc backend (pointed at the embedded chain's RPC,
which stands in for a signet bitcoind: the rpc backend does not ask the server's network). The
opener proposes the signet row of core/networks.py: a 4-week lifetime, a 36-block step, three
confirmations before the channel opens, fees at least the relay floor; the wallet speaks tb1
addresses and refuses a regtest one in one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from eschaton.core.channel.params import min_fee_step
from eschaton.core.networks import network
from eschaton.core.script import address_to_script, script_to_address
from tests.integration.node.harness import (
    Cluster,
    linked_pair,
    pay,
    poll,
    serve_rpc,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_a_signet_node_proposes_the_signet_parameters(cluster: Cluster, tmp_path: Path) -> None:
    shared = cluster.chain.datadir
    port = serve_rpc(cluster)
    a, b = linked_pair(cluster, tmp_path, f'backend = "rpc"\nnetwork = "signet"\nurl = "http://127.0.0.1:{port}"\n'
                                          f'rpc_cookie = "{shared / "chain" / ".cookie"}"\nrpc_poll = 0.2\n')
    nodes = [a, b]

    addr = a.wallet("address")["address"]
    assert addr.startswith("tb1"), addr
    regtest_addr = script_to_address(address_to_script(addr, "signet"), "regtest")
    assert regtest_addr is not None and regtest_addr.startswith("bcrt1")
    refused = a.cli_fail("wallet", "send", regtest_addr, "1000")
    assert "is not a signet address" in refused.stderr and "Traceback" not in refused.stderr
    cluster.chain.mine(101, to=regtest_addr)  # the same witness program: the embedded chain is regtest
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    h = cluster.chain.height()
    poll(lambda: a.cli("node", "status")["chain"]["height"] == h, "a sees the tip")

    net = network("signet")
    st = a.cli("channel", "open", b.id, "1000000")
    assert (st["locktime"], st["locktime_step"], st["min_depth"]) == (h + 4032, 36, 3), st
    assert st["switches_left"] == (4032 - net.safety_margin) // 36
    assert st["fee_step_sat"] >= min_fee_step(8) and st["fee_sat"] >= min_fee_step(8)
    cid = str(st["channel"])
    poll(lambda: (a.channel(cid) or {}).get("state") == "FUNDING_BROADCAST", "funding broadcast")

    cluster.chain.mine(2)
    for n in nodes:
        poll(lambda n=n: n.cli("node", "status")["chain"]["height"] == h + 2, f"{n.name} sees two confirmations")
    poll(lambda: (b.channel(cid) or {}).get("state") is not None, "b knows the channel")
    assert (a.channel(cid) or {})["state"] != "OPEN" and (b.channel(cid) or {})["state"] != "OPEN"

    cluster.chain.mine(1)  # the third confirmation: signet's min_depth
    for n in nodes:
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "OPEN", f"{n.name}: OPEN after 3 confirmations")
    assert b.channel(cid)["min_depth"] == 3
    pay(a, b, cid, 10_000)
    for n in (b, a):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0
