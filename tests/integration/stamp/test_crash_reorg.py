"""Durability and chain changes: a node killed (SIGKILL) while digests wait for their round, or
while rounds are being committed, gives every acknowledged digest a complete proof after a
restart; a reorg that drops the commitment's block leads to a new confirmation and updated
proofs, which the stock ``ots`` client verifies (and the old proof no longer does)."""
from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

from eschaton.core.stamp import ots
from eschaton.core.txcodec import sha256d
from tests.integration.node.harness import Cluster, NodeProc, poll
from tests.integration.stamp.helpers import (
    committed,
    fund,
    ots_exe,
    ots_verify,
    rpc_port,
    stamp_node,
)

pytestmark = pytest.mark.timeout(240)


def _proofs(n: NodeProc, digests: list[str]) -> dict[str, bytes | None]:
    """Read-only (``stamp.proofs``): a lost digest would stay "unknown", never be re-added."""
    out: dict[str, bytes | None] = {}
    for i in range(0, len(digests), 500):
        r = n.api("stamp.proofs", digests=",".join(digests[i:i + 500]))
        for x in r["digests"]:
            assert x["state"] != "unknown", f"acknowledged digest {x['digest']} was lost"
            out[x["digest"]] = bytes.fromhex(x["ots"]) if x["ots"] else None
    return out


def _set_round(n: NodeProc, round_s: float) -> None:
    text = n.config.read_text()
    start = text.index("round_s = ")
    end = text.index("\n", start)
    n.config.write_text(text[:start] + f"round_s = {round_s}" + text[end:])


def test_sigkill_loses_no_acknowledged_digest(cluster: Cluster, tmp_path: Path) -> None:
    a = stamp_node(cluster, "a", owner=True, round_s=3600)
    a.start().wait_ready()
    fund(cluster, a)
    # 1. Digests acknowledged while their round is still open, then SIGKILL.
    waiting = [hashlib.sha256(b"w%d" % i).hexdigest() for i in range(50)]
    a.api("stamp.submit", digests=",".join(waiting))
    assert all(p is None for p in _proofs(a, waiting).values())
    a.kill()
    # 2. Restart with short rounds, and kill it again while a client keeps submitting.
    _set_round(a, 0.05)
    a.start().wait_ready()
    acked: list[str] = []
    stop = threading.Event()

    def submitter() -> None:
        i = 0
        while not stop.is_set():
            d = hashlib.sha256(b"s%d" % i).hexdigest()
            try:
                a.api("stamp.submit", digests=d)
            except Exception:  # the node died under us: that one was never acknowledged
                return
            acked.append(d)
            i += 1

    t = threading.Thread(target=submitter, daemon=True)
    t.start()
    poll(lambda: len(acked) > 40 and committed(a), "submissions and a commitment under way")
    a.kill()
    stop.set()
    t.join(10)
    a.start().wait_ready()
    everything = waiting + acked

    def all_proven() -> bool:
        if a.api("stamp.status")["rounds"]["committed"]:
            cluster.chain.mine(1)
        return all(p is not None for p in _proofs(a, everything).values())

    poll(all_proven, "a proof for every acknowledged digest", timeout=90, every=0.5)
    height = cluster.chain.height()
    for d, p in _proofs(a, everything).items():
        assert p is not None
        assert a.api("stamp.verify", ots=p.hex(), digest=d)["height"] <= height


def test_reorg_of_the_commitment_block_updates_the_proofs(cluster: Cluster, tmp_path: Path) -> None:
    ots_exe()
    a = stamp_node(cluster, "a", owner=True)
    a.start().wait_ready()
    port = rpc_port(cluster)
    fund(cluster, a)
    doc = tmp_path / "minutes.txt"
    doc.write_text("the water committee met\n")
    a.cli("stamp", str(doc))
    poll(lambda: committed(a), "commitment")
    h = cluster.chain.mine(1)
    poll(lambda: a.cli("stamp", str(doc))[0]["state"] == "proven", "first proof")
    proof = Path(str(doc) + ".ots")
    old = proof.read_bytes()
    rc, text = ots_verify(port, proof)
    assert rc == 0 and f"block {h} attests" in text, text

    async def reorg() -> None:
        from eschaton.chain.electrum.client import ElectrumChainClient

        client = await ElectrumChainClient.connect_owner(cluster.chain.datadir / "chain" / "electrum.sock")
        try:
            parent = bytes.fromhex(await client._call("blockchain.block.header", h - 1))
            await client.mine_branch(sha256d(parent)[::-1].hex(), 2)  # longer branch without block h
        finally:
            await client.close()

    asyncio.run(reorg())
    assert cluster.chain.height() == h + 1

    def updated() -> bool:
        if a.api("stamp.status")["rounds"]["committed"]:
            cluster.chain.mine(1)
        r = a.cli("stamp", str(doc))[0]
        return r["state"] == "proven" and proof.read_bytes() != old

    poll(updated, "the proof updated after the reorg", timeout=60, every=0.5)
    new_height = min(att.height for _, att in ots.decode(proof.read_bytes()).timestamp.leaves()
                     if att.height is not None)
    assert new_height > h
    rc, text = ots_verify(port, proof)
    assert rc == 0 and f"block {new_height} attests" in text, text
    proof.write_bytes(old)  # the proof from before the reorg names a block that left the chain
    rc, text = ots_verify(port, proof)
    assert rc != 0 and "Success" not in text, text


def test_a_node_on_a_served_chain_commits_through_electrum(cluster: Cluster, tmp_path: Path) -> None:
    """The chain is owned by ``eschaton chain serve``; the node is its Electrum client and builds
    the block part of its proofs from ``get_merkle`` and the header, checked before use."""
    cluster.serve_chain()
    a = stamp_node(cluster, "a", owner=False)
    a.start().wait_ready()
    fund(cluster, a)
    doc = tmp_path / "bylaws.txt"
    doc.write_text("article 1\n")
    a.cli("stamp", str(doc))
    poll(lambda: committed(a), "commitment")
    h = cluster.chain.mine(1)
    poll(lambda: a.cli("stamp", str(doc))[0]["state"] == "proven", "proof")
    assert a.cli("stamp", "verify", str(doc) + ".ots")["height"] == h
