"""``eschaton dht`` on real node processes: a line of three nodes on loopback (a - b - c, links
only between neighbours, and no dialing of contacts: ``[dht] dials_per_minute = 0``). A record
published at c is stored at its neighbour b and found from a, which never held it; bad input is
one line, never a traceback."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.node.harness import Cluster, free_port, poll

pytestmark = pytest.mark.timeout(240)


def test_put_get_find_stats_through_the_cli(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        urls = {n: f"tcp://127.0.0.1:{free_port()}" for n in "abc"}
        line = ["[dht]", "dials_per_minute = 0"]
        a = cluster.node("a", listen=[urls["a"]], sections=line).start()
        a.wait_ready()
        b = cluster.node("b", listen=[urls["b"]], peers=[(a.id, urls["a"])], sections=line).start()
        b.wait_ready()
        c = cluster.node("c", listen=[urls["c"]], peers=[(b.id, urls["b"])], sections=line).start()
        c.wait_ready()
        poll(lambda: a.cli("dht", "stats")["linked"] == 1 and c.cli("dht", "stats")["linked"] == 1
             and b.cli("dht", "stats")["linked"] == 2, "DHT peers linked")

        put = c.cli("dht", "put", "hello, mesh", "--alg", "sha256d")
        digest = hashlib.sha256(hashlib.sha256(b"hello, mesh").digest()).hexdigest()
        assert put["digest"] == digest
        assert put["stored_at"] == [b.id] and put["refused"] == {}  # a is not c's neighbour
        assert b.cli("dht", "stats")["records"] == 1 and a.cli("dht", "stats")["records"] == 0

        got = a.cli("dht", "get", digest, "--alg", "sha256d")
        assert [r["data"] for r in got["records"]] == ["hello, mesh"]
        assert got["records"][0]["kind"] == "preimage" and got["key"] == put["key"]
        assert a.cli("dht", "get", "00" * 32)["records"] == []

        found = a.cli("dht", "find", put["key"])
        assert found["nodes"] == [b.id]  # the only DHT node a can reach

        bad = a.cli_fail("dht", "get", "zz")
        assert "not 32 bytes" in bad.stderr or "not hex" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    finally:
        cluster.close()
