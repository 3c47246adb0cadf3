"""Paid DHT queries on real node processes over loopback: a line a - b - c with trade channels
a->b and b->c. A record held only by c is bought by a through b: b forwards, prices in its base,
and every node's accounting is exact; a quote above --max-price is refused with nothing paid; a
retry with the same query id is answered without paying again."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    free_port,
    mirrored,
    open_channel,
    poll,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

QUERY = '["has", ["data"]]'


def _local(x: NodeProc, y: NodeProc, cid: str) -> int:
    return int(mirrored(x, y, cid)[0]["local_sat"])


def test_a_query_forwarded_two_hops_is_paid_hop_by_hop(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        urls = {n: f"tcp://127.0.0.1:{free_port()}" for n in "abc"}
        c = cluster.node("c", listen=[urls["c"]]).start()
        c.wait_ready()
        put = c.cli("dht", "put", "sold by c", "--alg", "sha256d")  # alone: held by c only
        digest = hashlib.sha256(hashlib.sha256(b"sold by c").digest()).hexdigest()
        b = cluster.node("b", listen=[urls["b"]], peers=[(c.id, urls["c"])]).start()
        b.wait_ready()
        a = cluster.node("a", listen=[urls["a"]], peers=[(b.id, urls["b"])]).start()
        a.wait_ready()
        poll(lambda: a.cli("dht", "stats")["linked"] == 1 and b.cli("dht", "stats")["linked"] == 2,
             "DHT peers linked")
        chain = cluster.chain
        chain.mine(101, to=a.wallet("address")["address"])
        chain.mine(101, to=b.wallet("address")["address"])
        poll(lambda: a.wallet("balance")["spendable"] > 0 and b.wallet("balance")["spendable"] > 0,
             "a and b have spendable coins")
        ab = open_channel(chain, a, b, 200_000)
        bc = open_channel(chain, b, c, 200_000)
        before = {"a": _local(a, b, ab), "b_ab": _local(b, a, ab), "b_bc": _local(b, c, bc),
                  "c": _local(c, b, bc)}

        # c quotes base 1 + 1 record + 1 KiB = 3; b adds its base: 4. Above the ceiling: refused.
        bad = a.cli_fail("dht", "query", digest, QUERY, "--alg", "sha256d", "--max-price", "3")
        assert "price 4 sat exceeds --max-price 3 sat; nothing paid" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert a.cli("dht", "stats")["queries"]["spent_sat"] == 0

        got = a.cli("dht", "query", digest, QUERY, "--alg", "sha256d", "--max-price", "4")
        assert got["key"] == put["key"] and got["peer"] == b.id and got["price"] == 4
        assert [r["data"] for r in got["records"]] == ["sold by c"] and got["count"] == 1

        sa, sb, sc = (n.cli("dht", "stats")["queries"] for n in (a, b, c))
        assert (sa["asked"], sa["spent_sat"]) == (1, 4)
        assert (sb["forwarded"], sb["forward_margin_sat"], sb["sold"]) == (1, 1, 0)
        assert (sc["sold"], sc["earned_sat"], sc["claims"]) == (1, 3, 1)
        # The channels moved exactly that (the payees' balances; a payer may also pay a fee step).
        poll(lambda: _local(b, a, ab) == before["b_ab"] + 4, "b holds a's 4 sat")
        poll(lambda: _local(c, b, bc) == before["c"] + 3, "c holds b's 3 sat")
        assert _local(a, b, ab) <= before["a"] - 4 and _local(b, c, bc) <= before["b_bc"] - 3

        again = a.cli("dht", "query", digest, QUERY, "--alg", "sha256d", "--id", got["qid"])
        assert again["records"] == got["records"]
        assert a.cli("dht", "stats")["queries"]["spent_sat"] == 4
        assert _local(b, a, ab) == before["b_ab"] + 4

        none = a.cli("dht", "query", "00" * 32, QUERY, "--max-price", "100")
        assert none["records"] == [] and none["paid"] == 0
        for argv, msg in ((("dht", "query", digest, "[", "--alg", "sha256d"), "query is not JSON"),
                          (("dht", "query", digest, '["nope"]', "--alg", "sha256d"), "query refused"),
                          (("dht", "query", digest, QUERY, "--max-price", "-1"), "must not be negative")):
            p = a.cli_fail(*argv)
            assert msg in p.stderr and "Traceback" not in p.stderr, p.stderr
    finally:
        cluster.close()
