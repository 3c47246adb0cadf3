"""Contacts carry signed transport addresses: in a line a - b - c on loopback (pinned links only
between neighbours), a record held only by c is found from a, which dials c at the address c
signed and b handed out with c's contact. A node that may not dial (``dials_per_minute = 0``)
does not find it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.node.harness import Cluster, free_port, poll

pytestmark = pytest.mark.timeout(240)


def test_a_lookup_dials_a_contact_at_its_signed_address(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        urls = {n: f"tcp://127.0.0.1:{free_port()}" for n in "abcd"}
        c = cluster.node("c", listen=[urls["c"]]).start()
        c.wait_ready()
        c.cli("dht", "put", "only at c", "--alg", "sha256")  # alone: held by c only
        digest = hashlib.sha256(b"only at c").hexdigest()
        b = cluster.node("b", listen=[urls["b"]], peers=[(c.id, urls["c"])]).start()
        b.wait_ready()
        a = cluster.node("a", listen=[urls["a"]], peers=[(b.id, urls["b"])]).start()
        d = cluster.node("d", listen=[urls["d"]], peers=[(b.id, urls["b"])],
                         sections=["[dht]", "dials_per_minute = 0"]).start()
        a.wait_ready()
        d.wait_ready()
        poll(lambda: b.cli("dht", "stats")["linked"] >= 3 and b.cli("dht", "stats")["addresses"] >= 4,
             "b linked to a, c, d and holding their signed addresses")

        assert d.cli("dht", "get", digest, "--alg", "sha256")["records"] == []  # may not dial c
        got = a.cli("dht", "get", digest, "--alg", "sha256")
        assert [r["data"] for r in got["records"]] == ["only at c"]
        st = a.cli("dht", "stats")
        assert st["dials"] >= 1 and st["bad_addresses"] == 0
        assert c.id in a.linked()  # the dialed link is a real, authenticated one
    finally:
        cluster.close()
