"""A node daemon with ``[chain] rpc_port`` owns its chain and serves bitcoind's JSON-RPC on
127.0.0.1: a client with the configured user/password reads the tip; the cookie and port file
exist (0600) while it runs and are gone after a clean stop."""
from __future__ import annotations

import base64
import json
import stat
import urllib.request
from pathlib import Path

import pytest

from tests.integration.node.harness import Cluster, NodeProc, poll

pytestmark = pytest.mark.timeout(120)


def _call(port: int, cred: str, method: str, *params: object) -> object:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(
        {"method": method, "params": list(params), "id": 1}).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(cred.encode()).decode()})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"] == "application/json"
        body = json.load(r)
    assert body["error"] is None, body
    return body["result"]


def test_the_daemon_serves_the_rpc_when_configured(cluster: Cluster, tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "a", chain_dir=None)
    with n.config.open("a") as f:
        f.write('\n[chain]\nrpc_port = 0\nrpc_user = "indexer"\nrpc_password = "pw"\n')
    cluster.nodes.append(n)
    n.start().wait_ready()
    chain_dir = n.datadir / "chain"
    port = int(poll(lambda: (chain_dir / "rpc.port").exists() and (chain_dir / "rpc.port").read_text().strip(),
                    "chain/rpc.port"))
    for f in ("rpc.port", ".cookie"):
        assert stat.S_IMODE((chain_dir / f).stat().st_mode) == 0o600
    tip = n.cli("node", "status")["chain"]
    assert _call(port, "indexer:pw", "getblockcount") == tip["height"]
    assert _call(port, (chain_dir / ".cookie").read_text(), "getbestblockhash") == tip["hash"]
    assert n.stop() == 0
    assert not (chain_dir / "rpc.port").exists() and not (chain_dir / ".cookie").exists()
