"""A node with no [chain] section owns its chain in <datadir>/chain, and the chain and wallet CLIs
given only that datadir reach it (through the node's Electrum server, since the node owns it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.node.harness import NodeProc, cli_json

pytestmark = pytest.mark.timeout(120)


def test_chain_cli_finds_the_node_chain_by_the_node_datadir(tmp_path: Path) -> None:
    n = NodeProc(tmp_path, "solo", chain_dir=None)
    try:
        n.start().wait_ready()
        assert (n.datadir / "chain" / "LOCK").exists()
        info = cli_json("chain", "info", "--datadir", str(n.datadir))
        assert info["backend"] == "ElectrumChainClient" and info["height"] == 0, info
        cli_json("chain", "mine", "1", "--datadir", str(n.datadir))
        assert cli_json("chain", "info", "--datadir", str(n.datadir))["height"] == 1
        assert n.cli("node", "status")["chain"]["height"] == 1
        assert n.stop() == 0
    finally:
        if n.running:
            n.kill()
