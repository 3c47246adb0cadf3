"""Stamp nodes on the embedded chain, and the stock OpenTimestamps client against its RPC."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import need
from tests.integration.node.harness import Cluster, NodeProc, poll

RPC = ("ots", "pw")


def ots_exe() -> Path:
    exe = Path(sys.executable).with_name("ots")
    need(exe.exists(), "needs the ots client (`make setup` installs opentimestamps-client from the dev extra)")
    return exe


def stamp_node(cluster: Cluster, name: str, *, owner: bool, round_s: float = 0.2, upstream: str = "",
               listen: tuple[str, ...] = (), peers: tuple[tuple[str, str], ...] = (),
               stamp: tuple[str, ...] = ()) -> NodeProc:
    """``owner``: the node owns the shared chain and serves bitcoind's RPC on it; ``stamp``: more
    ``[stamp]`` lines."""
    sections = ["[stamp]", f"round_s = {round_s}", *stamp] + ([f'upstream = "{upstream}"'] if upstream else [])
    n = cluster.node(name, listen=listen, peers=peers, sections=sections)
    if owner:
        text = n.config.read_text().replace(
            f'[chain]\ndatadir = "{cluster.chain.datadir}"\n',
            f'[chain]\ndatadir = "{cluster.chain.datadir}"\nrpc_port = 0\nrpc_user = "{RPC[0]}"\nrpc_password = "{RPC[1]}"\n')
        assert "rpc_port" in text
        n.config.write_text(text)
    return n


def rpc_port(cluster: Cluster) -> int:
    f = cluster.chain.datadir / "chain" / "rpc.port"
    return int(poll(lambda: f.exists() and f.read_text().strip(), "chain/rpc.port"))


def fund(cluster: Cluster, n: NodeProc) -> None:
    cluster.chain.mine(101, n.wallet("address")["address"])


def ots_verify(port: int, proof: Path) -> tuple[int, str]:
    p = subprocess.run([str(ots_exe()), "--no-cache", "--btc-regtest", "--bitcoin-node",
                        f"http://{RPC[0]}:{RPC[1]}@127.0.0.1:{port}/", "verify", str(proof)],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def committed(n: NodeProc) -> bool:
    r = n.cli("stamp", "status")["rounds"]
    return r["committed"] + r["confirmed"] + r["complete"] > 0
