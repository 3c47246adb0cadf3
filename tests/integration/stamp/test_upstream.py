"""Consolidation two levels deep: node a sends its round's root to b, b sends its round's root
to c, and only c commits to the chain. The proofs come back down (``stamp_proof``), each one
chaining through the upstream's tree, and the stock ``ots`` client verifies a's proofs."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.node.harness import Cluster, free_port, poll
from tests.integration.stamp.helpers import (
    committed,
    fund,
    ots_exe,
    ots_verify,
    rpc_port,
    stamp_node,
)

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_proofs_chain_through_two_upstreams(cluster: Cluster, tmp_path: Path) -> None:
    ots_exe()
    urls = {n: f"tcp://127.0.0.1:{free_port()}" for n in "abc"}
    c = stamp_node(cluster, "c", owner=True, listen=(urls["c"],))
    c.start().wait_ready()
    port = rpc_port(cluster)
    fund(cluster, c)
    b = stamp_node(cluster, "b", owner=False, upstream=c.id, listen=(urls["b"],), peers=((c.id, urls["c"]),))
    b.start().wait_ready()
    a = stamp_node(cluster, "a", owner=False, upstream=b.id, listen=(urls["a"],), peers=((b.id, urls["b"]),))
    a.start().wait_ready()
    poll(lambda: c.id in b.linked() and b.id in a.linked(), "links a-b and b-c")

    files = []
    for i in range(3):
        f = tmp_path / f"deed{i}.txt"
        f.write_text(f"deed {i}\n")
        files.append(str(f))
    assert all(x["state"] == "pending" for x in a.cli("stamp", *files))
    poll(lambda: a.cli("stamp", "status")["rounds"]["upstream"] == 1, "a's round sent upstream")
    poll(lambda: b.cli("stamp", "status")["rounds"]["upstream"] == 1, "b's round sent upstream")
    poll(lambda: committed(c), "c's commitment")
    # a and b never commit: they have no coins, and no commitment of theirs exists
    assert a.cli("stamp", "status")["rounds"]["committed"] == 0 == b.cli("stamp", "status")["rounds"]["committed"]
    height = cluster.chain.mine(1)
    out = poll(lambda: (r := a.cli("stamp", *files, "--wait", "5")) and all(x["state"] == "proven" for x in r) and r,
               "a's proofs through b and c", timeout=60)
    for item in out:
        rc, text = ots_verify(port, Path(item["ots"]))
        assert rc == 0 and f"Success! Bitcoin block {height} attests existence" in text, text
        assert a.cli("stamp", "verify", item["ots"])["height"] == height
    # b's and c's rounds are complete too, and c's tree held exactly one digest: b's root
    assert b.cli("stamp", "status")["rounds"]["complete"] == 1
