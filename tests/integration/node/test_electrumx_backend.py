"""Two nodes with ``[chain] backend = "electrum"`` pointed at the real ElectrumX (PyPI ``e-x``
2.0.0), not at our server: ElectrumX indexes the embedded chain through the JSON-RPC that
``eschaton chain serve --rpc-port`` serves (cookie authentication), and the nodes' SPV client
learns everything from it with standard methods only, each confirmation proven against headers
it verified. They open a channel, pay both ways and close cooperatively; the close confirms and
pays out. This is the code path of a node on signet or mainnet against a public server.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.electrumx import start_electrumx
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


def test_nodes_on_electrumx_open_pay_and_close(cluster: Cluster, tmp_path: Path) -> None:
    shared = cluster.chain.datadir
    rpc_port = serve_rpc(cluster)
    cookie = (shared / "chain" / ".cookie").read_text().strip()
    ex, ex_port = start_electrumx(tmp_path, f"http://{cookie}@127.0.0.1:{rpc_port}/")
    cluster.extra.append(ex)  # type: ignore[arg-type]
    a, b = linked_pair(cluster, tmp_path, f'backend = "electrum"\nurl = "tcp://127.0.0.1:{ex_port}"\n')
    for n in (a, b):
        assert n.cli("node", "status")["chain"]["backend"] == "electrum"

    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins (proven through ElectrumX)")
    cid = open_channel(cluster.chain, a, b, 1_000_000)
    pay(a, b, cid, 100_000)
    pay(b, a, cid, 10_000)
    close_and_check_payout(cluster.chain, a, b, cid)
    for n in (b, a):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0
    # The SPV client kept its verified headers in the node's datadir.
    assert (tmp_path / "a" / "spv" / "headers-regtest.sqlite").exists()
