"""Two nodes with ``[chain] backend = "electrum"`` pointed at the real ElectrumX (PyPI ``e-x``
2.0.0), not at our server: ElectrumX indexes the embedded chain through the JSON-RPC that
``eschaton chain serve --rpc-port`` serves (cookie authentication), and the nodes' SPV client
learns everything from it with standard methods only, each confirmation proven against headers
it verified. They open a channel, pay both ways and close cooperatively; the close confirms and
pays out. This is the code path of a node on signet or mainnet against a public server.
"""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.electrumx import start_electrumx
from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    _env,
    eschaton_cmd,
    free_port,
    mirrored,
    open_channel,
    pay,
    poll,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_nodes_on_electrumx_open_pay_and_close(cluster: Cluster, tmp_path: Path) -> None:
    shared = cluster.chain.datadir
    server = subprocess.Popen([*eschaton_cmd(), "chain", "serve", "--datadir", str(shared), "--rpc-port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    cluster.extra.append(server)
    assert server.stdout is not None
    line = server.stdout.readline()
    assert "JSON-RPC on 127.0.0.1:" in line, line
    rpc_port = int(line.rsplit(":", 1)[1])
    cookie = (shared / "chain" / ".cookie").read_text().strip()
    ex, ex_port = start_electrumx(tmp_path, f"http://{cookie}@127.0.0.1:{rpc_port}/")
    cluster.extra.append(ex)  # type: ignore[arg-type]

    disc = free_port(socket.SOCK_DGRAM)
    nodes = []
    for name in "ab":
        n = NodeProc(tmp_path, name, chain_dir=None, listen=["tcp://127.0.0.1:0"], discovery_port=disc)
        with n.config.open("a") as f:
            f.write(f'\n[chain]\nbackend = "electrum"\nurl = "tcp://127.0.0.1:{ex_port}"\n')
        cluster.nodes.append(n)
        n.cluster_nodes = cluster.nodes
        nodes.append(n)
    a, b = nodes
    for n in nodes:
        n.start()
    for n in nodes:
        n.wait_ready()
        assert n.cli("node", "status")["chain"]["backend"] == "electrum"
    poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")

    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins (proven through ElectrumX)")
    cid = open_channel(cluster.chain, a, b, 1_000_000)
    pay(a, b, cid, 100_000)
    pay(b, a, cid, 10_000)
    va, vb = mirrored(a, b, cid)
    ta, tb = a.wallet_total(), b.wallet_total()
    st = a.cli("channel", "close", cid)
    assert st["state"] in ("CLOSING", "CLOSED"), st
    poll(lambda: (b.channel(cid) or {}).get("state") in ("CLOSING", "CLOSED"), "b sees the close")
    cluster.chain.mine(1)
    for n in nodes:
        poll(lambda n=n: (n.channel(cid) or {}).get("state") == "CLOSED", f"{n.name}: CLOSED")
    poll(lambda: a.wallet_total() == ta + va["close_sat"], f"a's wallet +{va['close_sat']}")
    poll(lambda: b.wallet_total() == tb + vb["close_sat"], f"b's wallet +{vb['close_sat']}")
    for n in (b, a):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0
    # The SPV client kept its verified headers in the node's datadir.
    assert (tmp_path / "a" / "spv" / "headers-regtest.sqlite").exists()
