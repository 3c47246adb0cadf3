"""A node runs on a restored wallet; restore refuses while the node runs; the node never logs the words."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import bdkpython as bdk
import pytest

from tests.integration.node.harness import NodeProc, eschaton_cmd

pytestmark = pytest.mark.timeout(180)

VECTOR = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
OTHER = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong"


def wallet(n: NodeProc, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*eschaton_cmd(), "wallet", *args, "--config", str(n.config)],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_node_uses_the_restored_seed_and_restore_waits_for_it_to_stop(tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "restored", chain_dir=None)
    r = wallet(n, "restore", stdin=VECTOR)
    assert r.returncode == 0, r.stderr
    receive = wallet(n, "descriptors", "--json").stdout
    first = str(bdk.Descriptor(json.loads(receive)["receive"], bdk.NetworkKind.TEST)
                .derive_address(0, bdk.Network.REGTEST))
    try:
        n.start().wait_ready()
        assert n.cli("wallet", "address")["address"] == first  # the node's wallet is the restored one
        r = wallet(n, "restore", "--force", stdin=OTHER)
        assert r.returncode == 1 and "a node is running" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "zoo" not in r.stderr
        assert (n.datadir / "wallet" / "seed").read_text() == VECTOR + "\n"
        assert n.stop() == 0
    finally:
        if n.running:
            n.kill()
    seen = "".join(n.stderr) + "".join(str(rec) for rec in n.logs)
    assert n.logs and "abandon" not in seen
    r = wallet(n, "restore", "--force", stdin=OTHER)  # stopped: now it may
    assert r.returncode == 0, r.stderr
