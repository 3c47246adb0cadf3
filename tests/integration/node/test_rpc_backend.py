"""A node with ``[chain] backend = "rpc"``: its chain is a bitcoind-compatible JSON-RPC (here the
one ``eschaton chain serve --rpc-port`` serves, standing in for Bitcoin Core or Knots), reached
with the cookie file. Two such nodes open a channel, pay both ways and close cooperatively; the
close confirms and pays out. Everything the nodes learn about the chain (funding, confirmations,
the close) comes through the RPC's polling client.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.node.harness import (
    Cluster,
    close_and_check_payout,
    linked_pair,
    open_channel,
    pay,
    poll,
    serve_rpc,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_nodes_on_the_rpc_backend_open_pay_and_close(cluster: Cluster, tmp_path: Path) -> None:
    shared = cluster.chain.datadir
    port = serve_rpc(cluster)
    assert (shared / "chain" / "rpc.port").read_text().strip() == str(port)
    a, b = linked_pair(cluster, tmp_path, f'backend = "rpc"\nurl = "http://127.0.0.1:{port}"\n'
                                          f'rpc_cookie = "{shared / "chain" / ".cookie"}"\nrpc_poll = 0.2\n')
    for n in (a, b):
        assert n.cli("node", "status")["chain"]["backend"] == "rpc"

    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    cid = open_channel(cluster.chain, a, b, 1_000_000)
    pay(a, b, cid, 100_000)
    pay(b, a, cid, 10_000)
    close_and_check_payout(cluster.chain, a, b, cid)
    for n in (b, a):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0
