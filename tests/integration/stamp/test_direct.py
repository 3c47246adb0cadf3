"""A node stamps files in a round committed by its own wallet's OP_RETURN transaction: the
stock ``ots`` client verifies the proofs against the node's bitcoind-compatible RPC, and so does
``eschaton stamp verify``; a tampered proof and a proof for another file fail in both."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eschaton.api.client import CommandFailed
from eschaton.core.stamp import after
from tests.integration.node.harness import Cluster, poll
from tests.integration.stamp.helpers import (
    committed,
    fund,
    ots_exe,
    ots_verify,
    rpc_port,
    stamp_node,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def test_direct_commitment_verified_by_the_stock_client(cluster: Cluster, tmp_path: Path) -> None:
    ots_exe()
    a = stamp_node(cluster, "a", owner=True)
    a.start().wait_ready()
    port = rpc_port(cluster)
    fund(cluster, a)
    files = []
    for i in range(5):
        f = tmp_path / f"doc{i}.txt"
        f.write_text(f"village ledger page {i}\n")
        files.append(str(f))
    first = a.cli("stamp", *files)
    assert [x["state"] for x in first] == ["pending"] * 5
    poll(lambda: committed(a), "the round's commitment broadcast")
    height = cluster.chain.mine(1)
    out = poll(lambda: (r := a.cli("stamp", *files, "--wait", "5")) and all(x["state"] == "proven" for x in r) and r,
               "proofs")
    assert [x["ots"] for x in out] == [f + ".ots" for f in files]

    for f in files:
        rc, text = ots_verify(port, Path(f + ".ots"))
        assert rc == 0 and f"Success! Bitcoin block {height} attests existence" in text, text
        ours = a.cli("stamp", "verify", f + ".ots")
        assert ours["verified"] is True and ours["height"] == height

    # "After" and "before": a statement embedding the latest block hashes, stamped in turn.
    tip = cluster.chain.height()
    st = a.cli("stamp", "after", files[0])
    assert st["after_height"] == tip and st["statement"] == files[0] + ".after"
    a.cli("stamp", st["statement"])
    poll(lambda: a.cli("stamp", "status")["rounds"]["committed"] == 1, "the statement's commitment")
    later = cluster.chain.mine(1)
    poll(lambda: a.cli("stamp", st["statement"])[0]["state"] == "proven", "the statement's proof")
    both = a.cli("stamp", "verify", st["statement"] + ".ots")
    assert both["after_height"] == tip and both["height"] == later
    rc, text = ots_verify(port, Path(st["statement"] + ".ots"))
    assert rc == 0 and f"block {later} attests" in text, text
    blocks, digest = after.parse(Path(st["statement"]).read_bytes())
    forged = after.statement([(h, bytes(32)) for h, _ in blocks], digest)  # blocks that never were
    with pytest.raises(CommandFailed, match="proves nothing"):
        a.api("stamp.after_check", statement=forged.hex())

    # A proof for another file: the stock client and ours both refuse.
    p = Path(files[0] + ".ots")
    good = p.read_bytes()
    shutil.copy(files[1] + ".ots", p)
    rc, text = ots_verify(port, p)
    assert rc != 0 and "Success" not in text, text
    bad = a.cli_fail("stamp", "verify", str(p))
    assert "another file" in bad.stderr and "Traceback" not in bad.stderr

    # A tampered proof: one bit of an operation's argument.
    t = bytearray(good)
    t[len(t) // 2] ^= 0x01
    p.write_bytes(bytes(t))
    rc, text = ots_verify(port, p)
    assert rc != 0 and "Success" not in text, text
    bad = a.cli_fail("stamp", "verify", str(p))
    assert "does not verify" in bad.stderr or "proof" in bad.stderr
    assert "Traceback" not in bad.stderr
